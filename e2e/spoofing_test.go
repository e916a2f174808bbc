package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testdns"
)

// pySendRaw sends raw message bytes with Python's smtplib (optionally
// with STARTTLS and AUTH) and prints "OK" or "ERR code reply".
const pySendRaw = `
import smtplib, ssl, sys
host, port, mode, user, pw, mfrom, rcpt, data = sys.argv[1:9]
s = smtplib.SMTP(host, int(port), timeout=20)
s.ehlo("client.test")
if mode == "auth":
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.test")
    s.login(user, pw)
try:
    s.sendmail(mfrom, [rcpt], data.replace("\\n", "\r\n").encode())
    print("OK")
except smtplib.SMTPDataError as e:
    print("ERR", e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    print("ERR", list(e.recipients.values())[0])
s.quit()
`

func sendRaw(t *testing.T, addr, mode, user, mfrom, rcpt, data string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := python(t, pySendRaw, host, port, mode, user, pw, mfrom, rcpt, data)
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// TestSpoofingClasses: the DMARC bypasses of the first review, and the
// header forms around them, against a real instance: every header RFC 5322
// makes ambiguous is refused with 550 5.6.0, every author domain is
// evaluated (strictest policy wins), mail from outside naming one of our
// own domains needs our DKIM signature whatever DNS says, and an
// authenticated user may only use its own addresses in every From and
// Sender.
func TestSpoofingClasses(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	for _, r := range []string{
		`bank.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`evil.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		// Our own domain publishes nothing at all: "whatever DNS says".
	} {
		if err := dns.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	in := newInstance(t, "ours.test", func(cfg string) string {
		return setKey(cfg, "resolver", fmt.Sprintf("%q", dns.Addr))
	})
	in.addUser("alice@ours.test", pw)
	in.addUser("bob@ours.test", pw)
	in.start()

	body := "Subject: s\nDate: Fri, 04 Dec 2026 10:00:00 +0000\n\nhello\n"
	tests := []struct {
		name, mode, user, head string
		want                   string // "OK" or a reply prefix
	}{
		{"plain outsider", "", "", "From: x@evil.test\n", "OK"},
		{"p=reject fails", "", "", "From: ceo@bank.test\n", "ERR 550 5.7.1"},
		{"two From", "", "", "From: x@evil.test\nFrom: ceo@bank.test\n", "ERR 550 5.6.0"},
		{"two From reversed", "", "", "From: ceo@bank.test\nFrom: x@evil.test\n", "ERR 550 5.6.0"},
		{"empty From first", "", "", "From:\nFrom: ceo@bank.test\n", "ERR 550 5.6.0"},
		{"two mailboxes no Sender", "", "", "From: x@evil.test, ceo@bank.test\n", "ERR 550 5.6.0"},
		{"two mailboxes with Sender", "", "", "From: x@evil.test, ceo@bank.test\nSender: x@evil.test\n", "ERR 550 5.7.1"},
		{"obsolete From space colon", "", "", "From : ceo@bank.test\n", "ERR 550 5.7.1"},
		{"no From", "", "", "To: bob@ours.test\n", "ERR 550 5.6.0"},
		{"two Sender", "", "", "From: x@evil.test\nSender: x@evil.test\nSender: y@evil.test\n", "ERR 550 5.6.0"},
		{"own domain from outside", "", "", "From: ceo@ours.test\n", "ERR 550 5.7.1"},
		{"own domain mixed case from outside", "", "", "From: CEO@Ours.Test\n", "ERR 550 5.7.1"},
		{"own domain behind CFWS", "", "", "From: \"x@evil.test\" <ceo @ ours.test>\n", "ERR 550 5.7.1"},
		{"own domain behind a comment", "", "", "From: Boss <ceo@(x@evil.test)ours.test>\n", "ERR 550 5.7.1"},
		{"own domain as second author", "", "", "From: x@evil.test, ceo@ours.test\nSender: x@evil.test\n", "ERR 550 5.7.1"},
		{"user own From", "auth", "alice@ours.test", "From: alice@ours.test\n", "OK"},
		{"user foreign second From", "auth", "alice@ours.test", "From: alice@ours.test, bob@ours.test\nSender: alice@ours.test\n", "ERR 553 5.7.1"},
		{"user foreign Sender", "auth", "alice@ours.test", "From: alice@ours.test\nSender: bob@ours.test\n", "ERR 553 5.7.1"},
		{"user duplicate From", "auth", "alice@ours.test", "From: alice@ours.test\nFrom: alice@ours.test\n", "ERR 550 5.6.0"},
		{"user foreign From behind CFWS", "auth", "alice@ours.test", "From: \"alice@ours.test\" <bob @ ours.test>\n", "ERR 553 5.7.1"},
		{"user bare CR hides a second From", "auth", "alice@ours.test", "Subject: hi\rFrom: bob@ours.test\r\r\nFrom: alice@ours.test\n", "ERR 55"},
		{"user empty From", "auth", "alice@ours.test", "From:\n", "ERR 550 5.6.0"},
	}
	for _, tt := range tests {
		addr, mfrom := in.smtp, "x@evil.test"
		if tt.mode == "auth" {
			addr, mfrom = in.submission, tt.user
		}
		got := sendRaw(t, addr, tt.mode, tt.user, mfrom, "bob@ours.test", tt.head+body)
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestOwnDomainSignedFromOutside: mail from outside with one of our
// domains in From is accepted when it carries a valid DKIM signature of
// that domain (here: a second server of ours, A, that signs what its
// trusted network sends), and refused when unsigned — even with
// verify_inbound off and no DMARC record.
func TestOwnDomainSignedFromOutside(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	b := newInstance(t, "other.test", func(cfg string) string {
		cfg = setKey(cfg, "resolver", fmt.Sprintf("%q", dns.Addr))
		cfg = setKey(cfg, "verify_inbound", "false")
		return strings.Replace(cfg, `domains = ["other.test"]`, `domains = ["other.test", "ours.test"]`, 1)
	})
	a := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
		return setRoutes(cfg, map[string]string{"other.test": b.smtp})
	})
	out := a.mustCLI("", "dkim", "keygen", "--domain", "ours.test")
	var rr string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "._domainkey.ours.test. IN TXT") {
			rr = strings.Replace(strings.TrimSpace(l), " IN TXT ", " 60 IN TXT ", 1)
		}
	}
	if err := dns.Add(rr); err != nil {
		t.Fatalf("add %q: %v", rr, err)
	}
	a.addUser("alice@ours.test", pw)
	b.addUser("bob@other.test", pw)
	a.start()
	b.start()

	// The envelope sender is not in B's domains (B refuses its own
	// domains as envelope sender from outside); the header From is.
	if got := sendRaw(t, a.smtp, "", "", "bounces@lists.test", "bob@other.test",
		"From: alice@ours.test\nSubject: signed\n\nhi\n"); got != "OK" {
		t.Fatalf("send through A: %s", got)
	}
	msgs := b.waitMail("bob@other.test", 1, 30*time.Second)
	if !strings.Contains(msgs[0], "d=ours.test") {
		t.Errorf("B's copy is not signed by ours.test:\n%.800s", msgs[0])
	}
	got := sendRaw(t, b.smtp, "", "", "x@evil.test", "bob@other.test", "From: alice@ours.test\nSubject: forged\n\nhi\n")
	if !strings.HasPrefix(got, "ERR 550 5.7.1") {
		t.Errorf("unsigned own-domain From from outside: got %q, want 550 5.7.1", got)
	}
}

// rawSMTP is a minimal client for protocol edge cases no library sends.
type rawSMTP struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &rawSMTP{t: t, c: c, r: bufio.NewReader(c)}
	s.reply() // greeting
	return s
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (s *rawSMTP) reply() string {
	s.t.Helper()
	_ = s.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return "EOF " + err.Error()
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func (s *rawSMTP) send(text string) {
	s.t.Helper()
	if _, err := s.c.Write([]byte(text)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *rawSMTP) cmd(line string) string {
	s.send(line + "\r\n")
	return s.reply()
}

// TestProtocolEdges: item 8 and 12 of the first review. A bare
// RCPT TO:<postmaster> is accepted; a body line longer than the command
// line limit is accepted; message lines that look like commands (a source
// route, BDAT with a huge size) do not affect the next pipelined
// transaction; a DATA time-out answers 421 4.4.2, not a 5xx.
func TestProtocolEdges(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "data_timeout", `"2s"`)
		return setKey(cfg, "verify_inbound", "false")
	})
	in.addUser("bob@ours.test", pw)
	in.addUser("postmaster@ours.test", pw)
	in.start()

	c := dialRaw(t, in.smtp)
	if r := c.cmd("EHLO client.test"); !strings.HasPrefix(r, "250") {
		t.Fatalf("EHLO: %s", r)
	}
	if r := c.cmd("MAIL FROM:<x@outside.test>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("MAIL: %s", r)
	}
	if r := c.cmd("RCPT TO:<Postmaster>"); !strings.HasPrefix(r, "250") {
		t.Errorf("RCPT TO:<Postmaster>: %s", r)
	}
	if r := c.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %s", r)
	}
	long := strings.Repeat("x", 5000) // the command line limit is 2000
	c.send("From: x@outside.test\r\nSubject: long line\r\n\r\n" + long + "\r\nRCPT TO:<@relay.test:bob@ours.test>\r\nBDAT 999999999\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "250") {
		t.Errorf("message with a 5000-octet line: %s", r)
	}
	// Next transaction, pipelined in one write: a plain RCPT must not be
	// taken for the source route seen in the previous message's body.
	c.send("MAIL FROM:<x@outside.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\n")
	for i, want := range []string{"250", "250", "354"} {
		if r := c.reply(); !strings.HasPrefix(r, want) {
			t.Errorf("pipelined reply %d: %s, want %s", i, r, want)
		}
	}
	c.send("From: x@outside.test\r\nSubject: second\r\n\r\nhi\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "250") {
		t.Errorf("second message: %s", r)
	}
	msgs := in.waitMail("bob@ours.test", 1, 20*time.Second)
	pm := in.waitMail("postmaster@ours.test", 1, 20*time.Second)
	if !strings.Contains(pm[0], long) {
		t.Errorf("the long line did not reach the mailbox intact")
	}
	if !strings.Contains(msgs[0], "Subject: second") {
		t.Errorf("second message not delivered: %.300s", msgs[0])
	}

	// DATA time-out: temporary, with the RFC 3463 code for it.
	c2 := dialRaw(t, in.smtp)
	c2.cmd("EHLO client.test")
	c2.cmd("MAIL FROM:<x@outside.test>")
	c2.cmd("RCPT TO:<bob@ours.test>")
	if r := c2.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %s", r)
	}
	c2.send("Subject: slow\r\n\r\nstarted but never finished\r\n")
	if r := c2.reply(); !strings.HasPrefix(r, "421 4.4.2") {
		t.Errorf("DATA time-out: got %q, want 421 4.4.2", r)
	}
}
