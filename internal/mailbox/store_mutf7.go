package mailbox

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
)

// Modified UTF-7 (RFC 3501 5.1.3): the on-disk form of folder names, as
// Dovecot writes them. Printable ASCII stands for itself except '&', which
// is "&-"; anything else is UTF-16BE in base64 (',' for '/', no padding)
// between '&' and '-'.

var mutf7Enc = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

var errBadMUTF7 = errors.New("invalid modified UTF-7")

// mutf7Encode encodes a valid UTF-8 string (invalid bytes become U+FFFD).
func mutf7Encode(s string) string {
	var b strings.Builder
	var run []uint16
	flush := func() {
		if len(run) == 0 {
			return
		}
		buf := make([]byte, 0, 2*len(run))
		for _, u := range run {
			buf = append(buf, byte(u>>8), byte(u))
		}
		b.WriteByte('&')
		b.WriteString(mutf7Enc.EncodeToString(buf))
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				b.WriteString("&-")
			} else {
				b.WriteRune(r)
			}
			continue
		}
		run = utf16.AppendRune(run, r)
	}
	flush()
	return b.String()
}

// mutf7Decode decodes s, refusing anything but the canonical encoding of
// a UTF-8 string (so that decode and encode are inverse).
func mutf7Decode(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", errBadMUTF7
		}
		if c != '&' {
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(s[i+1:], '-')
		if end < 0 {
			return "", errBadMUTF7
		}
		enc := s[i+1 : i+1+end]
		i += end + 2
		if enc == "" {
			b.WriteByte('&')
			continue
		}
		raw, err := mutf7Enc.DecodeString(enc)
		if err != nil || len(raw)%2 != 0 {
			return "", errBadMUTF7
		}
		units := make([]uint16, len(raw)/2)
		for j := range units {
			units[j] = uint16(raw[2*j])<<8 | uint16(raw[2*j+1])
		}
		for j := 0; j < len(units); j++ {
			u := units[j]
			switch {
			case u >= 0xd800 && u < 0xdc00 && j+1 < len(units) && units[j+1] >= 0xdc00 && units[j+1] < 0xe000:
				b.WriteRune(utf16.DecodeRune(rune(u), rune(units[j+1])))
				j++
			case u >= 0xd800 && u < 0xe000:
				return "", errBadMUTF7 // unpaired surrogate
			default:
				b.WriteRune(rune(u))
			}
		}
	}
	out := b.String()
	if mutf7Encode(out) != s {
		return "", errBadMUTF7 // not canonical: ASCII in base64, split runs, ...
	}
	return out, nil
}
