package e2e

import (
	"encoding/json"
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// sendFrom sends one message over SMTP from the loopback address src.
func sendFrom(src, addr, from, to string) error {
	conn, err := dialFrom(src, addr)
	if err != nil {
		return err
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("pc.ours.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: invoice\r\n\r\nopen the attachment\r\n", from, to)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

type guardListJSON struct {
	Isolated []struct {
		IP, Rule, Node string
	}
}

func guardList(t *testing.T, in *instance) guardListJSON {
	t.Helper()
	var g guardListJSON
	if err := json.Unmarshal([]byte(in.mustCLI("", "guard", "list", "--json")), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func isolatedIP(g guardListJSON, ip string) string {
	for _, i := range g.Isolated {
		if i.IP == ip {
			return i.Rule
		}
	}
	return ""
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
	a, b := clusterNode(t, r, "node-a", office), clusterNode(t, r, "node-b", office)
	a.start()
	b.start()
	nodes := []*instance{a, b}

	const pc = "127.0.0.66"
	for i := 0; i < 10; i++ {
		if err := sendFrom(pc, nodes[i%2].smtp, "pc66@ours.test", fmt.Sprintf("victim%d@far.test", i)); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	for _, in := range nodes {
		if rule := isolatedIP(guardList(t, in), pc); rule != "" {
			t.Fatalf("%s isolated %s after 10 messages (allowance 10): %s", in.name, pc, rule)
		}
	}
	if err := sendFrom(pc, b.smtp, "pc66@ours.test", "victim10@far.test"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for _, in := range nodes {
		for isolatedIP(guardList(t, in), pc) != "rate.msgs_per_minute" {
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
		if err := sendFrom(pc2, a.smtp, "pc67@ours.test", fmt.Sprintf("v%d@far.test", i)); err != nil {
			t.Fatalf("Redis down, message %d: %v", i+1, err)
		}
	}
	a.alive()
	b.alive()
	ga := guardList(t, a)
	if isolatedIP(ga, pc2) != "rate.msgs_per_minute" {
		t.Fatalf("Redis down: node-a did not isolate %s after 11 messages: %+v", pc2, ga.Isolated)
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: DOWN") {
		t.Errorf("guard list does not say the shared counters are down:\n%s", out)
	}

	// Redis back: the isolation made meanwhile reaches node-b, and a new
	// sender is counted cluster-wide again.
	r.Start()
	time.Sleep(2500 * time.Millisecond) // past the guard's retry pause
	deadline = time.Now().Add(15 * time.Second)
	for isolatedIP(guardList(t, b), pc2) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("node-b never saw the isolation node-a made while Redis was down:\n%s", b.logTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	const pc3 = "127.0.0.68"
	for i := 0; i < 11; i++ {
		if err := sendFrom(pc3, nodes[i%2].smtp, "pc68@ours.test", fmt.Sprintf("w%d@far.test", i)); err != nil {
			t.Fatalf("Redis back, message %d: %v", i+1, err)
		}
	}
	deadline = time.Now().Add(time.Second)
	for isolatedIP(guardList(t, a), pc3) != "rate.msgs_per_minute" {
		if time.Now().After(deadline) {
			t.Fatalf("Redis back: %s not isolated after 11 messages over two nodes", pc3)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := a.mustCLI("", "guard", "list"); !strings.Contains(out, "shared counters: up") {
		t.Errorf("Redis back: guard list does not say the shared counters are up:\n%s", out)
	}
}
