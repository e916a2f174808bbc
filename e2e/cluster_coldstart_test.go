package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// TestClusterNodeStartsDuringOutage: a clustered node restarted while
// Redis is down starts from its local copy of the directory — its users
// log in and get their mail, unknown recipients are still refused,
// directory changes are refused clearly — and joins the cluster again
// when Redis returns. A node that never reached Redis has no copy and
// refuses to start, saying why.
func TestClusterNodeStartsDuringOutage(t *testing.T) {
	t.Parallel()
	r := testutil.StartRedis(t)
	a := clusterNode(t, r.URL, "node-a")
	a.start()
	a.addUser("alice@ours.test", pw)
	a.addUser("gone@ours.test", pw)
	a.mustCLI("", "user", "del", "gone@ours.test") // the copy follows deletions too
	a.addUser("bob@ours.test", pw)
	a.addUser("carol@ours.test", pw)
	time.Sleep(2 * time.Second) // the copy is saved a second after a change
	a.stop()
	// While node-a is stopped, the directory changes (the CLI writes to
	// Redis itself): node-a's copy is now old.
	a.mustCLI("", "user", "del", "bob@ours.test")
	a.mustCLI("", "user", "del", "carol@ours.test")
	const newPW = "alice's new long password"
	a.mustCLI(newPW+"\n", "user", "passwd", "alice@ours.test", "--password-stdin")

	r.Kill()
	a.start()
	// The ports are bound before the directory is opened: wait for the
	// second "started".
	if !waitFor(10*time.Second, func() bool { return strings.Count(a.log(), `"msg":"started"`) == 2 }) {
		t.Fatalf("node did not start during the outage:\n%s", a.logTail(20))
	}
	if !strings.Contains(a.log(), "serving logins and local mail from this node's copy") {
		t.Errorf("the node does not say it started from its copy:\n%s", a.logTail(20))
	}
	if code, _ := authFrom("127.0.0.1", a.submission, "alice@ours.test", pw); code != 235 {
		t.Fatalf("started during the outage: AUTH answered %d\n%s", code, a.logTail(20))
	}
	if code, _ := authFrom("127.0.0.2", a.submission, "gone@ours.test", pw); code == 235 {
		t.Fatal("a deleted user logs in from the copy")
	}
	if err := sendMail("127.0.0.3", a.smtp, "someone@far.test", []string{"alice@ours.test"}, "during the outage"); err != nil {
		t.Fatalf("mail to alice during the outage: %v\n%s", err, a.logTail(20))
	}
	a.waitMail("alice@ours.test", 1, 10*time.Second)
	if err := sendMail("127.0.0.3", a.smtp, "someone@far.test", []string{"nobody@ours.test"}, "x"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("unknown recipient during the outage: %v, want a 550", err)
	}
	if out, err := a.cli(pw+"\n", "user", "add", "erin@ours.test", "--password-stdin"); err == nil || !strings.Contains(out, "shared store unavailable") {
		t.Fatalf("user add during the outage: err %v, output %q", err, out)
	}

	// A second node that never reached Redis cannot start: it has no copy.
	b := clusterNode(t, r.URL, "node-b")
	out, err := exec.Command(mamoriBin, "serve", "--config", b.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no local copy of the directory") {
		t.Fatalf("node without a copy, Redis down: err %v\n%s", err, out)
	}

	// Redis back: the node joins again, and what changed while it was
	// stopped is in force: the copy it started from does not outvote Redis.
	r.Start()
	if !waitFor(15*time.Second, func() bool { return strings.Contains(a.log(), "change notifications back") }) {
		t.Fatalf("node-a never resubscribed\n%s", a.logTail(20))
	}
	time.Sleep(time.Second)
	if code, _ := authFrom("127.0.0.5", a.submission, "bob@ours.test", pw); code == 235 {
		t.Fatalf("bob, deleted while node-a was stopped, still logs in after Redis returned\n%s", a.logTail(20))
	}
	if code, _ := authFrom("127.0.0.6", a.submission, "alice@ours.test", pw); code == 235 {
		t.Fatal("alice's old password still works after Redis returned")
	}
	if code, _ := authFrom("127.0.0.1", a.submission, "alice@ours.test", newPW); code != 235 {
		t.Fatalf("alice's new password after Redis returned: AUTH %d", code)
	}
	if !waitFor(15*time.Second, func() bool {
		_, err := a.cli(pw+"\n", "user", "add", "dave@ours.test", "--password-stdin")
		return err == nil
	}) {
		t.Fatalf("user add never worked after Redis returned\n%s", a.logTail(20))
	}
	time.Sleep(time.Second)
	if code, _ := authFrom("127.0.0.4", a.submission, "dave@ours.test", pw); code != 235 {
		t.Fatalf("user added after Redis returned: AUTH %d", code)
	}
	a.alive()
}
