package share

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
	"github.com/mamori-mail/mamori/internal/testutil"
)

type node struct {
	g *guard.Guard
	r *Replicator
}

// startNode runs one node's guard and replicator on Redis r.
func startNode(t *testing.T, ctx context.Context, r *testutil.Redis, name string) node {
	t.Helper()
	kv, err := redisstore.Open(ctx, redisstore.Options{URL: r.URL, Node: name, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	rep := New(kv, name, nil)
	g, err := guard.New(guard.Config{Node: name, Replicator: rep}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	go rep.Run(ctx, g, time.Hour)
	return node{g, rep}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func banNode(g *guard.Guard, cidr string) string {
	for _, b := range g.Snapshot().Bans {
		if b.CIDR == cidr {
			return b.Node
		}
	}
	return ""
}

func TestBansAcrossNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startNode(t, ctx, r, "a"), startNode(t, ctx, r, "b")
	time.Sleep(100 * time.Millisecond) // subscribed

	steps := []struct {
		name  string
		act   func()
		check func() bool
	}{
		{"ban on a holds on b", func() { a.g.Ban(netip.MustParsePrefix("192.0.2.7/32"), time.Hour, "") },
			func() bool {
				_, ok := b.g.Banned(netip.MustParseAddr("192.0.2.7"))
				return ok && banNode(b.g, "192.0.2.7/32") == "a"
			}},
		{"suspension on b holds on a", func() { b.g.Suspend("alice@corp.test", "") },
			func() bool { return a.g.IsSuspended("alice@corp.test") }},
		{"release on a lifts it on b", func() { a.g.Release("alice@corp.test") },
			func() bool { return !b.g.IsSuspended("alice@corp.test") }},
		{"unban on b lifts it on a", func() { b.g.Unban(netip.MustParsePrefix("192.0.2.7/32")) },
			func() bool { _, ok := a.g.Banned(netip.MustParseAddr("192.0.2.7")); return !ok }},
	}
	for _, s := range steps {
		s.act()
		eventually(t, time.Second, s.name, s.check)
	}
	// No echo: b never re-published a's decisions (its own writes are its
	// suspension and unban only, already flushed).
	if n := b.r.Pending(); n != 0 {
		t.Fatalf("b has %d decisions pending", n)
	}

	// A node started later finds the bans in force.
	a.g.Ban(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "")
	eventually(t, time.Second, "ban stored", func() bool { return banNode(b.g, "198.51.100.0/24") == "a" })
	c := startNode(t, ctx, r, "c")
	eventually(t, 2*time.Second, "late node sees the ban", func() bool { return banNode(c.g, "198.51.100.0/24") == "a" })
}

// Redis down: each node decides alone; Redis back: the decisions made
// meanwhile reach the other node.
func TestDecisionsAfterReconnect(t *testing.T) {
	r := testutil.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startNode(t, ctx, r, "a"), startNode(t, ctx, r, "b")
	time.Sleep(100 * time.Millisecond)

	r.Kill()
	a.g.Ban(netip.MustParsePrefix("203.0.113.5/32"), time.Hour, "")
	if _, ok := a.g.Banned(netip.MustParseAddr("203.0.113.5")); !ok {
		t.Fatal("a's own ban not in force with Redis down")
	}
	eventually(t, 3*time.Second, "decision kept pending", func() bool { return a.r.Pending() == 1 })
	time.Sleep(500 * time.Millisecond)
	if banNode(b.g, "203.0.113.5/32") != "" {
		t.Fatal("b saw a ban with Redis down")
	}

	r.Start()
	eventually(t, 10*time.Second, "ban made while Redis was down reaches b",
		func() bool { return banNode(b.g, "203.0.113.5/32") == "a" })
	if n := a.r.Pending(); n != 0 {
		t.Fatalf("a still has %d pending", n)
	}
}

// TestEmptiedStoreKeepsDecisions: a Redis that comes back without its
// data does not lift, on the other nodes, the bans and suspensions one
// node made.
func TestEmptiedStoreKeepsDecisions(t *testing.T) {
	r := testutil.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startNode(t, ctx, r, "a"), startNode(t, ctx, r, "b")
	time.Sleep(100 * time.Millisecond)
	a.g.Ban(netip.MustParsePrefix("203.0.113.9/32"), time.Hour, "")
	a.g.Suspend("hijacked@corp.test", "admin")
	eventually(t, 3*time.Second, "ban reaches b", func() bool { return banNode(b.g, "203.0.113.9/32") == "a" })

	kv, err := redisstore.Open(ctx, redisstore.Options{URL: r.URL, Node: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.FlushForTest(ctx); err != nil {
		t.Fatal(err)
	}
	kv.Close()
	r.Kill()
	r.Start() // both nodes reconnect and resync against an empty store
	time.Sleep(3 * time.Second)
	if banNode(b.g, "203.0.113.9/32") != "a" {
		t.Error("b lifted a's ban when Redis came back empty")
	}
	suspended := false
	for _, s := range b.g.Snapshot().Suspended {
		suspended = suspended || s.User == "hijacked@corp.test"
	}
	if !suspended {
		t.Error("b lifted a's suspension when Redis came back empty")
	}
}

// A decision notice whose record cannot be read at that moment is not lost
// until the next full resync: the node resyncs soon after.
func TestUnreadableNoticeNotLost(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(name string, kv store.KV) *guard.Guard {
		rep := New(kv, name, nil)
		g, err := guard.New(guard.Config{Node: name, Replicator: rep}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		go rep.Run(ctx, g, time.Hour)
		return g
	}
	flaky := &testutil.FlakyKV{KV: st}
	a, b := start("a", st), start("b", flaky)
	time.Sleep(50 * time.Millisecond) // both watch

	flaky.FailGets(1) // b's re-read of the notice fails once
	a.Ban(netip.MustParsePrefix("192.0.2.9/32"), time.Hour, "")
	eventually(t, time.Second, "ban on b after a failed re-read", func() bool {
		_, ok := b.Banned(netip.MustParseAddr("192.0.2.9"))
		return ok
	})
}
