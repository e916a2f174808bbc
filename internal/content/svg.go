package content

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// SVG images are a current phishing carrier: opened from a mail, an .svg
// goes to the browser, which runs the script or renders the HTML form it
// holds (credential phishing, HTML smuggling of a payload). A logo or a
// diagram needs none of that, so instead of blocking the type (which has
// honest uses) the scanner refuses SVGs with active content: script
// elements, event-handler attributes, javascript:/vbscript: or HTML data:
// URLs, embedded HTML (foreignObject, iframe, embed, object) and entity
// definitions (which could assemble any of these out of sight).

// isSVG reports whether a file is an SVG image by type, name or content.
// HTML and plain-text bodies are not sniffed: an HTML mail may contain
// inline SVG, and mail clients do not run its scripts.
func isSVG(head []byte, names []string, ctype string) bool {
	if ctype == "image/svg+xml" {
		return true
	}
	for _, n := range names {
		if _, ext := splitExt(cleanName(n)); ext == "svg" {
			return true
		}
	}
	switch ctype {
	case "", "application/octet-stream", "text/xml", "application/xml":
	default:
		return false
	}
	h := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n")
	if !(bytes.HasPrefix(h, []byte("<?xml")) || bytes.HasPrefix(h, []byte("<svg")) || bytes.HasPrefix(h, []byte("<!--")) ||
		bytes.HasPrefix(bytes.ToLower(h), []byte("<!doctype svg"))) {
		return false
	}
	return bytes.Contains(bytes.ToLower(h), []byte("<svg"))
}

var svgActive = []struct{ pat, what string }{
	{"<script", "a script"},
	{"<foreignobject", "embedded HTML"},
	{"<iframe", "an embedded frame"},
	{"<embed", "an embedded object"},
	{"<object", "an embedded object"},
	{"<!entity", "entity definitions"},
	{"javascript:", "a script link"},
	{"vbscript:", "a script link"},
	{"data:text/html", "embedded HTML"},
	{"data:application/xhtml", "embedded HTML"},
	{"data:image/svg", "a nested SVG"},
	{"data:text/javascript", "a script link"},
	{"data:application/javascript", "a script link"},
	{"data:application/ecmascript", "a script link"},
}

var svgEventHandler = regexp.MustCompile(`[\s"'/]on[a-z]+\s*=`)

// activeSVG returns what active content an SVG document holds, or "".
// Character references are decoded and white space removed first, as a
// browser does inside a URL ("java&#x09;script:").
func activeSVG(b []byte) string {
	return activeSVGFrom(bytes.NewReader(b), int64(len(b)))
}

// activeSVGFrom is activeSVG for the size bytes of r. It holds two
// copies at most: the lower-cased text with character references decoded,
// and its compact form without white space and control characters.
// ASCII lower-casing is enough: every pattern is ASCII, and browsers
// match element, attribute and scheme names in ASCII.
func activeSVGFrom(r io.Reader, size int64) string {
	s := lowerDecode(bufio.NewReader(r), size)
	compact := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c, n := utf8.DecodeRune(s[i:])
		if !unicode.IsSpace(c) && !unicode.IsControl(c) {
			compact = append(compact, s[i:i+n]...)
		}
		i += n
	}
	for _, a := range svgActive {
		if bytes.Contains(compact, []byte(a.pat)) {
			return a.what
		}
	}
	if svgEventHandler.Match(s) {
		return "an event handler"
	}
	return ""
}

// lowerDecode reads r, decodes numeric character references (&#106;
// &#x6a;, with or without the semicolon) and the five predefined XML
// entities, and lower-cases ASCII letters, in one pass. The result is
// never longer than the input, so size (the input's length) is its
// capacity, and nothing else is allocated per byte.
func lowerDecode(r *bufio.Reader, size int64) []byte {
	out := make([]byte, 0, size)
	var ahead [12]byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return out
		}
		if c != '&' {
			out = append(out, lower(c))
			continue
		}
		p, _ := r.Peek(len(ahead))
		rest := ahead[:copy(ahead[:], p)]
		for i, b := range rest {
			rest[i] = lower(b)
		}
		var n int
		out, n = appendCharRef(out, rest)
		_, _ = r.Discard(n)
	}
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// appendCharRef appends the decoding of the reference that rest (what
// follows an '&', lower-cased) starts with, and reports how much of rest
// it used; without a reference it appends "&" and uses nothing. A
// decoded ASCII letter is lower-cased too ("&#x4A;avascript:").
func appendCharRef(out, rest []byte) ([]byte, int) {
	if len(rest) > 0 && rest[0] == '#' {
		j, base := 1, uint64(10)
		if len(rest) > 1 && rest[1] == 'x' {
			j, base = 2, 16
		}
		k, n := j, uint64(0)
		for ; k < len(rest) && k < j+8; k++ {
			d := bytes.IndexByte([]byte("0123456789abcdef"[:base]), rest[k])
			if d < 0 {
				break
			}
			n = n*base + uint64(d)
		}
		if k > j && n <= unicode.MaxRune {
			if k < len(rest) && rest[k] == ';' {
				k++
			}
			if n < utf8.RuneSelf {
				return append(out, lower(byte(n))), k
			}
			return utf8.AppendRune(out, rune(n)), k
		}
	}
	for _, e := range xmlEntities {
		if bytes.HasPrefix(rest, []byte(e.name)) {
			return append(out, e.text...), len(e.name)
		}
	}
	return append(out, '&'), 0
}

var xmlEntities = []struct{ name, text string }{
	{"lt;", "<"}, {"gt;", ">"}, {"amp;", "&"}, {"quot;", `"`}, {"apos;", "'"},
}
