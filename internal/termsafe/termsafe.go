// Package termsafe makes text that an outsider controls safe to print on a
// terminal.
//
// Subjects, addresses, HELO names, rule details and remote servers' replies
// all reach `mamori queue list`, `guard list` and friends. Printed raw, an
// ESC sequence in a subject can clear the screen, retitle the window, move
// the cursor to hide lines or (on some terminals) write into the clipboard,
// and a right-to-left override makes "exe.pdf" out of "fdp.exe". Every such
// character is therefore printed as a visible escape instead: C0 controls
// and DEL as \x1b (with \t, \n, \r for the common three), C1 controls, line
// separators and bidirectional controls as \u202e, and bytes that are not
// UTF-8 as \xff. A backslash is doubled so that an escape in the output
// always means an escaped character and cannot be forged by the text.
//
// JSON output does not go through String (it must stay the raw value); JSON
// escapes its input with \u sequences that a terminal does not interpret,
// and JSON closes the few gaps json.Marshal leaves (DEL, C1, bidi).
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// unsafeRune reports whether r must not reach a terminal as it is.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f: // C1 controls (0x9b is CSI on 8-bit terminals)
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE RLE PDF LRO RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI RLI FSI PDI
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// String returns s with every control character, bidi control and invalid
// byte escaped visibly, and backslashes doubled. The result holds no
// character for which unsafeRune is true and is valid UTF-8.
func String(s string) string { return escape(s, false) }

// Lines is String for multi-line text (an error list, a message shown on a
// terminal): it keeps line feeds, CRLF line ends and tabs as they are.
func Lines(s string) string { return escape(s, true) }

func escape(s string, lines bool) string {
	if clean(s, lines) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && w == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case lines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case lines && r == '\r' && i+1 < len(s) && s[i+1] == '\n':
			b.WriteByte('\r')
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+w])
		}
		i += w
	}
	return b.String()
}

// clean is the fast path: plain printable text is returned unchanged.
func clean(s string, lines bool) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == '\\' || c == 0x7f || (c < 0x20 && !(lines && (c == '\n' || c == '\t'))) {
				return false
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && w == 1) || unsafeRune(r) {
			return false
		}
		i += w
	}
	return true
}

// JSON makes encoded JSON safe for a terminal without changing its value:
// DEL, C1 controls and bidi controls, which encoding/json writes raw, become
// \u escapes (they can only occur inside strings, where that is the same
// character). Input must be valid JSON from encoding/json (valid UTF-8).
func JSON(b []byte) []byte {
	need := false
	for i := 0; i < len(b); {
		r, w := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= 0x80 && unsafeRune(r)) {
			need = true
			break
		}
		i += w
	}
	if !need {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, w := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= 0x80 && unsafeRune(r)) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+w]...)
		}
		i += w
	}
	return out
}
