package guard

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	const w = minuteMS
	base := t0.UnixMilli()
	tests := []struct {
		name string
		adds []int64 // offsets (ms) of one event each
		at   int64
		want int
	}{
		{"empty", nil, 0, 0},
		{"same bucket", []int64{0, 1000, 59_000}, 59_000, 3},
		{"previous bucket fully weighted at its end", []int64{0, 0, 0, 0}, w, 4},
		{"previous bucket half weighted", []int64{0, 0, 0, 0}, w + w/2, 2},
		{"previous bucket plus current", []int64{0, 0, w + 1000}, w + w/2, 2},
		{"two buckets later reads zero", []int64{0, 0, 0}, 2 * w, 0},
		{"far later reads zero", []int64{0}, 100 * w, 0},
		{"clock going back stays in bucket", []int64{w + 10, 5}, w + 20, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var win window
			for _, off := range tc.adds {
				win.add(base+off, w, 1)
			}
			if got := win.get(base+tc.at, w); got != tc.want {
				t.Fatalf("estimate = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	l := newLRU[int, int](3)
	for i := 1; i <= 3; i++ {
		*l.get(i) = i * 10
	}
	if v := l.lookup(1); v == nil || *v != 10 { // 1 becomes most recent
		t.Fatalf("lookup(1) = %v", v)
	}
	*l.get(4) = 40 // evicts 2
	if l.lookup(2) != nil {
		t.Fatal("2 should have been evicted")
	}
	for _, k := range []int{1, 3, 4} {
		if v := l.lookup(k); v == nil || *v != k*10 {
			t.Fatalf("lookup(%d) = %v, want %d", k, v, k*10)
		}
	}
	if v := l.get(5); *v != 0 { // reused slot starts at zero
		t.Fatalf("new entry = %d, want 0", *v)
	}
	if l.len() != 3 {
		t.Fatalf("len = %d, want 3", l.len())
	}
}

// TestLocalRulesTripAtThreshold sends messages until a rule trips: the
// allowance is accepted, the next message held, and the sender isolated.
func TestLocalRulesTripAtThreshold(t *testing.T) {
	same10 := rcptList("known", 10)
	same40 := rcptList("known", 40)
	same100 := rcptList("known", 100)
	tests := []struct {
		name     string
		cfg      Config
		sender   Sender
		step     time.Duration // clock advance between messages
		rcpts    func(i int) []string
		mismatch bool
		content  bool
		allowed  int
		rule     string
		key      string // which key tripped
	}{
		{name: "msgs per minute, trusted IP", sender: pc5, rcpts: func(int) []string { return same10[:1] },
			allowed: 30, rule: "rate.msgs_per_minute", key: "ip"},
		{name: "msgs per minute, user", sender: alice, rcpts: func(int) []string { return same10[:1] },
			allowed: 30, rule: "rate.msgs_per_minute", key: "user"},
		{name: "msgs per minute, envelope sender of a trusted client",
			cfg:    Config{Overrides: map[string]Limits{"10.0.0.5": {MsgsPerMinute: 1000}}},
			sender: pc5, rcpts: func(int) []string { return same10[:1] },
			allowed: 30, rule: "rate.msgs_per_minute", key: "sender"},
		{name: "rcpts per minute", sender: alice, rcpts: func(int) []string { return same10 },
			allowed: 10, rule: "rate.rcpts_per_minute", key: "user"},
		{name: "rcpts per hour", sender: alice, step: time.Minute, rcpts: func(int) []string { return same40 },
			allowed: 7, rule: "rate.rcpts_per_hour", key: "user"},
		{name: "rcpts per day", cfg: Config{Local: Limits{NewRcptsPerMinute: 1000}}, sender: pc5, step: time.Hour,
			rcpts: func(int) []string { return same100 }, allowed: 10, rule: "rate.rcpts_per_day", key: "ip"},
		{name: "first-time recipients", sender: alice,
			rcpts:   func(i int) []string { return rcptList("fresh"+strings.Repeat("x", i), 10) },
			allowed: 6, rule: "burst.new_rcpts", key: "user"},
		{name: "header From mismatch", sender: alice, rcpts: func(int) []string { return same10[:1] }, mismatch: true,
			allowed: 3, rule: "header_from", key: "user"},
		{name: "content policy hits (executables from a PC)", sender: pc5, rcpts: func(int) []string { return same10[:1] }, content: true,
			allowed: 2, rule: "content.dangerous", key: "ip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, tc.cfg, nil)
			for i := 0; i <= tc.allowed; i++ {
				if i > 0 {
					clk.Advance(tc.step)
				}
				m := mail(tc.sender, i, tc.rcpts(i)...)
				m.HeaderFromMismatch = tc.mismatch
				if tc.content {
					m.ContentHit = "attachment.blocked_ext"
				}
				d := g.Message(m)
				if i < tc.allowed {
					wantVerdict(t, "message "+strconv.Itoa(i+1), d, Accept, "")
					continue
				}
				wantVerdict(t, "message "+strconv.Itoa(i+1), d, Hold, tc.rule)
			}
			snap := g.Snapshot()
			if len(snap.Isolated) != 1 || snap.Isolated[0].Rule != tc.rule || snap.Isolated[0].Held != 1 {
				t.Fatalf("isolated = %+v, want one with rule %s, held 1", snap.Isolated, tc.rule)
			}
			flush(g)
			holds, alerts := hooks.snapshot()
			if len(holds) != 1 || holds[0].rule != tc.rule {
				t.Fatalf("HoldQueued calls = %+v", holds)
			}
			if tc.sender.User != "" {
				if holds[0].user != tc.sender.User || holds[0].ip.IsValid() {
					t.Fatalf("HoldQueued = %+v, want the user only", holds[0])
				}
			} else if holds[0].ip != tc.sender.IP || holds[0].user != "" {
				t.Fatalf("HoldQueued = %+v, want the IP only", holds[0])
			}
			if len(alerts) != 1 || alerts[0].Kind != "isolated" || alerts[0].Rule != tc.rule || alerts[0].Extra["key"] != tc.key {
				t.Fatalf("alerts = %+v, want one isolated/%s on key %s", alerts, tc.rule, tc.key)
			}
			if alerts[0].IP != tc.sender.IP.String() || alerts[0].User != tc.sender.User ||
				len(alerts[0].Subjects) == 0 || len(alerts[0].Rcpts) == 0 || alerts[0].Counts["queued_held"] != 7 {
				t.Fatalf("alert lacks details: %+v", alerts[0])
			}
		})
	}
}

func TestUnknownRcptRatio(t *testing.T) {
	tests := []struct {
		name              string
		refused, accepted int
		trip              bool
	}{
		{"too few to judge", 10, 9, false},
		{"exactly the ratio", 10, 10, false},
		{"over the ratio", 11, 9, true},
		{"mostly good", 5, 15, false},
		{"all refused but one", 25, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := newTestGuard(t, Config{}, nil)
			for i := range tc.refused {
				wantVerdict(t, "rcpt", g.Rcpt(pc5, rcptList("nobody", tc.refused)[i], false), Accept, "")
			}
			good := rcptList("good", tc.accepted)
			for _, r := range good {
				wantVerdict(t, "rcpt", g.Rcpt(pc5, r, true), Accept, "")
			}
			d := g.Message(mail(pc5, 0, good...))
			if tc.trip {
				wantVerdict(t, "message", d, Hold, "unknown_rcpts")
			} else {
				wantVerdict(t, "message", d, Accept, "")
			}
		})
	}
}

func TestHistoryVolume(t *testing.T) {
	tests := []struct {
		name      string
		perHour   int // usual messages per hour while building history
		hours     int // how long the history is
		allowed   int // messages in one later hour before the trip; -1: never within 80
		checkUpTo int
	}{
		{"usual peak 2: trips past the per-minute allowance", 2, 48, 30, 0},
		{"usual peak 5: trips past 10× the peak", 5, 48, 50, 0},
		{"history too short to judge", 2, 10, -1, 59},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, _ := newTestGuard(t, Config{}, nil)
			bob := Sender{IP: addr("198.51.100.9"), User: "bob@corp.test", From: "bob@corp.test"}
			for h := 0; h < tc.hours; h++ {
				for i := 0; i < tc.perHour; i++ {
					wantVerdict(t, "history", g.Message(mail(bob, i, "friend@ext.test")), Accept, "")
					clk.Advance(time.Hour / time.Duration(tc.perHour))
				}
			}
			clk.Advance(3 * time.Hour) // an empty previous hour: the hourly count is exact
			n := tc.allowed
			if n < 0 {
				n = tc.checkUpTo
			}
			for i := 0; i <= n; i++ {
				d := g.Message(mail(bob, i, "friend@ext.test"))
				clk.Advance(time.Minute)
				if tc.allowed < 0 || i < tc.allowed {
					wantVerdict(t, "message "+strconv.Itoa(i+1), d, Accept, "")
					continue
				}
				wantVerdict(t, "message "+strconv.Itoa(i+1), d, Hold, "history.volume")
			}
		})
	}
}

func TestIsolationHoldsUntilCapAndSparesNeighbours(t *testing.T) {
	g, _, hooks := newTestGuard(t, Config{HoldCap: 3}, nil)
	for i := range 30 {
		wantVerdict(t, "allowance", g.Message(mail(pc5, i, "x@ext.test")), Accept, "")
	}
	for i := range 3 {
		wantVerdict(t, "held", g.Message(mail(pc5, 30+i, "x@ext.test")), Hold, "rate.msgs_per_minute")
	}
	d := g.Message(mail(pc5, 33, "x@ext.test"))
	wantVerdict(t, "past cap", d, Defer, "rate.msgs_per_minute")
	if d.Code != 451 || d.Enhanced != [3]int{4, 7, 1} || d.Text == "" {
		t.Fatalf("past cap reply = %d %v %q, want 451 4.7.1 with text", d.Code, d.Enhanced, d.Text)
	}
	// The neighbour on the same /24 and a user keep flowing.
	for i := range 30 {
		wantVerdict(t, "neighbour", g.Message(mail(pc6, i, "y@ext.test")), Accept, "")
	}
	wantVerdict(t, "other user", g.Message(mail(alice, 0, "z@ext.test")), Accept, "")
	// RCPTs of the isolated sender are still accepted (its mail is held, not refused).
	wantVerdict(t, "rcpt while isolated", g.Rcpt(pc5, "x@ext.test", true), Accept, "")

	snap := g.Snapshot()
	if len(snap.Isolated) != 1 {
		t.Fatalf("isolated = %+v", snap.Isolated)
	}
	iso := snap.Isolated[0]
	if iso.IP != "10.0.0.5" || iso.Sender != "pc5@corp.test" || iso.Held != 3 || iso.Counts["msgs_per_minute"] != 31 || !iso.Since.Equal(t0) {
		t.Fatalf("isolation = %+v", iso)
	}
	flush(g)
	alerts := hooks.alertsOf("isolated")
	if len(alerts) != 1 {
		t.Fatalf("isolated alerts = %d, want 1", len(alerts))
	}
	a := alerts[0]
	if !slices.Contains(a.Subjects, "subject 30") || len(a.Subjects) != 5 || !slices.Contains(a.Rcpts, "x@ext.test") {
		t.Fatalf("alert samples = %q / %q", a.Subjects, a.Rcpts)
	}
}

func TestIsolatedTrustedIPHoldsItsAuthenticatedMailToo(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	for i := range 31 {
		g.Message(mail(pc5, i, "x@ext.test"))
	}
	fromPC5 := Sender{IP: pc5.IP, User: "carol@corp.test", From: "carol@corp.test", Trusted: true}
	wantVerdict(t, "user on the isolated host", g.Message(mail(fromPC5, 0, "x@ext.test")), Hold, "rate.msgs_per_minute")
	wantVerdict(t, "same user elsewhere", g.Message(mail(Sender{IP: addr("203.0.113.50"), User: "carol@corp.test"}, 0, "x@ext.test")), Accept, "")
}

func TestOverrides(t *testing.T) {
	cfg := Config{Overrides: map[string]Limits{
		"Bulk@Corp.test": {MsgsPerMinute: 100, RcptsPerMinute: 500},
		"10.9.0.0/16":    {MsgsPerMinute: 50},
		"10.9.3.5":       {MsgsPerMinute: 40},
	}}
	tests := []struct {
		name    string
		sender  Sender
		allowed int
	}{
		{"user override", Sender{IP: addr("203.0.113.5"), User: "bulk@corp.test"}, 100},
		{"network override", Sender{IP: addr("10.9.3.4"), Trusted: true}, 50},
		{"address inside an overridden network", Sender{IP: addr("10.9.3.5"), Trusted: true}, 40},
		{"no override", Sender{IP: addr("10.8.0.1"), Trusted: true}, 30},
		{"other user", alice, 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := newTestGuard(t, cfg, nil)
			for i := range tc.allowed {
				wantVerdict(t, "message "+strconv.Itoa(i+1), g.Message(mail(tc.sender, i, "x@ext.test")), Accept, "")
			}
			wantVerdict(t, "one more", g.Message(mail(tc.sender, tc.allowed, "x@ext.test")), Hold, "rate.msgs_per_minute")
		})
	}
}

func TestOverrideBadCIDR(t *testing.T) {
	if _, err := New(Config{Overrides: map[string]Limits{"10.0.0.0/33": {}}}, nil, nil, nil); err == nil {
		t.Fatal("New accepted a bad CIDR override")
	}
}

func TestWindowsRollOver(t *testing.T) {
	tests := []struct {
		name    string
		first   time.Duration // offset of the first batch of 30
		second  time.Duration // offset of the second batch
		allowed int           // of the second batch
	}{
		{"two minutes later: full allowance again", 0, 2 * time.Minute, 30},
		{"next minute, half of it gone: previous minute half weighted", 30 * time.Second, 90 * time.Second, 15},
		{"next minute, a quarter gone: 30×¾ rounds down to 22", 0, 75 * time.Second, 8},
		{"same minute: nothing", 0, 59 * time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, _ := newTestGuard(t, Config{}, nil)
			clk.Advance(tc.first)
			for i := range 30 {
				wantVerdict(t, "first batch", g.Message(mail(pc5, i, "x@ext.test")), Accept, "")
			}
			clk.Advance(tc.second - tc.first)
			for i := range tc.allowed {
				wantVerdict(t, "second batch "+strconv.Itoa(i+1), g.Message(mail(pc5, i, "x@ext.test")), Accept, "")
			}
			wantVerdict(t, "over", g.Message(mail(pc5, 99, "x@ext.test")), Hold, "rate.msgs_per_minute")
		})
	}
}

func TestInboundLimits(t *testing.T) {
	out := Sender{IP: addr("192.0.2.77"), From: "someone@far.test"}
	g, clk, _ := newTestGuard(t, Config{InboundMsgsPerMinute: 5, InboundRcptsPerMinute: 8}, nil)
	for i := range 8 {
		wantVerdict(t, "rcpt "+strconv.Itoa(i+1), g.Rcpt(out, "u@corp.test", i%2 == 0), Accept, "")
	}
	d := g.Rcpt(out, "u@corp.test", true)
	wantVerdict(t, "rcpt over", d, Defer, "rate.rcpts_per_minute")
	if d.Code != 451 || d.Enhanced != [3]int{4, 7, 1} {
		t.Fatalf("reply %d %v", d.Code, d.Enhanced)
	}
	for i := range 5 {
		wantVerdict(t, "msg "+strconv.Itoa(i+1), g.Message(mail(out, i, "u@corp.test")), Accept, "")
	}
	wantVerdict(t, "msg over", g.Message(mail(out, 5, "u@corp.test")), Defer, "rate.msgs_per_minute")
	// Outsiders are never isolated.
	if s := g.Snapshot(); len(s.Isolated) != 0 {
		t.Fatalf("outsider isolated: %+v", s.Isolated)
	}
	// Another outsider is not affected; the first recovers with time.
	wantVerdict(t, "other outsider", g.Message(mail(Sender{IP: addr("192.0.2.78")}, 0, "u@corp.test")), Accept, "")
	clk.Advance(2 * time.Minute)
	wantVerdict(t, "later", g.Message(mail(out, 6, "u@corp.test")), Accept, "")
}

func TestKnownRecipientsBounded(t *testing.T) {
	var st senderStats
	hash := func(i int) uint64 { return uint64(i)*0x9e3779b97f4a7c15 + 1 }
	for i := range knownRcptsCap + 1000 {
		st.learn(hash(i))
	}
	if len(st.known) != knownRcptsCap {
		t.Fatalf("known recipients = %d, want capped at %d", len(st.known), knownRcptsCap)
	}
	if !st.knows(hash(knownRcptsCap + 999)) {
		t.Fatal("the newest recipient was not kept")
	}
}

// TestInboundSpoofingSignal: an outside IP whose messages keep failing SPF
// or DMARC is deferred past the threshold; clean mail from another IP and
// the same IP's mail after the window are not.
func TestInboundSpoofingSignal(t *testing.T) {
	g, clk, _ := newTestGuard(t, Config{InboundAuthFails: 3}, nil)
	spoofer := Sender{IP: netip.MustParseAddr("198.51.100.9"), From: "ceo@victim.test"}
	other := Sender{IP: netip.MustParseAddr("198.51.100.10"), From: "news@fine.test"}
	for i := 1; i <= 3; i++ {
		m := mail(spoofer, i, "x@ours.test")
		m.AuthFail = true
		wantVerdict(t, "failing message "+strconv.Itoa(i), g.Message(m), Accept, "")
	}
	m := mail(spoofer, 4, "x@ours.test")
	m.AuthFail = true
	wantVerdict(t, "fourth failing message", g.Message(m), Defer, "auth.spoofing")
	wantVerdict(t, "clean message from the same IP, still in the window", g.Message(mail(spoofer, 5, "x@ours.test")), Defer, "auth.spoofing")
	wantVerdict(t, "another IP", g.Message(mail(other, 1, "x@ours.test")), Accept, "")
	clk.Advance(21 * time.Minute)
	wantVerdict(t, "after the window", g.Message(mail(spoofer, 6, "x@ours.test")), Accept, "")
}

// TestPeerMailNotCountedAgain: mail a peer node passes on (checked and
// counted there) is not counted here — an outside sender mailing many
// users through the other MX is not isolated on this one — while the
// same traffic from a trusted network is.
func TestPeerMailNotCountedAgain(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	peer := Sender{IP: addr("10.0.0.2"), From: "news@far.test", Trusted: true, Peer: true}
	for i := range 100 {
		wantVerdict(t, "peer rcpt", g.Rcpt(peer, "u@corp.test", i%2 == 0), Accept, "")
		wantVerdict(t, "peer message", g.Message(mail(peer, i, "u@corp.test")), Accept, "")
	}
	if snap := g.Snapshot(); len(snap.Isolated) != 0 {
		t.Fatalf("peer mail isolated something: %+v", snap.Isolated)
	}
	trusted := peer
	trusted.Peer = false
	var last Decision
	for i := range 31 {
		last = g.Message(mail(trusted, i, "u@corp.test"))
	}
	wantVerdict(t, "same traffic from a trusted network", last, Hold, "rate.msgs_per_minute")

	// A peer relaying to other domains is judged like any trusted sender.
	g2, _, _ := newTestGuard(t, Config{}, nil)
	relay := Sender{IP: addr("10.0.0.3"), From: "x@corp.test", Trusted: true, Peer: true}
	for i := range 31 {
		m := mail(relay, i, "v@far.test")
		m.Foreign = 1
		last = g2.Message(m)
	}
	wantVerdict(t, "a peer relaying out", last, Hold, "rate.msgs_per_minute")
}

// TestSuspensionEndsSessions: a suspension — by hand, by a rule, or made
// on another node — ends the account's sessions (SessionEnder); an
// isolation does not.
func TestSuspensionEndsSessions(t *testing.T) {
	g, _, hooks := newTestGuard(t, Config{}, nil)
	g.Suspend("Alice@corp.test", "")
	g.ApplyShared(Shared{Kind: SharedSuspend, User: "bob@corp.test", Rule: "auth.spray", Node: "mx2", Time: t0})
	for i := range 31 { // pc5 isolated by rate: not a suspension
		g.Message(mail(pc5, i, "x@ext.test"))
	}
	flush(g)
	if got := hooks.endedSessions(); !slices.Equal(got, []string{"alice@corp.test", "bob@corp.test"}) {
		t.Fatalf("sessions ended for %q, want alice then bob", got)
	}
	g.Suspend("alice@corp.test", "") // already suspended: nothing new
	flush(g)
	if got := hooks.endedSessions(); len(got) != 2 {
		t.Fatalf("a repeated suspension ended sessions again: %q", got)
	}
}
