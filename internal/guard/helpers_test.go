package guard

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// t0 is aligned to the hour (and so to minutes and 10/15-minute buckets),
// which keeps counts in the first buckets exact.
var t0 = time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type holdCall struct {
	ip   netip.Addr
	user string
	rule string
}

type fakeHooks struct {
	mu     sync.Mutex
	holds  []holdCall
	alerts []Alert
	ended  []string // EndSessions calls
}

func (h *fakeHooks) EndSessions(user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = append(h.ended, user)
}

func (h *fakeHooks) endedSessions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ended)
}

func (h *fakeHooks) HoldQueued(ip netip.Addr, user, rule string) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holds = append(h.holds, holdCall{ip, user, rule})
	return 7, nil
}

func (h *fakeHooks) Alert(a Alert) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alerts = append(h.alerts, a)
}

func (h *fakeHooks) snapshot() ([]holdCall, []Alert) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]holdCall(nil), h.holds...), append([]Alert(nil), h.alerts...)
}

// alertsOf returns the alerts of one kind.
func (h *fakeHooks) alertsOf(kind string) []Alert {
	_, all := h.snapshot()
	var out []Alert
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

type memStore struct {
	mu    sync.Mutex
	data  []byte
	saves int
	err   error
}

func (m *memStore) LoadGuardState() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, m.err
}

func (m *memStore) SaveGuardState(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.data = append([]byte(nil), b...)
	m.saves++
	return nil
}

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves
}

var errBoom = errors.New("boom")

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newTestGuard builds a guard on a fake clock starting at t0.
func newTestGuard(t testing.TB, cfg Config, p Persister) (*Guard, *fakeClock, *fakeHooks) {
	t.Helper()
	clk := &fakeClock{now: t0}
	cfg.Now = clk.Now
	h := &fakeHooks{}
	g, err := New(cfg, h, p, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g, clk, h
}

// flush runs the queued hook calls, as Run would.
func flush(g *Guard) {
	for {
		select {
		case ev := <-g.events:
			g.deliver(ev)
		default:
			return
		}
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// rcptList returns n recipients named prefix-0@ext.test….
func rcptList(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d@ext.test", prefix, i)
	}
	return out
}

var (
	pc5   = Sender{IP: addr("10.0.0.5"), From: "pc5@corp.test", Trusted: true}
	pc6   = Sender{IP: addr("10.0.0.6"), From: "pc6@corp.test", Trusted: true}
	alice = Sender{IP: addr("198.51.100.7"), User: "alice@corp.test", From: "alice@corp.test"}
)

func mail(s Sender, i int, rcpts ...string) Message {
	return Message{Sender: s, Rcpts: rcpts, Subject: fmt.Sprintf("subject %d", i)}
}

func wantVerdict(t *testing.T, what string, d Decision, v Verdict, rule string) {
	t.Helper()
	if d.Verdict != v || (rule != "" && d.Rule != rule) {
		t.Fatalf("%s: got %v rule %q (%d %v %q), want %v rule %q", what, d.Verdict, d.Rule, d.Code, d.Enhanced, d.Text, v, rule)
	}
}
