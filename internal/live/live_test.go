package live

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/alert"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

// The stages implement the interfaces.
var (
	_ Guard            = (*guard.Guard)(nil)
	_ Alerts           = (*alert.Notifier)(nil)
	_ Queue            = (*queue.Queue)(nil)
	_ admin.LiveSource = (*Live)(nil)
)

var t0 = time.Date(2026, 5, 4, 9, 30, 15, 0, time.UTC)

type fakeGuard struct {
	mu          sync.Mutex
	ips, users  []guard.Rate
	snap        guard.Snapshot
	topCalls, n int
}

func (g *fakeGuard) TopSenders(n int) (ips, users []guard.Rate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.topCalls++
	g.n = n
	return g.ips, g.users
}

func (g *fakeGuard) Snapshot() guard.Snapshot { return g.snap }

type fakeAlerts []guard.Alert

func (a fakeAlerts) Recent() []guard.Alert { return a }

type fakeQueue struct{}

func (fakeQueue) Stats() map[queue.State]int {
	return map[queue.State]int{queue.StateActive: 3, queue.StateDeferred: 1, queue.StateHeld: 31}
}

func (fakeQueue) StateBytes() map[queue.State]int64 {
	return map[queue.State]int64{queue.StateActive: 3000, queue.StateDeferred: 700, queue.StateHeld: 31 << 10}
}

type fakeTraffic struct{ asked time.Time }

func (f *fakeTraffic) Traffic(now time.Time) []admin.TrafficMinute {
	f.asked = now
	return []admin.TrafficMinute{{Time: now.Truncate(time.Minute).Add(-time.Minute), In: 5, Out: 4}, {Time: now.Truncate(time.Minute), In: 40, Out: 9, Held: 10, Isolated: 1}}
}

func (f *fakeTraffic) Sessions() map[string]int { return map[string]int{"smtp": 4, "imap": 2} }

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func TestLive(t *testing.T) {
	iso := guard.Isolation{IP: "10.0.0.5", Sender: "pc5@corp.test", Rule: "rate.msgs_per_minute", Counts: map[string]int{"msgs_per_minute": 31}, Since: t0.Add(-time.Minute)}
	g := &fakeGuard{
		ips: []guard.Rate{
			{Key: "10.0.0.5", Trusted: true, Msgs: 31, Rcpts: 93, LimitMsgs: 30, LimitRcpts: 100, Isolated: true},
			{Key: "203.0.113.9", Outside: true, Msgs: 4, Rcpts: 8, LimitMsgs: 60, LimitRcpts: 200},
		},
		users: []guard.Rate{{Key: "alice@corp.test", Msgs: 2, Rcpts: 2, LimitMsgs: 30, LimitRcpts: 100}},
		snap:  guard.Snapshot{Isolated: []guard.Isolation{iso}},
	}
	alerts := fakeAlerts{{Time: t0.Add(-time.Minute).In(time.FixedZone("x", 3600)), Kind: "isolated", Rule: "rate.msgs_per_minute", IP: "10.0.0.5",
		Detail: "rate.msgs_per_minute tripped on the ip key", Counts: map[string]int{"msgs_per_minute": 31}}}
	tr := &fakeTraffic{}
	clk := &clock{now: t0}
	l := &Live{Guard: g, Alerts: alerts, Queue: fakeQueue{}, Traffic: tr, Now: clk.Now}
	got := l.Live()
	want := admin.Live{
		Time:    t0,
		Traffic: tr.Traffic(t0),
		TopIPs: []admin.TopSender{
			{Key: "10.0.0.5", Trusted: true, MsgsPerMin: 31, RcptsPerMin: 93, LimitMsgs: 30, LimitRcpts: 100, Isolated: true},
			{Key: "203.0.113.9", Outside: true, MsgsPerMin: 4, RcptsPerMin: 8, LimitMsgs: 60, LimitRcpts: 200},
		},
		TopUsers:    []admin.TopSender{{Key: "alice@corp.test", MsgsPerMin: 2, RcptsPerMin: 2, LimitMsgs: 30, LimitRcpts: 100}},
		Guard:       guard.Snapshot{Isolated: []guard.Isolation{iso}, Suspended: []guard.Suspension{}, Bans: []guard.Ban{}},
		GuardTotals: admin.GuardTotals{Isolated: 1},
		Alerts: []admin.AlertItem{{Time: t0.Add(-time.Minute), Kind: "isolated", Rule: "rate.msgs_per_minute", IP: "10.0.0.5",
			Detail: "rate.msgs_per_minute tripped on the ip key"}},
		Queue: admin.QueueCounts{
			Messages: map[string]int{"active": 3, "deferred": 1, "held": 31},
			Bytes:    map[string]int64{"active": 3000, "deferred": 700, "held": 31 << 10},
		},
		Sessions: map[string]int{"smtp": 4, "imap": 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Live:\n got %+v\nwant %+v", got, want)
	}
	if g.n != TopN || !tr.asked.Equal(t0) {
		t.Errorf("asked the guard for %d senders, the traffic at %v", g.n, tr.asked)
	}

	// Within MinInterval the same view is served; after it, a new one.
	clk.now = t0.Add(DefaultMinInterval - time.Millisecond)
	l.Live()
	if g.topCalls != 1 {
		t.Errorf("view rebuilt within MinInterval (%d calls)", g.topCalls)
	}
	clk.now = t0.Add(DefaultMinInterval)
	if v := l.Live(); g.topCalls != 2 || !v.Time.Equal(clk.now) {
		t.Errorf("view not rebuilt after MinInterval (%d calls, time %v)", g.topCalls, v.Time)
	}
}

// TestLiveLimits: at most TopN senders of each kind and 20 alerts, even
// if a source gives more.
func TestLiveLimits(t *testing.T) {
	g := &fakeGuard{}
	for range 15 {
		g.ips = append(g.ips, guard.Rate{Key: "10.0.0.1", Msgs: 1})
		g.users = append(g.users, guard.Rate{Key: "u@corp.test", Msgs: 1})
	}
	var al fakeAlerts
	for range 30 {
		al = append(al, guard.Alert{Kind: "banned"})
	}
	// 50,000 bans: the view carries the 100 lasting longest and the count.
	base := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for i := range 50000 {
		g.snap.Bans = append(g.snap.Bans, guard.Ban{CIDR: fmt.Sprintf("198.51.%d.%d/32", i/250, i%250), Expires: base.Add(time.Duration(i) * time.Second)})
	}
	v := (&Live{Guard: g, Alerts: al, MinInterval: -1}).Live()
	if len(v.TopIPs) != TopN || len(v.TopUsers) != TopN || len(v.Alerts) != 20 {
		t.Errorf("%d ips, %d users, %d alerts", len(v.TopIPs), len(v.TopUsers), len(v.Alerts))
	}
	if len(v.Guard.Bans) != admin.LiveListCap || v.GuardTotals.Bans != 50000 {
		t.Errorf("%d bans listed, total %d; want %d of 50000", len(v.Guard.Bans), v.GuardTotals.Bans, admin.LiveListCap)
	}
	if !v.Guard.Bans[0].Expires.Equal(base.Add(49999 * time.Second)) {
		t.Errorf("first ban listed expires %v, want the longest-lasting", v.Guard.Bans[0].Expires)
	}
}

// TestLiveNoSources: every part is present and empty, never null, and the
// queue lists every state.
func TestLiveNoSources(t *testing.T) {
	v := (&Live{}).Live()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Contains(s, "null") {
		t.Errorf("null in %s", s)
	}
	for _, k := range []string{`"traffic":[]`, `"top_ips":[]`, `"top_users":[]`, `"alerts":[]`, `"sessions":{}`,
		`"isolated":[]`, `"suspended":[]`, `"bans":[]`, `"messages":{"active":0,"deferred":0,"held":0}`} {
		if !strings.Contains(s, k) {
			t.Errorf("no %s in %s", k, s)
		}
	}
}
