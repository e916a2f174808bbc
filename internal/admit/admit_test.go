package admit

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// serve admits connections on a loopback listener and hands each
// admitted one to handle.
func serve(t *testing.T, cfg Config, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al := Listen(ln, cfg)
	t.Cleanup(func() { al.Close() })
	go func() {
		for {
			c, err := al.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// closedWithin reports whether the server closed c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: closed; a timeout is an error
}

// TestSilentTLSClientDropped: on an implicit-TLS listener a client that
// never starts the handshake is dropped after HandshakeTimeout (the
// protocol libraries would wait for it without a read deadline).
func TestSilentTLSClientDropped(t *testing.T) {
	cert := testutil.NewCert(t, "localhost")
	handed := make(chan struct{}, 1)
	addr := serve(t, Config{Name: "imaps", TLS: cert.Server, HandshakeTimeout: 200 * time.Millisecond},
		func(c net.Conn) { handed <- struct{}{}; c.Close() })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("a client that never sent a ClientHello is still connected")
	}
	select {
	case <-handed:
		t.Fatal("a connection without a handshake was handed to the protocol")
	default:
	}
	// A real TLS client is handed over with the handshake done.
	tc, err := tls.Dial("tcp", addr, cert.Client)
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	tc.Close()
	select {
	case <-handed:
	case <-time.After(3 * time.Second):
		t.Fatal("a TLS client was not handed over")
	}
}

// TestLoginTime: a connection that does not log in within LoginTime is
// closed; one marked authenticated stays.
func TestLoginTime(t *testing.T) {
	addr := serve(t, Config{Name: "imap", LoginTime: 300 * time.Millisecond}, func(c net.Conn) {
		r := bufio.NewReader(c)
		line, _ := r.ReadString('\n')
		if strings.TrimSpace(line) == "LOGIN" {
			MarkAuthenticated(c)
		}
		io.Copy(io.Discard, r)
	})
	anon, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	user, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	io.WriteString(anon, "NOOP\r\n")
	io.WriteString(user, "LOGIN\r\n")
	if !closedWithin(anon, 3*time.Second) {
		t.Error("a connection without a login outlived LoginTime")
	}
	if closedWithin(user, time.Second) {
		t.Error("a logged-in connection was closed by LoginTime")
	}
}

type refuseAll struct{}

func (refuseAll) ConnectTo(guard.Pool, netip.Addr, bool) (guard.Decision, func()) {
	return guard.Decision{Verdict: guard.Drop, Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "banned", Rule: "ban"}, func() {}
}

// TestRefusalWritten: a refused plain connection gets the protocol's
// refusal line, then is closed.
func TestRefusalWritten(t *testing.T) {
	addr := serve(t, Config{Name: "pop3", Guard: refuseAll{},
		Refuse: func(w io.Writer, r Refusal) { io.WriteString(w, "-ERR "+r.Text+"\r\n") }}, func(c net.Conn) { c.Close() })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	if string(b) != "-ERR banned\r\n" {
		t.Errorf("refused connection read %q", b)
	}
}
