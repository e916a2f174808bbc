package metrics

import (
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mamori-mail/mamori/internal/guard"
)

// hostile are label candidates a client could send: none may ever
// become a label value.
var hostile = []string{
	"203.0.113.7", "2001:db8::1", "victim@example.test", "Subject: buy now",
	"smtp\"} 1\nmamori_fake 2", "{x=\"y\"}", strings.Repeat("A", 5000), "",
	"\x00\xff", "SMTP", "rcpt ", "rate.msgs_per_minute\n", "../../etc/passwd",
}

// feed calls every method with every hostile string in every string
// argument.
func feed(m *Metrics) {
	for _, h := range hostile {
		m.SessionOpened(h)
		m.SessionClosed(h)
		m.ConnectionRefused(h, h)
		m.ConnectionRefused("smtp", h)
		m.ConnectionClosed(h)
		m.AuthResult(h, h)
		m.AuthResult("imap", h)
		m.MessageAccepted(h)
		m.MessageHeld(h)
		m.MessagesHeld(h, 3)
		m.MessageRefused(h, h)
		m.MessageRefused("rcpt", h)
		m.DeliveryResult(h, h)
		m.DeliveryAttempt(h, time.Millisecond)
		m.GuardDecision(h, h, h)
		m.GuardDecision("rcpt", h, "defer")
		m.GuardEvent(h)
		m.DNSQuery(h, h, time.Millisecond)
		m.ClamdScan(h, time.Millisecond)
		m.SyncBatch(len(h))
	}
}

// allowed is every label's fixed set of values.
func allowed() map[string][]string {
	with := func(vals ...[]string) []string {
		out := []string{Other}
		for _, v := range vals {
			out = append(out, v...)
		}
		return out
	}
	return map[string][]string{
		"listener": with(Listeners),
		"result": with([]string{"admitted", "refused", "closed"}, AuthResults, DeliveryResults,
			DNSResults, ScanResults),
		"rule":     with(ConnRules, guard.RuleNames, []string{"none"}),
		"protocol": with(Protocols),
		"origin":   with(Origins),
		"stage":    with(RefusalStages, guard.DecisionStages),
		"reason":   with(Reasons),
		"source":   with(HoldSources),
		"kind":     with(DeliveryKinds, GuardEvents),
		"verdict":  with(Verdicts),
		"type":     with(DNSTypes),
		"state":    with(QueueStates),
	}
}

func TestHostileInputStaysInFixedLabelSets(t *testing.T) {
	m := New()
	m.WatchQueue(func() (map[string]int, map[string]int64) {
		return map[string]int{"active": 1, "evil\"state": 9}, nil
	})
	feed(m)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sets := allowed()
	seen := 0
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "mamori_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				seen++
				vals, ok := sets[lp.GetName()]
				if !ok {
					t.Errorf("%s: label %q has no fixed set", f.GetName(), lp.GetName())
					continue
				}
				if !slices.Contains(vals, lp.GetValue()) {
					t.Errorf("%s: label %s=%q is outside its fixed set", f.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("no labels gathered")
	}
	// And nothing hostile shows in the exposition text.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, h := range []string{"203.0.113.7", "2001:db8", "victim@", "buy now", "mamori_fake", "passwd", "evil"} {
		if strings.Contains(string(body), h) {
			t.Errorf("exposition contains %q", h)
		}
	}
	// The hostile events were counted, in Other.
	if got := testutil.ToFloat64(m.refused.WithLabelValues("rcpt", Other)); got != float64(len(hostile)) {
		t.Errorf("refused{rcpt,other} = %v, want %d", got, len(hostile))
	}
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	feed(m)
	m.WatchQueue(nil)
	m.WatchGuard(nil)
	if tr := m.Traffic(time.Now()); len(tr) != RingMinutes {
		t.Fatalf("nil Traffic: %d minutes", len(tr))
	}
	if s := m.Sessions(); len(s) != len(Listeners) {
		t.Fatalf("nil Sessions: %v", s)
	}
	if m.Handler() == nil {
		t.Fatal("nil Handler")
	}
}

func TestCountersAndSessions(t *testing.T) {
	m := New()
	m.SessionOpened("imap")
	m.SessionOpened("imap")
	m.SessionOpened("smtp")
	m.SessionClosed("imap")
	if s := m.Sessions(); s["imap"] != 1 || s["smtp"] != 1 || s["pop3"] != 0 {
		t.Errorf("Sessions = %v", s)
	}
	m.ConnectionRefused("smtp", "dnsbl")
	m.AuthResult("smtp", AuthFailure)
	m.MessageAccepted("submitted")
	m.DeliveryResult("local", Delivered)
	for _, c := range []struct {
		name   string
		got    float64
		expect float64
	}{
		{"admitted imap", testutil.ToFloat64(m.conns.WithLabelValues("imap", "admitted")), 2},
		{"refused smtp", testutil.ToFloat64(m.conns.WithLabelValues("smtp", "refused")), 1},
		{"refused dnsbl", testutil.ToFloat64(m.connRefused.WithLabelValues("smtp", "dnsbl")), 1},
		{"auth failure", testutil.ToFloat64(m.auth.WithLabelValues("smtp", AuthFailure)), 1},
		{"accepted", testutil.ToFloat64(m.accepted.WithLabelValues("submitted")), 1},
		{"delivered", testutil.ToFloat64(m.deliveries.WithLabelValues("local", Delivered)), 1},
	} {
		if c.got != c.expect {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.expect)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`mamori_sessions_open{listener="imap"} 1`,
		"# HELP mamori_messages_accepted_total",
		"go_goroutines", "process_",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestStateCollector(t *testing.T) {
	m := New()
	m.WatchQueue(func() (map[string]int, map[string]int64) {
		return map[string]int{"active": 2, "held": 5}, map[string]int64{"held": 1234}
	})
	m.WatchGuard(func() (int, int, int, int) { return 1, 2, 3, 4 })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`mamori_queue_messages{state="active"} 2`, `mamori_queue_messages{state="deferred"} 0`,
		`mamori_queue_messages{state="held"} 5`, `mamori_queue_bytes{state="held"} 1234`,
		"mamori_guard_isolated 1", "mamori_guard_suspended 2", "mamori_guard_bans 3", "mamori_guard_throttled 4",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func TestTrafficRingRollover(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clk := &clock{t: t0.Add(10 * time.Second)}
	m := New()
	m.now = clk.now

	// Minute 10:00: one of each event that feeds the ring.
	m.MessageAccepted("inbound")
	m.MessageAccepted("submitted")
	m.MessageHeld(HeldGuard)
	m.MessagesHeld(HeldQueued, 7) // not at DATA: not in the ring's Held
	m.MessageRefused("rcpt", ReasonRelay)
	m.MessageRefused("mail", ReasonSender) // not RCPT or DATA: not in the ring
	m.DeliveryResult("remote", Delivered)
	m.DeliveryResult("remote", Bounced)
	m.DeliveryResult("remote", Deferred)
	m.GuardDecision("rcpt", "rate.rcpts_per_minute", "defer")
	m.GuardDecision("rcpt", "", "accept") // accept: not in the ring
	m.GuardEvent("isolated")
	m.GuardEvent("banned")

	// Same minute, 40 s later; then the next minute.
	clk.set(t0.Add(50 * time.Second))
	m.MessageAccepted("inbound")
	clk.set(t0.Add(61 * time.Second))
	m.MessageAccepted("inbound")

	tr := m.Traffic(t0.Add(90 * time.Second))
	if len(tr) != RingMinutes {
		t.Fatalf("%d minutes", len(tr))
	}
	last, prev := tr[RingMinutes-1], tr[RingMinutes-2]
	if !last.Time.Equal(t0.Add(time.Minute)) || !prev.Time.Equal(t0) || !tr[0].Time.Equal(t0.Add(-58*time.Minute)) {
		t.Fatalf("minute stamps: first %v, prev %v, last %v", tr[0].Time, prev.Time, last.Time)
	}
	want := Minute{Time: t0, In: 3, Out: 1, Refused: 1, Held: 1, Bounced: 1, Guard: 1, Isolated: 1}
	if prev != want {
		t.Errorf("minute 10:00 = %+v, want %+v", prev, want)
	}
	if (last != Minute{Time: t0.Add(time.Minute), In: 1}) {
		t.Errorf("minute 10:01 = %+v", last)
	}

	// An hour later the slot of 10:00 is reused: the old counts are gone,
	// not added to.
	clk.set(t0.Add(60*time.Minute + 5*time.Second))
	m.MessageAccepted("inbound")
	tr = m.Traffic(t0.Add(60*time.Minute + 30*time.Second))
	if got := tr[RingMinutes-1]; (got != Minute{Time: t0.Add(60 * time.Minute), In: 1}) {
		t.Errorf("minute 11:00 = %+v", got)
	}
	if got := tr[0]; (got != Minute{Time: t0.Add(time.Minute), In: 1}) {
		t.Errorf("oldest minute (10:01) = %+v", got)
	}
	for _, mn := range tr {
		if mn.Time.Equal(t0) {
			t.Errorf("minute 10:00 still reported an hour later: %+v", mn)
		}
	}

	// A late event for a minute already overwritten is dropped, not
	// counted into the newer minute.
	clk.set(t0.Add(10 * time.Second))
	m.MessageAccepted("inbound")
	tr = m.Traffic(t0.Add(60*time.Minute + 30*time.Second))
	if got := tr[RingMinutes-1]; got.In != 1 {
		t.Errorf("late event counted into 11:00: %+v", got)
	}

	// Two hours of silence: every minute is empty.
	for _, mn := range m.Traffic(t0.Add(3 * time.Hour)) {
		if (mn != Minute{Time: mn.Time}) {
			t.Errorf("stale counts after two idle hours: %+v", mn)
		}
	}
}

func TestRingConcurrent(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				m.MessageAccepted("inbound")
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, mn := range m.Traffic(time.Now()) {
		total += mn.In
	}
	// The loop may straddle a minute boundary: both minutes are in the
	// hour.
	if total != 8000 {
		t.Errorf("ring counted %d of 8000", total)
	}
}

func BenchmarkMessageAccepted(b *testing.B) {
	m := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.MessageAccepted("inbound")
		}
	})
}

func BenchmarkGuardDecision(b *testing.B) {
	m := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.GuardDecision("rcpt", "", "accept")
		}
	})
}
