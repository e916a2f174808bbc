package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// clusterNode is a mamori node of a cluster on the Redis at url; edit, if set,
// changes its config further.
func clusterNode(t *testing.T, url string, node string, edit ...func(string) string) *instance {
	t.Helper()
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "backend", `"redis"`)
		cfg = setKey(cfg, "url", strconv.Quote(url))
		for _, e := range edit {
			cfg = e(cfg)
		}
		return setKey(cfg, "node", strconv.Quote(node))
	})
	in.name = node
	return in
}

// alive fails the test when the node's process has exited.
func (in *instance) alive() {
	in.t.Helper()
	in.mu.Lock()
	exited := in.exited
	in.mu.Unlock()
	select {
	case <-exited:
		in.t.Fatalf("%s exited:\n%s", in.name, in.logTail(40))
	default:
	}
}

// TestCluster: two nodes, one Redis. The directory and the guard's
// decisions made on one node hold on the other within a second; with Redis
// killed both go on serving from what they know; with Redis back, a ban
// made meanwhile reaches the other node.
func TestCluster(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := clusterNode(t, r.URL, "node-a"), clusterNode(t, r.URL, "node-b")
	a.start()
	b.start()

	// Each check is one attempt, a second after the change: a login that
	// fails counts against the account, so polling would trip the guard.
	const settle = time.Second
	login := func(in *instance, src, user, pass string) int {
		code, _ := authFrom(src, in.submission, user, pass)
		return code
	}

	// A user added on B logs in on A.
	b.addUser("alice@ours.test", pw)
	time.Sleep(settle)
	if code := login(a, "127.0.0.1", "alice@ours.test", pw); code != 235 {
		t.Fatalf("user added on node-b: AUTH on node-a answered %d, want 235\n%s", code, a.logTail(20))
	}

	// A password changed on B: the old one is refused on A, the new one
	// works.
	b.mustCLI("another long password\n", "user", "passwd", "alice@ours.test", "--password-stdin")
	time.Sleep(settle)
	if code := login(a, "127.0.0.2", "alice@ours.test", pw); code == 235 {
		t.Fatal("old password still accepted on node-a a second after the change on node-b")
	}
	if code := login(a, "127.0.0.1", "alice@ours.test", "another long password"); code != 235 {
		t.Fatalf("new password on node-a: %d", code)
	}

	// A user deleted on B is refused on A.
	b.addUser("bob@ours.test", pw)
	time.Sleep(settle)
	if code := login(a, "127.0.0.1", "bob@ours.test", pw); code != 235 {
		t.Fatalf("bob on node-a: %d", code)
	}
	b.mustCLI("", "user", "del", "bob@ours.test")
	time.Sleep(settle)
	if code := login(a, "127.0.0.3", "bob@ours.test", pw); code == 235 {
		t.Fatal("user deleted on node-b still logs in on node-a after a second")
	}

	// A ban on A refuses connections on B; B's guard list names node-a.
	a.mustCLI("", "guard", "ban", "127.0.0.44", "--for", "1h")
	time.Sleep(settle)
	if g, _ := greetingFrom("127.0.0.44", b.smtp); !strings.HasPrefix(g, "554") {
		t.Fatalf("client banned on node-a greeted by node-b with %q", g)
	}
	if g, _ := greetingFrom("127.0.0.45", b.smtp); !strings.HasPrefix(g, "220") {
		t.Fatalf("another client greeted by node-b with %q", g)
	}
	if ban, ok := banOf(b.guardList(), "127.0.0.44/32"); !ok || ban.Node != "node-a" {
		t.Fatalf("node-b's guard list: ban %+v (found %v), want node node-a", ban, ok)
	}
	if ban, _ := banOf(a.guardList(), "127.0.0.44/32"); ban.Node != "node-a" {
		t.Fatalf("node-a's guard list: ban %+v", ban)
	}
	// Unban on B lifts it on A.
	b.mustCLI("", "guard", "unban", "127.0.0.44")
	time.Sleep(settle)
	if g, _ := greetingFrom("127.0.0.44", a.smtp); !strings.HasPrefix(g, "220") {
		t.Fatalf("unbanned on node-b, node-a greets with %q", g)
	}

	// Redis killed: both nodes keep serving — logins from memory, mail
	// accepted — and neither crashes.
	r.Kill()
	time.Sleep(300 * time.Millisecond)
	for _, in := range []*instance{a, b} {
		if code := login(in, "127.0.0.1", "alice@ours.test", "another long password"); code != 235 {
			t.Fatalf("%s with Redis down: AUTH answered %d\n%s", in.name, code, in.logTail(20))
		}
		if err := sendAs("127.0.0.1", in.submission, "alice@ours.test", "another long password", "alice@ours.test", "during the outage "+in.name); err != nil {
			t.Fatalf("%s with Redis down: send: %v\n%s", in.name, err, in.logTail(20))
		}
		in.waitMail("alice@ours.test", 1, 10*time.Second) // each node delivers to its own Maildir
	}
	// Directory changes fail clearly meanwhile.
	if out, err := b.cli(pw+"\n", "user", "add", "carol@ours.test", "--password-stdin"); err == nil || !strings.Contains(out, "shared store unavailable") {
		t.Fatalf("user add with Redis down: err %v, output %q", err, out)
	}
	// A ban made on B while Redis is down holds on B at once…
	b.mustCLI("", "guard", "ban", "127.0.0.55", "--for", "1h")
	if g, _ := greetingFrom("127.0.0.55", b.smtp); !strings.HasPrefix(g, "554") {
		t.Fatalf("node-b's own ban with Redis down: %q", g)
	}
	time.Sleep(2 * time.Second) // the nodes notice the outage and retry
	a.alive()
	b.alive()

	// …and reaches A once Redis is back.
	r.Start()
	if !waitFor(15*time.Second, func() bool {
		_, ok := banOf(a.guardList(), "127.0.0.55/32")
		return ok
	}) {
		t.Fatalf("ban made on node-b during the outage never reached node-a:\n%s", a.logTail(30))
	}
	if g, _ := greetingFrom("127.0.0.55", a.smtp); !strings.HasPrefix(g, "554") {
		t.Fatalf("node-a after the reconnect greets the banned client with %q", g)
	}
	// And the directory is shared again.
	b.addUser("dave@ours.test", pw)
	time.Sleep(settle)
	if code := login(a, "127.0.0.1", "dave@ours.test", pw); code != 235 {
		t.Fatalf("user added on node-b after the reconnect: AUTH on node-a %d", code)
	}
	a.alive()
	b.alive()
}

// TestClusterRoutesLocalMail: the mailboxes live on node-a; node-b, an MX
// too, passes local mail to node-a through [delivery.routes], as the README
// describes.
func TestClusterRoutesLocalMail(t *testing.T) {
	requireTool(t, "swaks")
	r := testutil.StartRedis(t)
	a := clusterNode(t, r.URL, "node-a")
	b := clusterNode(t, r.URL, "node-b", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"ours.test": a.smtp})
	})
	a.start()
	b.start()
	a.addUser("alice@ours.test", pw)
	time.Sleep(time.Second)
	host, port, _ := strings.Cut(b.smtp, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "someone@far.test",
		"--to", "alice@ours.test", "--h-Subject", "via node-b"); code != 0 {
		t.Fatalf("send to node-b: %s", out)
	}
	msgs := a.waitMail("alice@ours.test", 1, 20*time.Second)
	if !strings.Contains(msgs[0], "via node-b") {
		t.Fatalf("node-a's mailbox holds %q", msgs[0])
	}
	if n := len(readMaildir(b.maildirNew("alice@ours.test"))); n != 0 {
		t.Fatalf("node-b kept %d messages in its own Maildir", n)
	}
	// An unknown local user is refused by node-b itself: it knows the
	// shared directory.
	if out, _ := swaks(t, "--server", host, "--port", port, "--from", "someone@far.test",
		"--to", "nobody@ours.test"); !strings.Contains(replyTo(out, "RCPT TO"), "550") {
		t.Fatalf("unknown user via node-b: %s", out)
	}
}

// TestClusterPeerMailNotCountedTwice: node-b, an MX without mailboxes,
// passes an outside sender's mail for our users to node-a, which lists
// node-b in [store] peers. node-a trusts that mail and does not count its
// envelope sender as a local sender's: a newsletter to many users through
// node-b is not isolated on node-a however low its local-sender limit.
func TestClusterPeerMailNotCountedTwice(t *testing.T) {
	r := testutil.StartRedis(t)
	a := clusterNode(t, r.URL, "node-a", func(cfg string) string {
		cfg = setKey(cfg, "peers", `["127.0.0.1/32"]`) // node-b's deliveries leave from 127.0.0.1
		return setKey(cfg, "msgs_per_minute", "5")
	})
	b := clusterNode(t, r.URL, "node-b", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"ours.test": a.smtp})
	})
	a.start()
	b.start()
	a.addUser("alice@ours.test", pw)
	time.Sleep(time.Second)
	const n = 8 // past node-a's local-sender limit of 5 a minute
	for i := range n {
		if err := sendMail("127.0.0.7", b.smtp, "news@far.test", []string{"alice@ours.test"}, "issue "+strconv.Itoa(i)); err != nil {
			t.Fatalf("message %d to node-b: %v", i+1, err)
		}
	}
	a.waitMail("alice@ours.test", n, 30*time.Second)
	if snap := a.guardList(); len(snap.Isolated) != 0 {
		t.Fatalf("node-a isolated mail its peer passed on: %+v", snap.Isolated)
	}
	if held := a.queueCount("--state", "held"); held != 0 {
		t.Fatalf("node-a holds %d messages from its peer", held)
	}
}
