package guard

// Tests of issue 12, items 4 and 5: distributed guessing is counted per
// login name and throttled, IPv6 clients are counted by /64 and /48, a
// suspension is lockout-proof, and refused logins are no password or
// existence oracle.

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// v6 returns the address 2001:db8:<site>:<subnet>::<host>.
func v6(site, subnet, host int) netip.Addr {
	return addr(fmt.Sprintf("2001:db8:%x:%x::%x", site, subnet, host))
}

// otherNet returns an address in the i-th of many distinct networks, IPv4
// /24s and IPv6 /48s alternately, none of them the owner's.
func otherNet(i int) netip.Addr {
	if i%2 == 0 {
		return addr(fmt.Sprintf("203.%d.%d.9", i/256, i%256))
	}
	return v6(0x100+i, 1, 9)
}

func TestIPv6CountedByPrefix(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		run  func(t *testing.T, g *Guard)
	}{
		{"auth failures rotating through a /64 ban the /64", Config{AuthFailsPerPair: 1000, AuthUsersPerNet: 1000, AuthFailsPerAccount: 1000}, func(t *testing.T, g *Guard) {
			for i := range 19 {
				wantVerdict(t, "failure "+strconv.Itoa(i+1), g.AuthResult(v6(1, 2, i+1), "u@corp.test", false), Accept, "")
			}
			wantVerdict(t, "20th failure", g.AuthResult(v6(1, 2, 0x99), "u@corp.test", false), Drop, "auth.bruteforce")
			b, ok := g.Banned(v6(1, 2, 0xabcd))
			if !ok || b.CIDR != "2001:db8:1:2::/64" {
				t.Fatalf("another address of the /64: ban %+v %v, want the /64 banned", b, ok)
			}
			if _, ok := g.Banned(v6(1, 3, 1)); ok {
				t.Fatal("the next /64 is banned too")
			}
		}},
		{"the IP+account pair follows the /64", Config{AuthFailsPerAccount: 1000}, func(t *testing.T, g *Guard) {
			for i := range 4 {
				wantVerdict(t, "failure "+strconv.Itoa(i+1), g.AuthResult(v6(1, 2, i+1), "u@corp.test", false), Accept, "")
			}
			wantVerdict(t, "5th failure", g.AuthResult(v6(1, 2, 0x77), "u@corp.test", false), Drop, "auth.bruteforce")
			wantVerdict(t, "fresh address, same /64", g.AuthCheck(v6(1, 2, 0x78), "u@corp.test"), Defer, "auth.bruteforce")
		}},
		{"spraying from many /64s of one /48 bans the /48", Config{}, func(t *testing.T, g *Guard) {
			for i := range 4 {
				wantVerdict(t, "spray "+strconv.Itoa(i+1), g.AuthResult(v6(7, i+1, 1), fmt.Sprintf("user%d@corp.test", i), false), Accept, "")
			}
			wantVerdict(t, "5th name", g.AuthResult(v6(7, 5, 1), "user4@corp.test", false), Drop, "auth.spray")
			b, ok := g.Banned(v6(7, 0xffff, 1))
			if !ok || b.CIDR != "2001:db8:7::/48" {
				t.Fatalf("another /64 of the /48: ban %+v %v, want the /48 banned", b, ok)
			}
			if _, ok := g.Banned(v6(8, 1, 1)); ok {
				t.Fatal("the next /48 is banned too")
			}
		}},
		{"new connections rotating through a /64 share one rate", Config{ConnsPerMinute: 10}, func(t *testing.T, g *Guard) {
			for i := range 10 {
				d, rel := g.Connect(v6(1, 2, i+1), false)
				wantVerdict(t, "connection "+strconv.Itoa(i+1), d, Accept, "")
				rel()
			}
			d, _ := g.Connect(v6(1, 2, 0x55), false)
			wantVerdict(t, "11th connection", d, Drop, "conn.rate")
			d, rel := g.Connect(v6(1, 3, 1), false)
			wantVerdict(t, "next /64", d, Accept, "")
			rel()
		}},
		{"concurrent connections of a /64 share one cap", Config{MaxConnsPerIP: 3}, func(t *testing.T, g *Guard) {
			var rels []func()
			for i := range 3 {
				d, rel := g.Connect(v6(1, 2, i+1), false)
				wantVerdict(t, "connection "+strconv.Itoa(i+1), d, Accept, "")
				rels = append(rels, rel)
			}
			d, _ := g.Connect(v6(1, 2, 0x44), false)
			wantVerdict(t, "4th", d, Drop, "conn.per_ip")
			for _, r := range rels {
				r()
			}
			d, rel := g.Connect(v6(1, 2, 0x44), false)
			wantVerdict(t, "after release", d, Accept, "")
			rel()
		}},
		{"a trusted LAN's /64 is counted per address", Config{MaxConnsPerIP: 3}, func(t *testing.T, g *Guard) {
			for i := range 20 {
				d, rel := g.Connect(v6(1, 2, i+1), true)
				wantVerdict(t, "trusted host "+strconv.Itoa(i+1), d, Accept, "")
				defer rel()
			}
		}},
		{"inbound mail rotating through a /64 shares one rate", Config{InboundMsgsPerMinute: 5}, func(t *testing.T, g *Guard) {
			for i := range 5 {
				s := Sender{IP: v6(1, 2, i+1), From: "x@ext.test"}
				wantVerdict(t, "message "+strconv.Itoa(i+1), g.Message(mail(s, i, "a@corp.test")), Accept, "")
			}
			s := Sender{IP: v6(1, 2, 0x66), From: "x@ext.test"}
			wantVerdict(t, "6th", g.Message(mail(s, 6, "a@corp.test")), Defer, "rate.msgs_per_minute")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := newTestGuard(t, tc.cfg, nil)
			tc.run(t, g)
		})
	}
}

// throttledAlerts returns the alerts that opened a throttle episode.
func throttledAlerts(h *fakeHooks) []Alert {
	var out []Alert
	for _, a := range h.alertsOf("throttled") {
		if a.Rule == decThrottled.Rule {
			out = append(out, a)
		}
	}
	return out
}

func TestAccountThrottle(t *testing.T) {
	home := addr("198.51.100.20")
	tests := []struct {
		name  string
		user  string
		owner bool // the account has logged in from home
	}{
		{"existing account", "dana@corp.test", true},
		{"name that does not exist", "ghost@corp.test", false},
		{"IPv6 owner", "erin@corp.test", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			home := home
			if tc.name == "IPv6 owner" {
				home = v6(0x42, 1, 1)
			}
			if tc.owner {
				wantVerdict(t, "owner's login", g.AuthResult(home, tc.user, true), Accept, "")
			}
			// Nine guesses from nine networks: not yet.
			for i := range 9 {
				wantVerdict(t, "guess "+strconv.Itoa(i+1), g.AuthResult(otherNet(i), tc.user, false), Accept, "")
				clk.Advance(30 * time.Second)
			}
			wantVerdict(t, "new network before the threshold", g.AuthCheck(otherNet(100), tc.user), Accept, "")
			wantVerdict(t, "10th guess", g.AuthResult(otherNet(9), tc.user, false), Accept, "")

			// Throttled from every network the account never used,
			// whatever the password.
			d := g.AuthCheck(otherNet(101), tc.user)
			wantVerdict(t, "new network", d, Defer, "auth.account_throttle")
			if d.Code != 454 || d.Enhanced != [3]int{4, 7, 0} || d.Text != "Temporary authentication failure" {
				t.Fatalf("throttle reply %d %v %q, want 454 4.7.0 Temporary authentication failure", d.Code, d.Enhanced, d.Text)
			}
			right := g.AuthResult(otherNet(102), tc.user, true)
			wrong := g.AuthResult(otherNet(103), tc.user, false)
			if right != wrong || right != decThrottled {
				t.Fatalf("right password %+v, wrong password %+v: want both the throttle reply", right, wrong)
			}
			if tc.owner {
				// The owner, from a network it has used, is not affected.
				wantVerdict(t, "owner check", g.AuthCheck(home, tc.user), Accept, "")
				wantVerdict(t, "owner login", g.AuthResult(home, tc.user, true), Accept, "")
			}
			if g.IsSuspended(tc.user) {
				t.Fatal("a throttle must not suspend")
			}
			// More guesses keep it throttled, with one alert per episode.
			for i := range 30 {
				g.AuthResult(otherNet(200+i), tc.user, false)
				clk.Advance(20 * time.Second)
			}
			wantVerdict(t, "still throttled", g.AuthCheck(otherNet(104), tc.user), Defer, "auth.account_throttle")
			flush(g)
			if a := throttledAlerts(hooks); len(a) != 1 || a[0].User != tc.user || a[0].Counts["failures_15m"] != 10 {
				t.Fatalf("throttle alerts = %+v, want one for the episode", a)
			}
			if a := hooks.alertsOf("throttled"); len(a) != 2 {
				t.Fatalf("throttled alerts = %+v, want the episode and the refused right password", a)
			}

			// Quiet for the throttle period and the window: over.
			clk.Advance(31 * time.Minute)
			wantVerdict(t, "after the attack", g.AuthCheck(otherNet(105), tc.user), Accept, "")
			if tc.owner {
				wantVerdict(t, "owner from a new network after the attack", g.AuthResult(otherNet(105), tc.user, true), Accept, "")
			}
			// A new attack is a new episode.
			for i := range 10 {
				g.AuthResult(otherNet(300+i), tc.user, false)
			}
			wantVerdict(t, "second attack", g.AuthCheck(otherNet(106), tc.user), Defer, "auth.account_throttle")
			flush(g)
			if a := throttledAlerts(hooks); len(a) != 2 {
				t.Fatalf("throttle alerts = %d, want 2 for two episodes", len(a))
			}
		})
	}
}

func TestNoLockoutByOutsiders(t *testing.T) {
	home := addr("198.51.100.20")
	const u = "dana@corp.test"
	tests := []struct {
		name     string
		failures []netip.Addr
		owner    netip.Addr // the owner's login after the failures, from a network new to the account
	}{
		{"3 failures from 3 unrelated networks", []netip.Addr{otherNet(0), otherNet(1), otherNet(2)}, addr("100.64.7.7")},
		{"9 failures from unrelated networks", func() []netip.Addr {
			var a []netip.Addr
			for i := range 9 {
				a = append(a, otherNet(i))
			}
			return a
		}(), addr("100.64.7.7")},
		{"5 failures from one unrelated network", []netip.Addr{otherNet(0), otherNet(0), otherNet(0), otherNet(0), addr("203.0.0.10")}, addr("100.64.7.7")},
		{"IPv6: failures from other /48s", []netip.Addr{v6(1, 1, 1), v6(2, 1, 1), v6(3, 1, 1), v6(4, 1, 1)}, v6(9, 1, 1)},
		{"IPv6: failures from another /64 of the owner's new /48 are a different source", []netip.Addr{v6(1, 1, 1), v6(2, 1, 1), v6(9, 0x77, 1)}, v6(9, 1, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			wantVerdict(t, "owner at home", g.AuthResult(home, u, true), Accept, "")
			clk.Advance(time.Hour)
			for i, ip := range tc.failures {
				g.AuthResult(ip, u, false)
				if i == 0 {
					clk.Advance(time.Minute)
				}
			}
			wantVerdict(t, "owner from a new network", g.AuthResult(tc.owner, u, true), Accept, "")
			if g.IsSuspended(u) {
				t.Fatal("outsiders' failures got the owner suspended")
			}
			wantVerdict(t, "owner at home", g.AuthResult(home, u, true), Accept, "")
			flush(g)
			if a := hooks.alertsOf("suspended"); len(a) != 0 {
				t.Fatalf("suspension alerts %+v", a)
			}
		})
	}
}

// TestTheftStillSuspends: the lockout-proofing keeps the S7 rules that
// catch a thief.
func TestTheftStillSuspends(t *testing.T) {
	const u = "dana@corp.test"
	home := addr("198.51.100.20")
	office := addr("192.0.2.10")
	phone := addr("172.20.5.5")
	tests := []struct {
		name string
		run  func(t *testing.T, g *Guard, clk *fakeClock) Decision // the thief's (or owner's) last login
		rule string                                                // "" for no suspension
	}{
		{"failures then success from one address", func(t *testing.T, g *Guard, clk *fakeClock) Decision {
			for range 3 {
				g.AuthResult(addr("100.64.7.7"), u, false)
			}
			return g.AuthResult(addr("100.64.7.7"), u, true)
		}, "login.fail_then_success"},
		{"failures from one network, success from another address of it", func(t *testing.T, g *Guard, clk *fakeClock) Decision {
			for i := range 3 {
				g.AuthResult(addr(fmt.Sprintf("100.64.7.%d", 10+i)), u, false)
			}
			return g.AuthResult(addr("100.64.7.99"), u, true)
		}, "login.fail_then_success"},
		{"IPv6: failures from /64s of one /48, success from another", func(t *testing.T, g *Guard, clk *fakeClock) Decision {
			for i := range 3 {
				g.AuthResult(v6(0x66, i+1, 1), u, false)
			}
			return g.AuthResult(v6(0x66, 9, 1), u, true)
		}, "login.fail_then_success"},
		{"a storm of logins from new networks", func(t *testing.T, g *Guard, clk *fakeClock) Decision {
			wantVerdict(t, "1st", g.AuthResult(otherNet(1), u, true), Accept, "")
			clk.Advance(time.Minute)
			wantVerdict(t, "2nd", g.AuthResult(otherNet(2), u, true), Accept, "")
			clk.Advance(time.Minute)
			return g.AuthResult(otherNet(3), u, true)
		}, "login.networks"},
		{"the owner's established networks are no storm", func(t *testing.T, g *Guard, clk *fakeClock) Decision {
			// office and phone, like home, were used yesterday and today
			wantVerdict(t, "office", g.AuthResult(office, u, true), Accept, "")
			clk.Advance(4 * time.Minute)
			wantVerdict(t, "phone", g.AuthResult(phone, u, true), Accept, "")
			clk.Advance(4 * time.Minute)
			return g.AuthResult(home, u, true)
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			for range 2 { // two days at home, at the office, on the phone
				for _, ip := range []netip.Addr{home, office, phone} {
					wantVerdict(t, "owner", g.AuthResult(ip, u, true), Accept, "")
					clk.Advance(time.Hour)
				}
				clk.Advance(21 * time.Hour)
			}
			d := tc.run(t, g, clk)
			if tc.rule == "" {
				wantVerdict(t, "last login", d, Accept, "")
				if g.IsSuspended(u) {
					t.Fatal("suspended")
				}
				return
			}
			wantVerdict(t, "thief's login", d, Reject, tc.rule)
			if d.Code != 535 || d.Text != InvalidCredentials.Text {
				t.Fatalf("thief's reply %d %q, want the wrong-password reply", d.Code, d.Text)
			}
			if !g.IsSuspended(u) {
				t.Fatal("not suspended")
			}
			flush(g)
			if a := hooks.alertsOf("suspended"); len(a) != 1 || a[0].Rule != tc.rule {
				t.Fatalf("suspension alerts %+v", a)
			}
		})
	}
}

// TestSuspendedOwnerKeepsOwnNetworks: an automatic suspension refuses
// every network but the owner's (used on two days or more); the
// administrator's refuses all.
func TestSuspendedOwnerKeepsOwnNetworks(t *testing.T) {
	const u = "dana@corp.test"
	home := addr("198.51.100.20")   // used on two days: the owner's
	office := addr("192.0.2.10")    // used once
	thief := addr("100.64.7.7")     // never used
	homeV6 := v6(0x42, 1, 1)        // the owner's, IPv6
	homeV6b := v6(0x42, 0xbeef, 77) // another /64 of the same /48
	g, clk, hooks := newTestGuard(t, Config{}, nil)
	for _, ip := range []netip.Addr{home, homeV6} {
		wantVerdict(t, "day 1", g.AuthResult(ip, u, true), Accept, "")
		clk.Advance(time.Hour)
	}
	clk.Advance(22 * time.Hour)
	for _, ip := range []netip.Addr{home, homeV6, office} {
		wantVerdict(t, "day 2", g.AuthResult(ip, u, true), Accept, "")
		clk.Advance(time.Hour)
	}

	// The thief guesses and gets in: suspended.
	for range 3 {
		g.AuthResult(thief, u, false)
	}
	wantVerdict(t, "thief", g.AuthResult(thief, u, true), Reject, "login.fail_then_success")
	if !g.IsSuspended(u) {
		t.Fatal("not suspended")
	}
	clk.Advance(time.Minute)
	wantVerdict(t, "thief again, next address", g.AuthResult(addr("100.64.7.8"), u, true), Reject, "login.fail_then_success")
	wantVerdict(t, "owner at home", g.AuthCheck(home, u), Accept, "")
	wantVerdict(t, "owner logs in at home", g.AuthResult(home, u, true), Accept, "")
	wantVerdict(t, "owner at home over IPv6", g.AuthResult(homeV6b, u, true), Accept, "")
	wantVerdict(t, "office (used once)", g.AuthResult(office, u, true), Reject, "login.fail_then_success")
	// Suspended still means its mail is held for review.
	wantVerdict(t, "mail from home", g.Message(mail(Sender{IP: home, User: u, From: u}, 0, "x@ext.test")), Hold, "login.fail_then_success")
	// Logins on later days from the thief's network never make it the owner's.
	clk.Advance(24 * time.Hour)
	wantVerdict(t, "thief the next day", g.AuthResult(addr("100.64.7.9"), u, true), Reject, "login.fail_then_success")
	wantVerdict(t, "owner the next day", g.AuthResult(home, u, true), Accept, "")
	flush(g)
	if a := hooks.alertsOf("suspended"); len(a) != 1 {
		t.Fatalf("suspension alerts %+v", a)
	}

	// The administrator's suspension spares nobody.
	g.Release(u)
	g.Suspend(u, "")
	wantVerdict(t, "home under an admin suspension", g.AuthResult(home, u, true), Reject, "admin")
}

// reply is what a front end answers: the guard's refusal, else 235 or the
// wrong-password reply.
func reply(d Decision, ok bool) string {
	switch {
	case d.Verdict != Accept:
		return fmt.Sprintf("%d %d.%d.%d %s", d.Code, d.Enhanced[0], d.Enhanced[1], d.Enhanced[2], d.Text)
	case ok:
		return "235"
	}
	return reply(InvalidCredentials, false)
}

// TestNoPasswordOracle: once a login is refused for its name, the replies
// to right and to wrong passwords are the same, attempt after attempt; and
// a suspended account answers like a name that does not exist.
func TestNoPasswordOracle(t *testing.T) {
	const u = "dana@corp.test"
	home := addr("198.51.100.20")
	attacker := addr("100.64.7.7")
	setups := []struct {
		name  string
		setup func(g *Guard, clk *fakeClock)
	}{
		{"throttled", func(g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			for i := range 10 {
				g.AuthResult(otherNet(i), u, false)
			}
		}},
		{"pair blocked", func(g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			for range 5 {
				g.AuthResult(attacker, u, false)
			}
		}},
		{"suspended", func(g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			clk.Advance(time.Hour)
			for i := range 3 {
				g.AuthResult(otherNet(i), u, true)
			}
		}},
		{"suspended by the administrator", func(g *Guard, clk *fakeClock) {
			g.AuthResult(home, u, true)
			g.Suspend(u, "")
		}},
	}
	attempts := func(g *Guard, user string, ok bool) []string {
		var out []string
		for range 7 {
			out = append(out, reply(g.AuthResult(attacker, user, ok), ok))
		}
		return out
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			g1, clk1, _ := newTestGuard(t, Config{}, nil)
			g2, clk2, _ := newTestGuard(t, Config{}, nil)
			s.setup(g1, clk1)
			s.setup(g2, clk2)
			if s.name != "throttled" && s.name != "pair blocked" && !g1.IsSuspended(u) {
				t.Fatal("setup did not suspend")
			}
			right, wrong := attempts(g1, u, true), attempts(g2, u, false)
			if fmt.Sprint(right) != fmt.Sprint(wrong) {
				t.Fatalf("replies differ:\nright password %q\nwrong password %q", right, wrong)
			}
			if right[0] == "235" {
				t.Fatalf("setup did not refuse: %q", right)
			}
		})
	}
	t.Run("suspended account and unknown name", func(t *testing.T) {
		g, clk, _ := newTestGuard(t, Config{}, nil)
		g.AuthResult(home, u, true)
		clk.Advance(time.Hour)
		for i := range 3 {
			g.AuthResult(otherNet(i), u, true)
		}
		if !g.IsSuspended(u) {
			t.Fatal("not suspended")
		}
		suspended := attempts(g, u, true)
		unknown := attempts(g, "nobody@corp.test", false)
		if fmt.Sprint(suspended) != fmt.Sprint(unknown) {
			t.Fatalf("replies differ:\nsuspended account %q\nunknown name      %q", suspended, unknown)
		}
	})
}

// TestNamesBounded: failures for random names cannot grow memory, and
// cannot push an account under attack out of its throttle either.
func TestNamesBounded(t *testing.T) {
	const max = 1000
	g, _, _ := newTestGuard(t, Config{MaxTracked: max, AuthUsersPerNet: 1 << 20, AuthFailsPerIP: 1 << 20}, nil)
	const u = "dana@corp.test"
	for i := range 10 {
		g.AuthResult(otherNet(i), u, false)
	}
	for i := range 50_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		g.AuthResult(ip, fmt.Sprintf("random%d@corp.test", i), false)
		if i%200 == 0 {
			wantVerdict(t, "target under attack", g.AuthResult(otherNet(1000+i), u, true), Defer, "auth.account_throttle")
		}
	}
	wantVerdict(t, "target at the end", g.AuthCheck(otherNet(7), u), Defer, "auth.account_throttle")
	g.mu.Lock()
	n := g.names.len()
	g.mu.Unlock()
	if n > max {
		t.Fatalf("%d login names tracked, bound %d", n, max)
	}
	if len(g.accounts) != 0 {
		t.Fatalf("%d accounts created by failures", len(g.accounts))
	}
}

func TestAccountStateSurvivesRestart(t *testing.T) {
	const u = "dana@corp.test"
	home := addr("198.51.100.20")
	st := &memStore{}
	g, clk, _ := newTestGuard(t, Config{}, st)
	g.AuthResult(home, u, true)
	clk.Advance(24 * time.Hour)
	g.AuthResult(home, u, true)
	for i := range 10 {
		g.AuthResult(otherNet(i), u, false)
	}
	for range 3 {
		g.AuthResult(otherNet(50), "ghost@corp.test", false)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	g2, clk2, _ := newTestGuard(t, Config{}, st)
	clk2.now = clk.now
	wantVerdict(t, "throttle after restart", g2.AuthCheck(otherNet(99), u), Defer, "auth.account_throttle")
	wantVerdict(t, "owner after restart", g2.AuthResult(home, u, true), Accept, "")
	// The saved counter of a name below the threshold still counts.
	for i := range 6 {
		g2.AuthResult(otherNet(60+i), "ghost@corp.test", false)
	}
	wantVerdict(t, "ghost: 3 + 7 failures", g2.AuthResult(otherNet(70), "ghost@corp.test", false), Accept, "")
	wantVerdict(t, "ghost throttled", g2.AuthCheck(otherNet(71), "ghost@corp.test"), Defer, "auth.account_throttle")
	// Home is still the owner's network (two days): a suspension spares it.
	g2.Suspend(u, "login.networks")
	wantVerdict(t, "owner's network after restart", g2.AuthResult(home, u, true), Accept, "")
}

func TestThrottleListedAndReleased(t *testing.T) {
	const u = "dana@corp.test"
	g, _, hooks := newTestGuard(t, Config{}, nil)
	for i := range 10 {
		g.AuthResult(otherNet(i), u, false)
	}
	snap := g.Snapshot()
	if len(snap.Throttled) != 1 || snap.Throttled[0].User != u || snap.Throttled[0].Failures != 10 ||
		!snap.Throttled[0].Since.Equal(t0) || !snap.Throttled[0].Until.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("throttled = %+v", snap.Throttled)
	}
	if !g.Release(u) {
		t.Fatal("Release of a throttled name = false")
	}
	wantVerdict(t, "after release", g.AuthCheck(otherNet(50), u), Accept, "")
	if s := g.Snapshot(); len(s.Throttled) != 0 {
		t.Fatalf("throttled after release = %+v", s.Throttled)
	}
	flush(g)
	if a := hooks.alertsOf("released"); len(a) != 1 || a[0].Rule != "auth.account_throttle" {
		t.Fatalf("released alerts = %+v", a)
	}
}
