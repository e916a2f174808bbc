package pop3d

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// memDrop is an in-memory maildrop for the fuzz target.
type memDrop struct {
	mu   sync.Mutex
	msgs map[uint32]string
	seen map[uint32]bool
}

func newMemDrop() *memDrop {
	return &memDrop{
		msgs: map[uint32]string{
			3: "Subject: one\r\n\r\nbody\r\n.dot\r\n",
			7: "Subject: two\n\nbare lf\n..\n",
			9: "no header separator",
		},
		seen: map[uint32]bool{},
	}
}

func (d *memDrop) Snapshot() (*mailbox.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &mailbox.Snapshot{UIDValidity: 1700000000, UIDNext: 10}
	for uid, m := range d.msgs {
		s.Messages = append(s.Messages, mailbox.Message{UID: uid, Size: int64(len(m))})
	}
	slices.SortFunc(s.Messages, func(a, b mailbox.Message) int { return int(a.UID) - int(b.UID) })
	return s, nil
}

type nopSeekCloser struct{ *strings.Reader }

func (nopSeekCloser) Close() error { return nil }

func (d *memDrop) Open(uid uint32) (io.ReadSeekCloser, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.msgs[uid]
	if !ok {
		return nil, mailbox.ErrNoMessage
	}
	return nopSeekCloser{strings.NewReader(m)}, nil
}

func (d *memDrop) StoreFlags(uids []uint32, op mailbox.FlagOp, flags []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range uids {
		d.seen[u] = true
	}
	return nil
}

func (d *memDrop) Expunge(uids []uint32) ([]uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []uint32
	for _, u := range uids {
		if _, ok := d.msgs[u]; ok {
			delete(d.msgs, u)
			out = append(out, u)
		}
	}
	return out, nil
}

func (d *memDrop) Close() error { return nil }

// fuzzAuth accepts fuzz@corp.test / pw, turns "temp" into a temporary
// refusal and "drop" into a ban.
type fuzzAuth struct{}

func (fuzzAuth) Check(ip netip.Addr, protocol, username, password string) (string, error) {
	switch {
	case username == "fuzz@corp.test" && password == "pw":
		return username, nil
	case password == "temp":
		return "", &login.Error{Temporary: true, Code: 454, Text: "Try later"}
	case password == "drop":
		return "", &login.Error{Drop: true, Code: 535, Text: "Go away", Rule: "auth.ban"}
	}
	return "", &login.Error{Code: 535, Text: "Authentication credentials invalid"}
}

// scriptConn is a connection whose client sends input and then EOF.
type scriptConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 995} }
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// runSession drives one session, as if over TLS, with input as everything
// the client sends, and returns what the server wrote.
func runSession(t testing.TB, input []byte) []byte {
	t.Helper()
	srv := New(Config{Hostname: "pop.corp.test", Login: fuzzAuth{}})
	srv.openDrop = func(string) (maildrop, error) { return newMemDrop(), nil }
	c := &scriptConn{in: bytes.NewReader(input)}
	ss := srv.register(c, true)
	ss.serve()
	srv.wg.Done()
	if n := len(srv.sessions); n != 0 {
		t.Fatalf("%d sessions still registered", n)
	}
	if len(srv.locks.held) != 0 {
		t.Fatalf("maildrop locks left: %v", srv.locks.held)
	}
	return c.out.Bytes()
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT", "top 1 10", "PASS a b", "USER x@y", "AUTH PLAIN =", "LIST 4294967296", "", "\x00\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parseCommand(line)
		if err != nil {
			return
		}
		if len(cmd.verb) < 3 || len(cmd.verb) > 4 || strings.ToUpper(cmd.verb) != cmd.verb {
			t.Fatalf("parseCommand(%q) verb %q", line, cmd.verb)
		}
		if !strings.EqualFold(line, cmd.verb) && !strings.EqualFold(line, cmd.verb+" "+cmd.arg) {
			t.Fatalf("parseCommand(%q) = %+v does not round-trip", line, cmd)
		}
		if args, ok := cmd.args(0, 3); ok {
			for _, a := range args {
				if a == "" || strings.Contains(a, " ") {
					t.Fatalf("args of %q: %q", line, args)
				}
			}
		}
		_, _ = parseNumber(cmd.arg)
	})
}

func FuzzSession(f *testing.F) {
	seeds := []string{
		"CAPA\r\nQUIT\r\n",
		"USER fuzz@corp.test\r\nPASS pw\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nRSET\r\nDELE 3\r\nQUIT\r\n",
		"AUTH PLAIN AGZ1enpAY29ycC50ZXN0AHB3\r\nRETR 3\r\nTOP 1 1\r\nLIST 2\r\nUIDL 9\r\nQUIT\r\n",
		"AUTH PLAIN\r\nAGZ1enpAY29ycC50ZXN0AHB3\r\nNOOP\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH\r\nUSER a\r\nPASS temp\r\nUSER a\r\nPASS drop\r\n",
		"USER a\r\nPASS b\r\nUSER a\r\nPASS b\r\nUSER a\r\nPASS b\r\nUSER a\r\n",
		"STLS\r\nAPOP a b\r\n" + strings.Repeat("x", 400) + "\r\nNOOP\r\n",
		"USER fuzz@corp.test\nPASS pw\nRETR 0\nRETR 4\nTOP 1 99999999999\nDELE 1\nDELE 1\nRETR 1\nQUIT\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		out := runSession(t, input)
		if !bytes.HasPrefix(out, []byte("+OK pop.corp.test POP3 server ready\r\n")) {
			t.Fatalf("no greeting: %q", out)
		}
		// Every reply line ends in CRLF, whatever the input.
		if !bytes.HasSuffix(out, []byte("\r\n")) || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
			t.Fatalf("output with a bare line end on input %q:\n%q", input, out)
		}
	})
}

// TestSessionSeeds runs the fuzz seeds as a plain test and checks a few
// answers, so that the target stays meaningful.
func TestSessionSeeds(t *testing.T) {
	out := string(runSession(t, []byte("USER fuzz@corp.test\r\nPASS pw\r\nSTAT\r\nTOP 1 0\r\nRETR 2\r\nDELE 1\r\nSTAT\r\nQUIT\r\n")))
	for _, want := range []string{
		"+OK Logged in, 3 messages",
		"+OK 3 ",
		"Subject: one\r\n\r\n.\r\n",
		"Subject: two\r\n\r\nbare lf\r\n...\r\n.\r\n",
		"+OK 2 ",
		"signing off (2 messages left)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
}
