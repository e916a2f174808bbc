package content

import (
	"io"
	"mime"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// lenientDecoder decodes RFC 2047 encoded words whatever the charset: for
// extension checks only the ASCII letters matter, so unknown charsets are
// passed through as raw bytes instead of failing.
var lenientDecoder = &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}

// headerNames extracts every file name candidate from a raw Content-Type or
// Content-Disposition value. It complements the strict parser of
// go-message, which drops the whole header on duplicate parameters and
// drops RFC 2231 values in charsets it does not know; a mail client may
// still honour those, so the scanner must see them too.
func headerNames(raw string) []string {
	var out []string
	type section struct {
		idx int
		val string
	}
	sections := map[string][]section{}
	for _, param := range splitParams(raw) {
		key, val, ok := strings.Cut(param, "=")
		if !ok {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		val = unquote(strings.TrimSpace(val))
		base, rest, star := strings.Cut(key, "*")
		if base != "filename" && base != "name" {
			continue
		}
		if !star {
			out = append(out, decodeWords(val))
			continue
		}
		// RFC 2231: name*=charset'lang'pct, name*0=..., name*1*=pct...
		extended := strings.HasSuffix(rest, "*") || rest == ""
		num := strings.TrimSuffix(rest, "*")
		idx := 0
		if num != "" {
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n > 100 {
				continue
			}
			idx = n
		}
		if extended {
			if idx == 0 {
				if parts := strings.SplitN(val, "'", 3); len(parts) == 3 {
					val = parts[2]
				}
			}
			if dec, err := url.PathUnescape(val); err == nil {
				val = dec
			}
		}
		sections[base] = append(sections[base], section{idx, val})
	}
	for _, base := range []string{"filename", "name"} {
		secs := sections[base]
		if len(secs) == 0 {
			continue
		}
		sort.SliceStable(secs, func(i, j int) bool { return secs[i].idx < secs[j].idx })
		var b strings.Builder
		for _, s := range secs {
			b.WriteString(s.val)
		}
		out = append(out, b.String())
	}
	return out
}

// splitParams splits a header value on ';' outside double quotes and drops
// the first element (the media type or disposition).
func splitParams(s string) []string {
	var out []string
	inQuote, esc := false, false
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\' && inQuote:
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == ';' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	out = append(out, s[start:])
	return out[1:]
}

func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' {
		return s
	}
	s = s[1:]
	if i := strings.LastIndexByte(s, '"'); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	esc := false
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && !esc {
			esc = true
			continue
		}
		esc = false
		b.WriteByte(s[i])
	}
	return b.String()
}

func decodeWords(s string) string {
	if d, err := lenientDecoder.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// isBidiOverride reports explicit direction overrides, embeddings and
// isolates: the characters used to display "exe.pdf" for "fdp.exe".
func isBidiOverride(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// isInvisible reports characters a file manager does not show.
func isInvisible(r rune) bool {
	switch {
	case isBidiOverride(r), r == 0x200E, r == 0x200F, r == 0x061C,
		r >= 0x200B && r <= 0x200D, r == 0xFEFF, r == 0x00AD:
		return true
	}
	return unicode.IsControl(r)
}

// nameHit is the classification of one file name.
type nameHit struct {
	rule Rule
	ext  string
}

// classifyName decides whether a declared file name is dangerous. The last
// extension is what Windows acts on, after it ignores trailing dots and
// spaces; invisible characters are removed first, and a name truncated at
// NUL is checked as well since some clients cut there.
func (p Policy) classifyName(name string) (nameHit, bool) {
	if name == "" {
		return nameHit{}, false
	}
	variants := []string{name}
	if i := strings.IndexByte(name, 0); i >= 0 {
		variants = append(variants, name[:i])
	}
	hasOverride := strings.ContainsFunc(name, isBidiOverride)
	for _, v := range variants {
		stem, ext := splitExt(cleanName(v))
		if ext == "" || !p.BlockedExt[ext] {
			continue
		}
		if hasOverride {
			return nameHit{RuleRTLOverride, ext}, true
		}
		if _, inner := splitExt(strings.TrimRightFunc(stem, unicode.IsSpace)); inner != "" {
			return nameHit{RuleDoubleExt, ext}, true
		}
		return nameHit{RuleBlockedExt, ext}, true
	}
	if hasOverride {
		// An override in a file name has no honest use; whatever the
		// extension, the displayed name lies about it.
		return nameHit{RuleRTLOverride, ""}, true
	}
	return nameHit{}, false
}

// cleanName returns the base name that Windows acts on: invisible
// characters removed, directories and an NTFS stream suffix
// ("x.exe::$DATA") cut, trailing dots and spaces trimmed.
func cleanName(v string) string {
	v = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || isInvisible(r) {
			return -1
		}
		return r
	}, v)
	if i := strings.LastIndexAny(v, `/\`); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.Index(v, ":"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimRightFunc(v, func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
}

// splitExt returns the stem and the lower-case last extension (trimmed of
// spaces, without the dot).
func splitExt(name string) (stem, ext string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return name, ""
	}
	return name[:i], strings.ToLower(strings.TrimSpace(name[i+1:]))
}

// safeASCII maps s to printable ASCII ('?' for anything else) and cuts it
// to max characters.
func safeASCII(s string, maxLen int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n >= maxLen {
			break
		}
		if isInvisible(r) && r != 0 && !unicode.IsControl(r) {
			continue // drop bidi/zero-width characters silently
		}
		if r < 0x20 || r > 0x7E {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

const maxReply = 200

// joinPath renders a part path for Verdict.Part: ASCII, ≤ 200 characters,
// keeping the end (the leaf is the useful bit) when too long.
func joinPath(path []string) string {
	labels := make([]string, len(path))
	for i, l := range path {
		labels[i] = safeASCII(l, 80)
	}
	s := strings.Join(labels, " > ")
	if len(s) > maxReply {
		s = "..." + s[len(s)-(maxReply-3):]
	}
	return s
}
