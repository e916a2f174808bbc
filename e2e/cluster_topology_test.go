package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// TestClusterOnRedisCluster: two nodes on a real three-master Redis Cluster
// (redis+cluster:// URL): the directory and bans are shared, and a worm
// alternating between the nodes is counted once — the Lua counting script
// and the transactions stay within one hash slot.
func TestClusterOnRedisCluster(t *testing.T) {
	t.Parallel()
	rc := testutil.StartRedisCluster(t)
	office := func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.1.64/26"]`)
		return setKey(cfg, "msgs_per_minute", "10")
	}
	a, b := clusterNode(t, rc.URL, "node-a", office), clusterNode(t, rc.URL, "node-b", office)
	a.start()
	b.start()

	b.addUser("alice@ours.test", pw)
	time.Sleep(time.Second)
	if code, _ := authFrom("127.0.1.1", a.submission, "alice@ours.test", pw); code != 235 {
		t.Fatalf("user added on node-b: AUTH on node-a answered %d\n%s", code, a.logTail(20))
	}

	// A password changed on B ends alice's IMAP session open on A.
	end := imapIdle(t, a.imaps, "alice@ours.test", pw)
	b.mustCLI("another long password\n", "user", "passwd", "alice@ours.test", "--password-stdin")
	if last := end(2 * time.Second); !strings.Contains(last, "BYE Credentials changed") {
		t.Fatalf("password changed on node-b: alice's IMAP session on node-a ended with %q (\"\" = still open)\n%s", last, a.logTail(20))
	}

	a.mustCLI("", "guard", "ban", "127.0.1.44", "--for", "1h")
	time.Sleep(time.Second)
	if g, _ := greetingFrom("127.0.1.44", b.smtp); !strings.HasPrefix(g, "554") {
		t.Fatalf("client banned on node-a greeted by node-b with %q", g)
	}

	const pc = "127.0.1.66"
	nodes := []*instance{a, b}
	for i := 0; i < 11; i++ {
		if err := sendMail(pc, nodes[i%2].smtp, "pc66@ours.test", []string{fmt.Sprintf("victim%d@far.test", i)}, "open the attachment"); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		if i == 9 && isolatedRule(a, pc) != "" {
			t.Fatalf("isolated after 10 messages (allowance 10)")
		}
	}
	deadline := time.Now().Add(time.Second)
	for _, in := range nodes {
		for isolatedRule(in, pc) != "rate.msgs_per_minute" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s not isolated within a second of its 11th message across two nodes\n%s", in.name, pc, in.logTail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: up") {
		t.Errorf("guard list does not say the shared counters are up:\n%s", out)
	}
	a.alive()
	b.alive()
}

// TestClusterSentinelFailover: two nodes through a real Sentinel. The
// master dies; while the Sentinel promotes the replica both nodes keep
// serving from memory, and afterwards they follow the new master without
// being told: directory changes and bans are shared again.
func TestClusterSentinelFailover(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedisSentinel(t)
	a, b := clusterNode(t, rs.URL, "node-a"), clusterNode(t, rs.URL, "node-b")
	a.start()
	b.start()

	b.addUser("alice@ours.test", pw)
	rs.WaitReplicated(t, "{mamori}:b:mailbox.users", "alice@ours.test")
	time.Sleep(time.Second)

	rs.Master.Kill()
	for _, in := range []*instance{a, b} {
		if code, _ := authFrom("127.0.1.1", in.submission, "alice@ours.test", pw); code != 235 {
			t.Fatalf("%s while the master is gone: AUTH answered %d\n%s", in.name, code, in.logTail(20))
		}
		if err := sendAs("127.0.1.1", in.submission, "alice@ours.test", pw, "alice@ours.test", "during the failover "+in.name); err != nil {
			t.Fatalf("%s while the master is gone: send: %v\n%s", in.name, err, in.logTail(20))
		}
	}

	// The failover: directory changes are refused until the nodes reach
	// the new master, then accepted.
	if !waitFor(30*time.Second, func() bool {
		_, err := b.cli(pw+"\n", "user", "add", "bob@ours.test", "--password-stdin")
		return err == nil
	}) {
		t.Fatalf("user add never worked after the failover (replica role %q)\n%s", rs.Replica.Role(), b.logTail(30))
	}
	if role := rs.Replica.Role(); role != "master" {
		t.Fatalf("user add accepted but the replica's role is %q", role)
	}
	time.Sleep(time.Second)
	if code, _ := authFrom("127.0.1.2", a.submission, "bob@ours.test", pw); code != 235 {
		t.Fatalf("user added on node-b after the failover: AUTH on node-a answered %d\n%s", code, a.logTail(30))
	}
	a.mustCLI("", "guard", "ban", "127.0.1.45", "--for", "1h")
	time.Sleep(time.Second)
	if g, _ := greetingFrom("127.0.1.45", b.smtp); !strings.HasPrefix(g, "554") {
		t.Fatalf("after the failover, a client banned on node-a is greeted by node-b with %q\n%s", g, b.logTail(30))
	}
	a.waitMail("alice@ours.test", 1, 10*time.Second)
	b.waitMail("alice@ours.test", 1, 10*time.Second)
	a.alive()
	b.alive()
}
