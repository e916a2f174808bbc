package share

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// countingGuard is one node's guard counting in Redis r.
func countingGuard(t *testing.T, r *testutil.Redis, name string, limits guard.Limits) *guard.Guard {
	t.Helper()
	kv, err := redisstore.Open(context.Background(), redisstore.Options{URL: r.URL, Node: name, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	g, err := guard.New(guard.Config{Node: name, Local: limits, Counters: NewCounters(kv)}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func worm(i int) guard.Message {
	return guard.Message{
		Sender: guard.Sender{IP: netip.MustParseAddr("10.0.0.66"), Trusted: true, From: "worm@corp.test"},
		Rcpts:  []string{"victim" + strconv.Itoa(i) + "@far.test"},
	}
}

// TestCountersTwoNodes: a trusted PC's worm alternating between two nodes
// on one Redis is isolated after the same allowance as on one node (10
// messages a minute: the 11th is held), and so is a burst sent to both at
// once from many sessions (Redis's atomic script: never more than the
// allowance accepted in total).
func TestCountersTwoNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	lim := guard.Limits{MsgsPerMinute: 10}
	a, b := countingGuard(t, r, "a", lim), countingGuard(t, r, "b", lim)
	nodes := []*guard.Guard{a, b}
	for i := 0; i < 10; i++ {
		if d := nodes[i%2].Message(worm(i)); d.Verdict != guard.Accept {
			t.Fatalf("message %d: %+v, want accepted", i+1, d)
		}
	}
	if d := nodes[0].Message(worm(10)); d.Verdict != guard.Hold || d.Rule != "rate.msgs_per_minute" {
		t.Fatalf("message 11 on node a: %+v, want held by rate.msgs_per_minute", d)
	}

	// Concurrent: 40 messages of another sender, 20 to each node at once.
	r2 := guard.Limits{MsgsPerMinute: 10}
	c, d := countingGuard(t, r, "c", r2), countingGuard(t, r, "d", r2)
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		g := []*guard.Guard{c, d}[i%2]
		wg.Go(func() {
			m := worm(i)
			m.IP, m.From = netip.MustParseAddr("10.0.0.77"), "other@corp.test"
			if g.Message(m).Verdict == guard.Accept {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if accepted > 10 {
		t.Errorf("%d of 40 concurrent messages accepted across two nodes, allowance 10", accepted)
	}
}

// TestCountersRedisDown: Redis killed, each node limits on its own counts;
// Redis back, counting is cluster-wide again.
func TestCountersRedisDown(t *testing.T) {
	r := testutil.StartRedis(t)
	lim := guard.Limits{MsgsPerMinute: 4}
	a := countingGuard(t, r, "a", lim)
	r.Kill()
	for i := 0; i < 4; i++ {
		if d := a.Message(worm(i)); d.Verdict != guard.Accept {
			t.Fatalf("message %d with Redis down: %+v", i+1, d)
		}
	}
	if d := a.Message(worm(4)); d.Verdict != guard.Hold {
		t.Fatalf("5th message with Redis down: %+v, want held by the local limit", d)
	}
	if st, ok := a.SharedStatus(); !ok || st.Up {
		t.Errorf("status with Redis down: %+v", st)
	}
	r.Start()
	time.Sleep(2100 * time.Millisecond) // the guard's retry pause
	b := countingGuard(t, r, "b", lim)
	pc := func(i int) guard.Message {
		m := worm(i)
		m.IP, m.From = netip.MustParseAddr("10.0.0.88"), "pc@corp.test"
		return m
	}
	for i := 0; i < 4; i++ {
		if d := []*guard.Guard{a, b}[i%2].Message(pc(i)); d.Verdict != guard.Accept {
			t.Fatalf("after Redis came back, message %d: %+v", i+1, d)
		}
	}
	if d := b.Message(pc(4)); d.Verdict != guard.Hold {
		t.Fatalf("after Redis came back, 5th message over two nodes: %+v, want held", d)
	}
	if st, _ := a.SharedStatus(); !st.Up {
		t.Errorf("status after Redis came back: %+v", st)
	}
}

// BenchmarkMessageDecision: one local sender's end-of-DATA decision, on
// one node (embedded) and with the rate windows counted in Redis (a real
// redis-server on loopback, appendfsync everysec as Redis ships): the
// hot-path cost of clustered mode. Run:
// go test -run '^$' -bench MessageDecision ./internal/guard/share
func BenchmarkMessageDecision(b *testing.B) {
	lots := guard.Limits{MsgsPerMinute: 1 << 30, RcptsPerMinute: 1 << 30, RcptsPerHour: 1 << 30, RcptsPerDay: 1 << 30, NewRcptsPerMinute: 1 << 30}
	m := guard.Message{
		Sender: guard.Sender{IP: netip.MustParseAddr("10.0.0.5"), Trusted: true, From: "pc@corp.test"},
		Rcpts:  []string{"someone@far.test"},
	}
	run := func(b *testing.B, g *guard.Guard) {
		b.ReportAllocs()
		for b.Loop() {
			if d := g.Message(m); d.Verdict != guard.Accept {
				b.Fatalf("%+v", d)
			}
		}
	}
	b.Run("embedded", func(b *testing.B) {
		g, err := guard.New(guard.Config{Local: lots}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, g)
	})
	b.Run("redis", func(b *testing.B) {
		r := testutil.StartRedisEverySec(b)
		kv, err := redisstore.Open(context.Background(), redisstore.Options{URL: r.URL, Node: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer kv.Close()
		g, err := guard.New(guard.Config{Local: lots, Counters: NewCounters(kv)}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, g)
		if st, _ := g.SharedStatus(); !st.Up {
			b.Fatalf("shared counters down during the benchmark: %+v", st)
		}
	})
}
