package imapd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
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

// fuzzTempDir is a fresh directory for one run, on tmpfs when there is
// one: the store fsyncs what it writes, which on a disk makes a run
// slow enough to stall the fuzzer (it minimizes every new input, and
// its exec count stands still meanwhile).
func fuzzTempDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "mamori-imapd-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// fuzzSessionLimit bounds one run: a session must end soon after the
// client stops sending. Reaching it is a hang in the server.
const fuzzSessionLimit = 10 * time.Second

// runFuzzSession logs bob in and plays input as the rest of the client's
// byte stream, then half-closes the connection and reads until the
// server hangs up. The run is self-contained, and fast enough to fuzz:
// its own tree and store, a server with plain-text logins allowed (no
// TLS handshake) on a loopback listener, and nothing left running after
// it returns.
func runFuzzSession(t *testing.T, input []byte) string {
	root := fuzzTempDir(t)
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
	srv := newServer(Config{
		Hostname:    "imap.ours.test",
		Store:       store,
		Login:       &fakeLogin{users: map[string]string{testUser: testPass}},
		AppendLimit: 64 << 10,
		Log:         slog.New(catcher),
	}, true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(l); close(served) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), fuzzSessionLimit)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			l.Close()
			<-served
		})
	}
	defer stop()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fuzzSessionLimit))
	var out bytes.Buffer
	read := make(chan error, 1)
	go func() {
		// Everything the server says, kept up to 1 MiB.
		_, err := io.Copy(&limitedWriter{w: &out, n: 1 << 20}, c)
		read <- err
	}()
	var script bytes.Buffer
	script.WriteString("0 LOGIN " + testUser + " \"" + testPass + "\"\r\n")
	script.Write(input)
	script.WriteString("\r\nDONE\r\nZ LOGOUT\r\n")
	// Write errors are fine: the server may hang up first (LOGOUT, BYE).
	_, _ = c.Write(script.Bytes())
	_ = c.(*net.TCPConn).CloseWrite()
	if err := <-read; err != nil {
		t.Fatalf("session did not end: %v\ninput %q", err, input)
	}
	stop() // every session has ended: nothing writes any more

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

// limitedWriter keeps the first n bytes written to it and discards the
// rest, without failing.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (lw *limitedWriter) Write(p []byte) (int, error) {
	if lw.n > 0 {
		k := min(int64(len(p)), lw.n)
		lw.n -= k
		if _, err := lw.w.Write(p[:k]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
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
	limitMinimization(f, "100x")
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

// limitMinimization caps, unless -fuzzminimizetime was given, the work
// the fuzzer spends minimizing each input that finds new coverage. Go
// minimizes every such input (not only crashers) for up to 60 s by
// default, trying O(n²) shorter inputs; a run of this target takes
// milliseconds (its own store, server and connection), and early on
// most inputs find new coverage, so both workers would do nothing but
// minimize and the exec count would stand still.
func limitMinimization(f *testing.F, limit string) {
	const name = "test.fuzzminimizetime"
	given := false
	flag.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	if given {
		return
	}
	if err := flag.Set(name, limit); err != nil {
		f.Fatalf("-%s: %v", name, err)
	}
}
