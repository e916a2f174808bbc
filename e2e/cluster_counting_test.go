package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// isolatedRule is the rule that isolated ip on in, or "".
func isolatedRule(in *instance, ip string) string {
	iso, _ := isolationOf(in.guardList(), ip, "")
	return iso.Rule
}

// TestClusterWormAcrossNodes: a worm on an office PC alternating between
// two nodes is isolated after the same allowance as on one node, and both
// nodes show it. With Redis killed both nodes keep limiting on their own
// counts (never unlimited) and say so; with Redis back counting is
// cluster-wide again and the isolation made meanwhile reaches the other
// node.
func TestClusterWormAcrossNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	office := func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.64/26"]`)
		return setKey(cfg, "msgs_per_minute", "10")
	}
	a, b := clusterNode(t, r.URL, "node-a", office), clusterNode(t, r.URL, "node-b", office)
	a.start()
	b.start()
	nodes := []*instance{a, b}

	const pc = "127.0.0.66"
	for i := 0; i < 10; i++ {
		if err := sendMail(pc, nodes[i%2].smtp, "pc66@ours.test", []string{fmt.Sprintf("victim%d@far.test", i)}, "open the attachment"); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	for _, in := range nodes {
		if rule := isolatedRule(in, pc); rule != "" {
			t.Fatalf("%s isolated %s after 10 messages (allowance 10): %s", in.name, pc, rule)
		}
	}
	if err := sendMail(pc, b.smtp, "pc66@ours.test", []string{"victim10@far.test"}, "open the attachment"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for _, in := range nodes {
		for isolatedRule(in, pc) != "rate.msgs_per_minute" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s not isolated within a second of its 11th message across two nodes", in.name, pc)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: up") {
		t.Errorf("node-a: guard list does not say the shared counters are up:\n%s", out)
	}

	// Redis down: each node limits on its own counts.
	r.Kill()
	const pc2 = "127.0.0.67"
	for i := 0; i < 11; i++ {
		if err := sendMail(pc2, a.smtp, "pc67@ours.test", []string{fmt.Sprintf("v%d@far.test", i)}, "open the attachment"); err != nil {
			t.Fatalf("Redis down, message %d: %v", i+1, err)
		}
	}
	a.alive()
	b.alive()
	if rule := isolatedRule(a, pc2); rule != "rate.msgs_per_minute" {
		t.Fatalf("Redis down: node-a did not isolate %s after 11 messages (rule %q)", pc2, rule)
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: DOWN") {
		t.Errorf("guard list does not say the shared counters are down:\n%s", out)
	}

	// Redis back: the isolation made meanwhile reaches node-b, and a new
	// sender is counted cluster-wide again.
	r.Start()
	time.Sleep(2500 * time.Millisecond) // past the guard's retry pause
	deadline = time.Now().Add(15 * time.Second)
	for isolatedRule(b, pc2) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("node-b never saw the isolation node-a made while Redis was down:\n%s", b.logTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	const pc3 = "127.0.0.68"
	for i := 0; i < 11; i++ {
		if err := sendMail(pc3, nodes[i%2].smtp, "pc68@ours.test", []string{fmt.Sprintf("w%d@far.test", i)}, "open the attachment"); err != nil {
			t.Fatalf("Redis back, message %d: %v", i+1, err)
		}
	}
	deadline = time.Now().Add(time.Second)
	for isolatedRule(a, pc3) != "rate.msgs_per_minute" {
		if time.Now().After(deadline) {
			t.Fatalf("Redis back: %s not isolated after 11 messages over two nodes", pc3)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: up") {
		t.Errorf("Redis back: guard list does not say the shared counters are up:\n%s", out)
	}
}
