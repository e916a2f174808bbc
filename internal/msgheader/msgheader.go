// Package msgheader parses the header section of a message once, in one
// place, and answers the questions every later check asks of it: which
// fields are there, and who the authors are (RFC 5322 §3.6.2).
//
// Why one parser: the DMARC bypasses found in review all came from two
// readers disagreeing about the same bytes — net/textproto stopped at a
// `From :` line (obsolete syntax, RFC 5322 §4.5.6) and the check then saw
// no From at all, while the recipient's mail reader displayed it. Every
// stage (author checks, SPF/DKIM/DMARC, DKIM signing, content policy,
// subject extraction) now reads the same parsed view, built by Parse.
//
// The parser is deliberately literal: a field name is everything before
// the first colon with trailing white space removed (so `From :` is From,
// as a mail reader shows it), names compare case-insensitively, folded
// lines are joined, and a line that is neither a field nor a continuation
// is a syntax error rather than the silent start of the body, because a
// receiver that resynchronised differently would see other headers than
// we checked.
package msgheader

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Limits bound the work Parse does; zero values take the defaults.
type Limits struct {
	MaxFields    int // fields in the header section (default 1000)
	MaxLineBytes int // one physical header line, without CRLF (default 64 KiB)
}

const (
	defaultMaxFields = 1000
	defaultMaxLine   = 64 << 10
)

// Field is one header field.
type Field struct {
	Name  string // as written, without trailing white space
	Value string // unfolded (CRLF before white space removed), leading white space trimmed
	Start int    // offset of the field's first byte in the message
	End   int    // offset just past the field's last line ending
}

// Header is the parsed header section of a message.
type Header struct {
	Fields []Field
	// BodyStart is the offset of the first body byte: just past the empty
	// line that ends the header section, or len(msg) if there is none.
	BodyStart int
}

// SyntaxError is a header section that cannot be read unambiguously.
type SyntaxError struct {
	Line   int // 1-based physical line number
	Reason string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("header line %d: %s", e.Line, e.Reason)
}

// ErrTooManyFields is returned when the header exceeds Limits.MaxFields.
var ErrTooManyFields = errors.New("too many header fields")

// Parse reads the header section at the start of msg. Line ends may be
// CRLF or bare LF. The header ends at the first empty line; a message
// without one is all header.
func Parse(msg []byte, lim Limits) (*Header, error) {
	if lim.MaxFields <= 0 {
		lim.MaxFields = defaultMaxFields
	}
	if lim.MaxLineBytes <= 0 {
		lim.MaxLineBytes = defaultMaxLine
	}
	h := &Header{BodyStart: len(msg)}
	var cur *Field
	var val strings.Builder
	flush := func(end int) {
		if cur != nil {
			cur.Value = strings.TrimSpace(val.String())
			cur.End = end
			h.Fields = append(h.Fields, *cur)
			cur = nil
			val.Reset()
		}
	}
	line := 0
	for off := 0; off < len(msg); {
		line++
		nl := bytes.IndexByte(msg[off:], '\n')
		next := len(msg)
		if nl >= 0 {
			next = off + nl + 1
		}
		text := msg[off:next]
		text = bytes.TrimSuffix(text, []byte("\n"))
		text = bytes.TrimSuffix(text, []byte("\r"))
		if len(text) > lim.MaxLineBytes {
			return nil, &SyntaxError{Line: line, Reason: fmt.Sprintf("longer than %d bytes", lim.MaxLineBytes)}
		}
		if len(text) == 0 {
			flush(off)
			h.BodyStart = next
			return h, nil
		}
		if text[0] == ' ' || text[0] == '\t' {
			if cur == nil {
				return nil, &SyntaxError{Line: line, Reason: "continuation line before any field"}
			}
			val.WriteByte(' ')
			val.Write(text)
			off = next
			continue
		}
		flush(off)
		colon := bytes.IndexByte(text, ':')
		if colon < 0 {
			return nil, &SyntaxError{Line: line, Reason: "not a header field (no colon)"}
		}
		name := bytes.TrimRight(text[:colon], " \t")
		if len(name) == 0 {
			return nil, &SyntaxError{Line: line, Reason: "empty field name"}
		}
		for _, c := range name {
			// RFC 5322 ftext: printable US-ASCII except colon.
			if c < 33 || c > 126 {
				return nil, &SyntaxError{Line: line, Reason: fmt.Sprintf("invalid character %q in field name", c)}
			}
		}
		if len(h.Fields) >= lim.MaxFields {
			return nil, ErrTooManyFields
		}
		cur = &Field{Name: string(name), Start: off}
		val.Write(text[colon+1:])
		off = next
	}
	flush(len(msg))
	return h, nil
}

// Values returns the values of every field named name (case-insensitive),
// in order.
func (h *Header) Values(name string) []string {
	var out []string
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, name) {
			out = append(out, h.Fields[i].Value)
		}
	}
	return out
}

// Get returns the value of the first field named name, or "".
func (h *Header) Get(name string) string {
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, name) {
			return h.Fields[i].Value
		}
	}
	return ""
}

// Count returns how many fields are named name.
func (h *Header) Count(name string) int {
	n := 0
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, name) {
			n++
		}
	}
	return n
}
