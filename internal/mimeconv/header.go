package mimeconv

import (
	"bytes"
	"mime"
	"strings"
	"unicode/utf8"
)

// addressFields hold address lists (RFC 5322 §3.6.2, §3.6.3, §3.6.6 and
// common extensions): display names and comments may be encoded, the
// addresses themselves never.
var addressFields = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "to": true, "cc": true, "bcc": true,
	"resent-from": true, "resent-sender": true, "resent-to": true, "resent-cc": true,
	"resent-bcc": true, "resent-reply-to": true, "disposition-notification-to": true,
	"return-receipt-to": true, "errors-to": true, "mail-followup-to": true, "mail-reply-to": true,
	"return-path": true,
}

// structuredFields may not carry encoded words (RFC 2047 §5): 8-bit text
// in them cannot be downgraded.
var structuredFields = map[string]bool{
	"message-id": true, "in-reply-to": true, "references": true,
	"resent-message-id": true, "date": true, "resent-date": true, "mime-version": true,
	"content-transfer-encoding": true, "content-id": true, "dkim-signature": true,
	"authentication-results": true, "received-spf": true, "content-location": true,
	"content-md5": true, "domainkey-signature": true, "autocrypt": true,
}

// encodeField returns f with its 8-bit text encoded, folded at foldAt.
func encodeField(f field) (field, error) {
	if f.name == "" {
		return f, headerError("malformed")
	}
	v := strings.TrimLeft(unfold(f.value()), " \t")
	var err error
	switch {
	case addressFields[f.lname]:
		v, err = encodeAddressList(f.name, v)
	case f.lname == "content-type" || f.lname == "content-disposition":
		v, err = encodeParams(f.name, v)
	case f.lname == "received":
		// Trace information only: RFC 6857 §3.1.7 drops a UTF-8 FOR
		// clause; replacing the 8-bit octets keeps the rest readable.
		v = strings.Map(func(r rune) rune {
			if r >= 0x80 {
				return '?'
			}
			return r
		}, strings.ToValidUTF8(v, "?"))
	case structuredFields[f.lname] || strings.HasPrefix(f.lname, "arc-") || strings.HasPrefix(f.lname, "list-"):
		err = headerError(f.name)
	default:
		v = encodeUnstructured(v)
	}
	if err != nil {
		return f, err
	}
	return field{raw: foldValue(f.name, v), name: f.name, lname: f.lname}, nil
}

// encodeParams RFC 2231-encodes 8-bit parameter values, quoted or not (an
// unquoted 8-bit value is no RFC 2045 token, but mailers send them).
func encodeParams(name, v string) (string, error) {
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		mt, params, err = mime.ParseMediaType(quote8bitParams(v))
	}
	if err != nil {
		return "", headerError(name)
	}
	out := mime.FormatMediaType(mt, params)
	if out == "" || Has8bit([]byte(out)) {
		return "", headerError(name)
	}
	return out, nil
}

// encodeUnstructured encodes the stretch of v from its first to its last
// word with 8-bit octets (RFC 2047 §5(1)); ASCII words around it stay
// readable.
func encodeUnstructured(v string) string {
	first, last := -1, -1
	for i := 0; i < len(v); {
		j := i
		for j < len(v) && v[j] != ' ' && v[j] != '\t' {
			j++
		}
		if Has8bit([]byte(v[i:j])) {
			if first < 0 {
				first = i
			}
			last = j
		}
		for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
			j++
		}
		i = j
	}
	if first < 0 {
		return v
	}
	return v[:first] + encodeWords(v[first:last]) + v[last:]
}

// encodeWords renders s as RFC 2047 Q-encoded words of at most 75
// characters separated by spaces. The charset is utf-8, or unknown-8bit
// (RFC 1428) when s is not valid UTF-8. Only letters, digits and "!*+-/"
// stay literal, so the words are safe in phrases and comments too
// (RFC 2047 §5(3)); multi-byte characters are never split.
func encodeWords(s string) string {
	charset := "utf-8"
	valid := utf8.ValidString(s)
	if !valid {
		charset = "unknown-8bit"
	}
	prefix := "=?" + charset + "?Q?"
	room := 75 - len(prefix) - 2
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	var word strings.Builder
	flush := func() {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(prefix)
		b.WriteString(word.String())
		b.WriteString("?=")
		word.Reset()
	}
	for i := 0; i < len(s); {
		n := 1
		if valid {
			_, n = utf8.DecodeRuneInString(s[i:])
		}
		var enc strings.Builder
		for _, c := range []byte(s[i : i+n]) {
			switch {
			case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '!' || c == '*' || c == '+' || c == '-' || c == '/':
				enc.WriteByte(c)
			case c == ' ':
				enc.WriteByte('_')
			default:
				enc.WriteByte('=')
				enc.WriteByte(hex[c>>4])
				enc.WriteByte(hex[c&0xf])
			}
		}
		if word.Len()+enc.Len() > room && word.Len() > 0 {
			flush()
		}
		word.WriteString(enc.String())
		i += n
	}
	flush()
	return b.String()
}

// foldValue renders "Name: value" folded before spaces so that lines stay
// within foldAt characters where possible; unfolding gives the value back.
func foldValue(name, v string) []byte {
	var b bytes.Buffer
	b.WriteString(name)
	b.WriteString(": ")
	n := b.Len()
	words := strings.Split(v, " ")
	for i, w := range words {
		if i > 0 {
			if n+1+len(w) > foldAt && w != "" && n > len(name)+2 {
				b.WriteString("\r\n")
				n = 0
			}
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// foldLong folds every line of a header field longer than MaxLine before
// its last space or tab within the limit; a line with nowhere to fold gets
// a fold inserted at the limit (as Postfix does), which adds a space to
// the value but keeps the message deliverable.
func foldLong(raw []byte) []byte {
	var out bytes.Buffer
	for len(raw) > 0 {
		i := bytes.Index(raw, []byte("\r\n"))
		var line []byte
		if i < 0 {
			line, raw = raw, nil
		} else {
			line, raw = raw[:i], raw[i+2:]
		}
		for len(line) > MaxLine {
			// Fold before a WSP that has non-WSP text before it on the
			// line (a fold must not leave a line of only WSP).
			first := bytes.IndexFunc(line[:MaxLine+1], func(r rune) bool { return r != ' ' && r != '\t' })
			cut := -1
			for j := MaxLine; j > first && first >= 0; j-- {
				if line[j] == ' ' || line[j] == '\t' {
					cut = j
					break
				}
			}
			if cut > 0 {
				out.Write(line[:cut])
				out.WriteString("\r\n")
				line = line[cut:]
				continue
			}
			out.Write(line[:MaxLine-1])
			out.WriteString("\r\n ")
			line = line[MaxLine-1:]
		}
		out.Write(line)
		if i >= 0 {
			out.WriteString("\r\n")
		}
	}
	return out.Bytes()
}

// token kinds of an address list.
const (
	tAtom    = 'a' // atom, dot-atom or domain literal text
	tQuoted  = 'q' // "quoted string"
	tComment = 'c' // (comment)
	tAngle   = '<' // <angle-addr>
	tSpecial = 's' // , : ; @
	tSpace   = ' ' // whitespace
)

type token struct {
	kind byte
	s    string // as written
	bad  bool   // unterminated
}

// lexAddressList splits an address-list field body into tokens; the
// tokens' texts concatenated give v back.
func lexAddressList(v string) []token {
	var toks []token
	for i := 0; i < len(v); {
		c := v[i]
		j := i + 1
		t := token{}
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			for j < len(v) && (v[j] == ' ' || v[j] == '\t' || v[j] == '\r' || v[j] == '\n') {
				j++
			}
			t.kind = tSpace
		case c == '"':
			t.kind, t.bad = tQuoted, true
			for ; j < len(v); j++ {
				if v[j] == '\\' {
					j++
					continue
				}
				if v[j] == '"' {
					j++
					t.bad = false
					break
				}
			}
		case c == '(':
			t.kind, t.bad = tComment, true
			depth := 1
			for ; j < len(v); j++ {
				if v[j] == '\\' {
					j++
					continue
				}
				if v[j] == '(' {
					depth++
				} else if v[j] == ')' {
					depth--
					if depth == 0 {
						j++
						t.bad = false
						break
					}
				}
			}
		case c == '<':
			t.kind, t.bad = tAngle, true
			for ; j < len(v); j++ {
				if v[j] == '"' { // quoted local part may hold '>'
					for j++; j < len(v) && v[j] != '"'; j++ {
						if v[j] == '\\' {
							j++
						}
					}
					continue
				}
				if v[j] == '>' {
					j++
					t.bad = false
					break
				}
			}
		case c == ',' || c == ':' || c == ';' || c == '@' || c == '>':
			t.kind = tSpecial
		default:
			for j < len(v) && !strings.ContainsRune(" \t\r\n\"(<,:;@>", rune(v[j])) {
				j++
			}
			t.kind = tAtom
		}
		j = min(j, len(v))
		t.s = v[i:j]
		toks = append(toks, t)
		i = j
	}
	return toks
}

// encodeAddressList encodes the 8-bit display names (and comments) of an
// address list. An 8-bit address is an error: it needs SMTPUTF8 (5.6.7).
func encodeAddressList(name, v string) (string, error) {
	toks := lexAddressList(v)
	var out strings.Builder
	// Walk segments ended by ',', ':' (group name) or ';'.
	for start := 0; start < len(toks); {
		end := start
		for end < len(toks) && !(toks[end].kind == tSpecial && toks[end].s != "@" && toks[end].s != ">") {
			end++
		}
		seg := toks[start:end]
		isGroupName := end < len(toks) && toks[end].s == ":"
		angle := -1
		for i, t := range seg {
			if t.kind == tAngle {
				angle = i
				break
			}
		}
		switch {
		case isGroupName:
			s, err := encodePhrase(name, seg)
			if err != nil {
				return "", err
			}
			out.WriteString(s)
		case angle >= 0:
			if Has8bit([]byte(seg[angle].s)) {
				return "", addrError(name)
			}
			s, err := encodePhrase(name, seg[:angle])
			if err != nil {
				return "", err
			}
			out.WriteString(s)
			for _, t := range seg[angle:] {
				s, err := encodeOther(name, t)
				if err != nil {
					return "", err
				}
				out.WriteString(s)
			}
		default: // a bare addr-spec
			for _, t := range seg {
				s, err := encodeOther(name, t)
				if err != nil {
					return "", err
				}
				out.WriteString(s)
			}
		}
		if end < len(toks) {
			out.WriteString(toks[end].s)
			end++
		}
		start = end
	}
	return out.String(), nil
}

// encodeOther handles a token outside a display name: comments may be
// encoded, anything else with 8-bit octets is (part of) an address.
func encodeOther(name string, t token) (string, error) {
	if !Has8bit([]byte(t.s)) {
		return t.s, nil
	}
	if t.kind == tComment && !t.bad {
		return "(" + encodeWords(t.s[1:len(t.s)-1]) + ")", nil
	}
	if t.kind == tSpace {
		return t.s, nil
	}
	return "", addrError(name)
}

// encodePhrase encodes a display name that has 8-bit octets: the stretch
// from its first to its last word becomes encoded words of its text
// (quoted strings unquoted).
func encodePhrase(name string, seg []token) (string, error) {
	first, last := -1, -1
	eight := false
	for i, t := range seg {
		if t.kind == tAtom || t.kind == tQuoted {
			if t.bad && Has8bit([]byte(t.s)) {
				return "", headerError(name)
			}
			if first < 0 {
				first = i
			}
			last = i
			eight = eight || Has8bit([]byte(t.s))
		}
	}
	var out strings.Builder
	if !eight {
		for _, t := range seg {
			s, err := encodeOther(name, t)
			if err != nil {
				return "", err
			}
			out.WriteString(s)
		}
		return out.String(), nil
	}
	for _, t := range seg[:first] {
		s, err := encodeOther(name, t)
		if err != nil {
			return "", err
		}
		out.WriteString(s)
	}
	var text strings.Builder
	for _, t := range seg[first : last+1] {
		switch t.kind {
		case tQuoted:
			q := t.s[1 : len(t.s)-1]
			for i := 0; i < len(q); i++ {
				if q[i] == '\\' && i+1 < len(q) {
					i++
				}
				text.WriteByte(q[i])
			}
		case tSpace:
			text.WriteByte(' ')
		default:
			text.WriteString(t.s)
		}
	}
	out.WriteString(encodeWords(text.String()))
	for _, t := range seg[last+1:] {
		s, err := encodeOther(name, t)
		if err != nil {
			return "", err
		}
		out.WriteString(s)
	}
	return out.String(), nil
}

// quote8bitParams returns v with every unquoted parameter value that has
// 8-bit octets put in quotes, so that mime.ParseMediaType takes it.
// Quoted strings and values without 8-bit octets are left as they are.
func quote8bitParams(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c == '"':
			// Copy a quoted string whole, escapes included.
			j := i + 1
			for j < len(v) && v[j] != '"' {
				if v[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(v))
			b.WriteString(v[i:j])
			i = j
		case c == '=':
			b.WriteByte(c)
			i++
			for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
				b.WriteByte(v[i])
				i++
			}
			if i >= len(v) || v[i] == '"' {
				continue
			}
			end := strings.IndexByte(v[i:], ';')
			if end < 0 {
				end = len(v) - i
			}
			val := strings.TrimRight(v[i:i+end], " \t")
			if Has8bit([]byte(val)) && !strings.ContainsAny(val, "\"\\") {
				b.WriteString(`"` + val + `"`)
			} else {
				b.WriteString(val)
			}
			i += len(val)
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}
