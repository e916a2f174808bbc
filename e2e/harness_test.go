// Package e2e drives the real mamori binary with real SMTP clients (swaks,
// Python's smtplib, Postfix-style tools) over loopback. Each test gets its
// own data directory and free ports; nothing here assumes a fixed port.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testdns"
)

var (
	mamoriBin string
	sharedDNS string // address of the in-process DNS server every instance uses
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mamori-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mamoriBin = filepath.Join(dir, "mamori")
	build := exec.Command("go", "build", "-o", mamoriBin, "../cmd/mamori")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mamori:", err)
		os.Exit(1)
	}
	// Every instance resolves through this in-process DNS server (it
	// answers NXDOMAIN for anything a test has not published), so no test
	// ever queries the machine's resolver.
	dns, err := testdns.Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test DNS:", err)
		os.Exit(1)
	}
	sharedDNS = dns.Addr
	code := m.Run()
	dns.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool returns the path of an external client, skipping the test
// when it is missing — unless MAMORI_REQUIRE_TOOLS is set (CI), where a
// missing tool is a failure.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s is required (MAMORI_REQUIRE_TOOLS set) but not installed", name)
		}
		t.Skipf("%s not installed; run .ci/run or install it to run this test", name)
	}
	return p
}

// Ports for servers come from below the kernel's ephemeral range
// (32768–60999 by default), so that the client sockets of parallel tests
// (one of them opens 1,000) can never take a port between the moment it
// is chosen here and the moment the server binds it; and each is handed
// out once per test binary.
var (
	portMu   sync.Mutex
	nextPort = 20000 + os.Getpid()%5000
)

func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 10000 {
		p := nextPort
		nextPort++
		if nextPort >= 32000 {
			nextPort = 20000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken
		}
		l.Close()
		return p
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// instance is one mamori server with its own directory and ports.
type instance struct {
	t                                    *testing.T
	name                                 string
	dir, cfg, domain                     string
	token                                string
	smtp, submission, submissions, admin string
	imap, imaps, pop3, pop3s             string

	mu     sync.Mutex
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
}

// newInstance runs `mamori init` for domain on free loopback ports and lets
// edit rewrite the generated config before the first start.
func newInstance(t *testing.T, domain string, edit func(cfg string) string) *instance {
	t.Helper()
	in := &instance{t: t, name: domain, dir: t.TempDir(), domain: domain}
	ports := make([]int, 8)
	for i := range ports {
		ports[i] = freePort(t)
	}
	out, err := exec.Command(mamoriBin, "init", "--dir", in.dir, "--domain", domain,
		"--hostname", "mx."+domain, "--listen-host", "127.0.0.1",
		"--smtp-port", strconv.Itoa(ports[0]), "--submission-port", strconv.Itoa(ports[1]),
		"--submissions-port", strconv.Itoa(ports[2]), "--admin-port", strconv.Itoa(ports[3]),
		"--imap-port", strconv.Itoa(ports[4]), "--imaps-port", strconv.Itoa(ports[5]),
		"--pop3-port", strconv.Itoa(ports[6]), "--pop3s-port", strconv.Itoa(ports[7])).CombinedOutput()
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "admin token: "); ok {
			in.token = strings.TrimSpace(v)
		}
	}
	if len(in.token) < 32 {
		t.Fatalf("init printed no admin token:\n%s", out)
	}
	in.cfg = filepath.Join(in.dir, "mamori.toml")
	if b, err := os.ReadFile(in.cfg); err == nil {
		os.WriteFile(in.cfg, []byte(setKey(string(b), "resolver", strconv.Quote(sharedDNS))), 0o600)
	}
	in.smtp = fmt.Sprintf("127.0.0.1:%d", ports[0])
	in.submission = fmt.Sprintf("127.0.0.1:%d", ports[1])
	in.submissions = fmt.Sprintf("127.0.0.1:%d", ports[2])
	in.admin = fmt.Sprintf("127.0.0.1:%d", ports[3])
	in.imap = fmt.Sprintf("127.0.0.1:%d", ports[4])
	in.imaps = fmt.Sprintf("127.0.0.1:%d", ports[5])
	in.pop3 = fmt.Sprintf("127.0.0.1:%d", ports[6])
	in.pop3s = fmt.Sprintf("127.0.0.1:%d", ports[7])
	if edit != nil {
		b, err := os.ReadFile(in.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(in.cfg, []byte(edit(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(in.stop)
	return in
}

// setRoutes adds [delivery.routes] entries to a config text.
func setRoutes(cfg string, routes map[string]string) string {
	var b strings.Builder
	b.WriteString("[delivery.routes]\n")
	for d, hp := range routes {
		fmt.Fprintf(&b, "%q = %q\n", d, hp)
	}
	return strings.Replace(cfg, "[delivery.routes]\n", b.String(), 1)
}

// setKey replaces `key = ...` (first occurrence) in a config text.
func setKey(cfg, key, value string) string {
	lines := strings.Split(cfg, "\n")
	for i, l := range lines {
		trimmed := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if strings.HasPrefix(trimmed, key+" =") || strings.HasPrefix(trimmed, key+"=") {
			lines[i] = key + " = " + value
			return strings.Join(lines, "\n")
		}
	}
	panic("config key not found: " + key)
}

func (in *instance) start() {
	t := in.t
	t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd != nil {
		t.Fatal("instance already running")
	}
	logf, err := os.OpenFile(filepath.Join(in.dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mamoriBin, "serve", "--config", in.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.cmd, in.logf, in.exited = cmd, logf, make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(cmd, in.exited)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", in.admin, 200*time.Millisecond); err == nil {
			c.Close()
			if c2, err := net.DialTimeout("tcp", in.smtp, 200*time.Millisecond); err == nil {
				c2.Close()
				return
			}
		}
		select {
		case <-in.exited:
			t.Fatalf("%s: serve exited early:\n%s", in.name, in.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: server did not come up:\n%s", in.name, in.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (in *instance) signal(sig syscall.Signal) {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.cmd = nil
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		in.t.Errorf("%s: did not stop within 30s of %v", in.name, sig)
	}
	in.logf.Close()
}

// stop sends SIGTERM and waits; kill sends SIGKILL (a crash).
func (in *instance) stop() { in.signal(syscall.SIGTERM) }
func (in *instance) kill() { in.signal(syscall.SIGKILL) }

func (in *instance) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(in.dir, "serve.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (in *instance) log() string {
	b, _ := os.ReadFile(filepath.Join(in.dir, "serve.log"))
	return string(b)
}

// cli runs a mamori subcommand against this instance's config.
func (in *instance) cli(stdin string, args ...string) (string, error) {
	args = append(args, "--config", in.cfg)
	cmd := exec.Command(mamoriBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (in *instance) mustCLI(stdin string, args ...string) string {
	in.t.Helper()
	out, err := in.cli(stdin, args...)
	if err != nil {
		in.t.Fatalf("mamori %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (in *instance) addUser(addr, pw string) {
	in.t.Helper()
	in.mustCLI(pw+"\n", "user", "add", addr, "--password-stdin")
}

// maildirNew is the new/ folder of a local mailbox.
func (in *instance) maildirNew(addr string) string {
	local, dom, _ := strings.Cut(strings.ToLower(addr), "@")
	return filepath.Join(in.dir, "data", "mail", dom, local, "new")
}

// waitMail waits until the mailbox holds at least n messages and returns
// their contents.
func (in *instance) waitMail(addr string, n int, timeout time.Duration) []string {
	in.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := readMaildir(in.maildirNew(addr))
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("%s: mailbox %s has %d messages, want %d\nlog tail:\n%s", in.name, addr, len(msgs), n, in.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readMaildir(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

// swaks runs swaks and returns its transcript and exit code.
func swaks(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin := requireTool(t, "swaks")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--timeout", "20"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("swaks: %v", err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code
}

// python runs a Python 3 script with arguments and returns its output.
func python(t *testing.T, script string, args ...string) (string, error) {
	t.Helper()
	bin := requireTool(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-c", script}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// replyTo returns the server's reply to the first command starting with
// cmd in a swaks transcript ("-> RCPT TO:<x>" then "<** 554 ...").
func replyTo(transcript, cmd string) string {
	sent := false
	sc := bufio.NewScanner(strings.NewReader(transcript))
	for sc.Scan() {
		l := sc.Text()
		if len(l) < 4 {
			continue
		}
		prefix, rest := strings.TrimSpace(l[:3]), strings.TrimSpace(l[3:])
		switch {
		case !sent && strings.HasSuffix(prefix, ">") && strings.HasPrefix(rest, cmd):
			sent = true
		case sent && strings.HasPrefix(prefix, "<"):
			return rest
		}
	}
	return ""
}

// cfgEdit rewrites the config of a stopped instance.
func (in *instance) cfgEdit(edit func(cfg string) string) {
	in.t.Helper()
	b, err := os.ReadFile(in.cfg)
	if err != nil {
		in.t.Fatal(err)
	}
	if err := os.WriteFile(in.cfg, []byte(edit(string(b))), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// dkimKeygen makes a DKIM key for domain with mamori dkim keygen and
// returns its TXT record in zone-file form with a 60 s TTL.
func (in *instance) dkimKeygen(domain string) string {
	in.t.Helper()
	out := in.mustCLI("", "dkim", "keygen", "--domain", domain)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "._domainkey."+domain+". IN TXT") {
			return strings.Replace(strings.TrimSpace(l), " IN TXT ", " 60 IN TXT ", 1)
		}
	}
	in.t.Fatalf("keygen printed no TXT record:\n%s", out)
	return ""
}
