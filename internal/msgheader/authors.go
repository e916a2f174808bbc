package msgheader

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"

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
	// Lenient is set when the From field did not parse as an address
	// list and its domains were collected by scanning for '@': every
	// domain a reader might display is then checked.
	Lenient bool
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
		a.Lenient = true
		list = scanAddresses(from)
		if len(list) == 0 {
			return a, authorErr(MalformedFrom, "From header has no readable address")
		}
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
	l, err := p.ParseList(v)
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

// scanAddresses finds every local@domain token in a field that does not
// parse, so that a malformed From still has all its possible author
// domains checked rather than none.
func scanAddresses(v string) []string {
	var out []string
	for i := 0; i < len(v); i++ {
		if v[i] != '@' {
			continue
		}
		s := i
		for s > 0 && addrByte(v[s-1], true) {
			s--
		}
		e := i + 1
		for e < len(v) && addrByte(v[e], false) {
			e++
		}
		if e > i+1 {
			out = append(out, v[s:i]+"@"+strings.TrimRight(v[i+1:e], "."))
		}
	}
	return out
}

func addrByte(c byte, local bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		return true
	case c >= utf8.RuneSelf:
		return true
	case local:
		return strings.IndexByte("!#$%&'*+/=?^`{|}~", c) >= 0
	}
	return c == '[' || c == ']' || c == ':'
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
