package content

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// uuEncodings are the Content-Transfer-Encoding values mailers use for a
// uuencoded part; go-message does not decode them.
var uuEncodings = map[string]bool{
	"x-uuencode": true, "uuencode": true, "x-uue": true, "uue": true,
}

// maxEmbedded bounds the encoded blocks decoded per body.
const maxEmbedded = 64

// embedded is a file found encoded inside a text body.
type embedded struct {
	name string
	data []byte
}

// findEmbedded decodes the uuencoded ("begin 644 name" ... "end"),
// base64 uuencoded ("begin-base64 644 name" ... "====") and yEnc
// ("=ybegin ... name=NAME" ... "=yend") blocks of a text body, the way
// mail clients that show them as attachments do: leniently, to the end of
// the block or of the first line that cannot belong to it. Decoded data is
// never larger than b, and at most maxEmbedded blocks are returned.
func findEmbedded(b []byte) []embedded {
	var out []embedded
	for len(b) > 0 && len(out) < maxEmbedded {
		line, rest := nextLine(b)
		b = rest
		switch {
		case bytes.HasPrefix(line, []byte("begin ")):
			name, ok := uuBeginName(line[len("begin "):])
			if !ok {
				continue
			}
			var data []byte
			data, b = uudecodeBlock(b)
			out = append(out, embedded{name: name, data: data})
		case bytes.HasPrefix(line, []byte("begin-base64 ")):
			name, ok := uuBeginName(line[len("begin-base64 "):])
			if !ok {
				continue
			}
			var data []byte
			data, b = base64Block(b)
			out = append(out, embedded{name: name, data: data})
		case bytes.HasPrefix(line, []byte("=ybegin ")):
			name := ""
			if i := bytes.Index(line, []byte(" name=")); i >= 0 {
				name = strings.TrimSpace(string(line[i+len(" name="):]))
			}
			var data []byte
			data, b = yencBlock(b)
			out = append(out, embedded{name: name, data: data})
		}
	}
	return out
}

// nextLine splits off the first line, without its CR LF or LF.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		line, rest = b, nil
	} else {
		line, rest = b[:i], b[i+1:]
	}
	return bytes.TrimRight(line, "\r"), rest
}

// uuBeginName parses "MODE NAME" after "begin ": an octal mode of one to
// six digits, then the file name (the rest of the line).
func uuBeginName(s []byte) (string, bool) {
	mode, name, ok := bytes.Cut(s, []byte(" "))
	if !ok || len(mode) == 0 || len(mode) > 6 {
		return "", false
	}
	for _, c := range mode {
		if c < '0' || c > '7' {
			return "", false
		}
	}
	n := strings.TrimSpace(string(name))
	return n, n != ""
}

// The block decoders run twice: once to measure the decoded size, then
// into a slice of exactly that size, so a block costs its decoded size in
// memory and no more (no growth by doubling, nothing per line).

// uudecodeBlock decodes uuencoded lines until "end", an empty line or a
// line that is not uuencoding, and returns the data and what follows.
func uudecodeBlock(b []byte) (data, rest []byte) {
	n, _ := uuWalk(b, nil)
	data = make([]byte, 0, n)
	_, rest = uuWalk(b, &data)
	return data, rest
}

// uuWalk scans a uuencoded block, appending its decoding to *dst unless
// dst is nil, and returns the decoded length and what follows the block.
func uuWalk(b []byte, dst *[]byte) (int, []byte) {
	total := 0
	for len(b) > 0 {
		line, next := nextLine(b)
		if string(line) == "end" {
			return total, next
		}
		if len(line) == 0 {
			return total, b
		}
		n, ok := uudecodeLine(line, dst)
		if !ok {
			return total, b
		}
		total += n
		b = next
	}
	return total, b
}

// uudecodeLine decodes one line: a length character, then groups of four
// characters for three bytes each. Characters are ' '..'`' ('`' is zero);
// trailing spaces that a mailer stripped are taken as zeros. It appends
// the decoded bytes to *dst unless dst is nil, and returns their count.
func uudecodeLine(line []byte, dst *[]byte) (int, bool) {
	for _, c := range line {
		if c < ' ' || c > '`' {
			return 0, false
		}
	}
	n := int((line[0] - ' ') & 63)
	if n == 0 {
		return 0, true // the "`" line before "end"
	}
	enc := line[1:]
	need := (n + 2) / 3 * 4
	// Allow a mailer to have stripped trailing spaces (zeros), but not a
	// line that is mostly missing.
	if len(enc) < need-3 {
		return 0, false
	}
	if dst == nil {
		return n, true
	}
	at := func(i int) byte {
		if i < len(enc) {
			return (enc[i] - ' ') & 63
		}
		return 0
	}
	out := *dst
	for i, left := 0, n; left > 0; i, left = i+4, left-3 {
		c0, c1, c2, c3 := at(i), at(i+1), at(i+2), at(i+3)
		group := [3]byte{c0<<2 | c1>>4, c1<<4 | c2>>2, c2<<6 | c3}
		out = append(out, group[:min(left, 3)]...)
	}
	*dst = out
	return n, true
}

// base64Block decodes "begin-base64" lines until "====".
func base64Block(b []byte) (data, rest []byte) {
	size, rest := base64Walk(b, nil)
	enc := make([]byte, 0, size)
	base64Walk(b, &enc)
	dec := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, _ := base64.StdEncoding.Decode(dec, enc) // partial data on error is what a client shows
	return dec[:n], rest
}

// base64Walk gathers the encoded text of a block into *dst unless dst is
// nil, and returns its length and what follows the block.
func base64Walk(b []byte, dst *[]byte) (int, []byte) {
	total := 0
	for len(b) > 0 {
		line, next := nextLine(b)
		b = next
		if string(line) == "====" {
			break
		}
		line = bytes.TrimSpace(line)
		total += len(line)
		if dst != nil {
			*dst = append(*dst, line...)
		}
	}
	return total, b
}

// yencBlock decodes yEnc lines until "=yend"; "=ypart" lines are skipped.
func yencBlock(b []byte) (data, rest []byte) {
	n, _ := yencWalk(b, nil)
	data = make([]byte, 0, n)
	_, rest = yencWalk(b, &data)
	return data, rest
}

// yencWalk decodes a yEnc block, appending to *dst unless dst is nil, and
// returns the decoded length and what follows the block.
func yencWalk(b []byte, dst *[]byte) (int, []byte) {
	total := 0
	for len(b) > 0 {
		line, next := nextLine(b)
		b = next
		if bytes.HasPrefix(line, []byte("=yend")) {
			return total, b
		}
		if bytes.HasPrefix(line, []byte("=ypart ")) {
			continue
		}
		for i := 0; i < len(line); i++ {
			c := line[i]
			if c == '=' && i+1 < len(line) {
				i++
				c = line[i] - 64
			}
			total++
			if dst != nil {
				*dst = append(*dst, c-42)
			}
		}
	}
	return total, b
}

// inspectEncoded decodes the uuencoded and yEnc blocks of a text body and
// checks each like an attachment: name rules, then content. required says
// the part declared itself uuencoded, so finding no block means it could
// not be decoded.
func (w *walker) inspectEncoded(body []byte, here []string, depth int, required bool) bool {
	blocks := findEmbedded(body)
	if len(blocks) == 0 {
		if required {
			return w.hit(RuleMIMEMalformed, here, "attachment cannot be decoded")
		}
		return false
	}
	for _, e := range blocks {
		w.entries++
		if w.entries > w.p.MaxEntries {
			return w.hit(RuleArchiveBomb, here, "message holds too many encoded files")
		}
		label := e.name
		if label == "" {
			label = "(encoded file)"
		}
		inner := append(here[:len(here):len(here)], label)
		var names []string
		if e.name != "" {
			names = []string{e.name}
		}
		if w.checkNames(names, inner) {
			return true
		}
		if !w.stop {
			w.atts = append(w.atts, Attachment{Path: joinPath(inner), Filename: e.name, Size: int64(len(e.data))})
		}
		if w.inspectFile(file{names: names, data: e.data}, inner, depth) {
			return true
		}
	}
	return false
}
