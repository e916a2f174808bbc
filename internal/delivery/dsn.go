package delivery

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/queue"
)

const (
	dsnSubject = "Undelivered Mail Returned to Sender"
	// maxOriginalHeader bounds the original header returned in a DSN.
	maxOriginalHeader = 64 << 10
)

// BuildDSN returns an RFC 3464 delivery status notification telling the
// sender of m that the recipients in failed could not be delivered:
// a multipart/report (report-type=delivery-status) with a human-readable
// part, a message/delivery-status part (Reporting-MTA, Arrival-Date, and per
// recipient Final-Recipient, Action: failed, Status, Diagnostic-Code) and a
// text/rfc822-headers part with originalHeader. It is From
// postmaster@reportingMTA and To m.From; lines end in CRLF.
//
// When an address is UTF-8 (the sender's or a failed recipient's) or the
// returned header is, the DSN follows RFC 6533 instead: report-type
// global-delivery-status, a message/global-delivery-status part with
// "utf-8;" address types, and message/global-headers for a UTF-8 header.
func BuildDSN(reportingMTA string, m queue.Meta, failed []queue.Rcpt, originalHeader []byte, now time.Time) []byte {
	return buildDSN("postmaster@"+reportingMTA, reportingMTA, m, failed, originalHeader, now, randomHex(12))
}

// buildDSN builds the DSN; uniq makes its boundary and Message-ID unique.
func buildDSN(from, reportingMTA string, m queue.Meta, failed []queue.Rcpt, originalHeader []byte, now time.Time, uniq string) []byte {
	boundary := "=_mamori_dsn_" + uniq
	var b bytes.Buffer
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	mta := asciiOnly(reportingMTA)
	hdr := normalizeHeader(originalHeader)

	// RFC 6533: UTF-8 addresses need the global report types.
	globalAddrs := !isASCII(m.From)
	for _, r := range failed {
		globalAddrs = globalAddrs || !isASCII(r.Addr)
	}
	globalHdr := !isASCII(string(hdr))
	global := globalAddrs || globalHdr
	// text renders an address or subject for a header or body line:
	// printable UTF-8 in a global DSN, ASCII otherwise.
	text := asciiOnly
	if global {
		text = printableUTF8
	}
	reportType, statusType := "delivery-status", "message/delivery-status"
	if globalAddrs {
		reportType, statusType = "global-delivery-status", "message/global-delivery-status"
	}

	if !strings.Contains(from, "<") {
		from = "Mail Delivery System <" + from + ">"
	}
	line("From: %s", asciiOnly(from))
	line("To: <%s>", text(m.From))
	line("Subject: %s", dsnSubject)
	line("Date: %s", now.Format(time.RFC1123Z))
	line("Message-ID: <%s.dsn@%s>", uniq, mta)
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=%s;", reportType)
	line("\tboundary=\"%s\"", boundary)
	line("")
	line("This is a MIME-encapsulated message.")
	line("")

	// Human-readable part.
	line("--%s", boundary)
	if global {
		line("Content-Type: text/plain; charset=utf-8")
		line("Content-Transfer-Encoding: 8bit")
	} else {
		line("Content-Type: text/plain; charset=us-ascii")
	}
	line("Content-Description: Notification")
	line("")
	line("This is the mail system at host %s.", mta)
	line("")
	line("Your message could not be delivered to one or more recipients.")
	line("It has been given up on; the errors are listed below.")
	line("")
	if m.Subject != "" {
		line("Subject: %s", text(oneLine(m.Subject)))
	}
	if !m.Received.IsZero() {
		line("Sent:    %s", m.Received.Format(time.RFC1123Z))
	}
	line("")
	for _, r := range failed {
		line("<%s>: %s", text(r.Addr), asciiOnly(oneLine(r.Diag)))
	}
	line("")

	// Machine-readable part (RFC 3464 §2, RFC 6533 §3).
	line("--%s", boundary)
	line("Content-Type: %s", statusType)
	if globalAddrs {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("Content-Description: Delivery report")
	line("")
	line("Reporting-MTA: dns; %s", mta)
	if m.ID != "" {
		line("X-Mamori-Queue-ID: %s", asciiOnly(m.ID))
	}
	if !m.Received.IsZero() {
		line("Arrival-Date: %s", m.Received.Format(time.RFC1123Z))
	}
	for _, r := range failed {
		diag := asciiOnly(oneLine(r.Diag))
		line("")
		line("Final-Recipient: %s", addressType(r.Addr, globalAddrs))
		line("Action: failed")
		line("Status: %s", dsnStatus(diag))
		if diag != "" {
			if replyCode.MatchString(diag) {
				line("Diagnostic-Code: smtp; %s", diag)
			} else {
				line("Diagnostic-Code: X-mamori; %s", diag)
			}
		}
		line("Last-Attempt-Date: %s", now.Format(time.RFC1123Z))
	}
	line("")

	// The original header.
	line("--%s", boundary)
	if globalHdr {
		line("Content-Type: message/global-headers")
		line("Content-Transfer-Encoding: 8bit")
	} else {
		line("Content-Type: text/rfc822-headers")
	}
	line("Content-Description: Undelivered Message Headers")
	line("")
	b.Write(hdr)
	line("") // the CRLF before a boundary belongs to the boundary
	line("--%s--", boundary)
	return b.Bytes()
}

// addressType renders an address for Final-Recipient: "rfc822; addr" for
// ASCII, and in a global DSN "utf-8; addr" with the characters RFC 6533 §3
// (utf-8-addr-unitext) escapes written as \x{HEX}.
func addressType(addr string, global bool) string {
	if isASCII(addr) || !global {
		return "rfc822; " + asciiOnly(addr)
	}
	var b strings.Builder
	b.WriteString("utf-8; ")
	for _, r := range strings.ToValidUTF8(addr, "\uFFFD") {
		if r <= 0x20 || r == 0x7f || r == '\\' || r == '+' || r == '=' || (r >= 0x80 && r < 0xa0) {
			fmt.Fprintf(&b, "\\x{%X}", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printableUTF8 keeps valid, printable UTF-8 and replaces control
// characters (and invalid octets) with '?'.
func printableUTF8(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

var (
	replyCode    = regexp.MustCompile(`^[2-5][0-9][0-9]( |$)`)
	enhancedCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
)

// statusOf finds the enhanced status code a diagnostic starts with: "550
// 5.1.1 …" → 5.1.1, "550 no" → 5.0.0, "4.4.7 …" → 4.4.7.
func statusOf(diag string) (string, bool) {
	f := strings.Fields(diag)
	if len(f) == 0 {
		return "", false
	}
	if replyCode.MatchString(f[0]) {
		if len(f) > 1 && enhancedCode.MatchString(f[1]) {
			return f[1], true
		}
		return f[0][:1] + ".0.0", true
	}
	if enhancedCode.MatchString(f[0]) {
		return f[0], true
	}
	return "", false
}

// dsnStatus is the Status field of a failed recipient.
func dsnStatus(diag string) string {
	st, ok := statusOf(diag)
	if !ok || st[0] == '2' {
		return "5.0.0"
	}
	return st
}

// headerOf returns the header of a message (up to the first empty line),
// at most maxOriginalHeader bytes cut at a line end.
func headerOf(body []byte) []byte {
	end := len(body)
	if i := bytes.Index(body, []byte("\r\n\r\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.Index(body, []byte("\n\n")); i >= 0 && i+1 < end {
		end = i + 1
	}
	h := body[:end]
	if len(h) > maxOriginalHeader {
		h = h[:maxOriginalHeader]
		if i := bytes.LastIndexByte(h, '\n'); i >= 0 {
			h = h[:i+1]
		}
	}
	return h
}

// normalizeHeader makes every line end in CRLF and drops NULs.
func normalizeHeader(h []byte) []byte {
	h = bytes.ReplaceAll(h, []byte("\r\n"), []byte("\n"))
	h = bytes.ReplaceAll(h, []byte("\r"), []byte("\n"))
	h = bytes.ReplaceAll(h, []byte{0}, nil)
	h = bytes.TrimRight(h, "\n")
	if len(h) == 0 {
		return nil
	}
	h = bytes.ReplaceAll(h, []byte("\n"), []byte("\r\n"))
	return append(h, '\r', '\n')
}

// asciiOnly replaces non-ASCII and control characters with '?', for fields
// that must be plain ASCII.
func asciiOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return '?'
		}
		return r
	}, s)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
