package guard

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

func TestBruteForcePerPair(t *testing.T) {
	g, clk, _ := newTestGuard(t, Config{}, nil)
	attacker := addr("203.0.113.9")
	for i := range 4 {
		wantVerdict(t, "failure "+strconv.Itoa(i+1), g.AuthResult(attacker, "alice@corp.test", false), Accept, "")
		wantVerdict(t, "check", g.AuthCheck(attacker, "alice@corp.test"), Accept, "")
	}
	wantVerdict(t, "5th failure", g.AuthResult(attacker, "alice@corp.test", false), Drop, "auth.bruteforce")
	d := g.AuthCheck(attacker, "Alice@corp.test")
	wantVerdict(t, "blocked pair", d, Defer, "auth.bruteforce")
	if d.Code != 454 || d.Enhanced != [3]int{4, 7, 0} {
		t.Fatalf("blocked pair reply %d %v, want 454 4.7.0", d.Code, d.Enhanced)
	}
	wantVerdict(t, "same IP, other account", g.AuthCheck(attacker, "bob@corp.test"), Accept, "")
	wantVerdict(t, "other IP, same account", g.AuthCheck(addr("203.0.114.9"), "alice@corp.test"), Accept, "")
	if _, banned := g.Banned(attacker); banned {
		t.Fatal("a pair block must not ban the IP")
	}

	// The block lasts BanBase; the next failure in the same 15 minutes
	// blocks again, 4× longer.
	clk.Advance(10*time.Minute + time.Second)
	wantVerdict(t, "after block", g.AuthCheck(attacker, "alice@corp.test"), Accept, "")
	wantVerdict(t, "failure after block", g.AuthResult(attacker, "alice@corp.test", false), Drop, "auth.bruteforce")
	clk.Advance(39 * time.Minute)
	wantVerdict(t, "second block", g.AuthCheck(attacker, "alice@corp.test"), Defer, "auth.bruteforce")
	clk.Advance(2 * time.Minute)
	wantVerdict(t, "second block over", g.AuthCheck(attacker, "alice@corp.test"), Accept, "")
}

func TestBruteForcePerIP(t *testing.T) {
	g, _, hooks := newTestGuard(t, Config{AuthFailsPerPair: 1000, AuthUsersPerNet: 1000}, nil)
	attacker := addr("203.0.113.10")
	for i := range 19 {
		user := fmt.Sprintf("u%d@corp.test", i%3)
		wantVerdict(t, "failure "+strconv.Itoa(i+1), g.AuthResult(attacker, user, false), Accept, "")
	}
	d := g.AuthResult(attacker, "u0@corp.test", false)
	wantVerdict(t, "20th failure", d, Drop, "auth.bruteforce")
	if d.Code != 421 {
		t.Fatalf("ban reply code %d, want 421", d.Code)
	}
	b, ok := g.Banned(attacker)
	if !ok || b.CIDR != "203.0.113.10/32" || b.Rule != "auth.bruteforce" || b.Strikes != 1 || !b.Expires.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("ban = %+v, %v", b, ok)
	}
	wantVerdict(t, "auth check", g.AuthCheck(attacker, "u1@corp.test"), Drop, "ban")
	d, _ = g.Connect(attacker, false)
	wantVerdict(t, "connect", d, Drop, "ban")
	if d.Code != 554 || d.Enhanced != [3]int{5, 7, 1} {
		t.Fatalf("connect reply %d %v, want 554 5.7.1", d.Code, d.Enhanced)
	}
	if _, banned := g.Banned(addr("203.0.113.11")); banned {
		t.Fatal("neighbour banned")
	}
	flush(g)
	if a := hooks.alertsOf("banned"); len(a) != 1 || a[0].IP != "203.0.113.10" || a[0].Counts["auth_failures"] != 20 {
		t.Fatalf("banned alerts = %+v", a)
	}
}

func TestPasswordSpray(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	// One failure each for 4 usernames from 4 addresses of one /24.
	for i := 1; i <= 4; i++ {
		ip := addr(fmt.Sprintf("203.0.113.%d", i))
		wantVerdict(t, "spray "+strconv.Itoa(i), g.AuthResult(ip, fmt.Sprintf("user%d@corp.test", i), false), Accept, "")
	}
	// The same usernames again do not count twice.
	wantVerdict(t, "repeat name", g.AuthResult(addr("203.0.113.4"), "user1@corp.test", false), Accept, "")
	fifth := addr("203.0.113.5")
	wantVerdict(t, "5th distinct name", g.AuthResult(fifth, "user5@corp.test", false), Drop, "auth.spray")
	if b, ok := g.Banned(fifth); !ok || b.Rule != "auth.spray" {
		t.Fatalf("fifth sprayer ban = %+v %v", b, ok)
	}
	if _, ok := g.Banned(addr("203.0.113.1")); ok {
		t.Fatal("an address that did not fail since the threshold was banned")
	}
	// Another network is unaffected.
	wantVerdict(t, "other network", g.AuthResult(addr("203.0.114.1"), "user6@corp.test", false), Accept, "")
}

// TestNATKnownNetwork: the real user and an attacker share an address (or a
// /24) the user has logged in from before.
func TestNATKnownNetwork(t *testing.T) {
	g, _, hooks := newTestGuard(t, Config{AuthUsersPerNet: 1000}, nil)
	nat := addr("198.51.100.20")
	wantVerdict(t, "real user's first login", g.AuthResult(nat, "alice@corp.test", true), Accept, "")

	// A colleague behind the same NAT address mistypes: the host that
	// logged in is never throttled or pair-blocked below the flood bound.
	for i := range 30 {
		wantVerdict(t, "colleague failure "+strconv.Itoa(i+1), g.AuthResult(nat, "alice@corp.test", false), Accept, "")
	}
	wantVerdict(t, "real user check", g.AuthCheck(nat, "alice@corp.test"), Accept, "")
	wantVerdict(t, "real user logs in", g.AuthResult(nat, "alice@corp.test", true), Accept, "")
	// The failures were counted for the account all the same: another
	// address of the /24, which never logged in, is throttled.
	wantVerdict(t, "sibling address", g.AuthCheck(addr("198.51.100.21"), "alice@corp.test"), Defer, "auth.account_throttle")

	// An account never seen on this host is still blocked per pair.
	for range 4 {
		g.AuthResult(nat, "bob@corp.test", false)
	}
	wantVerdict(t, "bob 5th failure", g.AuthResult(nat, "bob@corp.test", false), Drop, "auth.bruteforce")
	wantVerdict(t, "bob blocked", g.AuthCheck(nat, "bob@corp.test"), Defer, "auth.bruteforce")
	wantVerdict(t, "alice still fine", g.AuthCheck(nat, "alice@corp.test"), Accept, "")

	// A flood from the trusted host: past 5 × auth_fails_per_account (50)
	// failures in 15 minutes the pair is blocked and the admin alerted.
	for i := 31; i < 50; i++ {
		wantVerdict(t, "failure "+strconv.Itoa(i), g.AuthResult(nat, "alice@corp.test", false), Accept, "")
	}
	wantVerdict(t, "50th failure", g.AuthResult(nat, "alice@corp.test", false), Drop, "auth.bruteforce")
	wantVerdict(t, "flooding pair blocked", g.AuthCheck(nat, "alice@corp.test"), Defer, "auth.bruteforce")
	flush(g)
	if n := len(alertsWithRule(hooks.alertsOf("throttled"), "auth.trusted_flood")); n != 1 {
		t.Fatalf("%d trusted-flood alerts, want 1", n)
	}

	// The IP-wide rule needs 5× its threshold (100) on a host with recent
	// logins: 55 failures so far from nat (50 alice + 5 bob).
	user := func(i int) string { return "u" + strconv.Itoa(i/4) + "@corp.test" } // 4 failures each: no pair block
	for i := 56; i < 100; i++ {
		wantVerdict(t, "failure "+strconv.Itoa(i), g.AuthResult(nat, user(i), false), Accept, "")
	}
	wantVerdict(t, "100th failure", g.AuthResult(nat, user(100), false), Drop, "auth.bruteforce")
}

func alertsWithRule(all []Alert, rule string) []Alert {
	var out []Alert
	for _, a := range all {
		if a.Rule == rule {
			out = append(out, a)
		}
	}
	return out
}

func TestLoginDetectors(t *testing.T) {
	home := addr("198.51.100.20")
	office := addr("192.0.2.10")
	cafe := addr("203.0.113.30")
	abroad := addr("100.64.7.7")
	const u = "dana@corp.test"
	from := func(ip netip.Addr) Sender { return Sender{IP: ip, User: u, From: u} }

	tests := []struct {
		name string
		run  func(t *testing.T, g *Guard, clk *fakeClock)
		rule string // suspension expected, "" for none
	}{
		{"new account: first login is no signal", func(t *testing.T, g *Guard, clk *fakeClock) {
			wantVerdict(t, "login", g.AuthResult(cafe, u, true), Accept, "")
			for i := range 20 {
				wantVerdict(t, "msg", g.Message(mail(from(cafe), i, "f@ext.test")), Accept, "")
				clk.Advance(20 * time.Second)
			}
		}, ""},
		{"new network then a burst", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			wantVerdict(t, "login from new network", g.AuthResult(cafe, u, true), Accept, "")
			for i := range 10 {
				wantVerdict(t, "msg", g.Message(mail(from(cafe), i, "f@ext.test")), Accept, "")
				clk.Advance(20 * time.Second)
			}
			wantVerdict(t, "11th", g.Message(mail(from(cafe), 10, "f@ext.test")), Hold, "login.new_network_burst")
			d := g.AuthCheck(cafe, u)
			wantVerdict(t, "auth while suspended", d, Reject, "login.new_network_burst")
			if d.Code != 535 || d.Enhanced != [3]int{5, 7, 8} || d.Text != InvalidCredentials.Text {
				t.Fatalf("suspended reply %d %v %q", d.Code, d.Enhanced, d.Text)
			}
		}, "login.new_network_burst"},
		{"new network then a rate rule from anywhere", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			g.AuthResult(cafe, u, true)
			for i := range 30 {
				wantVerdict(t, "msg", g.Message(mail(from(home), i, "f@ext.test")), Accept, "")
			}
			wantVerdict(t, "31st", g.Message(mail(from(home), 30, "f@ext.test")), Hold, "login.new_network_burst")
		}, "login.new_network_burst"},
		{"new network, normal use", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			g.AuthResult(cafe, u, true)
			for i := range 5 {
				wantVerdict(t, "msg", g.Message(mail(from(cafe), i, "f@ext.test")), Accept, "")
			}
			clk.Advance(11 * time.Minute)
			for i := range 20 {
				wantVerdict(t, "later msg", g.Message(mail(from(cafe), i, "f@ext.test")), Accept, "")
			}
		}, ""},
		{"three networks within 10 minutes", func(t *testing.T, g *Guard, clk *fakeClock) {
			wantVerdict(t, "1st", g.AuthResult(home, u, true), Accept, "")
			clk.Advance(4 * time.Minute)
			wantVerdict(t, "2nd", g.AuthResult(office, u, true), Accept, "")
			clk.Advance(4 * time.Minute)
			wantVerdict(t, "3rd", g.AuthResult(cafe, u, true), Reject, "login.networks")
		}, "login.networks"},
		{"three networks spread over half an hour", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(11 * time.Minute)
			g.AuthResult(office, u, true)
			clk.Advance(11 * time.Minute)
			wantVerdict(t, "3rd", g.AuthResult(cafe, u, true), Accept, "")
			clk.Advance(time.Minute)
			wantVerdict(t, "back home", g.AuthResult(home, u, true), Accept, "")
		}, ""},
		{"failures from elsewhere then success from a new network (no lockout by outsiders)", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			for i := 1; i <= 3; i++ {
				g.AuthResult(addr(fmt.Sprintf("100.%d.0.1", 64+i)), u, false)
			}
			wantVerdict(t, "success", g.AuthResult(abroad, u, true), Accept, "")
		}, ""},
		{"failures from elsewhere then success from a known network", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			for i := 1; i <= 3; i++ {
				g.AuthResult(addr(fmt.Sprintf("100.%d.0.1", 64+i)), u, false)
			}
			wantVerdict(t, "success", g.AuthResult(home, u, true), Accept, "")
		}, ""},
		{"failures then success from the same new network (the thief)", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			for range 3 {
				g.AuthResult(abroad, u, false)
			}
			wantVerdict(t, "success", g.AuthResult(abroad, u, true), Reject, "login.fail_then_success")
		}, "login.fail_then_success"},
		{"two failures from elsewhere are not enough", func(t *testing.T, g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			g.AuthResult(addr("100.65.0.1"), u, false)
			g.AuthResult(addr("100.66.0.1"), u, false)
			wantVerdict(t, "success", g.AuthResult(abroad, u, true), Accept, "")
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			tc.run(t, g, clk)
			if got := g.IsSuspended(u); got != (tc.rule != "") {
				t.Fatalf("suspended = %v, want %v", got, tc.rule != "")
			}
			flush(g)
			alerts := hooks.alertsOf("suspended")
			if tc.rule == "" {
				if len(alerts) != 0 {
					t.Fatalf("unexpected suspension alerts %+v", alerts)
				}
				return
			}
			if len(alerts) != 1 || alerts[0].Rule != tc.rule || alerts[0].User != u || alerts[0].Detail == "" {
				t.Fatalf("suspension alerts = %+v, want one for %s", alerts, tc.rule)
			}
			holds, _ := hooks.snapshot()
			if len(holds) != 1 || holds[0].user != u {
				t.Fatalf("HoldQueued = %+v, want the account's queued mail held", holds)
			}
			wantVerdict(t, "mail while suspended", g.Message(mail(from(home), 0, "f@ext.test")), Hold, "")
		})
	}
}

func TestSuspendAndRelease(t *testing.T) {
	g, _, hooks := newTestGuard(t, Config{}, nil)
	carol := Sender{IP: addr("198.51.100.40"), User: "carol@corp.test", From: "carol@corp.test"}
	g.Suspend("Carol@corp.test", "")
	if !g.IsSuspended("carol@corp.test") {
		t.Fatal("not suspended")
	}
	wantVerdict(t, "auth check", g.AuthCheck(carol.IP, "carol@corp.test"), Reject, "admin")
	wantVerdict(t, "auth with the right password", g.AuthResult(carol.IP, "carol@corp.test", true), Reject, "admin")
	wantVerdict(t, "mail", g.Message(mail(carol, 0, "x@ext.test")), Hold, "admin")
	snap := g.Snapshot()
	if len(snap.Suspended) != 1 || snap.Suspended[0].User != "carol@corp.test" || snap.Suspended[0].Rule != "admin" {
		t.Fatalf("suspended = %+v", snap.Suspended)
	}
	if len(snap.Isolated) != 1 || snap.Isolated[0].Held != 1 {
		t.Fatalf("isolated = %+v", snap.Isolated)
	}

	if !g.Release("carol@corp.test") {
		t.Fatal("Release returned false")
	}
	if g.IsSuspended("carol@corp.test") {
		t.Fatal("still suspended")
	}
	wantVerdict(t, "auth after release", g.AuthCheck(carol.IP, "carol@corp.test"), Accept, "")
	wantVerdict(t, "mail after release", g.Message(mail(carol, 1, "x@ext.test")), Accept, "")
	if g.Release("carol@corp.test") {
		t.Fatal("second Release returned true")
	}
	if s := g.Snapshot(); len(s.Isolated)+len(s.Suspended) != 0 {
		t.Fatalf("snapshot after release = %+v", s)
	}
	flush(g)
	if a := hooks.alertsOf("suspended"); len(a) != 1 {
		t.Fatalf("suspended alerts = %+v", a)
	}
	if a := hooks.alertsOf("released"); len(a) != 1 || a[0].User != "carol@corp.test" || a[0].Rule != "admin" {
		t.Fatalf("released alerts = %+v", a)
	}
}

func TestReleaseIPResetsCounters(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	for i := range 30 {
		g.Message(mail(pc5, i, "x@ext.test"))
	}
	wantVerdict(t, "trip", g.Message(mail(pc5, 30, "x@ext.test")), Hold, "rate.msgs_per_minute")
	if !g.Release("10.0.0.5") {
		t.Fatal("Release(ip) = false")
	}
	for i := range 30 {
		wantVerdict(t, "after release", g.Message(mail(pc5, i, "x@ext.test")), Accept, "")
	}
	wantVerdict(t, "trip again", g.Message(mail(pc5, 30, "x@ext.test")), Hold, "rate.msgs_per_minute")
	if g.Release("10.0.0.99") {
		t.Fatal("Release of an unknown IP = true")
	}
}

func TestLastLogins(t *testing.T) {
	g, clk, _ := newTestGuard(t, Config{}, nil)
	g.AuthResult(addr("198.51.100.1"), "a@corp.test", true)
	clk.Advance(time.Hour)
	g.AuthResult(addr("198.51.100.1"), "B@corp.test", true)
	g.AuthResult(addr("198.51.100.1"), "c@corp.test", false)
	got := g.LastLogins()
	if len(got) != 2 || !got["a@corp.test"].Equal(t0) || !got["b@corp.test"].Equal(t0.Add(time.Hour)) {
		t.Fatalf("LastLogins = %v", got)
	}
}
