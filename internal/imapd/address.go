package imapd

import (
	"mime"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

// envelope is imapserver.ExtractEnvelope with address lists parsed as
// RFC 3501 wants them: groups as start and end markers, comments as
// names when there is no phrase, source routes kept.
func envelope(h textproto.Header) *imap.Envelope {
	env := imapserver.ExtractEnvelope(h)
	env.From = addressList(h.Get("From"))
	env.Sender = addressList(h.Get("Sender"))
	env.ReplyTo = addressList(h.Get("Reply-To"))
	env.To = addressList(h.Get("To"))
	env.Cc = addressList(h.Get("Cc"))
	env.Bcc = addressList(h.Get("Bcc"))
	return env
}

// maxAddresses bounds the addresses taken from one header field.
const maxAddresses = 1000

var wordDecoder mime.WordDecoder

// addressList parses an address-list field value, leniently: what does
// not parse is skipped. A group is (NIL NIL "name" NIL) … (NIL NIL NIL NIL).
func addressList(v string) []imap.Address {
	var out []imap.Address
	var cur strings.Builder
	inGroup, inQuote, inAngle := false, false, false
	depth := 0
	flush := func() {
		if a, ok := parseMailbox(cur.String()); ok && len(out) < maxAddresses {
			out = append(out, a)
		}
		cur.Reset()
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote:
			cur.WriteByte(c)
			if c == '\\' && i+1 < len(v) {
				i++
				cur.WriteByte(v[i])
			} else if c == '"' {
				inQuote = false
			}
		case depth > 0:
			cur.WriteByte(c)
			switch c {
			case '\\':
				if i+1 < len(v) {
					i++
					cur.WriteByte(v[i])
				}
			case '(':
				depth++
			case ')':
				depth--
			}
		case c == '"':
			inQuote = true
			cur.WriteByte(c)
		case c == '(':
			depth = 1
			cur.WriteByte(c)
		case c == '<':
			inAngle = true
			cur.WriteByte(c)
		case c == '>':
			inAngle = false
			cur.WriteByte(c)
		case inAngle:
			cur.WriteByte(c)
		case c == ',':
			flush()
		case c == ':' && !inGroup:
			name, _ := phrase(cur.String())
			cur.Reset()
			if len(out) < maxAddresses {
				out = append(out, imap.Address{Mailbox: name})
			}
			inGroup = true
		case c == ';' && inGroup:
			flush()
			out = append(out, imap.Address{})
			inGroup = false
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	if inGroup {
		out = append(out, imap.Address{})
	}
	return out
}

// parseMailbox parses one mailbox: "Name <local@domain>",
// "local@domain (Name)", "<@route:local@domain>".
func parseMailbox(s string) (imap.Address, bool) {
	text, comment := stripComments(s)
	text = strings.TrimSpace(text)
	if text == "" {
		return imap.Address{}, false
	}
	var display, spec string
	if i := indexUnquoted(text, '<'); i >= 0 {
		display = text[:i]
		spec = text[i+1:]
		if j := strings.IndexByte(spec, '>'); j >= 0 {
			spec = spec[:j]
		}
	} else {
		spec = text
	}
	spec = removeSpaces(spec)
	var a imap.Address
	if strings.HasPrefix(spec, "@") {
		if j := strings.IndexByte(spec, ':'); j >= 0 {
			a.Route, spec = spec[:j], spec[j+1:]
		}
	}
	if j := strings.LastIndexByte(spec, '@'); j >= 0 {
		a.Mailbox, a.Host = spec[:j], spec[j+1:]
	} else {
		a.Mailbox = spec
	}
	if a.Mailbox == "" {
		a.Mailbox = "MISSING_MAILBOX"
	}
	if a.Host == "" {
		a.Host = "MISSING_DOMAIN"
	}
	name, _ := phrase(display)
	if name == "" {
		name = strings.TrimSpace(comment)
	}
	if dec, err := wordDecoder.DecodeHeader(name); err == nil {
		name = dec
	}
	a.Name = name
	return a, true
}

// phrase is a display name: quotes removed, white space folded.
func phrase(s string) (string, bool) {
	text, _ := stripComments(s)
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '"':
			inQuote = !inQuote
		case c == '\\' && inQuote && i+1 < len(text):
			i++
			b.WriteByte(text[i])
		default:
			b.WriteByte(c)
		}
	}
	return strings.Join(strings.Fields(b.String()), " "), true
}

// stripComments removes (comments) outside quoted strings and returns
// the text and the first comment's content.
func stripComments(s string) (text, comment string) {
	var b, cb strings.Builder
	depth, inQuote, first := 0, false, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			switch c {
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					first = false
					continue
				}
			case '\\':
				if i+1 < len(s) {
					i++
					c = s[i]
				}
			}
			if first {
				cb.WriteByte(c)
			}
		case inQuote:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
			b.WriteByte(c)
		case c == '(':
			depth = 1
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), cb.String()
}

func indexUnquoted(s string, c byte) int {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == c && !inQuote:
			return i
		}
	}
	return -1
}

// removeSpaces drops white space outside quoted strings (an addr-spec
// may have CFWS around its dots and '@').
func removeSpaces(s string) string {
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			inQuote = !inQuote
		}
		if !inQuote && (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
