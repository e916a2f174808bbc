// Package mimeconv makes a message fit for the SMTP server that receives it
// next: only CRLF line ends, no line over 998 octets, and — for a server
// that does not offer 8BITMIME or SMTPUTF8 — no octet above 127.
//
// Why it exists: mail we relay is whatever our clients sent. Sending it on
// unchanged is wrong in three ways. Bare CR or bare LF in a body lets a
// sender smuggle a second message past us to a receiver that reads line
// ends loosely ("SMTP smuggling"); lines over 998 octets are refused or
// silently broken by receivers (RFC 5321 §4.5.3.1.6); and 8-bit octets sent
// to a server that did not announce 8BITMIME (RFC 6152) or UTF-8 headers
// sent without SMTPUTF8 (RFC 6531, 6532) break the protocol and are mangled
// on the way. The cure is the one Postfix and Sendmail apply: convert the
// parts that need it (quoted-printable or base64, RFC 2045), encode 8-bit
// header text as RFC 2047 encoded words (parameters as RFC 2231), and bounce
// what cannot be converted (a UTF-8 address needs SMTPUTF8: 5.6.7).
//
// What is never done: a message that needs no change is returned as it was,
// byte for byte (the same slice), so its DKIM signature stays valid. Parts
// that need no change are copied unchanged even when a sibling is
// converted. A converted message may break an existing DKIM signature; that
// is accepted practice (RFC 6376 §5.3 expects it, Postfix does the same).
//
// Why not github.com/emersion/go-message for the rewrite: its reader decodes
// every part and its writer re-encodes and re-serialises every header, which
// is the opposite of "touch only what must change". This package walks the
// raw bytes instead (header fields, multipart delimiters, message/rfc822
// bodies) and uses the standard library's mime, mime/quotedprintable and
// encoding/base64 for the encodings themselves. It is pure (no I/O) so every
// function has a fuzz target.
package mimeconv

import (
	"bytes"
	"errors"
	"fmt"
)

// MaxLine is the longest line, without its CRLF, that SMTP allows
// (RFC 5321 §4.5.3.1.6).
const MaxLine = 998

// ErrNeedsSMTPUTF8 is wrapped by every *Error: the message cannot be sent to
// a server that does not offer SMTPUTF8.
var ErrNeedsSMTPUTF8 = errors.New("message needs SMTPUTF8")

// ErrNeeds8BITMIME is wrapped by an *Error with Status 5.6.3: the message
// has 8-bit octets that could not be converted, and the receiving server
// does not offer 8BITMIME.
var ErrNeeds8BITMIME = errors.New("message needs 8BITMIME")

// Error says why a message cannot be downgraded. Status is the enhanced
// status code to bounce with: 5.6.7 when an address is UTF-8 (RFC 6531
// §3.2), 5.6.9 when a UTF-8 header field cannot be encoded (RFC 6531
// §3.7.4.3 / RFC 6532), 5.6.3 when 8-bit content could not be made 7-bit
// (RFC 3463: conversion required but not supported).
type Error struct {
	Status string
	Reason string
}

func (e *Error) Error() string { return e.Status + " " + e.Reason }

// Unwrap makes errors.Is(err, ErrNeeds8BITMIME) true for a 5.6.3 error and
// errors.Is(err, ErrNeedsSMTPUTF8) true for the others.
func (e *Error) Unwrap() error {
	if e.Status == "5.6.3" {
		return ErrNeeds8BITMIME
	}
	return ErrNeedsSMTPUTF8
}

// CheckWire reports whether msg may be sent as it is to a server that
// offers p (RFC 6152): an octet above 127 needs 8BITMIME, except in the
// top-level header of a message sent with SMTPUTF8 (RFC 6531 §3.7.4). The
// error is a 5.6.3 *Error. The sender calls it on the exact bytes it is
// about to send, whatever the conversion did.
func CheckWire(msg []byte, p Peer) error {
	if p.EightBitMIME || !Has8bit(msg) {
		return nil
	}
	if p.SMTPUTF8 && !Has8bit(msg[headerEnd(msg):]) {
		return nil
	}
	return &Error{Status: "5.6.3", Reason: "message has 8-bit content that could not be converted, and the receiving server does not offer 8BITMIME"}
}

func addrError(field string) error {
	return &Error{Status: "5.6.7", Reason: fmt.Sprintf("non-ASCII address in %s header but the receiving server does not offer SMTPUTF8", field)}
}

func headerError(field string) error {
	return &Error{Status: "5.6.9", Reason: fmt.Sprintf("non-ASCII %s header cannot be encoded and the receiving server does not offer SMTPUTF8", field)}
}

// NormalizedLen is the length of NormalizeCRLF(msg), computed without
// allocating, so that a caller can check and reserve it first.
func NormalizedLen(msg []byte) int {
	n := len(msg)
	for i := 0; i < len(msg); i++ {
		switch msg[i] {
		case '\r':
			if i+1 < len(msg) && msg[i+1] == '\n' {
				i++
				continue
			}
			n++ // bare CR becomes CRLF
		case '\n':
			n++ // bare LF becomes CRLF
		}
	}
	return n
}

// NormalizeCRLF returns msg with every bare CR and bare LF replaced by
// CRLF, so that every line ends in CRLF and nothing but CRLF ends a line:
// after it, a receiver's reading of "\r\n.\r\n" is the only end of data
// that exists, and our dot-stuffing covers it. msg itself is returned when
// nothing changes; otherwise the result is allocated at its exact size
// (NormalizedLen).
func NormalizeCRLF(msg []byte) []byte {
	n := NormalizedLen(msg)
	if n == len(msg) {
		return msg
	}
	out := make([]byte, 0, n)
	for i := 0; i < len(msg); i++ {
		switch c := msg[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(msg) && msg[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// FoldLongLines returns msg (line ends normalised to CRLF) with no line
// longer than MaxLine octets: header fields with long lines are folded at
// whitespace (or, with no whitespace to fold at, broken by inserting a
// fold, as Postfix does); a MIME part whose body has long lines is
// re-encoded as quoted-printable or base64 (long lines in a part already
// so encoded get soft line breaks / are rewrapped). msg itself is returned
// when nothing changes.
func FoldLongLines(msg []byte) []byte {
	msg = NormalizeCRLF(msg)
	if !hasLongLine(msg) {
		return msg
	}
	c := converter{}
	out, _, err := c.message(msg, 0)
	if err != nil { // only downgrades fail
		return msg
	}
	return out
}

// Downgrade8bit returns msg made 7-bit for a server that offers neither
// 8BITMIME nor SMTPUTF8: line ends normalised, long lines folded or
// re-encoded, every part with 8-bit octets (nested multiparts and
// message/rfc822 included) re-encoded as quoted-printable (mostly ASCII
// text) or base64 with Content-Transfer-Encoding set and MIME-Version added
// when missing, 8-bit header text RFC 2047-encoded (display names, never an
// address), 8-bit parameters RFC 2231-encoded. An *Error (wrapping
// ErrNeedsSMTPUTF8) means the message cannot be made 7-bit: bounce it.
func Downgrade8bit(msg []byte) ([]byte, error) {
	msg = NormalizeCRLF(msg)
	if !Has8bit(msg) && !hasLongLine(msg) {
		return msg, nil
	}
	c := converter{body8bit: true, headers8bit: true}
	out, _, err := c.message(msg, 0)
	return out, err
}

// DowngradeHeaders RFC 2047-encodes the 8-bit text of msg's top-level
// header, for a server that offers 8BITMIME but not SMTPUTF8 (the body may
// stay 8-bit). Line ends are normalised and long lines folded as by
// FoldLongLines.
func DowngradeHeaders(msg []byte) ([]byte, error) {
	msg = NormalizeCRLF(msg)
	if !HeaderHas8bit(msg) && !hasLongLine(msg) {
		return msg, nil
	}
	c := converter{topHeaders8bit: true}
	out, _, err := c.message(msg, 0)
	return out, err
}

// Peer is what the receiving server announced.
type Peer struct {
	EightBitMIME bool // 8BITMIME (RFC 6152)
	SMTPUTF8     bool // SMTPUTF8 (RFC 6531)
}

// Result is a message prepared for a peer.
type Result struct {
	Msg []byte
	// EightBit: Msg has octets above 127; send BODY=8BITMIME.
	EightBit bool
	// UTF8: Msg's header has UTF-8 text (RFC 6532); send SMTPUTF8.
	UTF8 bool
	// Converted: Msg differs from the input beyond line-end normalisation.
	Converted bool
}

// ForPeer prepares msg for a server that offers p: it always normalises
// line ends and folds long lines; without SMTPUTF8 it encodes 8-bit
// top-level header text (and fails with an *Error when that is impossible);
// without 8BITMIME it makes the whole message 7-bit. Whether the envelope
// needs SMTPUTF8 is the caller's business.
func ForPeer(msg []byte, p Peer) (Result, error) {
	norm := NormalizeCRLF(msg)
	var out []byte
	var err error
	switch {
	case !p.EightBitMIME && !p.SMTPUTF8:
		out, err = Downgrade8bit(norm)
	case !p.EightBitMIME: // SMTPUTF8 without 8BITMIME violates RFC 6531 §3.1; keep the header
		c := converter{body8bit: true}
		if !Has8bit(norm) && !hasLongLine(norm) {
			out = norm
		} else {
			out, _, err = c.message(norm, 0)
		}
	case !p.SMTPUTF8:
		out, err = DowngradeHeaders(norm)
	default:
		out = FoldLongLines(norm)
	}
	if err != nil {
		return Result{}, err
	}
	return Result{
		Msg:       out,
		EightBit:  Has8bit(out),
		UTF8:      HeaderHas8bit(out),
		Converted: !bytes.Equal(out, norm),
	}, nil
}

// Has8bit reports whether b has an octet above 127.
func Has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// HeaderHas8bit reports whether msg's top-level header has an octet above
// 127 (a UTF-8 header, RFC 6532, needs SMTPUTF8 or encoding).
func HeaderHas8bit(msg []byte) bool {
	return Has8bit(msg[:headerEnd(msg)])
}

// NeedsSMTPUTF8 reports whether an address in msg's top-level header (From,
// To, Cc, Sender, Reply-To, Resent-*, …) is UTF-8: such a message cannot
// be downgraded and needs a server with SMTPUTF8.
func NeedsSMTPUTF8(msg []byte) bool {
	fields, _, _ := splitMessage(NormalizeCRLF(msg))
	for _, f := range fields {
		if !Has8bit(f.raw) || !addressFields[f.lname] {
			continue
		}
		if _, err := encodeAddressList(f.name, unfold(f.value())); err != nil {
			return true
		}
	}
	return false
}

// hasLongLine reports whether a line of b is longer than MaxLine.
func hasLongLine(b []byte) bool {
	for len(b) > MaxLine {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return len(b) > MaxLine
		}
		line := b[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) > MaxLine {
			return true
		}
		b = b[i+1:]
	}
	return false
}
