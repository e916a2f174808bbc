package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const pw = "correct horse battery"

// TestSubmissionSwaks: a real client (swaks) sends through submission with
// STARTTLS + AUTH, through submissions (implicit TLS), and through port 25;
// every message lands in the recipient's Maildir with trace headers.
func TestSubmissionSwaks(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("alice@ours.test", pw)
	in.addUser("bob@ours.test", pw)
	in.start()

	host, port, _ := strings.Cut(in.submission, ":")
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", mech,
			"--auth-user", "alice@ours.test", "--auth-password", pw,
			"--from", "alice@ours.test", "--to", "bob@ours.test", "--h-From", "alice@ours.test",
			"--h-Subject", "via submission "+mech)
		if code != 0 {
			t.Fatalf("swaks submission %s exit %d:\n%s", mech, code, out)
		}
	}
	host, port, _ = strings.Cut(in.submissions, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--tls-on-connect", "--auth", "PLAIN",
		"--auth-user", "alice@ours.test", "--auth-password", pw,
		"--from", "alice@ours.test", "--to", "bob@ours.test", "--h-Subject", "via submissions"); code != 0 {
		t.Fatalf("swaks submissions exit %d:\n%s", code, out)
	}
	host, port, _ = strings.Cut(in.smtp, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "someone@outside.test",
		"--to", "bob@ours.test", "--h-Subject", "via mx"); code != 0 {
		t.Fatalf("swaks mx exit %d:\n%s", code, out)
	}

	msgs := in.waitMail("bob@ours.test", 4, 20*time.Second)
	joined := strings.Join(msgs, "\n----\n")
	for _, want := range []string{"via submission PLAIN", "via submission LOGIN", "via submissions", "via mx",
		"Return-Path: <alice@ours.test>", "Return-Path: <someone@outside.test>", "with ESMTPSA", "by mx.ours.test (mamori)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("delivered mail lacks %q:\n%s", want, joined)
		}
	}
}

// TestSubmissionRules: AUTH is not offered before STARTTLS, is refused with
// a wrong password, submission needs AUTH, and an authenticated user cannot
// use someone else's address.
func TestSubmissionRules(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("alice@ours.test", pw)
	in.addUser("bob@ours.test", pw)
	in.start()
	host, port, _ := strings.Cut(in.submission, ":")

	out, code := swaks(t, "--server", host, "--port", port, "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "alice@ours.test", "--to", "bob@ours.test")
	if code == 0 || strings.Contains(out, "235 ") {
		t.Errorf("AUTH without TLS succeeded:\n%s", out)
	}
	out, code = swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", "wrong password", "--from", "alice@ours.test", "--to", "bob@ours.test")
	if code == 0 || !strings.Contains(out, "535 5.7.8") {
		t.Errorf("wrong password: want 535 5.7.8, exit %d:\n%s", code, out)
	}
	out, code = swaks(t, "--server", host, "--port", port, "--tls", "--from", "alice@ours.test", "--to", "bob@ours.test")
	if code == 0 || !strings.Contains(out, "530 5.7.0") {
		t.Errorf("no AUTH on submission: want 530 5.7.0, exit %d:\n%s", code, out)
	}
	out, code = swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "bob@ours.test", "--to", "bob@ours.test")
	if code == 0 || !strings.Contains(out, "553 5.7.1") {
		t.Errorf("envelope sender of another user: want 553 5.7.1, exit %d:\n%s", code, out)
	}
	out, code = swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "alice@ours.test", "--h-From", "ceo@ours.test", "--to", "bob@ours.test")
	if code == 0 || !strings.Contains(out, "5.7.1") {
		t.Errorf("header From of another address: want 5.7.1 refusal, exit %d:\n%s", code, out)
	}
	if n := len(readMaildir(in.maildirNew("bob@ours.test"))); n != 0 {
		t.Errorf("bob got %d messages from refused transactions", n)
	}
	if strings.Contains(in.log(), pw) || strings.Contains(in.log(), "wrong password") {
		t.Errorf("a password appears in the server log")
	}
}

// TestPythonSmtplib: Python's smtplib through submission (STARTTLS) and
// port 25, including an unknown local recipient refused at RCPT.
func TestPythonSmtplib(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("carol@ours.test", pw)
	in.start()
	script := `
import smtplib, ssl, sys
sub, mx, pw = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl._create_unverified_context()
h, p = sub.split(":")
with smtplib.SMTP(h, int(p), timeout=20) as s:
    s.ehlo("client.test")
    assert "auth" not in s.esmtp_features, "AUTH offered before STARTTLS"
    s.starttls(context=ctx)
    s.ehlo("client.test")
    assert "auth" in s.esmtp_features, "AUTH not offered after STARTTLS"
    s.login("carol@ours.test", pw)
    s.sendmail("carol@ours.test", ["carol@ours.test"], "From: carol@ours.test\r\nSubject: smtplib submission\r\n\r\nhello\r\n")
h, p = mx.split(":")
with smtplib.SMTP(h, int(p), timeout=20) as s:
    s.ehlo("client.test")
    assert "auth" not in s.esmtp_features, "AUTH offered on port 25"
    s.mail("x@outside.test")
    code, msg = s.rcpt("nobody@ours.test")
    print("UNKNOWN", code, msg.decode())
    code, msg = s.rcpt("Carol@OURS.test.")
    print("KNOWN", code, msg.decode())
    code, msg = s.data(b"From: x@outside.test\r\nSubject: smtplib mx\r\n\r\nhi\r\n")
    print("DATA", code, msg.decode())
`
	out, err := python(t, script, in.submission, in.smtp, pw)
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if !strings.Contains(out, "UNKNOWN 550 5.1.1") {
		t.Errorf("unknown user: want 550 5.1.1:\n%s", out)
	}
	if !strings.Contains(out, "KNOWN 250") || !strings.Contains(out, "DATA 250 2.0.0 OK queued as ") {
		t.Errorf("known user with case and trailing dot not accepted:\n%s", out)
	}
	msgs := in.waitMail("carol@ours.test", 2, 20*time.Second)
	joined := strings.Join(msgs, "\n")
	if !strings.Contains(joined, "smtplib submission") || !strings.Contains(joined, "smtplib mx") {
		t.Errorf("missing messages:\n%s", joined)
	}
}

// TestRelayRefusedEndToEnd sends every relay trick with swaks from an
// untrusted client on port 25 and checks none is accepted, while local mail
// still is; then runs `mamori relaytest` against mamori (exit 0).
func TestRelayRefusedEndToEnd(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("dave@ours.test", pw)
	in.start()
	host, port, _ := strings.Cut(in.smtp, ":")
	tricks := []string{
		"victim@other.test",
		"victim%other.test@ours.test",
		"@ours.test:victim@other.test",
		"other.test!victim@ours.test",
		`"victim@other.test"@ours.test`,
		"victim@other.test.",
		"victim@OTHER.TEST",
		"victim@[192.0.2.1]",
	}
	for _, rcpt := range tricks {
		out, code := swaks(t, "--server", host, "--port", port, "--from", "spammer@outside.test", "--to", rcpt, "--quit-after", "RCPT")
		if code == 0 {
			t.Errorf("RCPT %s accepted:\n%s", rcpt, out)
			continue
		}
		if r := replyTo(out, "RCPT TO"); !strings.HasPrefix(r, "5") {
			t.Errorf("RCPT %s: want a 5xx refusal, got %q", rcpt, r)
		}
	}
	// A source route to a local mailbox is ignored (RFC 5321 appendix C):
	// the mail is for dave@ours.test, which is no relaying.
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "spammer@outside.test", "--to", "@other.test:dave@ours.test",
		"--h-Subject", "routed to a local mailbox"); code != 0 {
		t.Errorf("source route to a local mailbox: %s", out)
	} else if m := in.waitMail("dave@ours.test", 1, 20*time.Second); !strings.Contains(m[0], "routed to a local mailbox") {
		t.Errorf("routed message not in dave's mailbox")
	}
	// Null sender and a spoofed local sender are refused too.
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "", "--to", "victim@other.test", "--quit-after", "RCPT"); code == 0 {
		t.Errorf("null-sender relay accepted:\n%s", out)
	}
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "dave@ours.test", "--to", "dave@ours.test", "--quit-after", "RCPT"); code == 0 {
		t.Errorf("outsider using a local envelope sender accepted:\n%s", out)
	}
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "friend@outside.test", "--to", "dave@ours.test"); code != 0 {
		t.Errorf("plain local delivery refused:\n%s", out)
	}

	out, err := exec.Command(mamoriBin, "relaytest", in.smtp, "--domain", "ours.test", "--user", "dave").CombinedOutput()
	if err != nil {
		t.Fatalf("relaytest against mamori should exit 0: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "closed") {
		t.Errorf("relaytest output:\n%s", out)
	}
}

// TestCheckConfigRefusesOpenRelay: a config trusting the world is refused.
func TestCheckConfigRefusesOpenRelay(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	if out, err := in.cli("", "check-config"); err != nil {
		t.Fatalf("fresh config refused: %v\n%s", err, out)
	}
	// --config may be omitted: $MAMORI_CONFIG names the file.
	cmd := exec.Command(mamoriBin, "check-config")
	cmd.Env = append(os.Environ(), "MAMORI_CONFIG="+in.cfg)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), in.cfg+": OK") {
		t.Errorf("check-config with $MAMORI_CONFIG: %v\n%s", err, out)
	}
	cmd = exec.Command(mamoriBin, "check-config")
	cmd.Env = append(os.Environ(), "MAMORI_CONFIG="+filepath.Join(in.dir, "missing.toml"))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "$MAMORI_CONFIG") {
		t.Errorf("check-config with a missing $MAMORI_CONFIG: err=%v\n%s", err, out)
	}
	for _, bad := range []string{`["0.0.0.0/0"]`, `["::/0"]`, `["8.0.0.0/7"]`, `["1.0.0.0/8"]`, `["not-a-net"]`} {
		b, _ := os.ReadFile(in.cfg)
		cfg := setKey(string(b), "trusted_networks", bad)
		path := filepath.Join(in.dir, "bad.toml")
		os.WriteFile(path, []byte(cfg), 0o600)
		out, err := exec.Command(mamoriBin, "check-config", "--config", path).CombinedOutput()
		if err == nil {
			t.Errorf("check-config accepted trusted_networks = %s", bad)
		} else if !strings.Contains(string(out), "trusted_networks") {
			t.Errorf("unclear message for %s: %s", bad, out)
		}
	}
	// serve refuses it too.
	b, _ := os.ReadFile(in.cfg)
	os.WriteFile(in.cfg, []byte(setKey(string(b), "trusted_networks", `["0.0.0.0/0"]`)), 0o600)
	out, err := exec.Command(mamoriBin, "serve", "--config", in.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "open relay") {
		t.Errorf("serve with an open-relay config: err=%v\n%s", err, out)
	}
}

// TestInitRefusesOverwrite: init never clobbers an existing config.
func TestInitRefusesOverwrite(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	before, _ := os.ReadFile(in.cfg)
	out, err := exec.Command(mamoriBin, "init", "--dir", in.dir, "--domain", "other.test").CombinedOutput()
	if err == nil {
		t.Fatalf("second init succeeded:\n%s", out)
	}
	after, _ := os.ReadFile(in.cfg)
	if string(before) != string(after) {
		t.Errorf("config changed by refused init")
	}
}

// TestManagementWhileRunning: user/domain/alias commands go through the
// admin API of the running server and take effect at once.
func TestManagementWhileRunning(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.start()
	in.mustCLI("", "domain", "add", "second.test")
	in.addUser("erin@second.test", pw)
	in.mustCLI("", "alias", "add", "team@second.test", "erin@second.test", "frank@ours.test")
	in.addUser("frank@ours.test", pw)
	in.mustCLI("", "alias", "add", "@ours.test", "frank@ours.test")
	if out := in.mustCLI("", "user", "list"); !strings.Contains(out, "erin@second.test") || !strings.Contains(out, "frank@ours.test") {
		t.Errorf("user list:\n%s", out)
	}
	if out := in.mustCLI("", "domain", "list"); !strings.Contains(out, "second.test") || !strings.Contains(out, "ours.test") {
		t.Errorf("domain list:\n%s", out)
	}
	if out := in.mustCLI("", "alias", "list"); !strings.Contains(out, "team@second.test") {
		t.Errorf("alias list:\n%s", out)
	}
	host, port, _ := strings.Cut(in.smtp, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "x@outside.test", "--to", "team@second.test", "--h-Subject", "to the team"); code != 0 {
		t.Fatalf("alias delivery: %s", out)
	}
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "x@outside.test", "--to", "whoever@ours.test", "--h-Subject", "catch-all"); code != 0 {
		t.Fatalf("catch-all delivery: %s", out)
	}
	in.waitMail("erin@second.test", 1, 20*time.Second)
	frank := in.waitMail("frank@ours.test", 2, 20*time.Second)
	if j := strings.Join(frank, ""); !strings.Contains(j, "to the team") || !strings.Contains(j, "catch-all") {
		t.Errorf("frank's mail:\n%s", j)
	}
	// A changed password works at once; the old one no longer does.
	in.mustCLI("a brand new secret\n", "user", "passwd", "erin@second.test", "--password-stdin")
	hs, ps, _ := strings.Cut(in.submission, ":")
	if out, code := swaks(t, "--server", hs, "--port", ps, "--tls", "--auth", "PLAIN", "--auth-user", "erin@second.test",
		"--auth-password", pw, "--from", "erin@second.test", "--to", "frank@ours.test", "--quit-after", "AUTH"); code == 0 {
		t.Errorf("old password still accepted:\n%s", out)
	}
	if out, code := swaks(t, "--server", hs, "--port", ps, "--tls", "--auth", "PLAIN", "--auth-user", "erin@second.test",
		"--auth-password", "a brand new secret", "--from", "erin@second.test", "--to", "frank@ours.test", "--quit-after", "AUTH"); code != 0 {
		t.Errorf("new password refused:\n%s", out)
	}
	in.mustCLI("", "user", "del", "erin@second.test")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "x@outside.test", "--to", "erin@second.test", "--quit-after", "RCPT"); code == 0 || !strings.Contains(out, "550 5.1.1") {
		t.Errorf("deleted user still accepted:\n%s", out)
	}
	// The admin API refuses a wrong token.
	bad := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer nope", "http://"+in.admin+"/api/v1/users")
	if b, err := bad.Output(); err == nil && string(b) != "401" {
		t.Errorf("admin API with a wrong token answered %s", b)
	}
}

// TestUserAddOffline: management works before the first start, directly on
// the data directory.
func TestUserAddOffline(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("gina@ours.test", pw)
	if out := in.mustCLI("", "user", "list"); !strings.Contains(out, "gina@ours.test") {
		t.Fatalf("offline user list:\n%s", out)
	}
	if out, err := in.cli("short\n", "user", "add", "h@ours.test", "--password-stdin"); err == nil {
		t.Errorf("weak password accepted:\n%s", out)
	}
	if out, err := in.cli(pw+"\n", "user", "add", "h@elsewhere.test", "--password-stdin"); err == nil {
		t.Errorf("user in a non-local domain accepted:\n%s", out)
	}
	in.start()
	hs, ps, _ := strings.Cut(in.submission, ":")
	if out, code := swaks(t, "--server", hs, "--port", ps, "--tls", "--auth", "LOGIN", "--auth-user", "gina@ours.test",
		"--auth-password", pw, "--from", "gina@ours.test", "--to", "gina@ours.test"); code != 0 {
		t.Fatalf("send as offline-added user: %s", out)
	}
	in.waitMail("gina@ours.test", 1, 20*time.Second)
}
