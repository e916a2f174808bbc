package relaytest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/policy"
)

// This test runs the battery against go-smtp driven by internal/policy, the
// way mamori's SMTP layer uses them, with a tap on the raw command lines
// to detect source routes (go-smtp strips them).

type tapListener struct{ net.Listener }

func (l tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c}, nil
}

// tapConn remembers the last RCPT command line read from the client.
type tapConn struct {
	net.Conn
	mu       sync.Mutex
	buf      []byte
	lastRcpt string
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p[:n]...)
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.buf[:i]), "\r")
		c.buf = c.buf[i+1:]
		if len(line) >= 8 && strings.EqualFold(line[:8], "RCPT TO:") {
			c.lastRcpt = line
		}
	}
	return n, err
}

func (c *tapConn) sourceRouted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lastRcpt) < 8 {
		return false
	}
	path := strings.TrimPrefix(strings.TrimSpace(c.lastRcpt[8:]), "<")
	return strings.HasPrefix(path, "@")
}

var (
	ourIP         = netip.MustParseAddr("127.0.0.1")
	isLocalDomain = func(d string) bool { return d == "local.test" }
	isLocalIP     = func(ip netip.Addr) bool { return ip == ourIP }
)

// policySession treats every client as untrusted and unauthenticated.
type policySession struct{ tap *tapConn }

func smtpErr(r *policy.Reply) error {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

func (s *policySession) Mail(from string, _ *smtp.MailOptions) error {
	if _, rep := policy.CheckMail(policy.MailInput{From: from, IsLocalDomain: isLocalDomain}); rep != nil {
		return smtpErr(rep)
	}
	return nil
}

func (s *policySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	d := policy.CheckRcpt(policy.RcptInput{
		Rcpt: to, SourceRouted: s.tap.sourceRouted(),
		IsLocalDomain: isLocalDomain, LocalIPs: isLocalIP,
	})
	if d.Reject != nil {
		return smtpErr(d.Reject)
	}
	if !d.Local {
		return errors.New("test backend: relay allowed for an untrusted client")
	}
	return nil
}

func (s *policySession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *policySession) Reset()        {}
func (s *policySession) Logout() error { return nil }

func TestBatteryAgainstPolicy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		tap, ok := c.Conn().(*tapConn)
		if !ok {
			return nil, errors.New("connection not tapped")
		}
		return &policySession{tap: tap}, nil
	}))
	srv.Domain = "mx.local.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tapListener{ln}) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})

	rep, err := Run(context.Background(), Options{Addr: ln.Addr().String(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Relayed != 0 {
		var buf bytes.Buffer
		_ = rep.WriteText(&buf)
		t.Fatalf("policy relayed %d probes:\n%s", rep.Relayed, buf.String())
	}
	if rep.LocalDomain != "local.test" {
		t.Errorf("LocalDomain = %q", rep.LocalDomain)
	}
	for _, p := range rep.Probes {
		if p.Control && p.Code != 250 {
			t.Errorf("control %s refused: %s", p.Name, p.Reply)
		}
		if !p.Control && p.Code/100 == 2 {
			t.Errorf("probe %s accepted", p.Name)
		}
	}
	// Who refused what, and why.
	for _, tt := range []struct {
		probe, stage, reply string
	}{
		{"foreign", "RCPT", "554 5.7.1"},
		{"foreign-ip-literal", "RCPT", "554 5.7.1"},
		{"percent-hack", "RCPT", "550 5.7.1"},
		{"percent-hack-local-literal", "RCPT", "550 5.7.1"},
		{"quoted-at-local", "RCPT", "550 5.7.1"},
		{"bang-path-local", "RCPT", "550 5.7.1"},
		{"double-at", "RCPT", "550 5.7.1"},
		{"source-route", "RCPT", "550 5.7.1 Source routes"},
		{"source-route-multihop", "RCPT", "550 5.7.1 Source routes"},
		{"quoted-at", "RCPT", "501"}, // go-smtp: no domain
		{"bang-path", "RCPT", "501"}, // go-smtp: no '@'
		{"foreign/null-sender", "RCPT", "554 5.7.1"},
		{"foreign/local-sender", "MAIL", "553 5.7.1"},
		{"foreign/local-literal-sender", "RCPT", "554 5.7.1"},
	} {
		p := probeByName(t, rep, tt.probe)
		if p.Stage != tt.stage || !strings.HasPrefix(p.Reply, tt.reply) {
			t.Errorf("probe %s: %s %q, want %s %q…", tt.probe, p.Stage, p.Reply, tt.stage, tt.reply)
		}
	}
}
