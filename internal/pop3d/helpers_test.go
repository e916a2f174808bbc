package pop3d

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Test accounts.
const (
	alice     = "alice@corp.test"
	alicePass = "correct horse battery"
	bob       = "bob@corp.test"
	bobPass   = "bob's password"
)

// The messages of alice's INBOX, in UID order.
var seedMessages = []string{
	"From: bob@corp.test\r\nTo: alice@corp.test\r\nSubject: hello\r\n\r\nHi Alice,\r\nsee you.\r\n",
	"From: bob@corp.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend . mid\r\n.\r\n",
	"From: carol@corp.test\r\nSubject: five lines\r\nX-Long: folded\r\n header\r\n\r\nline 1\r\nline 2\r\n\r\nline 4\r\n.line 5\r\n",
}

// testDir is the user directory behind the login checker.
type testDir struct{}

func (testDir) Authenticate(username, password string) error {
	switch {
	case strings.EqualFold(username, alice) && password == alicePass,
		strings.EqualFold(username, bob) && password == bobPass:
		return nil
	}
	return errors.New("bad credentials")
}

func (testDir) RecordLogin(string, time.Time) {}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.SyncBuffer

// env is a running server over a store in a temp dir, with a plain (STLS)
// and an implicit-TLS listener on loopback.
type env struct {
	t         *testing.T
	store     *mailbox.Store
	srv       *Server
	plain     string
	pop3s     string
	clientTLS *tls.Config
	certFile  string
	logs      *syncBuffer
	served    chan error
}

func newEnv(t *testing.T, opts ...func(*Config)) *env {
	t.Helper()
	cert := testutil.NewCert(t, "pop.corp.test", "localhost", "127.0.0.1")
	serverTLS, clientTLS, certPEM := cert.Server, cert.Client, cert.PEM
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	st := mailbox.NewStore(t.TempDir(), mailbox.StoreOptions{PerFileSync: true})
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, store: st, clientTLS: clientTLS, certFile: certFile, logs: &syncBuffer{}, served: make(chan error, 2)}
	e.seed(alice, seedMessages...)
	e.seed(bob)

	cfg := Config{
		Hostname: "pop.corp.test",
		TLS:      serverTLS,
		Store:    st,
		Login:    &login.Checker{Dir: testDir{}},
		Log:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.srv = New(cfg)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.plain, e.pop3s = pl.Addr().String(), tl.Addr().String()
	go func() { e.served <- e.srv.Serve(pl) }()
	go func() { e.served <- e.srv.Serve(tls.NewListener(tl, serverTLS)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-e.served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
		if strings.Contains(e.logs.String(), alicePass) || strings.Contains(e.logs.String(), bobPass) {
			t.Errorf("a password is in the log:\n%s", e.logs)
		}
	})
	return e
}

// seed appends msgs to addr's INBOX.
func (e *env) seed(addr string, msgs ...string) {
	e.t.Helper()
	u, err := e.store.User(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, m := range msgs {
		if _, _, err := u.Append("INBOX", strings.NewReader(m), nil, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
			e.t.Fatal(err)
		}
	}
}

// inbox is addr's INBOX as the store sees it now.
func (e *env) inbox(addr string) *mailbox.Snapshot {
	e.t.Helper()
	u, err := e.store.User(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := u.Open("INBOX")
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	s, err := f.Snapshot()
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// client is a line-level POP3 client for the tests.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	// greeting is the server's first line.
	greeting string
}

// dialPlain connects to the STLS listener.
func (e *env) dialPlain() *client {
	e.t.Helper()
	c, err := net.Dial("tcp", e.plain)
	if err != nil {
		e.t.Fatal(err)
	}
	return newClient(e.t, c)
}

// dial connects to the implicit-TLS listener.
func (e *env) dial() *client {
	e.t.Helper()
	c, err := tls.Dial("tcp", e.pop3s, e.clientTLS)
	if err != nil {
		e.t.Fatal(err)
	}
	return newClient(e.t, c)
}

// login connects over TLS and logs in with USER/PASS.
func (e *env) login(user, pass string) *client {
	e.t.Helper()
	c := e.dial()
	c.expect("USER "+user, "+OK")
	c.expect("PASS "+pass, "+OK Logged in")
	return c
}

func newClient(t *testing.T, c net.Conn) *client {
	t.Helper()
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { _ = c.Close() })
	cl.greeting = cl.line()
	if !strings.HasPrefix(cl.greeting, "+OK ") {
		t.Fatalf("greeting %q", cl.greeting)
	}
	return cl
}

func (c *client) send(line string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// line reads one reply line, without CRLF.
func (c *client) line() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v (got %q)", err, s)
	}
	if !strings.HasSuffix(s, "\r\n") {
		c.t.Fatalf("reply %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// cmd sends line and returns the first reply line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

// expect sends line and fails unless the reply starts with prefix.
func (c *client) expect(line, prefix string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("%q: got %q, want %q…", line, got, prefix)
	}
	return got
}

// body reads the rest of a multi-line response, terminator included, as
// it came over the wire.
func (c *client) body() string {
	c.t.Helper()
	var b strings.Builder
	for {
		l := c.line()
		b.WriteString(l + "\r\n")
		if l == "." {
			return b.String()
		}
	}
}

// multi sends line, expects +OK and returns the whole response.
func (c *client) multi(line string) string {
	c.t.Helper()
	first := c.expect(line, "+OK")
	return first + "\r\n" + c.body()
}

// closed fails unless the server closes the connection (after any
// remaining lines).
func (c *client) closed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("connection not closed: %v (read %q)", err, rest)
	}
}

// stls upgrades a plain connection.
func (c *client) stls(cfg *tls.Config) {
	c.t.Helper()
	c.expect("STLS", "+OK")
	tc := tls.Client(c.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("STLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	testutil.Golden(t, name, got, *update)
}
