package smtpd

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/login"
)

// authDir is a Directory with one user and a count of password checks.
type authDir struct {
	user, pass string
	checks     atomic.Int32
}

var errBadLogin = errors.New("authentication failed")

func (d *authDir) IsLocalDomain(domain string) bool        { return domain == "corp.test" }
func (d *authDir) Lookup(addr string) ([]string, bool)     { return nil, false }
func (d *authDir) Owns(user, addr string) bool             { return user == addr }
func (d *authDir) RecordLogin(addr string, when time.Time) {}
func (d *authDir) Authenticate(username, password string) error {
	d.checks.Add(1)
	if strings.EqualFold(username, d.user) && password == d.pass {
		return nil
	}
	return errBadLogin
}

// recConn records what the client reads.
type recConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

const (
	authUser = "dana@corp.test"
	authPass = "correct horse battery staple"
)

// fixedClock is a settable clock for the guard.
type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fixedClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// authAttempt builds a fresh server whose guard setup prepares, logs in
// once from src over implicit TLS with a real SMTP client, and returns
// everything the client read (greeting, EHLO, AUTH reply), the reply code,
// and how many password checks the directory did.
func authAttempt(t *testing.T, setup func(g *guard.Guard, clk *fixedClock), src, user, pass string) (string, int, int32) {
	t.Helper()
	clk := &fixedClock{now: time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)}
	g, err := guard.New(guard.Config{Now: clk.Now}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(g, clk)
	}
	dir := &authDir{user: authUser, pass: authPass}
	srv := New(Config{Hostname: "mx.corp.test", TLS: testutil.NewCert(t, "mx.corp.test").Server, Guard: g, CommandTimeout: 10 * time.Second}, dir, nil, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(KindSubmissions, l)
	}()
	defer func() {
		_ = srv.Shutdown(t.Context())
		l.Close()
		<-done
	}()

	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := tls.DialWithDialer(d, "tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Skipf("cannot connect from %s: %v", src, err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	rc := recConn{Conn: conn, mu: &sync.Mutex{}, buf: &bytes.Buffer{}}
	c := smtp.NewClient(rc)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	code := 235
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			t.Fatalf("AUTH: %v", err)
		}
		code = se.Code
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.buf.String(), code, dir.checks.Load()
}

// Owner's networks and attackers' sources. Linux routes all of 127/8 to
// the host, so each 127.N.0.0/24 is a network of its own.
const (
	ownerNet = "127.0.5.1" // the owner has logged in from here on two days
	newNet   = "127.0.9.1" // never used by the account
)

func ownerHistory(g *guard.Guard, clk *fixedClock) {
	g.AuthResult(netip.MustParseAddr(ownerNet), authUser, true)
	clk.advance(24 * time.Hour)
	g.AuthResult(netip.MustParseAddr(ownerNet), authUser, true)
	clk.advance(time.Hour)
}

func throttled(g *guard.Guard, clk *fixedClock) {
	ownerHistory(g, clk)
	for i := range 10 {
		for _, u := range []string{authUser, "nobody@corp.test"} {
			g.AuthResult(netip.AddrFrom4([4]byte{198, 51, byte(i), 7}), u, false)
		}
	}
}

func suspended(g *guard.Guard, clk *fixedClock) {
	ownerHistory(g, clk)
	g.Suspend(authUser, "login.networks") // as the storm rule would
}

// TestAuthRepliesAreNoOracle: once the guard refuses an account from a
// network, the client reads the same bytes whether the password was right
// or wrong, a suspended account reads like a name that does not exist, and
// the password is checked (or a dummy hash computed) every time.
func TestAuthRepliesAreNoOracle(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(g *guard.Guard, clk *fixedClock)
		want     string // the AUTH reply line
		variants [][2]string
	}{
		{"throttled account from a new network", throttled, "454 4.7.0 Temporary authentication failure",
			[][2]string{{authUser, authPass}, {authUser, "wrong"}, {"nobody@corp.test", "wrong"}}},
		{"suspended account from a new network", suspended, "535 5.7.8 Authentication credentials invalid",
			[][2]string{{authUser, authPass}, {authUser, "wrong"}, {"nobody@corp.test", "wrong"}, {"nobody@corp.test", authPass}}},
		{"active account, wrong password vs unknown name", ownerHistory, "535 5.7.8 Authentication credentials invalid",
			[][2]string{{authUser, "wrong"}, {"nobody@corp.test", "wrong"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var first string
			for i, v := range tc.variants {
				tr, _, checks := authAttempt(t, tc.setup, newNet, v[0], v[1])
				if checks != 1 {
					t.Errorf("%s/%s: %d password checks, want 1 (same cost whatever the outcome)", v[0], v[1], checks)
				}
				if !strings.Contains(tr, "\r\n"+tc.want+"\r\n") {
					t.Fatalf("%s: transcript lacks %q:\n%s", v[0], tc.want, tr)
				}
				if i == 0 {
					first = tr
				} else if tr != first {
					t.Fatalf("%s with %q read different bytes:\n%q\nvs\n%q", v[0], v[1], tr, first)
				}
			}
		})
	}
}

// TestAuthOwnerUnaffected: the owner logs in from a network it has used,
// while its account is throttled or suspended.
func TestAuthOwnerUnaffected(t *testing.T) {
	for name, setup := range map[string]func(*guard.Guard, *fixedClock){"throttled": throttled, "suspended": suspended} {
		t.Run(name, func(t *testing.T) {
			if _, code, _ := authAttempt(t, setup, ownerNet, authUser, authPass); code != 235 {
				t.Fatalf("owner from a known network: %d, want 235", code)
			}
			if _, code, _ := authAttempt(t, setup, newNet, authUser, authPass); code == 235 {
				t.Fatal("the right password from a new network got in")
			}
		})
	}
}

// TestRevokedAuthSessionClosed: an authenticated session is registered
// under its login and closed when the login is revoked; a message whose
// DATA had not finished is not accepted.
func TestRevokedAuthSessionClosed(t *testing.T) {
	sessions := &login.Sessions{}
	dir := &authDir{user: authUser, pass: authPass}
	srv := New(Config{Hostname: "mx.corp.test", TLS: testutil.NewCert(t, "mx.corp.test").Server, CommandTimeout: 10 * time.Second,
		Sessions: sessions}, dir, nil, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(KindSubmissions, l) }()
	defer func() { _ = srv.Shutdown(t.Context()); l.Close(); <-done }()

	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", authUser, authPass)); err != nil {
		t.Fatal(err)
	}
	if n := sessions.Count(login.Key(authUser)); n != 1 {
		t.Fatalf("%d sessions registered, want 1", n)
	}
	if err := c.Mail(authUser, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("someone@far.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: half\r\n\r\nhalf a message")); err != nil {
		t.Fatal(err)
	}
	if n := sessions.Revoke(login.Key(authUser)); n != 1 {
		t.Fatalf("Revoke ended %d sessions", n)
	}
	if err := w.Close(); err == nil {
		t.Fatal("the end of DATA was answered after the login was revoked")
	}
}
