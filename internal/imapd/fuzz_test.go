package imapd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

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
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 993} }

// pipeConn gives the server end of a pipe a remote address.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000} }

// panicCatcher is a slog handler that remembers imapserver's reports of
// a recovered panic.
type panicCatcher struct {
	mu     sync.Mutex
	panics []string
}

func (h *panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicCatcher) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if s := a.Value.String(); strings.Contains(s, "panic") {
			h.mu.Lock()
			h.panics = append(h.panics, s)
			h.mu.Unlock()
		}
		return true
	})
	return nil
}
func (h *panicCatcher) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *panicCatcher) WithGroup(string) slog.Handler      { return h }

var fuzzTLS struct {
	once sync.Once
	conf *tls.Config
}

// treeDigest hashes every file and directory under root except those
// under skip.
func treeDigest(t testing.TB, root, skip string) map[string][32]byte {
	out := map[string][32]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		var sum [32]byte
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum = sha256.Sum256(b)
		}
		out[p] = sum
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runFuzzSession logs bob in over TLS and plays input as the rest of
// the client's byte stream, with a bounded time for each phase.
func runFuzzSession(t *testing.T, input []byte) string {
	fuzzTLS.once.Do(func() { fuzzTLS.conf = testTLS(t) })
	root := t.TempDir()
	mailRoot := filepath.Join(root, "mail")
	store := mailbox.NewStore(mailRoot, mailbox.StoreOptions{})
	defer store.Close()
	for _, u := range []string{"alice@ours.test", testUser} {
		if _, err := store.User(u); err != nil {
			t.Fatal(err)
		}
		msg := "From: x@far.test\r\nTo: " + u + "\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
		if err := store.DeliverOnce(u, "Q"+strings.Split(u, "@")[0], "x@far.test", []byte(msg), false); err != nil {
			t.Fatal(err)
		}
	}
	bobDir := filepath.Join(mailRoot, "ours.test", "bob")
	before := treeDigest(t, root, bobDir)

	catcher := &panicCatcher{}
	srv := New(Config{
		Hostname:    "imap.ours.test",
		TLS:         fuzzTLS.conf,
		Store:       store,
		Login:       &fakeLogin{users: map[string]string{testUser: testPass}},
		AppendLimit: 64 << 10,
		Log:         slog.New(catcher),
	})
	client, server := net.Pipe()
	l := &oneConnListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- tls.Server(pipeConn{server}, fuzzTLS.conf)
	served := make(chan struct{})
	go func() { srv.Serve(l); close(served) }()

	tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
	var out strings.Builder
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			_ = tc.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := tc.Read(buf)
			if out.Len() < 1<<20 {
				out.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	_ = tc.SetWriteDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(tc, "0 LOGIN "+testUser+" \""+testPass+"\"\r\n"); err == nil {
		if _, err := tc.Write(input); err == nil {
			_, _ = io.WriteString(tc, "\r\nDONE\r\nZ LOGOUT\r\n")
		}
	}
	_ = tc.CloseWrite()
	select {
	case <-read:
	case <-time.After(3 * time.Second):
	}
	tc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	cancel()
	l.Close()
	<-served

	catcher.mu.Lock()
	if len(catcher.panics) > 0 {
		t.Fatalf("panic: %s\ninput %q", catcher.panics[0], input)
	}
	catcher.mu.Unlock()
	after := treeDigest(t, root, bobDir)
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Fatalf("session created %s outside the user's tree; input %q", p, input)
		}
	}
	for p, sum := range before {
		if got, ok := after[p]; !ok || got != sum {
			t.Fatalf("session changed %s outside the user's tree; input %q", p, input)
		}
	}
	return out.String()
}

func TestFuzzSessionSeeds(t *testing.T) {
	for _, in := range fuzzSeeds {
		out := runFuzzSession(t, []byte(in))
		if !strings.Contains(out, "0 OK") {
			t.Fatalf("login failed:\n%s", out)
		}
	}
}

var fuzzSeeds = []string{
	"1 LIST \"\" *\r\n2 SELECT INBOX\r\n3 FETCH 1:* (FLAGS BODY[] BODYSTRUCTURE ENVELOPE BINARY[1] BINARY.SIZE[1])\r\n",
	"1 SELECT INBOX\r\n2 STORE 1 +FLAGS (\\Deleted $x)\r\n3 EXPUNGE\r\n4 UID SEARCH OR FROM x TEXT hello\r\n",
	"1 CREATE ../../alice\r\n2 CREATE ..\r\n3 RENAME INBOX ../x\r\n4 APPEND ../alice {3+}\r\nabc\r\n5 SELECT ../../../ours.test/alice\r\n",
	"1 SELECT INBOX\r\n2 COPY 1 Archive\r\n3 MOVE 1 Trash\r\n4 IDLE\r\n",
	"1 APPEND INBOX (\\Seen) ~{5+}\r\na\x00b\r\n\r\n2 STATUS INBOX (MESSAGES SIZE UNSEEN RECENT)\r\n3 ID (\"name\" \"x\")\r\n",
	"1 DELETE Sent\r\n2 SUBSCRIBE \"a.b\"\r\n3 LSUB \"\" %\r\n4 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" * RETURN (CHILDREN STATUS (MESSAGES))\r\n",
}

func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) > 4096 {
			return
		}
		runFuzzSession(t, input)
	})
}
