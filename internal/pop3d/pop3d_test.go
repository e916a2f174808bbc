package pop3d

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

func TestGreetingHasNoAPOPTimestamp(t *testing.T) {
	e := newEnv(t)
	c := e.dialPlain()
	if c.greeting != "+OK pop.corp.test POP3 server ready" {
		t.Errorf("greeting %q", c.greeting)
	}
	c.expect("APOP alice@corp.test 0123456789abcdef0123456789abcdef", "-ERR APOP is not supported")
}

func TestCapa(t *testing.T) {
	e := newEnv(t)
	common := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION mamori"}
	tests := []struct {
		name    string
		connect func() *client
		want    []string
		notWant []string
	}{
		{"plain before STLS", e.dialPlain, append([]string{"STLS"}, common...), []string{"USER", "SASL PLAIN"}},
		{"after STLS", func() *client {
			c := e.dialPlain()
			c.stls(e.clientTLS)
			return c
		}, append([]string{"USER", "SASL PLAIN"}, common...), []string{"STLS"}},
		{"pop3s", e.dial, append([]string{"USER", "SASL PLAIN"}, common...), []string{"STLS"}},
		{"logged in", func() *client { return e.login(alice, alicePass) }, common, []string{"STLS", "USER", "SASL PLAIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.connect()
			lines := strings.Split(strings.TrimSuffix(c.multi("CAPA"), "\r\n"), "\r\n")
			caps := lines[1 : len(lines)-1]
			for _, w := range tt.want {
				if !slices.Contains(caps, w) {
					t.Errorf("CAPA lacks %q: %q", w, caps)
				}
			}
			for _, nw := range tt.notWant {
				if slices.Contains(caps, nw) {
					t.Errorf("CAPA has %q: %q", nw, caps)
				}
			}
			c.expect("QUIT", "+OK")
			c.closed()
		})
	}
}

func TestLoginRefusedBeforeTLS(t *testing.T) {
	e := newEnv(t)
	c := e.dialPlain()
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + alice + "\x00" + alicePass))
	c.expect("USER "+alice, "-ERR [AUTH] ")
	c.expect("PASS "+alicePass, "-ERR [AUTH] ")
	c.expect("AUTH PLAIN "+plain, "-ERR [AUTH] ")
	c.expect("AUTH", "-ERR [AUTH] ")
	c.expect("STAT", "-ERR")
	// The same connection logs in once upgraded: the refusals were not
	// counted as failed logins.
	c.stls(e.clientTLS)
	c.expect("STLS", "-ERR")
	c.expect("USER "+alice, "+OK")
	c.expect("PASS "+alicePass, "+OK Logged in, 3 messages")
}

func TestSTLSMustEndThePipeline(t *testing.T) {
	e := newEnv(t)
	c := e.dialPlain()
	// Sent in one write: CAPA would be read as if it came over TLS.
	if _, err := c.conn.Write([]byte("STLS\r\nCAPA\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); !strings.HasPrefix(got, "-ERR STLS must be the last command") {
		t.Fatalf("got %q", got)
	}
	c.closed()
}

func plainResp(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	const failed = "-ERR [AUTH] Authentication failed"
	tests := []struct {
		name   string
		dialog [][2]string // command, expected reply prefix
	}{
		{"user pass", [][2]string{{"USER " + alice, "+OK"}, {"PASS " + alicePass, "+OK Logged in, 3 messages"}}},
		{"name in another case", [][2]string{{"USER Alice@Corp.TEST", "+OK"}, {"PASS " + alicePass, "+OK Logged in, 3 messages"}}},
		{"wrong password", [][2]string{{"USER " + alice, "+OK"}, {"PASS nope", failed}, {"STAT", "-ERR Log in first"}}},
		{"unknown user answers like a wrong password", [][2]string{{"USER nobody@corp.test", "+OK"}, {"PASS nope", failed}}},
		{"pass without user", [][2]string{{"PASS " + alicePass, "-ERR Send USER first"}}},
		{"auth plain initial response", [][2]string{{"AUTH PLAIN " + plainResp("", alice, alicePass), "+OK Logged in"}}},
		{"auth plain authzid = login", [][2]string{{"AUTH plain " + plainResp(alice, alice, alicePass), "+OK Logged in"}}},
		{"auth plain continuation", [][2]string{{"AUTH PLAIN", "+ "}, {plainResp("", alice, alicePass), "+OK Logged in"}}},
		{"auth plain wrong password", [][2]string{{"AUTH PLAIN " + plainResp("", alice, "nope"), failed}}},
		{"auth plain other authzid", [][2]string{{"AUTH PLAIN " + plainResp(bob, alice, alicePass), "-ERR [AUTH] Authorization identity"}}},
		{"auth plain empty response", [][2]string{{"AUTH PLAIN =", failed}}},
		{"auth plain cancelled", [][2]string{{"AUTH PLAIN", "+ "}, {"*", "-ERR Authentication cancelled"}}},
		{"auth plain bad base64", [][2]string{{"AUTH PLAIN !!!", "-ERR Invalid base64"}}},
		{"auth other mechanism", [][2]string{{"AUTH CRAM-MD5", "-ERR Unsupported"}}},
		{"auth lists mechanisms", [][2]string{{"AUTH", "+OK"}, {"", "PLAIN"}, {"", "."}}},
		{"already logged in", [][2]string{{"USER " + bob, "+OK"}, {"PASS " + bobPass, "+OK Logged in, 0 messages (0 octets)"},
			{"USER " + alice, "-ERR Already logged in"}, {"STLS", "-ERR"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial()
			for _, d := range tt.dialog {
				var got string
				if d[0] == "" {
					got = c.line()
				} else {
					got = c.cmd(d[0])
				}
				if !strings.HasPrefix(got, d[1]) {
					t.Fatalf("%q: got %q, want %q…", d[0], got, d[1])
				}
			}
			c.expect("QUIT", "+OK")
			c.closed()
		})
	}
}

func TestThreeFailedLoginsClose(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	for range 3 {
		c.expect("USER "+alice, "+OK")
		c.expect("PASS wrong", "-ERR [AUTH] Authentication failed")
	}
	c.closed()
}

// refuser refuses every login with err.
type refuser struct{ err error }

func (r refuser) Check(netip.Addr, string, string, string) (string, error) { return "", r.err }

func TestLoginRefusals(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		want   string
		closes bool
	}{
		{"temporary", &login.Error{Temporary: true, Code: 454, Text: "Temporary authentication failure, try again later", Rule: "auth.throttled"},
			"-ERR [SYS/TEMP] Temporary authentication failure, try again later", false},
		{"ban drops", &login.Error{Drop: true, Code: 421, Text: "Too many failures", Rule: "auth.ban"},
			"-ERR [AUTH] Too many failures", true},
		{"suspended", &login.Error{Code: 535, Text: "Account suspended, contact your administrator", Rule: "account.suspended"},
			"-ERR [AUTH] Account suspended, contact your administrator", false},
		{"not a login.Error", fmt.Errorf("directory down"), "-ERR [SYS/TEMP] ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Login = refuser{tt.err} })
			c := e.dial()
			c.expect("USER "+alice, "+OK")
			c.expect("PASS "+alicePass, tt.want)
			if tt.closes {
				c.closed()
				return
			}
			c.expect("NOOP", "-ERR Log in first")
		})
	}
}

func TestTransaction(t *testing.T) {
	e := newEnv(t)
	snap := e.inbox(alice)
	c := e.login(alice, alicePass)

	var total int64
	for _, m := range snap.Messages {
		total += m.Size
	}
	c.expect("STAT", fmt.Sprintf("+OK 3 %d", total))
	golden(t, "list.golden", c.multi("LIST"))
	c.expect("LIST 2", fmt.Sprintf("+OK 2 %d", snap.Messages[1].Size))

	uidl := "+OK Unique-ID listing follows\r\n"
	for i, m := range snap.Messages {
		uidl += fmt.Sprintf("%d %d.%d\r\n", i+1, snap.UIDValidity, m.UID)
	}
	if got := c.multi("UIDL"); got != uidl+".\r\n" {
		t.Errorf("UIDL:\n%q\nwant\n%q", got, uidl+".\r\n")
	}
	c.expect("UIDL 3", fmt.Sprintf("+OK 3 %d.%d", snap.UIDValidity, snap.Messages[2].UID))

	golden(t, "retr1.golden", c.multi("RETR 1"))
	golden(t, "retr2_dots.golden", c.multi("RETR 2"))
	golden(t, "top3_0.golden", c.multi("TOP 3 0"))
	golden(t, "top3_2.golden", c.multi("TOP 3 2"))
	golden(t, "top2_3.golden", c.multi("TOP 2 3"))

	for _, tt := range [][2]string{
		{"RETR 4", "-ERR No such message"},
		{"RETR 0", "-ERR No such message"},
		{"RETR -1", "-ERR No such message"},
		{"RETR 99999999999", "-ERR No such message"},
		{"RETR", "-ERR Syntax"},
		{"TOP 1", "-ERR Syntax"},
		{"TOP 1 x", "-ERR Invalid number"},
		{"LIST 1 2", "-ERR Syntax"},
		{"STAT 1", "-ERR STAT takes no argument"},
		{"NOOP", "+OK"},
		{"DELE 2", "+OK Message 2 deleted"},
		{"DELE 2", "-ERR Message 2 already deleted"},
		{"RETR 2", "-ERR Message 2 already deleted"},
		{"LIST 2", "-ERR Message 2 already deleted"},
		{"UIDL 2", "-ERR Message 2 already deleted"},
		{"STAT", fmt.Sprintf("+OK 2 %d", total-snap.Messages[1].Size)},
		{"RSET", fmt.Sprintf("+OK 3 messages (%d octets)", total)},
		{"STAT", fmt.Sprintf("+OK 3 %d", total)},
		{"XYZZY", "-ERR Unknown command"},
	} {
		c.expect(tt[0], tt[1])
	}
	c.expect("DELE 1", "+OK")
	if got := c.multi("LIST"); strings.Contains(got, "\r\n1 ") || !strings.HasPrefix(got, "+OK 2 messages") {
		t.Errorf("LIST after DELE 1:\n%s", got)
	}
	c.expect("RSET", "+OK")
	c.expect("QUIT", "+OK pop.corp.test POP3 server signing off (3 messages left)")
	c.closed()
	if n := len(e.inbox(alice).Messages); n != 3 {
		t.Errorf("%d messages after RSET and QUIT, want 3", n)
	}
}

func TestPipelining(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	if _, err := c.conn.Write([]byte("USER " + alice + "\r\nPASS " + alicePass + "\r\nSTAT\r\nLIST 1\r\nNOOP\r\nQUIT\r\n")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"+OK", "+OK Logged in", "+OK 3 ", "+OK 1 ", "+OK", "+OK pop.corp.test POP3 server signing off"} {
		if got := c.line(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q…", got, want)
		}
	}
	c.closed()
}

func TestRetrMarksSeen(t *testing.T) {
	e := newEnv(t)
	c := e.login(alice, alicePass)
	c.multi("RETR 2")
	c.multi("TOP 3 1") // TOP does not count as reading
	c.expect("QUIT", "+OK")
	c.closed()
	for i, m := range e.inbox(alice).Messages {
		if seen := slices.Contains(m.Flags, mailbox.FlagSeen); seen != (i == 1) {
			t.Errorf("message %d: flags %q", i+1, m.Flags)
		}
	}
}

func TestDeleQuitExpunges(t *testing.T) {
	e := newEnv(t)
	before := e.inbox(alice)
	c := e.login(alice, alicePass)
	c.multi("RETR 1")
	c.expect("DELE 1", "+OK")
	c.expect("DELE 3", "+OK")
	c.expect("QUIT", "+OK pop.corp.test POP3 server signing off (1 messages left)")
	c.closed()

	after := e.inbox(alice)
	if len(after.Messages) != 1 || after.Messages[0].UID != before.Messages[1].UID {
		t.Fatalf("after DELE 1, DELE 3, QUIT: %+v", after.Messages)
	}
	// The survivor keeps its UIDL.
	c = e.login(alice, alicePass)
	c.expect("UIDL 1", fmt.Sprintf("+OK 1 %d.%d", before.UIDValidity, before.Messages[1].UID))
	c.expect("QUIT", "+OK")
	c.closed()

	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "retrieved=1 deleted=2") }, "logout log with counts:\n"+e.logs.String())
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loginWhenFree logs in, retrying while the last session still holds the
// maildrop lock.
func (e *env) loginWhenFree(user, pass string) *client {
	e.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c := e.dial()
		c.expect("USER "+user, "+OK")
		got := c.cmd("PASS " + pass)
		if strings.HasPrefix(got, "+OK Logged in") {
			return c
		}
		if !strings.HasPrefix(got, "-ERR [IN-USE]") || time.Now().After(deadline) {
			e.t.Fatalf("login: %q", got)
		}
		_ = c.conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeleDropKeeps(t *testing.T) {
	e := newEnv(t)
	c := e.login(alice, alicePass)
	c.expect("DELE 1", "+OK")
	c.expect("DELE 2", "+OK")
	_ = c.conn.Close() // no QUIT: no UPDATE state
	c = e.loginWhenFree(alice, alicePass)
	c.expect("STAT", "+OK 3 ")
	if n := len(e.inbox(alice).Messages); n != 3 {
		t.Errorf("%d messages after a dropped session, want 3", n)
	}
}

func TestInUse(t *testing.T) {
	e := newEnv(t)
	first := e.login(alice, alicePass)
	second := e.dial()
	second.expect("USER "+alice, "+OK")
	second.expect("PASS "+alicePass, "-ERR [IN-USE] ")
	// Another user is not affected, and the lock is per user, not per case.
	e.login(bob, bobPass).expect("STAT", "+OK 0 0")
	second.expect("USER ALICE@corp.test", "+OK")
	second.expect("PASS "+alicePass, "-ERR [IN-USE] ")
	// The lock is free once QUIT is answered.
	first.expect("QUIT", "+OK")
	second.expect("USER "+alice, "+OK")
	second.expect("PASS "+alicePass, "+OK Logged in")
}

func TestLineTooLong(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	c.expect("NOOP "+strings.Repeat("x", 300), "-ERR Line too long")
	c.expect("USER "+alice, "+OK") // the session goes on
	c.expect("PASS "+alicePass, "+OK Logged in")
	c.expect("RETR "+strings.Repeat("1", 260), "-ERR Line too long")
	c.expect("STAT", "+OK 3 ")
	// Repeated garbage closes the connection.
	for i := 0; ; i++ {
		got := c.cmd(strings.Repeat("y", 1000))
		if got != "-ERR Line too long" {
			t.Fatalf("got %q", got)
		}
		if i == maxBadCommands-3 { // two bad commands came before
			break
		}
	}
	if got := c.line(); got != "-ERR Too many bad commands" {
		t.Fatalf("got %q", got)
	}
	c.closed()
	if n := len(e.inbox(alice).Messages); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
}

func TestLineFloodCloses(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	go func() { _, _ = c.conn.Write([]byte(strings.Repeat("z", 2*maxDiscard))) }()
	if got := c.line(); got != "-ERR Line too long" {
		t.Fatalf("got %q", got)
	}
	c.closed()
}

func TestCommandsBeforeLoginBounded(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	for range maxAuthCommands - 1 {
		c.multi("CAPA")
	}
	c.expect("NOOP", "-ERR Log in first")
	if got := c.line(); got != "-ERR Too many commands without logging in" {
		t.Fatalf("got %q", got)
	}
	c.closed()
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := e.login(alice, alicePass)
	c.expect("DELE 1", "+OK")
	if got := c.line(); got != "-ERR Disconnected for inactivity" {
		t.Fatalf("got %q", got)
	}
	c.closed()
	e.loginWhenFree(alice, alicePass).expect("STAT", "+OK 3 ")
}

func TestShutdown(t *testing.T) {
	e := newEnv(t)
	c := e.login(alice, alicePass)
	c.expect("DELE 1", "+OK")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); got != "-ERR [SYS/TEMP] Server shutting down" {
		t.Fatalf("got %q", got)
	}
	c.closed()
	if n := len(e.inbox(alice).Messages); n != 3 {
		t.Errorf("%d messages after shutdown, want 3", n)
	}
}

func TestMessageExpungedElsewhere(t *testing.T) {
	e := newEnv(t)
	snap := e.inbox(alice)
	c := e.login(alice, alicePass)
	u, err := e.store.User(alice)
	if err != nil {
		t.Fatal(err)
	}
	f, err := u.Open("INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Expunge([]uint32{snap.Messages[0].UID}); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	c.expect("STAT", "+OK 3 ") // the session's list is fixed
	c.expect("RETR 1", "-ERR Message 1 was removed by another session")
	c.expect("DELE 1", "+OK")
	c.expect("QUIT", "+OK")
	c.closed()
	if n := len(e.inbox(alice).Messages); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

func TestPipelineWithPartialLine(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	// The reply to CAPA must not wait for the rest of the next command.
	if _, err := c.conn.Write([]byte("CAPA\r\nNO")); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); got != "+OK Capability list follows" {
		t.Fatalf("got %q", got)
	}
	c.body()
	c.expect("OP", "-ERR Log in first")
}

func TestShutdownInterruptsHandshake(t *testing.T) {
	e := newEnv(t)
	raw, err := net.Dial("tcp", e.pop3s) // never starts TLS
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	waitFor(t, func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.sessions) == 1
	}, "the session")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a handshake in progress: %v", err)
	}
}

// TestRevokedSessionEndsWithoutUpdate: credentials revoked mid-session
// close the connection; the messages marked for deletion stay (no QUIT,
// no UPDATE state); another user's session goes on; the lock is freed.
func TestRevokedSessionEndsWithoutUpdate(t *testing.T) {
	sessions := &login.Sessions{}
	e := newEnv(t, func(c *Config) { c.Sessions = sessions })
	c := e.login(alice, alicePass)
	other := e.login(bob, bobPass)
	c.expect("DELE 1", "+OK")
	if n := sessions.Count(alice); n != 1 {
		t.Fatalf("%d sessions of alice registered, want 1", n)
	}
	if n := sessions.Revoke(alice); n != 1 {
		t.Fatalf("Revoke ended %d sessions", n)
	}
	c.closed()
	other.expect("STAT", "+OK 0 0")
	c = e.loginWhenFree(alice, alicePass)
	c.expect("STAT", "+OK 3 ")
	if n := len(e.inbox(alice).Messages); n != 3 {
		t.Errorf("%d messages after a revoked session, want 3", n)
	}
	c.expect("QUIT", "+OK")
	deadline := time.Now().Add(time.Second)
	for sessions.Count(alice) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a session that ended is still registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
