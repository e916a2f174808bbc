package mimeconv

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strings"
	"unicode/utf8"
)

const (
	// maxDepth bounds the nesting of multiparts and message/rfc822 that
	// is walked; deeper entities are treated as opaque leaves.
	maxDepth = 20
	// maxParts bounds the parts of one multipart that are split out; the
	// rest stays in the last part.
	maxParts = 1000
	// foldAt is where rewritten header fields are folded (RFC 5322 §2.1.1).
	foldAt = 78
)

// converter walks a message and rewrites what its flags ask for; long lines
// are always dealt with.
type converter struct {
	body8bit       bool // make bodies 7-bit (no 8BITMIME)
	headers8bit    bool // encode 8-bit header text at every level
	topHeaders8bit bool // encode 8-bit header text of the top-level header only
}

// field is one header field as written: raw holds its lines with their
// CRLFs.
type field struct {
	raw   []byte
	name  string // as written, "" for a line that is not a field
	lname string // lower case
}

// value is the field body after the colon, folds included, CRLF removed.
func (f field) value() string {
	i := bytes.IndexByte(f.raw, ':')
	if f.name == "" || i < 0 {
		return string(bytes.TrimSuffix(f.raw, []byte("\r\n")))
	}
	return string(bytes.TrimSuffix(f.raw[i+1:], []byte("\r\n")))
}

// unfold removes the CRLFs of folds.
func unfold(v string) string {
	return strings.ReplaceAll(v, "\r\n", "")
}

// headerEnd returns the length of msg's header including the empty line
// that ends it (or all of msg when there is none). msg has CRLF line ends.
func headerEnd(msg []byte) int {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return 2
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return len(msg)
}

// splitMessage splits msg (CRLF line ends) into header fields, the empty
// line ending the header ("\r\n", or nil when there is none) and the body.
func splitMessage(msg []byte) (fields []field, sep, body []byte) {
	end := headerEnd(msg)
	hdr := msg[:end]
	body = msg[end:]
	if bytes.HasSuffix(hdr, []byte("\r\n\r\n")) || bytes.Equal(hdr, []byte("\r\n")) {
		sep = hdr[len(hdr)-2:]
		hdr = hdr[:len(hdr)-2]
	}
	for len(hdr) > 0 {
		// A field runs to the next line that does not start with WSP.
		n := 0
		for {
			i := bytes.Index(hdr[n:], []byte("\r\n"))
			if i < 0 {
				n = len(hdr)
				break
			}
			n += i + 2
			if n >= len(hdr) || (hdr[n] != ' ' && hdr[n] != '\t') {
				break
			}
		}
		raw := hdr[:n]
		hdr = hdr[n:]
		f := field{raw: raw}
		if i := bytes.IndexByte(raw, ':'); i > 0 {
			name := string(bytes.TrimRight(raw[:i], " \t"))
			if isFieldName(name) {
				f.name = name
				f.lname = strings.ToLower(name)
			}
		}
		fields = append(fields, f)
	}
	return fields, sep, body
}

func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

// get returns the unfolded, trimmed value of the first field named lname.
func get(fields []field, lname string) (string, int) {
	for i, f := range fields {
		if f.lname == lname {
			return strings.TrimSpace(unfold(f.value())), i
		}
	}
	return "", -1
}

// set replaces the first field named lname (and drops any further ones) or
// appends it.
func set(fields []field, name, value string) []field {
	lname := strings.ToLower(name)
	nf := field{raw: []byte(name + ": " + value + "\r\n"), name: name, lname: lname}
	out := fields[:0:0]
	done := false
	for _, f := range fields {
		if f.lname == lname {
			if !done {
				out = append(out, nf)
				done = true
			}
			continue
		}
		out = append(out, f)
	}
	if !done {
		out = append(out, nf)
	}
	return out
}

// message converts a whole message (or an encapsulated one).
func (c *converter) message(msg []byte, depth int) ([]byte, bool, error) {
	out, changed, encoded, err := c.entity(msg, "text/plain", depth, true)
	if err != nil || !encoded {
		return out, changed, err
	}
	// RFC 2045 §4: a message with a Content-Transfer-Encoding we set needs
	// MIME-Version.
	fields, sep, body := splitMessage(out)
	if _, i := get(fields, "mime-version"); i >= 0 {
		return out, changed, nil
	}
	fields = append(fields, field{raw: []byte("MIME-Version: 1.0\r\n"), name: "MIME-Version", lname: "mime-version"})
	return join(fields, sep, body), true, nil
}

func join(fields []field, sep, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range fields {
		b.Write(f.raw)
	}
	if sep == nil && len(body) > 0 {
		sep = []byte("\r\n")
	}
	b.Write(sep)
	b.Write(body)
	return b.Bytes()
}

// entity converts one MIME entity (header and body). defType is the
// default Content-Type (text/plain, or message/rfc822 in multipart/digest).
// top says whether the header is a message's header. encoded reports that
// a Content-Transfer-Encoding was set in this message (not counting
// encapsulated messages, which add their own MIME-Version).
func (c *converter) entity(ent []byte, defType string, depth int, top bool) (out []byte, changed, encoded bool, err error) {
	fields, sep, body := splitMessage(ent)

	// Header fields.
	encodeHdr := c.headers8bit || (c.topHeaders8bit && top && depth == 0)
	newFields := make([]field, 0, len(fields))
	for _, f := range fields {
		nf := f
		if encodeHdr && Has8bit(f.raw) {
			nf, err = encodeField(f)
			if err != nil {
				return nil, false, false, err
			}
		}
		if hasLongLine(nf.raw) {
			nf.raw = foldLong(nf.raw)
		}
		if !bytes.Equal(nf.raw, f.raw) {
			changed = true
		}
		newFields = append(newFields, nf)
	}
	fields = newFields

	ctv, _ := get(fields, "content-type")
	mediaType, params := parseType(ctv, defType)
	cte, _ := get(fields, "content-transfer-encoding")
	cte = strings.ToLower(cte)
	identity := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"

	isMulti := strings.HasPrefix(mediaType, "multipart/") && params["boundary"] != "" && identity && depth < maxDepth
	if isMulti {
		if _, _, _, ok := splitMultipart(body, params["boundary"]); !ok {
			// No delimiter at all: treat it as text so nothing is lost.
			isMulti = false
		}
	}
	var newBody []byte
	bodyChanged := false
	switch {
	case isMulti:
		childType := "text/plain"
		if mediaType == "multipart/digest" {
			childType = "message/rfc822"
		}
		boundary := params["boundary"]
		newBoundary := boundary
		if c.body8bit && Has8bit([]byte(boundary)) {
			// A boundary is ASCII (RFC 2046 §5.1.1 bchars); an 8-bit one
			// would stay 8-bit on every delimiter line. Replace it with
			// a new ASCII one, in the header and on the delimiter lines.
			if newBoundary, err = freshBoundary(body); err != nil {
				return nil, false, false, err
			}
			np := make(map[string]string, len(params))
			for k, v := range params {
				np[k] = v
			}
			np["boundary"] = newBoundary
			ct := mime.FormatMediaType(mediaType, np)
			if ct == "" || Has8bit([]byte(ct)) {
				return nil, false, false, headerError("Content-Type")
			}
			fields = set(fields, "Content-Type", ct)
			for i := range fields {
				if fields[i].lname == "content-type" {
					fields[i].raw = foldValue(fields[i].name, ct)
				}
			}
			changed = true
		}
		newBody, bodyChanged, encoded, err = c.multipart(body, boundary, newBoundary, childType, depth)
		if err != nil {
			return nil, false, false, err
		}
		if c.body8bit && cte != "" && cte != "7bit" && !Has8bit(newBody) {
			fields = set(fields, "Content-Transfer-Encoding", "7bit")
			changed = true
		}
	case mediaType == "message/rfc822" && identity && depth < maxDepth:
		newBody, bodyChanged, err = c.message(body, depth+1)
		if errors.Is(err, ErrNeedsSMTPUTF8) && c.body8bit {
			// RFC 6532 §3.7: an encapsulated UTF-8 message that cannot be
			// downgraded travels as message/global, which may be encoded.
			fields = set(fields, "Content-Type", "message/global")
			newBody, err = encodeBody(body, "base64"), nil
			fields = set(fields, "Content-Transfer-Encoding", "base64")
			changed, bodyChanged, encoded = true, true, true
		}
		if err != nil {
			return nil, false, false, err
		}
		if c.body8bit && cte != "" && cte != "7bit" && !Has8bit(newBody) {
			fields = set(fields, "Content-Transfer-Encoding", "7bit")
			changed = true
		}
	default:
		var newCTE string
		newBody, newCTE = c.leaf(body, mediaType, cte, identity)
		if newCTE != "" {
			fields = set(fields, "Content-Transfer-Encoding", newCTE)
			changed, encoded = true, true
			if ctv == "" && defType == "text/plain" && Has8bit(body) {
				// The default is us-ascii (RFC 2045 §5.2), which the
				// decoded octets are not: name what they are.
				charset := "unknown-8bit" // RFC 1428
				if utf8.Valid(body) {
					charset = "utf-8"
				}
				fields = set(fields, "Content-Type", "text/plain; charset="+charset)
			}
		}
		bodyChanged = !bytes.Equal(newBody, body)
	}
	if !changed && !bodyChanged {
		return ent, false, encoded, nil
	}
	return join(fields, sep, newBody), true, encoded, nil
}

// parseType returns the lower-case media type and parameters of a
// Content-Type value; an absent or unparsable one gives defType
// (RFC 2045 §5.2).
func parseType(v, defType string) (string, map[string]string) {
	if v == "" {
		return defType, nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		// Read an unquoted 8-bit value as encodeParams does.
		if mt, params, err := mime.ParseMediaType(quote8bitParams(v)); err == nil {
			return mt, params
		}
		if errors.Is(err, mime.ErrInvalidMediaParameter) && mt != "" {
			return mt, params
		}
		return "text/plain", nil
	}
	return mt, params
}

// leaf converts a leaf body. newCTE is the Content-Transfer-Encoding to
// set, "" to keep the header as it is.
func (c *converter) leaf(body []byte, mediaType, cte string, identity bool) (out []byte, newCTE string) {
	long := hasLongLine(body)
	eight := c.body8bit && Has8bit(body)
	if !long && !eight {
		return body, ""
	}
	switch cte {
	case "quoted-printable":
		// Escaping a raw 8-bit octet or adding a soft line break keeps the
		// decoded content the same.
		return fixQP(body, c.body8bit), ""
	case "base64":
		// Decoders skip octets outside the alphabet and line breaks.
		return rewrapBase64(body), ""
	}
	if !identity {
		// An unknown encoding (x-uuencode, …): what it decodes to is
		// unknown to us, so the octets are the content; base64 keeps them.
		return encodeBody(body, "base64"), "base64"
	}
	enc := "base64"
	if (strings.HasPrefix(mediaType, "text/") || strings.HasPrefix(mediaType, "message/") || strings.HasPrefix(mediaType, "multipart/")) &&
		mostlyASCII(body) {
		enc = "quoted-printable"
	}
	return encodeBody(body, enc), enc
}

// mostlyASCII: under half of the octets are 8-bit and there is no NUL, so
// quoted-printable stays readable and not much larger than base64.
func mostlyASCII(b []byte) bool {
	n := 0
	for _, c := range b {
		if c == 0 {
			return false
		}
		if c >= 0x80 {
			n++
		}
	}
	return n*2 < len(b)
}

// encodeBody encodes b with enc ("quoted-printable" or "base64"); the
// result has CRLF line ends, lines of at most 76 characters, and ends in
// CRLF exactly when b does (so a part's closing delimiter keeps its place).
func encodeBody(b []byte, enc string) []byte {
	var out bytes.Buffer
	if enc == "quoted-printable" {
		w := quotedprintable.NewWriter(&out)
		_, _ = w.Write(b) // writes to a bytes.Buffer do not fail
		_ = w.Close()
		return out.Bytes()
	}
	s := base64.StdEncoding.EncodeToString(b)
	for len(s) > 76 {
		out.WriteString(s[:76])
		out.WriteString("\r\n")
		s = s[76:]
	}
	out.WriteString(s)
	if bytes.HasSuffix(b, []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	return out.Bytes()
}

// fixQP escapes raw 8-bit octets (when esc8) and adds soft line breaks to
// lines longer than 76, without splitting an =XX escape.
func fixQP(body []byte, esc8 bool) []byte {
	var out bytes.Buffer
	const hex = "0123456789ABCDEF"
	n := 0 // length of the current output line
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\r' && i+1 < len(body) && body[i+1] == '\n' {
			out.WriteString("\r\n")
			i++
			n = 0
			continue
		}
		var tok []byte
		switch {
		case c >= 0x80 && esc8:
			tok = []byte{'=', hex[c>>4], hex[c&0xf]}
		case c == '=' && i+2 < len(body) && isHex(body[i+1]) && isHex(body[i+2]):
			tok = body[i : i+3]
			i += 2
		default:
			tok = []byte{c}
		}
		if n+len(tok) > 75 && !(len(tok) == 1 && tok[0] == '=' && i+1 < len(body) && body[i+1] == '\r') {
			out.WriteString("=\r\n")
			n = 0
		}
		out.Write(tok)
		n += len(tok)
	}
	return out.Bytes()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}

// rewrapBase64 drops everything that is not base64 alphabet and rewraps at
// 76 characters.
func rewrapBase64(body []byte) []byte {
	var clean []byte
	for _, c := range body {
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' {
			clean = append(clean, c)
		}
	}
	var out bytes.Buffer
	for len(clean) > 76 {
		out.Write(clean[:76])
		out.WriteString("\r\n")
		clean = clean[76:]
	}
	out.Write(clean)
	if bytes.HasSuffix(body, []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	return out.Bytes()
}

// multipart converts the parts of a multipart body; preamble and epilogue
// (which readers ignore) get their 8-bit octets replaced by '?' and long
// lines broken.
//
// newBoundary replaces boundary on the delimiter lines (the caller changed
// the header to match); pass boundary to keep it.
func (c *converter) multipart(body []byte, boundary, newBoundary, childType string, depth int) (out []byte, changed, encoded bool, err error) {
	parts, preEnd, epiStart, ok := splitMultipart(body, boundary)
	if !ok {
		return body, false, false, nil // the caller checked
	}
	delim := func(line []byte) []byte {
		if newBoundary == boundary {
			return line
		}
		return bytes.Replace(line, []byte("--"+boundary), []byte("--"+newBoundary), 1)
	}
	var b bytes.Buffer
	b.Grow(len(body))
	b.Write(c.opaque(body[:preEnd]))
	prev := preEnd
	for _, p := range parts {
		b.Write(delim(body[prev:p.start])) // delimiter line
		nb, _, enc, err := c.entity(body[p.start:p.end], childType, depth+1, false)
		if err != nil {
			return nil, false, false, err
		}
		encoded = encoded || enc
		b.Write(nb)
		prev = p.end
	}
	b.Write(delim(body[prev:epiStart])) // close delimiter line
	b.Write(c.opaque(body[epiStart:]))
	out = b.Bytes()
	if bytes.Equal(out, body) {
		return body, false, encoded, nil
	}
	return out, true, encoded, nil
}

// opaque sanitises text that readers ignore (preamble, epilogue).
func (c *converter) opaque(b []byte) []byte {
	if !(c.body8bit && Has8bit(b)) && !hasLongLine(b) {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/MaxLine*2)
	n := 0
	for _, ch := range b {
		if ch >= 0x80 && c.body8bit {
			ch = '?'
		}
		if ch == '\n' {
			n = -1
		} else if n == MaxLine && ch != '\r' {
			out = append(out, '\r', '\n')
			n = 0
		}
		out = append(out, ch)
		n++
	}
	return out
}

// span is a part's content inside a multipart body.
type span struct{ start, end int }

// splitMultipart finds the parts of a multipart body (RFC 2046 §5.1.1): a
// delimiter is "--boundary" at the start of a line, optionally followed by
// "--" (the close delimiter) and whitespace; the CRLF before it belongs to
// it. preEnd is the end of the preamble, epiStart the start of the
// epilogue (after the close delimiter line). ok is false when there is no
// delimiter. Without a close delimiter the last part runs to the end.
func splitMultipart(body []byte, boundary string) (parts []span, preEnd, epiStart int, ok bool) {
	dash := []byte("--" + boundary)
	open := -1 // start of the current part's content
	for pos := 0; pos <= len(body) && len(parts) < maxParts-1; {
		eol := bytes.Index(body[pos:], []byte("\r\n"))
		next := len(body) + 1
		lineEnd := len(body)
		if eol >= 0 {
			lineEnd = pos + eol
			next = lineEnd + 2
		}
		line := body[pos:lineEnd]
		if bytes.HasPrefix(line, dash) {
			rest := line[len(dash):]
			closing := bytes.HasPrefix(rest, []byte("--"))
			if closing {
				rest = rest[2:]
			}
			if len(bytes.Trim(rest, " \t")) == 0 {
				before := pos
				if pos >= 2 {
					before = pos - 2 // the CRLF belongs to the delimiter
				}
				if open < 0 {
					preEnd = before
					ok = true
				} else {
					parts = append(parts, span{open, max(open, before)})
				}
				open = min(next, len(body))
				if closing {
					return parts, preEnd, open, ok
				}
			}
		}
		pos = next
	}
	if open >= 0 {
		parts = append(parts, span{open, len(body)})
	}
	return parts, preEnd, len(body), ok
}

// freshBoundary returns an ASCII boundary that occurs nowhere in body. It is
// derived from body, so converting the same message twice gives the same
// bytes. "=_" cannot occur in quoted-printable or base64 text.
func freshBoundary(body []byte) (string, error) {
	sum := sha256.Sum256(body)
	for i := range 16 {
		b := fmt.Sprintf("=_mamori_%x_%d", sum[:12], i)
		if !bytes.Contains(body, []byte("--"+b)) {
			return b, nil
		}
	}
	return "", &Error{Status: "5.6.3", Reason: "no ASCII multipart boundary could be chosen for a server that does not offer 8BITMIME"}
}
