package delivery

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

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
func BuildDSN(reportingMTA string, m queue.Meta, failed []queue.Rcpt, originalHeader []byte, now time.Time) []byte {
	return buildDSN("postmaster@"+reportingMTA, reportingMTA, m, failed, originalHeader, now)
}

func buildDSN(from, reportingMTA string, m queue.Meta, failed []queue.Rcpt, originalHeader []byte, now time.Time) []byte {
	boundary := "=_mamori_dsn_" + randomHex(12)
	var b bytes.Buffer
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	mta := asciiOnly(reportingMTA)

	if !strings.Contains(from, "<") {
		from = "Mail Delivery System <" + from + ">"
	}
	line("From: %s", asciiOnly(from))
	line("To: <%s>", asciiOnly(m.From))
	line("Subject: %s", dsnSubject)
	line("Date: %s", now.Format(time.RFC1123Z))
	line("Message-ID: <%s.dsn@%s>", randomHex(12), mta)
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=delivery-status;")
	line("\tboundary=\"%s\"", boundary)
	line("")
	line("This is a MIME-encapsulated message.")
	line("")

	// Human-readable part.
	line("--%s", boundary)
	line("Content-Type: text/plain; charset=us-ascii")
	line("Content-Description: Notification")
	line("")
	line("This is the mail system at host %s.", mta)
	line("")
	line("Your message could not be delivered to one or more recipients.")
	line("It has been given up on; the errors are listed below.")
	line("")
	if m.Subject != "" {
		line("Subject: %s", asciiOnly(oneLine(m.Subject)))
	}
	if !m.Received.IsZero() {
		line("Sent:    %s", m.Received.Format(time.RFC1123Z))
	}
	line("")
	for _, r := range failed {
		line("<%s>: %s", asciiOnly(r.Addr), asciiOnly(oneLine(r.Diag)))
	}
	line("")

	// Machine-readable part (RFC 3464 §2).
	line("--%s", boundary)
	line("Content-Type: message/delivery-status")
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
		line("Final-Recipient: rfc822; %s", asciiOnly(r.Addr))
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
	line("Content-Type: text/rfc822-headers")
	line("Content-Description: Undelivered Message Headers")
	hdr := normalizeHeader(originalHeader)
	if !isASCII(string(hdr)) {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	b.Write(hdr)
	line("") // the CRLF before a boundary belongs to the boundary
	line("--%s--", boundary)
	return b.Bytes()
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
