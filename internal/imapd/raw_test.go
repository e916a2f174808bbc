package imapd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// rawClient speaks IMAP line by line, for replies whose exact form
// matters (imapclient parses them away).
type rawClient struct {
	t   *testing.T
	c   *tls.Conn
	r   *bufio.Reader
	tag int
}

// dialRaw connects over implicit TLS and logs bob in.
func dialRaw(t *testing.T, env *testEnv) *rawClient {
	t.Helper()
	c, err := tls.Dial("tcp", env.imaps, clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, r: bufio.NewReader(c)}
	if greeting := rc.line(); !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting %q", greeting)
	}
	rc.ok(fmt.Sprintf("LOGIN %s %q", testUser, testPass))
	return rc
}

func (rc *rawClient) line() string {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ln, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("read: %v (after %q)", err, ln)
	}
	return strings.TrimRight(ln, "\r\n")
}

// ok sends one command and returns the untagged replies; the command
// must succeed.
func (rc *rawClient) ok(cmd string) []string {
	rc.t.Helper()
	untagged, status := rc.do(cmd)
	if !strings.HasPrefix(status, "OK") {
		rc.t.Fatalf("%s: %s", cmd, status)
	}
	return untagged
}

// do sends one command and returns its untagged replies and its tagged
// status ("OK ...", "NO ...", "BAD ...").
func (rc *rawClient) do(cmd string) (untagged []string, status string) {
	rc.t.Helper()
	rc.tag++
	tag := fmt.Sprintf("t%d", rc.tag)
	if _, err := fmt.Fprintf(rc.c, "%s %s\r\n", tag, cmd); err != nil {
		rc.t.Fatal(err)
	}
	for {
		ln := rc.line()
		if rest, found := strings.CutPrefix(ln, tag+" "); found {
			return untagged, rest
		}
		untagged = append(untagged, ln)
	}
}

// TestCommandCostBounded: one command cannot ask for unbounded work:
// SEARCH takes at most maxSearchContent content criteria, LIST at most
// maxListPatterns patterns; within the bounds both work.
func TestCommandCostBounded(t *testing.T) {
	env := startServer(t)
	deliver(t, env, "Q1", "hello", "needle in the body")
	rc := dialRaw(t, env)
	rc.ok("SELECT INBOX")
	if got := rc.ok(`SEARCH BODY needle TEXT hello`); len(got) != 1 || got[0] != "* SEARCH 1" {
		t.Errorf("SEARCH within bounds: %q", got)
	}
	many := strings.Repeat(`BODY x `, maxSearchContent+1)
	if _, st := rc.do("SEARCH " + many); !strings.HasPrefix(st, "NO [LIMIT]") {
		t.Errorf("SEARCH with %d BODY criteria: %s, want NO [LIMIT]", maxSearchContent+1, st)
	}
	nested := strings.Repeat("NOT ", maxSearchNodes+1) + "ALL"
	if _, st := rc.do("SEARCH " + nested); !strings.HasPrefix(st, "NO [LIMIT]") && !strings.HasPrefix(st, "BAD") {
		t.Errorf("SEARCH nested %d deep: %s, want a refusal", maxSearchNodes+1, st)
	}
	pats := strings.Repeat(`"x*" `, maxListPatterns+1)
	if _, st := rc.do(`LIST "" (` + strings.TrimSpace(pats) + `)`); !strings.HasPrefix(st, "NO [LIMIT]") {
		t.Errorf("LIST with %d patterns: %s, want NO [LIMIT]", maxListPatterns+1, st)
	}
	if got := rc.ok(`LIST "" ("INBOX" "Sent")`); len(got) != 2 {
		t.Errorf("LIST with two patterns: %q", got)
	}
}

// TestAppendJunkAfterLiteral: bytes after an APPEND literal other than
// CRLF get an error reply (go-imap patch 10), and are not read as the
// next command.
func TestAppendJunkAfterLiteral(t *testing.T) {
	env := startServer(t)
	rc := dialRaw(t, env)
	rc.tag++
	fmt.Fprintf(rc.c, "t%d APPEND INBOX {5+}\r\nhelloJUNK\r\n", rc.tag)
	ln := rc.line()
	if !strings.HasPrefix(ln, fmt.Sprintf("t%d BAD", rc.tag)) && !strings.HasPrefix(ln, fmt.Sprintf("t%d NO", rc.tag)) {
		t.Fatalf("APPEND followed by junk: %q, want a tagged error", ln)
	}
	rc.ok("NOOP") // the connection is in step again
}

// TestRefusedNonSyncLiteralNotRunAsCommands: an APPEND over APPENDLIMIT
// sent as a non-synchronizing literal is refused and the connection
// closed; the literal's lines are never run as commands.
func TestRefusedNonSyncLiteralNotRunAsCommands(t *testing.T) {
	env := startServer(t)
	env.srv.SetAppendLimit(100)
	conn, err := tls.Dial("tcp", env.imaps, clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Lines before the first empty one: a parse error would end the
	// connection before a line after it ran.
	body := "x1 CREATE Injected\r\nSubject: " + strings.Repeat("y", 200) + "\r\n\r\nbody\r\n"
	fmt.Fprintf(conn, "a LOGIN %q %q\r\nb APPEND INBOX {%d+}\r\n%s\r\n", testUser, testPass, len(body), body)
	out, _ := io.ReadAll(conn)
	if !strings.Contains(string(out), "b NO [TOOBIG]") {
		t.Fatalf("APPEND over the limit: %q", out)
	}
	if strings.Contains(string(out), "x1 ") {
		t.Fatalf("the literal's lines ran as commands: %q", out)
	}
	boxes, err := env.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := boxes.Folders()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range folders {
		if f.Name == "Injected" {
			t.Fatal("folder Injected created from the literal")
		}
	}
}
