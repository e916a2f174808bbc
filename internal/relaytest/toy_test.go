package relaytest

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// endOfData is what a toy handler receives after the message's final dot.
const endOfData = "<END-OF-DATA>"

// handler answers one command line on one connection. It returns the raw
// reply (CRLF-terminated lines, "" for none) and whether to hang up.
type handler func(line string) (resp string, hangup bool)

// toy is a minimal scripted SMTP server on loopback.
type toy struct {
	ln       net.Listener
	greeting string
	newConn  func() handler

	mu    sync.Mutex
	conns []net.Conn
	lines []string // every command line received, all connections
	wg    sync.WaitGroup
}

// startToy starts a toy server; it is stopped when the test ends.
func startToy(t *testing.T, greeting string, newConn func() handler) *toy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts := &toy{ln: ln, greeting: greeting, newConn: newConn}
	ts.wg.Add(1)
	go ts.serve()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *toy) addr() string { return ts.ln.Addr().String() }

func (ts *toy) stop() {
	ts.ln.Close()
	ts.mu.Lock()
	for _, c := range ts.conns {
		c.Close()
	}
	ts.mu.Unlock()
	ts.wg.Wait()
}

func (ts *toy) connCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.conns)
}

func (ts *toy) received() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.lines...)
}

func (ts *toy) serve() {
	defer ts.wg.Done()
	for {
		c, err := ts.ln.Accept()
		if err != nil {
			return
		}
		ts.mu.Lock()
		ts.conns = append(ts.conns, c)
		ts.mu.Unlock()
		ts.wg.Add(1)
		go func() {
			defer ts.wg.Done()
			defer c.Close()
			ts.handle(c, ts.newConn())
		}()
	}
}

func (ts *toy) handle(c net.Conn, h handler) {
	// A bound on every connection so a test failure cannot leak a goroutine.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(ts.greeting)); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		ts.mu.Lock()
		ts.lines = append(ts.lines, line)
		ts.mu.Unlock()
		resp, hangup := h(line)
		if resp != "" {
			if _, err := c.Write([]byte(resp)); err != nil {
				return
			}
		}
		if hangup {
			return
		}
		if strings.EqualFold(line, "DATA") && strings.HasPrefix(resp, "354") {
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			resp, hangup = h(endOfData)
			if _, err := c.Write([]byte(resp)); err != nil || hangup {
				return
			}
		}
	}
}

// verb returns the upper-cased command word of line.
func verb(line string) string {
	v, _, _ := strings.Cut(line, " ")
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[:i]
	}
	return strings.ToUpper(v)
}

// smtpHandler is a well-behaved toy that decides RCPT with rcpt (path
// including angle brackets in, reply out) and answers the end of DATA with
// dataReply.
func smtpHandler(host string, rcpt func(path string) string, dataReply string) handler {
	return func(line string) (string, bool) {
		if line == endOfData {
			return dataReply, false
		}
		switch verb(line) {
		case "EHLO":
			return "250-" + host + " hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n", false
		case "HELO":
			return "250 " + host + "\r\n", false
		case "MAIL":
			return "250 2.1.0 Ok\r\n", false
		case "RCPT":
			_, path, _ := strings.Cut(line, ":")
			return rcpt(strings.TrimSpace(path)), false
		case "DATA":
			return "354 End data with <CR><LF>.<CR><LF>\r\n", false
		case "RSET":
			return "250 2.0.0 Ok\r\n", false
		case "QUIT":
			return "221 2.0.0 Bye\r\n", true
		}
		return "502 5.5.2 Error: command not recognized\r\n", false
	}
}

func acceptAll(string) string { return "250 2.1.5 Ok\r\n" }
