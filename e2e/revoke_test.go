package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// revokeScript holds, for the victim (argv 2–3), an IMAP session in IDLE,
// a POP3 session in the TRANSACTION state and an authenticated SMTP
// submission session, and for a bystander (argv 4–5) an IMAP session;
// prints "ready", then reports how each of them ends once the victim's
// credentials are revoked (the test revokes them after "ready").
const revokeScript = `
import imaplib, poplib, smtplib, ssl, sys, time
host, user, pw, other, otherpw, imaps, pop3s, subs = sys.argv[1:9]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, int(imaps), ssl_context=ctx, timeout=20)
M.login(user, pw); M.select("INBOX")
B = imaplib.IMAP4_SSL(host, int(imaps), ssl_context=ctx, timeout=20)
B.login(other, otherpw); B.select("INBOX")
P = poplib.POP3_SSL(host, int(pop3s), context=ctx, timeout=20)
P.user(user); P.pass_(pw); P.stat()
S = smtplib.SMTP_SSL(host, int(subs), context=ctx, timeout=20)
S.login(user, pw)
M.send(b"i1 IDLE\r\n")
print("idle:", M.readline().decode().strip(), flush=True)
print("ready", flush=True)
t0 = time.time()
while True:
    line = M.readline().decode().strip()
    if not line:
        print("imap: closed without BYE after %.3f s" % (time.time() - t0), flush=True); break
    if line.startswith("* BYE"):
        print("imap: %s after %.3f s" % (line, time.time() - t0), flush=True); break
def ended(name, probe):
    for _ in range(40):
        try:
            probe()
        except Exception as e:
            print("%s: ended (%s)" % (name, type(e).__name__), flush=True); return
        time.sleep(0.05)
    print("%s: still open" % name, flush=True)
ended("pop3", P.noop)
ended("smtp", lambda: S.mail(user) and S.rset())
typ, _ = B.noop()
print("bystander:", typ, flush=True)
B.logout()
`

// TestRevokedCredentialsEndSessions: a password changed or an account
// disabled ends that user's sessions already open — IMAP (in IDLE, BYE),
// POP3 (closed, nothing deleted) and SMTP submission (closed) — at once,
// with real clients; another user's session goes on; the old password is
// refused afterwards; a disabled user is refused until enabled again.
func TestRevokedCredentialsEndSessions(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, nil)
	in.addUser("alice@ours.test", pw)
	host, imaps, _ := net.SplitHostPort(in.imaps)
	_, pop3s, _ := net.SplitHostPort(in.pop3s)
	_, subs, _ := net.SplitHostPort(in.submissions)

	const newPW = "a brand new long password"
	revokes := []struct {
		name   string
		pw     string // alice's password before the step
		revoke func()
	}{
		{"password changed", pw, func() { in.mustCLI(newPW+"\n", "user", "passwd", "alice@ours.test", "--password-stdin") }},
		{"account disabled", newPW, func() { in.mustCLI("", "user", "disable", "alice@ours.test") }},
	}
	for _, step := range revokes {
		bin := requireTool(t, "python3")
		cmd := exec.Command(bin, "-c", revokeScript, host, "alice@ours.test", step.pw, "bob@ours.test", pw, imaps, pop3s, subs)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && sc.Text() != "ready" {
			out = append(out, sc.Text())
		}
		if len(out) == 0 || !strings.Contains(out[len(out)-1], "idling") && !strings.HasPrefix(out[len(out)-1], "idle: +") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s: sessions not set up:\n%s\n%s", step.name, strings.Join(out, "\n"), in.logTail(20))
		}
		step.revoke()
		for sc.Scan() {
			out = append(out, sc.Text())
		}
		cmd.Wait()
		got := strings.Join(out, "\n")
		for _, want := range []string{"imap: * BYE Credentials changed or revoked", "pop3: ended", "smtp: ended", "bystander: OK"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: client transcript lacks %q:\n%s\nlog:\n%s", step.name, want, got, in.logTail(20))
			}
		}
		if t.Failed() {
			return
		}
		for _, l := range out {
			if strings.HasPrefix(l, "imap: * BYE") {
				t.Logf("%s: %s", step.name, l)
			}
		}
	}

	// Afterwards: the old password is refused, the disabled account is
	// refused plainly, and enabling it lets the new password in again.
	if code, _ := authFrom("127.0.0.9", in.submission, "alice@ours.test", pw); code == 235 {
		t.Fatal("old password accepted after the change")
	}
	code, text := authFrom("127.0.0.9", in.submission, "alice@ours.test", newPW)
	if code != 535 || !strings.Contains(text, "disabled") {
		t.Fatalf("disabled account: AUTH answered %d %q", code, text)
	}
	if out := in.mustCLI("", "user", "list"); !strings.Contains(out, "alice@ours.test") || !strings.Contains(out, "disabled") {
		t.Fatalf("user list does not show alice disabled:\n%s", out)
	}
	in.mustCLI("", "user", "enable", "alice@ours.test")
	if code, _ := authFrom("127.0.0.9", in.submission, "alice@ours.test", newPW); code != 235 {
		t.Fatalf("enabled again: AUTH answered %d", code)
	}
	// Mail to a disabled user is still delivered (disabling is about logins).
	in.mustCLI("", "user", "disable", "alice@ours.test")
	sendTo(t, in, "alice@ours.test", "while disabled")
	in.waitMail("alice@ours.test", 1, 10*time.Second)
}

// imapIdle logs user in over IMAPS at addr and starts IDLE; the returned
// function waits up to timeout for the server to end the session and
// returns its last line ("" when it did not end).
func imapIdle(t *testing.T, addr, user, pass string) (waitEnd func(timeout time.Duration) string) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	expect := func(prefix string) {
		t.Helper()
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("imap %s: waiting for %q: %v", addr, prefix, err)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
			if !strings.HasPrefix(l, "* ") {
				t.Fatalf("imap %s: got %q waiting for %q", addr, l, prefix)
			}
		}
	}
	expect("* OK")
	fmt.Fprintf(c, "a LOGIN %q %q\r\n", user, pass)
	expect("a OK")
	fmt.Fprintf(c, "b SELECT INBOX\r\nc IDLE\r\n")
	expect("b OK")
	expect("+ ")
	return func(timeout time.Duration) string {
		c.SetDeadline(time.Now().Add(timeout))
		last := ""
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return ""
				}
				return last
			}
			last = strings.TrimSpace(l)
		}
	}
}
