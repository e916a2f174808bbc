package msgheader

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/mamori-mail/mamori/internal/policy"
)

// Mailbox is one author or sender address.
type Mailbox struct {
	Address string // addr-spec as written
	Domain  string // canonical domain (policy.CanonicalDomain), "" if none
}

// Authors is who a message says wrote and sent it.
type Authors struct {
	From   []Mailbox // every mailbox of the From field (RFC 5322 §3.6.2)
	Sender *Mailbox  // the Sender field, if present
}

// Domains returns the distinct author domains (From only, as DMARC's
// RFC5322.From identifier), in order of appearance.
func (a Authors) Domains() []string {
	var out []string
	for _, m := range a.From {
		if m.Domain == "" {
			continue
		}
		dup := false
		for _, d := range out {
			if d == m.Domain {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, m.Domain)
		}
	}
	return out
}

// Mailboxes returns every From mailbox and the Sender, if any.
func (a Authors) Mailboxes() []Mailbox {
	out := append([]Mailbox(nil), a.From...)
	if a.Sender != nil {
		out = append(out, *a.Sender)
	}
	return out
}

// Problem classifies why a header's authors are ambiguous.
type Problem int

const (
	NoFrom          Problem = iota + 1 // no From field
	MultipleFrom                       // more than one From field
	EmptyFrom                          // a From field with no mailbox
	MalformedFrom                      // a From field nothing can be read from
	MultipleSender                     // more than one Sender field
	MalformedSender                    // a Sender field that is not exactly one mailbox
	MissingSender                      // several From mailboxes and no Sender
	NoDomain                           // a From mailbox without a domain
)

// AuthorError reports a header that RFC 5322 makes ambiguous about its
// author; such a message is refused, never guessed at.
type AuthorError struct {
	Problem Problem
	Detail  string
}

func (e *AuthorError) Error() string { return e.Detail }

func authorErr(p Problem, format string, args ...any) *AuthorError {
	return &AuthorError{Problem: p, Detail: fmt.Sprintf(format, args...)}
}

// wordDecoder decodes RFC 2047 display names; text in a charset it does
// not know is passed through undecoded rather than making the address list
// unparsable (only the addr-spec matters here).
var wordDecoder = &mime.WordDecoder{CharsetReader: func(_ string, input io.Reader) (io.Reader, error) {
	return input, nil
}}

// Authors extracts the From and Sender mailboxes, refusing what RFC 5322
// §3.6 makes ambiguous: not exactly one From field, a From without a
// mailbox, more than one Sender field, a Sender that is not one mailbox,
// or several From mailboxes without a Sender.
func (h *Header) Authors() (Authors, error) {
	var a Authors
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		return a, authorErr(NoFrom, "Message has no From header (RFC 5322 section 3.6)")
	case len(froms) > 1:
		return a, authorErr(MultipleFrom, "Message has %d From headers; exactly one is allowed (RFC 5322 section 3.6)", len(froms))
	}
	from := froms[0]
	if strings.TrimSpace(from) == "" {
		return a, authorErr(EmptyFrom, "From header is empty")
	}
	list, err := parseList(from)
	if err != nil {
		// Never guess: a reader that parses more of RFC 5322 than we do
		// would show an author we did not check.
		return a, authorErr(MalformedFrom, "From header does not parse as an address list (RFC 5322 section 3.4)")
	}
	if len(list) == 0 {
		return a, authorErr(EmptyFrom, "From header names no mailbox")
	}
	for _, addr := range list {
		m := mailbox(addr)
		if m.Domain == "" {
			return a, authorErr(NoDomain, "From address <%s> has no domain", Printable(addr))
		}
		a.From = append(a.From, m)
	}
	senders := h.Values("Sender")
	switch {
	case len(senders) > 1:
		return a, authorErr(MultipleSender, "Message has %d Sender headers; at most one is allowed (RFC 5322 section 3.6)", len(senders))
	case len(senders) == 1:
		sl, err := parseList(senders[0])
		if err != nil || len(sl) != 1 {
			return a, authorErr(MalformedSender, "Sender header must name exactly one mailbox")
		}
		m := mailbox(sl[0])
		if m.Domain == "" {
			return a, authorErr(MalformedSender, "Sender address <%s> has no domain", Printable(sl[0]))
		}
		a.Sender = &m
	}
	if len(a.From) > 1 && a.Sender == nil {
		return a, authorErr(MissingSender, "From header names %d mailboxes and there is no Sender header (RFC 5322 section 3.6.2)", len(a.From))
	}
	return a, nil
}

func parseList(v string) ([]string, error) {
	p := mail.AddressParser{WordDecoder: wordDecoder}
	l, err := p.ParseList(stripCFWS(v))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, x.Address)
	}
	return out, nil
}

func mailbox(addr string) Mailbox {
	m := Mailbox{Address: addr}
	if at := strings.LastIndexByte(addr, '@'); at >= 0 && at < len(addr)-1 {
		m.Domain = policy.CanonicalDomain(strings.TrimSpace(addr[at+1:]))
	}
	return m
}

// stripCFWS removes what RFC 5322 allows around the tokens of an address
// and net/mail does not take: comments (section 3.2.2, nested, with
// quoted-pairs) anywhere outside quoted strings and domain literals, and
// folding white space next to "@", "." and the angle brackets (obsolete
// syntax, section 4.4), so that `ceo @ ours.test` and
// `ceo@(x@evil.test)ours.test` are read as the ceo@ours.test a mail
// reader shows. Quoted strings and domain literals are kept as they are.
func stripCFWS(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	inQuote, inLiteral := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(v) {
				i++
				b.WriteByte(v[i])
			} else if c == '"' {
				inQuote = false
			}
			continue
		case inLiteral:
			b.WriteByte(c)
			if c == ']' {
				inLiteral = false
			}
			continue
		case c == '"':
			inQuote = true
		case c == '[':
			inLiteral = true
		case c == '(':
			depth := 0
			for ; i < len(v); i++ {
				switch v[i] {
				case '\\':
					i++
				case '(':
					depth++
				case ')':
					depth--
				}
				if depth == 0 {
					break
				}
			}
			c = ' '
		}
		b.WriteByte(c)
	}
	out := b.String()
	// White space next to "@", "." and the angle brackets goes.
	var o strings.Builder
	o.Grow(len(out))
	inQuote, inLiteral = false, false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if !inQuote && !inLiteral && (c == ' ' || c == '\t') {
			j := i
			for j < len(out) && (out[j] == ' ' || out[j] == '\t') {
				j++
			}
			prev := byte(0)
			if s := o.String(); len(s) > 0 {
				prev = s[len(s)-1]
			}
			var next byte
			if j < len(out) {
				next = out[j]
			}
			if strings.IndexByte("@.<", prev) >= 0 && prev != 0 || strings.IndexByte("@.>", next) >= 0 && next != 0 {
				i = j - 1
				continue
			}
			o.WriteByte(' ')
			i = j - 1
			continue
		}
		switch {
		case inQuote:
			if c == '\\' && i+1 < len(out) {
				o.WriteByte(c)
				i++
				c = out[i]
			} else if c == '"' {
				inQuote = false
			}
		case inLiteral:
			if c == ']' {
				inLiteral = false
			}
		case c == '"':
			inQuote = true
		case c == '[':
			inLiteral = true
		}
		o.WriteByte(c)
	}
	return strings.TrimSpace(o.String())
}

// Printable keeps header text quoted in an SMTP reply or a log line on
// one printable line of at most 256 bytes: controls become '?'.
func Printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) > 256 {
		s = s[:256]
	}
	return s
}
