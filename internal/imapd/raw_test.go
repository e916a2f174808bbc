package imapd

import (
	"bufio"
	"crypto/tls"
	"fmt"
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
	rc.tag++
	tag := fmt.Sprintf("t%d", rc.tag)
	if _, err := fmt.Fprintf(rc.c, "%s %s\r\n", tag, cmd); err != nil {
		rc.t.Fatal(err)
	}
	var untagged []string
	for {
		ln := rc.line()
		if rest, found := strings.CutPrefix(ln, tag+" "); found {
			if !strings.HasPrefix(rest, "OK") {
				rc.t.Fatalf("%s: %s", cmd, rest)
			}
			return untagged
		}
		untagged = append(untagged, ln)
	}
}
