package content

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"unicode"
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
	s := decodeCharRefs(strings.ToLower(string(b)))
	compact := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	for _, a := range svgActive {
		if strings.Contains(compact, a.pat) {
			return a.what
		}
	}
	if svgEventHandler.MatchString(s) {
		return "an event handler"
	}
	return ""
}

// decodeCharRefs decodes numeric character references (&#106; &#x6a;,
// with or without the semicolon) and the five predefined XML entities.
func decodeCharRefs(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '&' {
			b.WriteByte(s[i])
			continue
		}
		rest := s[i+1:]
		if strings.HasPrefix(rest, "#") {
			j, base := 1, 10
			if strings.HasPrefix(rest, "#x") {
				j, base = 2, 16
			}
			k := j
			for k < len(rest) && k < j+8 && strings.IndexByte("0123456789abcdef"[:base], rest[k]) >= 0 {
				k++
			}
			if k > j {
				if n, err := strconv.ParseUint(rest[j:k], base, 32); err == nil && n <= unicode.MaxRune {
					b.WriteRune(rune(n))
					if k < len(rest) && rest[k] == ';' {
						k++
					}
					i += k
					continue
				}
			}
		}
		replaced := false
		for name, r := range map[string]string{"lt;": "<", "gt;": ">", "amp;": "&", "quot;": `"`, "apos;": "'"} {
			if strings.HasPrefix(rest, name) {
				b.WriteString(r)
				i += len(name)
				replaced = true
				break
			}
		}
		if !replaced {
			b.WriteByte('&')
		}
	}
	return b.String()
}
