package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// fakeLogin accepts one password per user.
type fakeLogin struct {
	mu     sync.Mutex
	users  map[string]string
	checks int
}

func (f *fakeLogin) Check(_ netip.Addr, protocol, username, password string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	user := strings.ToLower(username)
	if protocol != "imap" || f.users[user] == "" || f.users[user] != password {
		return "", &login.Error{Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authentication credentials invalid"}
	}
	return user, nil
}

func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	return testutil.NewCert(t, "imap.ours.test").Server
}

type testEnv struct {
	srv   *Server
	store *mailbox.Store
	login *fakeLogin
	imaps string // implicit TLS address
	imap  string // STARTTLS address
}

const (
	testUser = "bob@ours.test"
	testPass = "correct horse"
)

func startServer(t *testing.T, opts ...func(*Config)) *testEnv {
	t.Helper()
	store := mailbox.NewStore(t.TempDir(), mailbox.StoreOptions{PerFileSync: false})
	t.Cleanup(func() { store.Close() })
	fl := &fakeLogin{users: map[string]string{testUser: testPass}}
	tlsConf := testTLS(t)
	cfg := Config{Hostname: "imap.ours.test", TLS: tlsConf, Store: store, Login: fl, AppendLimit: 1 << 20}
	for _, o := range opts {
		o(&cfg)
	}
	srv := New(cfg)

	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, l := range []net.Listener{plain, tls.NewListener(raw, tlsConf)} {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(l) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
	})
	return &testEnv{srv: srv, store: store, login: fl, imaps: raw.Addr().String(), imap: plain.Addr().String()}
}

func clientTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

func dial(t *testing.T, env *testEnv, handler *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(env.imaps, &imapclient.Options{TLSConfig: clientTLS(), UnilateralDataHandler: handler})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func deliver(t *testing.T, env *testEnv, id, subject, body string) {
	t.Helper()
	msg := "From: Alice <alice@far.test>\r\nTo: bob@ours.test\r\nSubject: " + subject +
		"\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <" + id + "@far.test>\r\n\r\n" + body + "\r\n"
	if err := env.store.DeliverOnce(testUser, id, "alice@far.test", []byte(msg), false); err != nil {
		t.Fatalf("deliver: %v", err)
	}
}

func TestMailboxSession(t *testing.T) {
	env := startServer(t)
	deliver(t, env, "Q1", "hello one", "first body")
	c := dial(t, env, nil)

	// LIST: the special-use folders every user has.
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	uses := map[string]imap.MailboxAttr{}
	for _, b := range boxes {
		for _, a := range b.Attrs {
			switch a {
			case imap.MailboxAttrSent, imap.MailboxAttrDrafts, imap.MailboxAttrTrash, imap.MailboxAttrJunk, imap.MailboxAttrArchive:
				uses[b.Mailbox] = a
			}
		}
		if b.Delim != '.' {
			t.Errorf("%s: delimiter %q", b.Mailbox, b.Delim)
		}
	}
	for name, use := range map[string]imap.MailboxAttr{"Sent": imap.MailboxAttrSent, "Drafts": imap.MailboxAttrDrafts, "Trash": imap.MailboxAttrTrash, "Junk": imap.MailboxAttrJunk, "Archive": imap.MailboxAttrArchive} {
		if uses[name] != use {
			t.Errorf("LIST: %s has %q, want %q (all: %+v)", name, uses[name], use, boxes)
		}
	}

	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	if sel.NumMessages != 1 || sel.UIDValidity == 0 {
		t.Fatalf("select: %+v", sel)
	}

	// FETCH BODY[] sets \Seen; the envelope comes from the header.
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
		UID: true, Flags: true, Envelope: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{{}},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %d", err, len(msgs))
	}
	m := msgs[0]
	if m.Envelope == nil || m.Envelope.Subject != "hello one" || len(m.Envelope.From) != 1 || m.Envelope.From[0].Addr() != "alice@far.test" {
		t.Errorf("envelope: %+v", m.Envelope)
	}
	var body []byte
	for _, b := range m.BodySection {
		body = b.Bytes
	}
	if !strings.Contains(string(body), "first body") || int64(len(body)) != m.RFC822Size {
		t.Errorf("body %q, size %d", body, m.RFC822Size)
	}
	uid1 := m.UID
	flags, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(flags) != 1 || !hasImapFlag(flags[0].Flags, imap.FlagSeen) {
		t.Errorf("BODY[] did not set \\Seen: %v %+v", err, flags)
	}

	// STORE.
	stored, err := c.Store(imap.UIDSetNum(uid1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, "$Label1"}}, nil).Collect()
	if err != nil || len(stored) != 1 || !hasImapFlag(stored[0].Flags, imap.FlagFlagged) || !hasImapFlag(stored[0].Flags, "$Label1") {
		t.Fatalf("store: %v %+v", err, stored)
	}

	// COPY with COPYUID.
	cp, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait()
	if err != nil || cp.UIDValidity == 0 || len(cp.DestUIDs) != 1 {
		t.Fatalf("copy: %v %+v", err, cp)
	}

	// APPEND with APPENDUID, then it shows up in the selected INBOX.
	raw := "From: bob@ours.test\r\nSubject: draft\r\n\r\nappended\r\n"
	app := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	if _, err := io.WriteString(app, raw); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	ad, err := app.Wait()
	if err != nil || ad.UID == 0 {
		t.Fatalf("append: %v %+v", err, ad)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Fatalf("after append: %d messages, want 2", n)
	}

	// MOVE the first message to Trash.
	mv, err := c.Move(imap.UIDSetNum(uid1), "Trash").Wait()
	if err != nil || mv.DestUIDs.String() == "" {
		t.Fatalf("move: %v %+v", err, mv)
	}
	if n := c.Mailbox().NumMessages; n != 1 {
		t.Fatalf("after move: %d messages, want 1", n)
	}

	// EXPUNGE the appended one.
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	gone, err := c.Expunge().Collect()
	if err != nil || len(gone) != 1 || gone[0] != 1 {
		t.Fatalf("expunge: %v %v", err, gone)
	}

	// The other folders hold what was copied and moved.
	for _, name := range []string{"Archive", "Trash"} {
		st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil || st.NumMessages == nil || *st.NumMessages != 1 {
			t.Errorf("status %s: %v %+v", name, err, st)
		}
	}

	// SEARCH.
	deliver(t, env, "Q2", "needle here", "second body")
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "NEEDLE"}}}, nil).Wait()
	if err != nil || len(res.AllSeqNums()) != 1 {
		t.Fatalf("search: %v %+v", err, res)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

func hasImapFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if strings.EqualFold(string(g), string(f)) {
			return true
		}
	}
	return false
}

func TestIdleSeesDelivery(t *testing.T) {
	env := startServer(t)
	exists := make(chan uint32, 10)
	c := dial(t, env, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	})
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let IDLE start waiting
	start := time.Now()
	deliver(t, env, "Q9", "while idle", "hi")
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d, want 1", n)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("EXISTS after %v, want within 1s", d)
		}
	case <-time.After(time.Second):
		t.Fatal("no EXISTS within 1s of a delivery")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRefusals(t *testing.T) {
	env := startServer(t)

	// Plain connection: LOGINDISABLED and LOGIN refused before STARTTLS.
	c, err := imapclient.DialInsecure(env.imap, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Has(imap.CapLoginDisabled) || !caps.Has(imap.CapStartTLS) {
		t.Errorf("plain caps %v: want LOGINDISABLED and STARTTLS", caps)
	}
	if err := c.Login(testUser, testPass).Wait(); err == nil {
		t.Fatal("LOGIN accepted before STARTTLS")
	}
	if env.login.checks != 0 {
		t.Errorf("password checked before TLS")
	}
	c.Close()

	// STARTTLS, then a wrong password, then the right one.
	c, err = imapclient.DialStartTLS(env.imap, &imapclient.Options{TLSConfig: clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login(testUser, "wrong").Wait()
	var ie *imap.Error
	if err == nil {
		t.Fatal("wrong password accepted")
	} else if !asIMAPError(err, &ie) || ie.Code != imap.ResponseCodeAuthenticationFailed {
		t.Errorf("wrong password: %v, want NO [AUTHENTICATIONFAILED]", err)
	}
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatalf("login after STARTTLS: %v", err)
	}
	caps, err = c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []imap.Cap{imap.CapIMAP4rev2, imap.CapIdle, imap.CapMove, imap.CapUIDPlus, imap.CapSpecialUse, imap.CapLiteralPlus, imap.CapNamespace, imap.CapUnselect, imap.CapEnable, imap.CapESearch, imap.CapID} {
		if !caps.Has(want) {
			t.Errorf("missing capability %s", want)
		}
	}
}

func asIMAPError(err error, target **imap.Error) bool {
	e, ok := err.(*imap.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestAppendMemoryBounded: APPENDs reserve twice their size from one
// server-wide budget; when it is used up an APPEND waits, then gets
// NO [LIMIT], and works again once there is room.
func TestAppendMemoryBounded(t *testing.T) {
	env := startServer(t)
	old := appendWait
	appendWait = 200 * time.Millisecond
	t.Cleanup(func() { appendWait = old })
	c := dial(t, env, nil)
	all := env.srv.cfg.AppendMemory
	if all < 2*env.srv.cfg.AppendLimit {
		t.Fatalf("AppendMemory %d below twice AppendLimit %d", all, env.srv.cfg.AppendLimit)
	}
	if err := env.srv.appendMem.Acquire(context.Background(), all); err != nil {
		t.Fatal(err)
	}
	msg := "From: bob@ours.test\r\nSubject: draft\r\n\r\nhello\r\n"
	appendMsg := func() error {
		cmd := c.Append("Drafts", int64(len(msg)), nil)
		if _, err := cmd.Write([]byte(msg)); err != nil {
			return err
		}
		if err := cmd.Close(); err != nil {
			return err
		}
		_, err := cmd.Wait()
		return err
	}
	err := appendMsg()
	var ierr *imap.Error
	if !errors.As(err, &ierr) || ierr.Code != imap.ResponseCodeLimit {
		t.Fatalf("APPEND with the budget used up: %v, want NO [LIMIT]", err)
	}
	env.srv.appendMem.Release(all)
	if err := appendMsg(); err != nil {
		t.Fatalf("APPEND with room: %v", err)
	}
}

// TestRevokedSessionGetsBye: a revoked login's session — here in IDLE —
// gets a BYE and is closed; it is registered under the canonical login
// and forgotten when it ends by itself.
func TestRevokedSessionGetsBye(t *testing.T) {
	sessions := &login.Sessions{}
	env := startServer(t, func(c *Config) { c.Sessions = sessions })
	c := dial(t, env, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if n := sessions.Count(testUser); n != 1 {
		t.Fatalf("%d sessions registered for %s, want 1", n, testUser)
	}
	other := dial(t, env, nil)
	if n := sessions.Revoke(testUser, "imap"); n != 2 {
		t.Fatalf("Revoke ended %d sessions, want 2", n)
	}
	select {
	case <-c.Closed():
	case <-time.After(3 * time.Second):
		t.Fatal("the revoked IDLE session is still open")
	}
	_ = idle.Close()
	select {
	case <-other.Closed():
	case <-time.After(3 * time.Second):
		t.Fatal("the second revoked session is still open")
	}
	// A new login is registered again, and forgotten when it logs out.
	c2 := dial(t, env, nil)
	if err := c2.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for sessions.Count(testUser) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a session that logged out is still registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReadBudget: FETCH and SEARCH that take messages apart reserve room
// in the server's read budget first; with the budget taken they answer
// NO [LIMIT] (after readWait) instead of growing memory, while BODY[]
// (streamed) still works; with room again they work.
func TestReadBudget(t *testing.T) {
	old := readWait
	readWait = 100 * time.Millisecond
	t.Cleanup(func() { readWait = old })
	env := startServer(t, func(c *Config) { c.ReadMemory = 1 << 20 })
	deliver(t, env, "R1", "budget", "a body to search for needle")
	c := dial(t, env, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	text := &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText, Peek: true}}}
	whole := &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}
	search := &imap.SearchCriteria{Body: []string{"needle"}}

	all := env.srv.cfg.ReadMemory
	if err := env.srv.readMem.Acquire(context.Background(), all); err != nil { // every byte taken
		t.Fatal(err)
	}
	for name, run := range map[string]func() error{
		"FETCH BODY[TEXT]": func() error { _, err := c.Fetch(imap.SeqSetNum(1), text).Collect(); return err },
		"SEARCH BODY":      func() error { _, err := c.Search(search, nil).Wait(); return err },
		"SEARCH SUBJECT": func() error { // the header may be as large as the message
			_, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "budget"}}}, nil).Wait()
			return err
		},
	} {
		err := run()
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeLimit {
			t.Fatalf("%s with the budget taken: %v, want NO [LIMIT]", name, err)
		}
	}
	if msgs, err := c.Fetch(imap.SeqSetNum(1), whole).Collect(); err != nil || len(msgs) != 1 {
		t.Fatalf("BODY[] (streamed) with the budget taken: %v %v", msgs, err)
	}
	env.srv.readMem.Release(all)
	if msgs, err := c.Fetch(imap.SeqSetNum(1), text).Collect(); err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH BODY[TEXT] with room: %v %v", msgs, err)
	}
	if data, err := c.Search(search, nil).Wait(); err != nil || len(data.AllSeqNums()) != 1 {
		t.Fatalf("SEARCH BODY with room: %v %v", data, err)
	}
	// Nothing stays reserved.
	if !env.srv.readMem.TryAcquire(all) {
		t.Fatal("the read budget leaked")
	}
	env.srv.readMem.Release(all)
}

// TestSlowReaderHoldsOnlyItsBytes: a client that asks for a large
// section and stops reading holds only the section's bytes of the read
// budget while the server waits to write it, not the cost of taking the
// message apart; other sessions' FETCHes go on.
func TestSlowReaderHoldsOnlyItsBytes(t *testing.T) {
	old := readWait
	readWait = 2 * time.Second
	t.Cleanup(func() { readWait = old })
	env := startServer(t, func(c *Config) { c.ReadMemory = 64 << 20 })
	big := strings.Repeat("0123456789abcdef", 1<<20) // 16 MiB of text: more than the socket buffers
	deliver(t, env, "S1", "big", big)
	deliver(t, env, "S2", "medium", strings.Repeat("x", 6<<20)) // apart cost 18 MiB

	slow, err := tls.Dial("tcp", env.imaps, clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "a LOGIN %q %q\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[TEXT]\r\n", testUser, testPass)
	// …and never reads. Its FETCH takes the message apart (48 MiB of the
	// 64 MiB budget) and then waits to write 16 MiB; the FETCH below
	// needs 18 MiB and waits up to readWait for room.
	time.Sleep(200 * time.Millisecond)
	c := dial(t, env, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	text := &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText, Peek: true}}}
	if msgs, err := c.Fetch(imap.SeqSetNum(2), text).Collect(); err != nil || len(msgs) != 1 {
		t.Fatalf("another session's FETCH while a slow reader waits: %v %v", len(msgs), err)
	}
}

// TestSetAppendLimit: a reload's new limit holds for the next APPEND and
// the capability; a limit past what the APPEND budget holds is lowered.
func TestSetAppendLimit(t *testing.T) {
	env := startServer(t) // AppendLimit 1 MiB, AppendMemory 4 MiB
	msg := "From: a@far.test\r\nSubject: s\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n"
	appendMsg := func() error {
		c := dial(t, env, nil)
		cmd := c.Append("INBOX", int64(len(msg)), nil)
		cmd.Write([]byte(msg))
		cmd.Close()
		_, err := cmd.Wait()
		return err
	}
	if got := env.srv.SetAppendLimit(1000); got != 1000 {
		t.Fatalf("SetAppendLimit(1000) = %d", got)
	}
	caps, err := dial(t, env, nil).Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if lim, ok := caps.AppendLimit(); !ok || lim == nil || *lim != 1000 {
		t.Fatalf("APPENDLIMIT after the change: %v %v", lim, ok)
	}
	if err := appendMsg(); err == nil {
		t.Fatal("APPEND over the new limit accepted")
	}
	if got := env.srv.SetAppendLimit(100 << 20); got != 2<<20 {
		t.Fatalf("SetAppendLimit(100 MiB) = %d, want it lowered to half the 4 MiB APPEND budget", got)
	}
	if err := appendMsg(); err != nil {
		t.Fatalf("APPEND under the raised limit: %v", err)
	}
}
