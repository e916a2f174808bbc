package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/msgheader"
	"github.com/mamori-mail/mamori/internal/queue"
)

// fuzzDir is a directory with one local domain and two users.
type fuzzDir struct{}

func (fuzzDir) IsLocalDomain(d string) bool {
	return strings.EqualFold(strings.TrimSuffix(d, "."), "ours.test")
}
func (fuzzDir) Lookup(addr string) ([]string, bool) {
	switch strings.ToLower(addr) {
	case "bob@ours.test", "postmaster@ours.test":
		return []string{strings.ToLower(addr)}, true
	}
	return nil, false
}
func (fuzzDir) Authenticate(string, string) error { return errors.New("no logins here") }
func (fuzzDir) Owns(string, string) bool          { return false }
func (fuzzDir) RecordLogin(string, time.Time)     {}

// fuzzSpool records what was queued.
type fuzzSpool struct {
	mu   sync.Mutex
	msgs []queuedMsg
}

type queuedMsg struct {
	meta queue.Meta
	body []byte
}

func (s *fuzzSpool) Enqueue(m queue.Meta, parts ...[]byte) (queue.Meta, error) {
	body := bytes.Join(parts, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	m.ID = "Q" + string(rune('a'+len(s.msgs)%26))
	s.msgs = append(s.msgs, queuedMsg{m, body})
	return m, nil
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConnListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 25} }

// pipeConn gives the server end of a pipe an outside remote address.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000} }

// runSession plays one client byte stream against an MX listener of an
// unauthenticated, untrusted client and returns what was queued.
func runSession(t testing.TB, input []byte) ([]queuedMsg, string) {
	spool := &fuzzSpool{}
	srv := New(Config{
		Hostname:         "mx.ours.test",
		Domain:           "ours.test",
		MaxMessageBytes:  64 << 10,
		MaxRecipients:    20,
		MaxLineLength:    1000,
		CommandTimeout:   2 * time.Second,
		DataTimeout:      2 * time.Second,
		MaxInflightBytes: 1 << 20,
	}, fuzzDir{}, spool, nil)
	client, server := net.Pipe()
	l := &oneConnListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- pipeConn{server}
	served := make(chan struct{})
	go func() { srv.Serve(KindMX, l); close(served) }()
	var out strings.Builder
	read := make(chan struct{})
	go354 := make(chan struct{}, 16)
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := client.Read(buf)
			out.Write(buf[:n])
			if strings.Contains(string(buf[:n]), "354 ") {
				select {
				case go354 <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Like a real client, wait for 354 after DATA before sending the
	// message (RFC 2920: DATA ends a pipelined group).
	_ = client.SetWriteDeadline(time.Now().Add(3 * time.Second))
	rest := append(append([]byte(nil), input...), "\r\n.\r\nQUIT\r\n"...)
	for len(rest) > 0 {
		chunk := rest
		if i := strings.Index(strings.ToUpper(string(rest)), "DATA\r\n"); i >= 0 {
			chunk, rest = rest[:i+6], rest[i+6:]
		} else {
			rest = nil
		}
		if _, err := client.Write(chunk); err != nil {
			break
		}
		if len(rest) > 0 {
			select {
			case <-go354:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	select {
	case <-read:
	case <-time.After(3 * time.Second):
	}
	client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	srv.Shutdown(ctx)
	cancel()
	l.Close()
	<-served
	spool.mu.Lock()
	defer spool.mu.Unlock()
	return spool.msgs, out.String()
}

// checkQueued asserts what an outside, unauthenticated client may never
// get queued: a foreign recipient (relay), or a message whose author is
// ambiguous.
func checkQueued(t testing.TB, msgs []queuedMsg) {
	for _, m := range msgs {
		for _, r := range m.meta.Rcpts {
			if !strings.HasSuffix(strings.ToLower(r.Addr), "@ours.test") {
				t.Fatalf("relayed to %q", r.Addr)
			}
		}
		h, err := msgheader.Parse(m.body, msgheader.Limits{})
		if err != nil {
			t.Fatalf("queued a message whose header does not parse: %v", err)
		}
		if _, err := h.Authors(); err != nil {
			t.Fatalf("queued a message with ambiguous authors: %v", err)
		}
		if bytes.Contains(bytes.ReplaceAll(m.body, []byte("\r\n"), nil), []byte("\r")) || bytes.Contains(bytes.ReplaceAll(m.body, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("queued a message with a bare CR or LF")
		}
		if h.Count("Received") == 0 {
			t.Fatalf("queued without our Received header")
		}
	}
}

func TestSessionPipelinedTransactions(t *testing.T) {
	// Message lines that look like commands are message lines: the next
	// transaction is decided by go-smtp's parse alone.
	in := "EHLO c.test\r\nMAIL FROM:<x@out.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\n" +
		"From: x@out.test\r\n\r\nRCPT TO:<@a.test:b@ours.test>\r\nBDAT 999999999\r\n" + strings.Repeat("y", 3000) + "\r\n.\r\n" +
		"MAIL FROM:<x@out.test>\r\nRCPT TO:<bob@ours.test>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<victim@far.test>\r\nDATA\r\n" +
		"From: x@out.test\r\nSubject: two\r\n\r\nhi\r\n.\r\nQUIT\r\n"
	msgs, out := runSession(t, []byte(in))
	checkQueued(t, msgs)
	if len(msgs) != 2 {
		t.Fatalf("queued %d messages, want 2; transcript:\n%s", len(msgs), out)
	}
	if n := len(msgs[1].meta.Rcpts); n != 2 {
		t.Errorf("second message has %d recipients, want bob and postmaster", n)
	}
	if !strings.Contains(out, "5.7.1 Relay access denied") {
		t.Errorf("foreign recipient not refused:\n%s", out)
	}
}

func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO c\r\nMAIL FROM:<x@out.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\nFrom: x@out.test\r\n\r\nhi\r\n.\r\n",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nFrom : a@b.test\r\nFrom: c@ours.test\r\n\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<x@out.test> BODY=8BITMIME SIZE=10\r\nRCPT TO:<bob%far.test@ours.test>\r\nRCPT TO:<@ours.test:v@far.test>\r\nBDAT 5 LAST\r\nabcde",
		"EHLO c\r\nMAIL FROM:<x@out.test>\r\nRCPT TO:<\"v@far.test\"@ours.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\nFrom: x@out.test, y@ours.test\r\nSender: x@out.test\r\n\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) > 8<<10 {
			return
		}
		msgs, _ := runSession(t, input)
		checkQueued(t, msgs)
	})
}

// TestBDATTrickleHitsDataTimeout: go-smtp renews the read deadline for
// every BDAT command; a client sending one byte per chunk, each well
// within the command timeout, still meets the whole-phase DATA limit and
// gets 421 4.4.2, and its budget goes back.
func TestBDATTrickleHitsDataTimeout(t *testing.T) {
	srv := New(Config{
		Hostname: "mx.ours.test", Domain: "ours.test", MaxMessageBytes: 64 << 10, MaxLineLength: 1000,
		CommandTimeout: 5 * time.Second, DataTimeout: 300 * time.Millisecond, MaxInflightBytes: 1 << 20,
	}, fuzzDir{}, &fuzzSpool{}, nil)
	// A real socket, not net.Pipe: the client writes its next chunk while
	// the server writes its 421, which a synchronous pipe would deadlock.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(KindMX, l); close(served) }()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
		l.Close()
		<-served
	}()
	r := bufio.NewReader(client)
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	reply := func() string { return lastReplyLine(r) }
	reply()
	for _, c := range []string{"EHLO c.test", "MAIL FROM:<x@out.test>", "RCPT TO:<bob@ours.test>"} {
		fmt.Fprintf(client, "%s\r\n", c)
		if got := reply(); !strings.HasPrefix(got, "250") {
			t.Fatalf("%s: %s", c, got)
		}
	}
	var last string
	for i := 0; i < 10; i++ {
		fmt.Fprintf(client, "BDAT 1\r\nx")
		last = reply()
		if !strings.HasPrefix(last, "250") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(last, "421 4.4.2") {
		t.Errorf("trickled BDAT: last reply %q, want 421 4.4.2", last)
	}
	time.Sleep(50 * time.Millisecond)
	if n := srv.bodyBytes.Load(); n != 0 {
		t.Errorf("budget held after the session's DATA ended: %d", n)
	}
}

// lastReplyLine reads one SMTP reply and returns its last line, trimmed.
func lastReplyLine(r *bufio.Reader) string {
	for {
		line, err := r.ReadString('\n')
		if err != nil || len(line) < 4 || line[3] != '-' {
			return strings.TrimSpace(line)
		}
	}
}
