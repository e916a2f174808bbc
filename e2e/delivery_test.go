package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/testdns"
)

// TestTwoInstancesViaRoutes: alice on ours.test sends to bob on other.test;
// instance A delivers it to instance B through [delivery.routes], and B's
// reply comes back the same way.
func TestTwoInstancesViaRoutes(t *testing.T) {
	b := newInstance(t, "other.test", nil)
	a := newInstance(t, "ours.test", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"other.test": b.smtp})
	})
	b.cfgEdit(func(cfg string) string { return setRoutes(cfg, map[string]string{"ours.test": a.smtp}) })
	a.addUser("alice@ours.test", pw)
	b.addUser("bob@other.test", pw)
	a.start()
	b.start()

	host, port, _ := strings.Cut(a.submission, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "alice@ours.test", "--to", "bob@other.test", "--h-Subject", "hello over routes"); code != 0 {
		t.Fatalf("send A→B: %s", out)
	}
	got := b.waitMail("bob@other.test", 1, 30*time.Second)
	if !strings.Contains(got[0], "hello over routes") || strings.Count(got[0], "Received: ") < 2 {
		t.Errorf("B's copy lacks subject or the two Received hops:\n%s", got[0])
	}
	host, port, _ = strings.Cut(b.submission, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "bob@other.test",
		"--auth-password", pw, "--from", "bob@other.test", "--to", "alice@ours.test", "--h-Subject", "reply over routes"); code != 0 {
		t.Fatalf("send B→A: %s", out)
	}
	if got := a.waitMail("alice@ours.test", 1, 30*time.Second); !strings.Contains(got[0], "reply over routes") {
		t.Errorf("A's copy:\n%s", got[0])
	}
	if !strings.Contains(a.log(), `"msg":"delivered"`) {
		t.Errorf("A logged no delivered event")
	}
}

// TestDeliveryViaMX: no route; A resolves other.test's MX through a test
// DNS server of its own and delivers to B (listening on the MX host's A
// record, 127.0.0.1, at [delivery] port).
func TestDeliveryViaMX(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	for _, rr := range []string{
		"other.test. 60 IN MX 10 mx1.other.test.",
		"other.test. 60 IN MX 20 mx2.other.test.",
		"mx1.other.test. 60 IN A 127.0.0.1",
		"mx2.other.test. 60 IN A 127.0.0.1",
		"implicit.test. 60 IN A 127.0.0.1",
	} {
		if err := dns.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	b := newInstance(t, "other.test", nil)
	b.cfgEdit(func(cfg string) string {
		return strings.Replace(cfg, "domains = [\"other.test\"]", "domains = [\"other.test\", \"implicit.test\"]", 1)
	})
	_, bport, _ := strings.Cut(b.smtp, ":")
	a := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "resolver", fmt.Sprintf("%q", dns.Addr))
		return setKey(cfg, "port", bport)
	})
	a.addUser("alice@ours.test", pw)
	b.addUser("bob@other.test", pw)
	b.addUser("carl@implicit.test", pw)
	a.start()
	b.start()
	host, port, _ := strings.Cut(a.submission, ":")
	for _, to := range []string{"bob@other.test", "carl@implicit.test"} {
		if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
			"--auth-password", pw, "--from", "alice@ours.test", "--to", to, "--h-Subject", "via MX to "+to); code != 0 {
			t.Fatalf("send: %s", out)
		}
	}
	if got := b.waitMail("bob@other.test", 1, 30*time.Second); !strings.Contains(got[0], "via MX to bob@other.test") {
		t.Errorf("MX delivery:\n%s", got[0])
	}
	if got := b.waitMail("carl@implicit.test", 1, 30*time.Second); !strings.Contains(got[0], "via MX to carl@implicit.test") {
		t.Errorf("implicit MX (A record) delivery:\n%s", got[0])
	}
}

// TestBounceToLocalSender: a remote that refuses the recipient makes mamori
// send an RFC 3464 DSN to the authenticated local sender — and no DSN for
// mail that came in unauthenticated.
func TestBounceToLocalSender(t *testing.T) {
	remote := startToyServer(t, func(rcpt string) error {
		if strings.HasPrefix(rcpt, "gone@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		}
		return nil
	})
	a := newInstance(t, "ours.test", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"far.test": remote.addr})
	})
	a.addUser("alice@ours.test", pw)
	a.start()
	host, port, _ := strings.Cut(a.submission, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "alice@ours.test", "--to", "gone@far.test,here@far.test",
		"--h-Subject", "will half bounce"); code != 0 {
		t.Fatalf("send: %s", out)
	}
	dsn := a.waitMail("alice@ours.test", 1, 30*time.Second)[0]
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "message/delivery-status",
		"Final-Recipient: rfc822; gone@far.test", "Action: failed", "Status: 5.1.1", "Return-Path: <>", "will half bounce"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "Final-Recipient: rfc822; here@far.test") {
		t.Errorf("DSN names the recipient that was delivered")
	}
	if remote.count("here@far.test") != 1 {
		t.Errorf("remote got %d copies for here@far.test", remote.count("here@far.test"))
	}
}

// TestRelaytestDetectsOpenRelay: `mamori relaytest` exits 1 against a
// deliberately open toy server, and reports the accepted probes.
func TestRelaytestDetectsOpenRelay(t *testing.T) {
	open := startToyServer(t, func(string) error { return nil })
	out, err := exec.Command(mamoriBin, "relaytest", open.addr, "--domain", "toy.test", "--json").CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("relaytest against an open relay: want exit 1, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"relayed": true`) {
		t.Errorf("JSON report names no relayed probe:\n%s", out)
	}
}

// toyServer is a minimal SMTP server for tests: accepts per accept(rcpt).
type toyServer struct {
	addr      string
	dataDelay time.Duration // sleep before answering the end of DATA
	mu        sync.Mutex
	got       map[string]int
}

func (s *toyServer) count(rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[rcpt]
}

func startToyServer(t *testing.T, accept func(rcpt string) error) *toyServer {
	t.Helper()
	ts := &toyServer{got: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &toySession{ts: ts, accept: accept}, nil
	}))
	srv.Domain = "toy.test"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ts
}

type toySession struct {
	ts     *toyServer
	accept func(string) error
	rcpts  []string
}

func (s *toySession) Reset()        { s.rcpts = nil }
func (s *toySession) Logout() error { return nil }
func (s *toySession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *toySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.accept(to); err != nil {
		return err
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *toySession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	time.Sleep(s.ts.dataDelay)
	s.ts.mu.Lock()
	for _, r := range s.rcpts {
		s.ts.got[r]++
	}
	s.ts.mu.Unlock()
	return nil
}
