package guard

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

// memCounters is an in-process stand-in for the shared store, with the
// same two-bucket windows; down makes it fail like an unreachable Redis.
type memCounters struct {
	now   func() int64 // the store's clock
	delay time.Duration
	mu    sync.Mutex
	w     map[string]*[NShared]window
	down  bool
	calls int
}

func (c *memCounters) Count(_ context.Context, adds []CountAdd) (int64, []SharedCounts, error) {
	time.Sleep(c.delay)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.down {
		return 0, nil, errors.New("connection refused")
	}
	now := c.now()
	if c.w == nil {
		c.w = map[string]*[NShared]window{}
	}
	out := make([]SharedCounts, len(adds))
	for i, a := range adds {
		ws := c.w[a.Key]
		if ws == nil {
			ws = &[NShared]window{}
			c.w[a.Key] = ws
		}
		inc := [NShared]int{a.Msgs, a.Msgs, a.Rcpts, a.Rcpts, a.Rcpts, a.New}
		for j := range ws {
			ws[j].add(now, SharedWidths[j], inc[j])
			out[i][j] = WindowState{Idx: ws[j].Idx, Cur: ws[j].Cur, Prev: ws[j].Prev}
		}
	}
	return now, out, nil
}

// TestSharedCountingAcrossNodes: a sender alternating between two nodes
// that share counters is isolated after the same allowance as on one
// node; the isolation happens on whichever node sees the message over it.
func TestSharedCountingAcrossNodes(t *testing.T) {
	shared := &memCounters{}
	cfg := Config{Local: Limits{MsgsPerMinute: 10}, Counters: shared}
	a, clkA, _ := newTestGuard(t, cfg, nil)
	b, clkB, _ := newTestGuard(t, cfg, nil)
	shared.now = func() int64 { return clkA.Now().UnixMilli() }
	rcpt := rcptList("r", 1)
	nodes := []*Guard{a, b}
	for i := 0; i < 10; i++ {
		clkA.Advance(time.Second)
		clkB.Advance(time.Second)
		wantVerdict(t, "message "+strconv.Itoa(i+1), nodes[i%2].Message(mail(alice, i, rcpt...)), Accept, "")
	}
	clkA.Advance(time.Second)
	clkB.Advance(time.Second)
	d := nodes[10%2].Message(mail(alice, 10, rcpt...))
	wantVerdict(t, "message 11 (cluster-wide 11 > 10)", d, Hold, "rate.msgs_per_minute")
	// Without sharing, each node would have let 10 through.
	solo, _, _ := newTestGuard(t, Config{Local: Limits{MsgsPerMinute: 10}}, nil)
	for i := 0; i < 6; i++ {
		wantVerdict(t, "solo message", solo.Message(mail(alice, i, rcpt...)), Accept, "")
	}
}

// TestSharedCountingStoreDown: with the shared store down, a node keeps
// limiting on its own counts (never unlimited), reports it, does not call
// the store on every message, and counts cluster-wide again once it is
// back.
func TestSharedCountingStoreDown(t *testing.T) {
	shared := &memCounters{down: true}
	g, clk, _ := newTestGuard(t, Config{Local: Limits{MsgsPerMinute: 5}, Counters: shared}, nil)
	shared.now = func() int64 { return clk.Now().UnixMilli() }
	rcpt := rcptList("r", 1)
	for i := 0; i < 5; i++ {
		clk.Advance(100 * time.Millisecond)
		wantVerdict(t, "message "+strconv.Itoa(i+1), g.Message(mail(alice, i, rcpt...)), Accept, "")
	}
	if st, ok := g.SharedStatus(); !ok || st.Up || st.Err == "" {
		t.Errorf("status with the store down: %+v ok=%v", st, ok)
	}
	if shared.calls != 1 {
		t.Errorf("store asked %d times within the retry pause, want 1", shared.calls)
	}
	clk.Advance(100 * time.Millisecond)
	wantVerdict(t, "message 6 (local limit)", g.Message(mail(alice, 5, rcpt...)), Hold, "rate.msgs_per_minute")

	// Back: another sender is counted cluster-wide again.
	shared.mu.Lock()
	shared.down = false
	shared.mu.Unlock()
	clk.Advance(sharedRetry)
	bob := alice
	bob.User, bob.From = "bob@corp.test", "bob@corp.test"
	wantVerdict(t, "bob 1", g.Message(mail(bob, 0, rcpt...)), Accept, "")
	if st, _ := g.SharedStatus(); !st.Up {
		t.Errorf("status after the store came back: %+v", st)
	}
	if _, ok := shared.w["u:bob@corp.test"]; !ok {
		t.Error("bob's message was not counted in the shared store")
	}
}

// TestSharedCountingSlowStore: a store that answers, but slowly, counts
// as down after three slow answers in a row (local limits, no waiting on
// it), and the probe brings the status back without local traffic.
func TestSharedCountingSlowStore(t *testing.T) {
	shared := &memCounters{delay: 30 * time.Millisecond}
	g, clk, _ := newTestGuard(t, Config{Local: Limits{MsgsPerMinute: 1000}, Counters: shared, CountersTimeout: 40 * time.Millisecond}, nil)
	shared.now = func() int64 { return clk.Now().UnixMilli() }
	rcpt := rcptList("r", 1)
	for i := 0; i < 10; i++ {
		g.Message(mail(alice, i, rcpt...))
	}
	if shared.calls != 3 {
		t.Errorf("slow store asked %d times, want 3 (then local limits)", shared.calls)
	}
	if st, _ := g.SharedStatus(); st.Up {
		t.Errorf("slow store reported up: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		g.ProbeShared(ctx, func(context.Context) error { return nil }, 5*time.Millisecond)
		close(done)
	}()
	deadline := time.Now().Add(2 * time.Second)
	for st, _ := g.SharedStatus(); !st.Up; st, _ = g.SharedStatus() {
		if time.Now().After(deadline) {
			t.Fatal("the probe did not bring the status back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
