package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 13: users read their mail over IMAP and POP3 with real clients
// (Python's imaplib and poplib), on the Maildir++ tree local delivery
// writes.

// bindScript makes every socket the script opens leave from SRC (argv[1]),
// so a test can play several hosts on 127.0.0.0/8.
const bindScript = `
import socket, sys
_src = sys.argv[1]
_orig = socket.create_connection
def _bound(addr, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kw):
    return _orig(addr, timeout, (_src, 0), **kw)
socket.create_connection = _bound
`

// imapScript: log in over implicit TLS, check the special-use folders,
// fetch the message that arrived by SMTP, flag it, move it to Archive,
// then append to Sent and expunge it there.
const imapScript = bindScript + `
import imaplib, ssl, sys, re
src, host, port, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=10)
try:
    M.login(user, pw + "x")
    print("WRONG PASSWORD ACCEPTED")
except imaplib.IMAP4.error as e:
    print("wrong password refused:", e)
M.logout()
M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=10)
typ, caps = M.capability()
print("caps before login:", caps[0].decode())
M.login(user, pw)
typ, caps = M.capability()
print("caps:", caps[0].decode())
typ, boxes = M.list()
for b in boxes:
    print("list:", b.decode())
typ, data = M.select("INBOX")
print("select exists:", data[0].decode())
typ, data = M.uid("SEARCH", None, "ALL")
uids = data[0].split()
print("uids:", len(uids))
typ, data = M.uid("FETCH", uids[0], "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("fetch:", data[0][1].decode().strip())
typ, data = M.uid("STORE", uids[0], "+FLAGS", "(\\Flagged)")
print("store:", typ, data[0].decode())
typ, data = M.uid("MOVE", uids[0], "Archive")
print("move:", typ)
typ, data = M.select("Archive")
print("archive exists:", data[0].decode())
typ, data = M.fetch("1", "(FLAGS BODY[])")
print("archive flags:", data[0][0].decode())
body = data[0][1].decode()
print("archive body has subject:", "Subject: imap e2e" in body)
typ, data = M.append("Sent", "(\\Seen)", None, b"From: " + user.encode() + b"\r\nSubject: sent copy\r\n\r\nhello\r\n")
print("append:", typ, data[0].decode())
M.select("Sent")
M.store("1:*", "+FLAGS", "(\\Deleted)")
typ, data = M.expunge()
print("expunge:", typ, [d.decode() for d in data if d])
typ, data = M.status("Sent", "(MESSAGES UIDNEXT UIDVALIDITY)")
print("status:", data[0].decode())
M.logout()
`

// starttlsScript: on the plain IMAP port, LOGIN before STARTTLS is refused
// (LOGINDISABLED), and works after it.
const starttlsScript = `
import imaplib, ssl, sys
host, port, user, pw = sys.argv[1:5]
M = imaplib.IMAP4(host, int(port), timeout=10)
typ, caps = M.capability()
print("plain caps:", caps[0].decode())
try:
    M.login(user, pw)
    print("LOGIN WITHOUT TLS ACCEPTED")
except imaplib.IMAP4.error as e:
    print("login before starttls refused:", e)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M.starttls(ssl_context=ctx)
M.login(user, pw)
print("login after starttls: ok")
M.logout()
`

func mailAccessInstance(t *testing.T, edit func(string) string) *instance {
	t.Helper()
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "verify_inbound", "false")
		if edit != nil {
			cfg = edit(cfg)
		}
		return cfg
	})
	in.addUser("bob@ours.test", pw)
	in.start()
	return in
}

func sendTo(t *testing.T, in *instance, rcpt, subject string) {
	t.Helper()
	out, code := swaks(t, "--server", in.smtp, "--from", "sender@outside.test", "--to", rcpt,
		"--header", "Subject: "+subject, "--body", "hello "+subject)
	if code != 0 {
		t.Fatalf("swaks to %s: exit %d\n%s", rcpt, code, out)
	}
}

// userDir is a user's Maildir++ root.
func (in *instance) userDir(addr string) string {
	local, dom, _ := strings.Cut(strings.ToLower(addr), "@")
	return filepath.Join(in.dir, "data", "mail", dom, local)
}

// countFiles counts the messages in a Maildir folder's new/ and cur/.
func countFiles(t *testing.T, dir string) (n int, names []string) {
	t.Helper()
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			n++
			names = append(names, e.Name())
		}
	}
	return n, names
}

func TestIMAPWithImaplib(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, nil)
	sendTo(t, in, "bob@ours.test", "imap e2e")
	in.waitMail("bob@ours.test", 1, 10*time.Second)
	host, port, _ := net.SplitHostPort(in.imaps)
	out, err := python(t, imapScript, "127.0.0.1", host, port, "bob@ours.test", pw)
	if err != nil {
		t.Fatalf("imaplib: %v\n%s\nlog:\n%s", err, out, in.logTail(30))
	}
	t.Logf("imaplib transcript:\n%s", out)
	mustContain := []string{
		"wrong password refused:",
		"IMAP4rev1", "IDLE", "MOVE", "UIDPLUS", "SPECIAL-USE", "LITERAL+", "NAMESPACE", "UNSELECT", "ENABLE", "ESEARCH", "ID",
		`\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`,
		"uids: 1", "Subject: imap e2e", "store: OK", "move: OK", "archive exists: 1",
		"archive body has subject: True", "append: OK", "[APPENDUID ", "expunge: OK",
	}
	for _, w := range mustContain {
		if !strings.Contains(out, w) {
			t.Errorf("imaplib transcript lacks %q", w)
		}
	}
	if strings.Contains(out, "WRONG PASSWORD ACCEPTED") {
		t.Error("a wrong password was accepted")
	}
	// The tree is Maildir++: the moved message is in .Archive with the
	// Flagged letter in its name; INBOX and Sent are empty.
	n, names := countFiles(t, filepath.Join(in.userDir("bob@ours.test"), ".Archive"))
	if n != 1 || !strings.Contains(names[0], ":2,") || !strings.Contains(names[0][strings.Index(names[0], ":2,"):], "F") {
		t.Errorf(".Archive holds %v, want one message flagged F", names)
	}
	if n, names := countFiles(t, in.userDir("bob@ours.test")); n != 0 {
		t.Errorf("INBOX still holds %v after MOVE", names)
	}
	if n, names := countFiles(t, filepath.Join(in.userDir("bob@ours.test"), ".Sent")); n != 0 {
		t.Errorf(".Sent holds %v after EXPUNGE", names)
	}
	for _, f := range []string{".Drafts", ".Trash", ".Junk"} {
		if _, err := os.Stat(filepath.Join(in.userDir("bob@ours.test"), f, "cur")); err != nil {
			t.Errorf("special-use folder %s missing on disk: %v", f, err)
		}
	}

	host, port, _ = net.SplitHostPort(in.imap)
	out, err = python(t, starttlsScript, host, port, "bob@ours.test", pw)
	if err != nil {
		t.Fatalf("imaplib STARTTLS: %v\n%s", err, out)
	}
	for _, w := range []string{"STARTTLS", "LOGINDISABLED", "login before starttls refused", "login after starttls: ok"} {
		if !strings.Contains(out, w) {
			t.Errorf("STARTTLS transcript lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "LOGIN WITHOUT TLS ACCEPTED") {
		t.Error("LOGIN accepted before STARTTLS")
	}
}

// idleScript: IDLE in INBOX, then print how long after "ready" the first
// EXISTS arrived.
const idleScript = `
import imaplib, ssl, sys, time
host, port, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=20)
M.login(user, pw)
M.select("INBOX")
M.send(b"i1 IDLE\r\n")
line = M.readline()
print("idle:", line.decode().strip(), flush=True)
print("ready", flush=True)
t0 = time.time()
while True:
    line = M.readline().decode().strip()
    if line.endswith("EXISTS"):
        print("exists after %.3f s: %s" % (time.time() - t0, line), flush=True)
        break
M.send(b"DONE\r\n")
print("done:", M.readline().decode().strip())
M.logout()
`

// TestIMAPIdleSeesDelivery: a client in IDLE hears of a message delivered
// by SMTP within a second of its delivery.
func TestIMAPIdleSeesDelivery(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, nil)
	host, port, _ := net.SplitHostPort(in.imaps)
	bin := requireTool(t, "python3")
	cmd := exec.Command(bin, "-c", idleScript, host, port, "bob@ours.test", pw)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	var transcript []string
	wait := func(prefix string, d time.Duration) string {
		t.Helper()
		timeout := time.After(d)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("client ended before %q:\n%s", prefix, strings.Join(transcript, "\n"))
				}
				transcript = append(transcript, l)
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q within %s:\n%s\nlog:\n%s", prefix, d, strings.Join(transcript, "\n"), in.logTail(20))
			}
		}
	}
	wait("ready", 20*time.Second)
	sent := time.Now()
	sendTo(t, in, "bob@ours.test", "idle e2e")
	accepted := time.Since(sent)
	line := wait("exists after", 10*time.Second)
	// The client's clock started before swaks connected; what matters is
	// the time from the 250 to the EXISTS, at most a second.
	var secs float64
	fmt.Sscanf(strings.TrimPrefix(line, "exists after "), "%f", &secs)
	latency := time.Duration(secs*float64(time.Second)) - accepted
	t.Logf("EXISTS %.0f ms after the SMTP transaction ended (transaction %s)", latency.Seconds()*1000, accepted)
	if latency > time.Second {
		t.Errorf("IDLE heard of the delivery %s after it was accepted, want within 1s", latency)
	}
	wait("done:", 5*time.Second)
}

// popScript: over POP3S, a wrong password is refused; STAT, LIST, UIDL,
// TOP, RETR, DELE and QUIT download and delete; then STLS on the plain
// port.
const popScript = `
import poplib, ssl, sys
host, port, plainport, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
P = poplib.POP3_SSL(host, int(port), context=ctx, timeout=10)
P.user(user)
try:
    P.pass_(pw + "x")
    print("WRONG PASSWORD ACCEPTED")
except poplib.error_proto as e:
    print("wrong password refused:", e)
P = poplib.POP3_SSL(host, int(port), context=ctx, timeout=10)
print("capa:", sorted(P.capa().keys()))
P.user(user); P.pass_(pw)
print("stat:", P.stat())
print("uidl:", P.uidl()[1])
resp, lines, octets = P.top(1, 0)
print("top has subject:", any(l.startswith(b"Subject: pop e2e") for l in lines))
for i in range(1, P.stat()[0] + 1):
    resp, lines, octets = P.retr(i)
    print("retr", i, len(lines), "lines")
    P.dele(i)
print("quit:", P.quit().decode())
P = poplib.POP3(host, int(plainport), timeout=10)
print("plain capa:", sorted(P.capa().keys()))
try:
    P.user(user); P.pass_(pw)
    print("LOGIN WITHOUT TLS ACCEPTED")
except poplib.error_proto as e:
    print("login before stls refused:", e)
P = poplib.POP3(host, int(plainport), timeout=10)
P.stls(context=ctx)
P.user(user); P.pass_(pw)
print("after stls stat:", P.stat())
P.quit()
`

func TestPOP3WithPoplib(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, nil)
	sendTo(t, in, "bob@ours.test", "pop e2e")
	sendTo(t, in, "bob@ours.test", "pop e2e 2")
	in.waitMail("bob@ours.test", 2, 10*time.Second)
	host, port, _ := net.SplitHostPort(in.pop3s)
	_, plain, _ := net.SplitHostPort(in.pop3)
	out, err := python(t, popScript, host, port, plain, "bob@ours.test", pw)
	if err != nil {
		t.Fatalf("poplib: %v\n%s\nlog:\n%s", err, out, in.logTail(30))
	}
	t.Logf("poplib transcript:\n%s", out)
	for _, w := range []string{"wrong password refused:", "'TOP'", "'UIDL'", "stat: (2,", "top has subject: True",
		"retr 1", "retr 2", "quit: +OK", "'STLS'", "login before stls refused", "after stls stat: (0, 0)"} {
		if !strings.Contains(out, w) {
			t.Errorf("poplib transcript lacks %q", w)
		}
	}
	for _, bad := range []string{"WRONG PASSWORD ACCEPTED", "LOGIN WITHOUT TLS ACCEPTED"} {
		if strings.Contains(out, bad) {
			t.Error(bad)
		}
	}
	if n, names := countFiles(t, in.userDir("bob@ours.test")); n != 0 {
		t.Errorf("INBOX holds %v after DELE and QUIT", names)
	}
}

// TestIMAPBruteForceBansSMTP: failed IMAP logins from one address ban it
// from every listener, SMTP included (one guard for every login).
func TestIMAPBruteForceBansSMTP(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, func(cfg string) string {
		return strings.Replace(cfg, "[guard]\n", "[guard]\nauth_fails_per_ip = 6\nauth_fails_per_pair = 3\n", 1)
	})
	const attacker = "127.0.0.77"
	script := bindScript + `
import imaplib, ssl, sys
src, host, port = sys.argv[1:4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for i in range(10):
    try:
        M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=10)
        M.login("user%d@ours.test" % i, "guess%d" % i)
        print("ACCEPTED", i)
    except Exception as e:
        print("attempt", i, type(e).__name__, str(e)[:80])
`
	host, port, _ := net.SplitHostPort(in.imaps)
	out, _ := python(t, script, attacker, host, port)
	t.Logf("attacker:\n%s", out)
	if strings.Contains(out, "ACCEPTED") {
		t.Fatal("a guessed login was accepted")
	}
	// SMTP from the attacker's address is now refused at connect.
	tr, _ := swaks(t, "--server", in.smtp, "--local-interface", attacker, "--from", "x@outside.test", "--to", "bob@ours.test", "--quit-after", "EHLO")
	if !strings.Contains(tr, "554") && !strings.Contains(tr, "421") {
		t.Errorf("SMTP from the banned IMAP guesser was not refused:\n%s", tr)
	}
	// Another address still gets in.
	tr, code := swaks(t, "--server", in.smtp, "--local-interface", "127.0.0.78", "--from", "x@outside.test", "--to", "bob@ours.test", "--quit-after", "RCPT")
	if code != 0 {
		t.Errorf("SMTP from an unrelated address refused (exit %d):\n%s", code, tr)
	}

	// The reverse: SMTP AUTH guessing on submission bans the address from
	// IMAP and POP3.
	const smtpGuesser = "127.0.0.79"
	for i := range 8 {
		swaks(t, "--server", in.submission, "--local-interface", smtpGuesser, "-tls",
			"--auth", "PLAIN", "--auth-user", fmt.Sprintf("user%d@ours.test", i), "--auth-password", "guess",
			"--from", "x@ours.test", "--to", "bob@ours.test", "--quit-after", "AUTH")
	}
	probe := bindScript + `
import imaplib, poplib, ssl, sys
src, host, port, popport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    M = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=10)
    print("IMAP ADMITTED", M.welcome)
except Exception as e:
    print("imap refused:", type(e).__name__)
try:
    P = poplib.POP3_SSL(host, popport, context=ctx, timeout=10)
    print("POP3 ADMITTED", P.getwelcome())
except Exception as e:
    print("pop3 refused:", type(e).__name__)
`
	_, popPort, _ := net.SplitHostPort(in.pop3s)
	out, _ = python(t, probe, smtpGuesser, host, port, popPort)
	t.Logf("SMTP guesser on IMAP/POP3: %s", out)
	if strings.Contains(out, "ADMITTED") {
		t.Errorf("an address banned for SMTP AUTH guessing was admitted to IMAP or POP3:\n%s", out)
	}
	if !strings.Contains(out, "imap refused") || !strings.Contains(out, "pop3 refused") {
		t.Errorf("probe output: %s", out)
	}
}

// TestQuota: an over-quota recipient gets 452 4.2.2 at RCPT (the sender's
// server keeps the mail; no bounce), IMAP APPEND gets [OVERQUOTA], and
// user list shows the usage.
func TestQuota(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, nil)
	if out := in.mustCLI("", "user", "quota", "bob@ours.test", "2k"); !strings.Contains(out, "quota of bob@ours.test") {
		t.Fatalf("user quota: %s", out)
	}
	if _, err := in.cli("", "user", "quota", "bob@ours.test", "lots"); err == nil {
		t.Error("user quota with a bad size succeeded")
	}
	big := strings.Repeat("filler line for the quota test\r\n", 100) // ~3 KB: over 2k once stored
	out, code := swaks(t, "--server", in.smtp, "--from", "sender@outside.test", "--to", "bob@ours.test", "--body", big)
	if code != 0 {
		t.Fatalf("first message (under quota at RCPT) refused:\n%s", out)
	}
	in.waitMail("bob@ours.test", 1, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ = swaks(t, "--server", in.smtp, "--from", "sender@outside.test", "--to", "bob@ours.test", "--quit-after", "RCPT")
		if r := replyTo(out, "RCPT TO"); strings.HasPrefix(r, "452 4.2.2") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("RCPT to an over-quota mailbox: %q, want 452 4.2.2\n%s", r, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	script := `
import imaplib, ssl, sys
host, port, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=10)
M.login(user, pw)
try:
    typ, data = M.append("Drafts", None, None, b"Subject: draft\r\n\r\n" + b"x" * 4000 + b"\r\n")
    print("append:", typ, data)
except imaplib.IMAP4.error as e:
    print("append refused:", e)
M.logout()
`
	host, port, _ := net.SplitHostPort(in.imaps)
	out, err := python(t, script, host, port, "bob@ours.test", pw)
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	if !strings.Contains(out, "OVERQUOTA") {
		t.Errorf("APPEND over quota: %s, want [OVERQUOTA]", out)
	}
	list := in.mustCLI("", "user", "list")
	if !strings.Contains(list, "bob@ours.test\t1 messages") || !strings.Contains(list, "of 2.0K") {
		t.Errorf("user list does not show usage against the quota:\n%s", list)
	}
}

// TestIMAPIdleConnections: 1,000 idle IMAP connections (TLS done) keep the
// server's memory bounded, and a normal client still works meanwhile.
func TestIMAPIdleConnections(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	in := mailAccessInstance(t, func(cfg string) string {
		return strings.Replace(cfg, "[guard]\n", "[guard]\nmax_conns_per_ip = 100\nmax_conns_per_net = 1100\nconns_per_minute = 1000\n", 1)
	})
	in.mu.Lock()
	pid := in.cmd.Process.Pid
	in.mu.Unlock()
	before := procStatusKB(t, pid, "VmRSS")
	const n = 1000
	conns := make([]net.Conn, 0, n)
	var mu sync.Mutex
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 20)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(10+i/50))}
			d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
			c, err := tls.DialWithDialer(&d, "tcp", in.imaps, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				errs <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 512)
			if k, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:k]), "* OK") {
				errs <- fmt.Errorf("greeting %q: %v", buf[:k], err)
				c.Close()
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("idle connection: %v", err)
		break
	}
	after := procStatusKB(t, pid, "VmRSS")
	per := (after - before) * 1024 / int64(max(len(conns), 1))
	t.Logf("%d idle IMAP connections: RSS %d → %d KiB, %d bytes each", len(conns), before, after, per)
	if len(conns) < n {
		t.Fatalf("only %d of %d connections open", len(conns), n)
	}
	if per > 200<<10 {
		t.Errorf("%d bytes per idle connection, want at most 200 KiB", per)
	}
	// A real client still logs in and reads.
	host, port, _ := net.SplitHostPort(in.imaps)
	out, err := python(t, `
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(sys.argv[1], int(sys.argv[2]), ssl_context=ctx, timeout=10)
M.login(sys.argv[3], sys.argv[4]); print("select:", M.select("INBOX")[0]); M.logout()
`, host, port, "bob@ours.test", pw)
	if err != nil || !strings.Contains(out, "select: OK") {
		t.Errorf("normal client beside 1,000 idle ones: %v\n%s", err, out)
	}
}

// TestIMAPCompliance runs Dovecot's imaptest compliance suite
// (imap-compliance from ../shared/tools/imaptest, built by .ci/run) against
// mamori over implicit TLS. Every test in mamori's allow-list must pass.
func TestIMAPCompliance(t *testing.T) {
	t.Parallel()
	dir := os.Getenv("MAMORI_IMAPTEST")
	if dir == "" {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatal("MAMORI_IMAPTEST is not set (.ci/run builds imaptest and sets it)")
		}
		t.Skip("MAMORI_IMAPTEST not set: build imaptest with ../shared/tools/imaptest/build.sh DIR")
	}
	in := mailAccessInstance(t, func(cfg string) string {
		// imaptest logs in many times from one address, fast.
		return strings.Replace(cfg, "[guard]\n", "[guard]\nconns_per_minute = 10000\nmax_conns_per_ip = 200\n", 1)
	})
	allow, err := filepath.Abs("../internal/imapd/testdata/imaptest.allow")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(in.imaps)
	cmd := exec.Command("python3", filepath.Join(dir, "imap-compliance"), host, port, "bob@ours.test", pw, "--tls", "--allow-list", allow)
	out, err := cmd.CombinedOutput()
	t.Logf("imap-compliance:\n%s", out)
	if err != nil {
		t.Errorf("imap-compliance: %v (an allow-listed test failed)\nlog:\n%s", err, in.logTail(30))
	}
	if !strings.Contains(string(out), "tests passed") {
		t.Error("imap-compliance printed no score")
	}
}

// TestDeliveryDuringIMAPMoves: SMTP delivery into INBOX while an IMAP
// client keeps moving everything out of it and expunging: every message
// ends up in Archive exactly once, none lost, none doubled.
func TestDeliveryDuringIMAPMoves(t *testing.T) {
	t.Parallel()
	in := mailAccessInstance(t, func(cfg string) string {
		return strings.Replace(cfg, "[guard]\n", "[guard]\ninbound_msgs_per_minute = 1000\ninbound_rcpts_per_minute = 1000\n", 1)
	})
	const n = 100
	sender := `
import smtplib, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP(host, port, timeout=20)
for i in range(n):
    s.sendmail("sender@outside.test", ["bob@ours.test"], "From: sender@outside.test\r\nSubject: race %d\r\n\r\nbody %d\r\n" % (i, i))
s.quit()
print("sent", n)
`
	mover := `
import imaplib, ssl, sys, time, re
host, port, user, pw, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=20)
M.login(user, pw)
deadline = time.time() + 60
moved = 0
while time.time() < deadline:
    M.select("INBOX")
    typ, data = M.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    if uids:
        half = uids[: (len(uids) + 1) // 2]
        M.uid("MOVE", b",".join(half), "Archive")
        rest = uids[len(half):]
        if rest:
            M.uid("COPY", b",".join(rest), "Archive")
            M.uid("STORE", b",".join(rest), "+FLAGS.SILENT", "(\\Deleted)")
            M.expunge()
    typ, data = M.status("Archive", "(MESSAGES)")
    moved = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    if moved >= n:
        break
    time.sleep(0.05)
M.select("Archive")
typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
subjects = sorted(set(p[1].decode().strip() for p in data if isinstance(p, tuple)))
print("archive", moved, "distinct", len(subjects))
`
	host, port, _ := net.SplitHostPort(in.imaps)
	_, smtpPort, _ := net.SplitHostPort(in.smtp)
	var wg sync.WaitGroup
	var sendOut string
	var sendErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sendOut, sendErr = python(t, sender, host, smtpPort, strconv.Itoa(n))
	}()
	out, err := python(t, mover, host, port, "bob@ours.test", pw, strconv.Itoa(n))
	wg.Wait()
	if sendErr != nil {
		t.Fatalf("sender: %v\n%s", sendErr, sendOut)
	}
	if err != nil {
		t.Fatalf("mover: %v\n%s\nlog:\n%s", err, out, in.logTail(30))
	}
	want := fmt.Sprintf("archive %d distinct %d", n, n)
	if !strings.Contains(out, want) {
		t.Errorf("mover: %q, want %q", strings.TrimSpace(out), want)
	}
	if k, _ := countFiles(t, filepath.Join(in.userDir("bob@ours.test"), ".Archive")); k != n {
		t.Errorf(".Archive holds %d files, want %d", k, n)
	}
}
