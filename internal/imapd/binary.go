package imapd

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// A message APPENDed as a literal8 (BINARY, RFC 3516) may hold NUL
// octets, which no IMAP literal can carry back in BODY[]. RFC 3516 4.3
// lets the server change the transfer encoding: such messages are
// stored with every part that holds a NUL re-encoded as base64, so BODY
// returns 7-bit data and BINARY the same octets as were appended.

// maxBinaryDepth bounds the MIME nesting the conversion follows.
const maxBinaryDepth = 20

// encodeBinary returns msg with its NUL-holding leaf parts base64
// encoded; msg itself when it holds no NUL.
func encodeBinary(msg []byte) ([]byte, error) {
	if bytes.IndexByte(msg, 0) < 0 {
		return msg, nil
	}
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("imapd: binary append: %w", err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return nil, err
	}
	h, body, err = encodePart(h, body, 0)
	if err != nil {
		return nil, fmt.Errorf("imapd: binary append: %w", err)
	}
	var out bytes.Buffer
	if err := textproto.WriteHeader(&out, h); err != nil {
		return nil, err
	}
	out.Write(body)
	return out.Bytes(), nil
}

// encodePart returns a part's header and body with NUL-holding leaves
// base64 encoded.
func encodePart(h textproto.Header, body []byte, depth int) (textproto.Header, []byte, error) {
	mediaType, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if strings.HasPrefix(mediaType, "multipart/") && params["boundary"] != "" && depth < maxBinaryDepth {
		var out bytes.Buffer
		mw := textproto.NewMultipartWriter(&out)
		if err := mw.SetBoundary(params["boundary"]); err != nil {
			return h, nil, err
		}
		mr := textproto.NewMultipartReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return h, nil, err
			}
			pb, err := io.ReadAll(p)
			if err != nil {
				return h, nil, err
			}
			ph, pb, err := encodePart(p.Header, pb, depth+1)
			if err != nil {
				return h, nil, err
			}
			pw, err := mw.CreatePart(ph)
			if err != nil {
				return h, nil, err
			}
			if _, err := pw.Write(pb); err != nil {
				return h, nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return h, nil, err
		}
		return h, out.Bytes(), nil
	}
	if bytes.IndexByte(body, 0) < 0 {
		return h, body, nil
	}
	h.Set("Content-Transfer-Encoding", "base64")
	var out bytes.Buffer
	enc := base64.StdEncoding.EncodeToString(body)
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc + "\r\n")
	return h, out.Bytes(), nil
}
