package guard

import (
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// TestSiblingHostsCounted: a network the account logged in from once (a
// /24 or /48) is not a licence to guess. Its other hosts are anyone sharing
// the owner's carrier, cloud or VPN range; their failures count for the
// account and are throttled, pair-blocked and banned like any outsider's,
// while the exact host that logged in keeps working.
func TestSiblingHostsCounted(t *testing.T) {
	const u = "ceo@corp.test"
	tests := []struct {
		name    string
		owner   netip.Addr             // logs in once before the guessing
		sibling func(i int) netip.Addr // the i-th guessing host, same /24 or /48 as owner
		thief   netip.Addr             // the right password from yet another sibling
	}{
		{"IPv6 /64s of the owner's /48", v6(1, 1, 1), func(i int) netip.Addr { return v6(1, 2+i, 1+i%7) }, v6(1, 0x99, 1)},
		{"IPv4 addresses of the owner's /24", addr("198.51.100.20"), func(i int) netip.Addr { return addr("198.51.100." + strconv.Itoa(30+i)) }, addr("198.51.100.200")},
	}
	const hosts, perHost = 50, 99
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			wantVerdict(t, "owner login", g.AuthResult(tc.owner, u, true), Accept, "")
			clk.Advance(time.Minute)

			counted := 0 // wrong passwords that reached AuthResult
			for i := range hosts {
				ip := tc.sibling(i)
				for j := range perHost {
					d := Login(g, ip, u, func() bool { return false })
					if d.Verdict == Drop && d.Rule == decBannedLater.Rule {
						break // banned: the session is gone
					}
					counted++
					switch {
					case i == 0 && j < 4:
						wantVerdict(t, "first sibling's failure "+strconv.Itoa(j+1), d, Accept, "")
					case i == 0 && j == 4:
						wantVerdict(t, "first sibling's 5th failure (pair block)", d, Drop, "auth.bruteforce")
					case i > 0 && d.Verdict == Accept:
						t.Fatalf("sibling %v failure %d accepted after the account was throttled", ip, j+1)
					}
				}
				// The per-host limit is the plain one (20), not ×5: a sibling
				// of a network with recent logins gets no extra budget.
				wantVerdict(t, "sibling banned", g.AuthCheck(ip, u), Drop, "")
			}
			if max := hosts * g.conf().AuthFailsPerIP; counted > max {
				t.Fatalf("%d guesses counted, want at most %d", counted, max)
			}
			flush(g)
			if a := hooks.alertsOf("throttled"); len(a) != 1 || a[0].Rule != decThrottled.Rule {
				t.Fatalf("throttle alerts %+v, want 1", a)
			}

			// The right password from another sibling is refused like a
			// wrong one, and the administrator hears of it.
			wantVerdict(t, "right password from a sibling", Login(g, tc.thief, u, func() bool { return true }), Defer, "auth.account_throttle")
			flush(g)
			if a := alertsWithRule(hooks.alertsOf("throttled"), "auth.right_password_refused"); len(a) != 1 {
				t.Fatalf("right-password alerts %+v, want 1", a)
			}
			// The owner's own host still works, and nobody was suspended.
			wantVerdict(t, "owner's host", Login(g, tc.owner, u, func() bool { return true }), Accept, "")
			if g.IsSuspended(u) {
				t.Fatal("owner suspended")
			}
		})
	}
}

// TestOwnedNetworkFlood: a network that is the owner's by history (logins
// on two days) spares its hosts the throttle and the pair block, so an
// office where one colleague mistypes does not lock out the others; but
// past 5 × auth_fails_per_account failures in 15 minutes the guessing hosts
// are pair-blocked and the administrator is alerted.
func TestOwnedNetworkFlood(t *testing.T) {
	const u = "ceo@corp.test"
	tests := []struct {
		name    string
		owner   netip.Addr
		sibling func(i int) netip.Addr
	}{
		{"IPv6 /48", v6(1, 1, 1), func(i int) netip.Addr { return v6(1, 2+i, 1) }},
		{"IPv4 /24", addr("198.51.100.20"), func(i int) netip.Addr { return addr("198.51.100." + strconv.Itoa(30+i)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, hooks := newTestGuard(t, Config{}, nil)
			wantVerdict(t, "owner day 1", g.AuthResult(tc.owner, u, true), Accept, "")
			clk.Advance(25 * time.Hour)
			wantVerdict(t, "owner day 2", g.AuthResult(tc.owner, u, true), Accept, "")

			// 4 failures from each of 12 hosts: 48, below the flood bound.
			// Every one is accepted (counted, not refused).
			for i := range 12 {
				for j := range 4 {
					wantVerdict(t, "colleague "+strconv.Itoa(i)+" failure "+strconv.Itoa(j+1), g.AuthResult(tc.sibling(i), u, false), Accept, "")
				}
			}
			wantVerdict(t, "another colleague", g.AuthCheck(tc.sibling(20), u), Accept, "")
			// An unrelated network is throttled: the failures counted.
			wantVerdict(t, "outsider", g.AuthCheck(otherNet(3), u), Defer, "auth.account_throttle")

			// The flood: hosts that keep guessing get pair-blocked.
			wantVerdict(t, "49th failure", g.AuthResult(tc.sibling(0), u, false), Accept, "")
			wantVerdict(t, "50th failure", g.AuthResult(tc.sibling(0), u, false), Drop, "auth.bruteforce")
			wantVerdict(t, "flooding host blocked", g.AuthCheck(tc.sibling(0), u), Defer, "auth.bruteforce")
			wantVerdict(t, "quiet host fine", g.AuthCheck(tc.sibling(20), u), Accept, "")
			wantVerdict(t, "owner fine", Login(g, tc.owner, u, func() bool { return true }), Accept, "")
			flush(g)
			if a := alertsWithRule(hooks.alertsOf("throttled"), "auth.trusted_flood"); len(a) != 1 {
				t.Fatalf("flood alerts %+v, want 1", a)
			}
		})
	}
}

// TestTrustedHostSurvivesRestart: the hosts an account logged in from are
// saved, so after a restart the owner's host is still spared the throttle
// (and its per-host allowance) while its siblings are not.
func TestTrustedHostSurvivesRestart(t *testing.T) {
	const u = "dana@corp.test"
	home := v6(1, 1, 1)
	st := &memStore{}
	g, clk, _ := newTestGuard(t, Config{}, st)
	wantVerdict(t, "owner login", g.AuthResult(home, u, true), Accept, "")
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	g2, clk2, _ := newTestGuard(t, Config{}, st)
	clk2.now = clk.now
	for i := range 10 {
		g2.AuthResult(otherNet(i), u, false)
	}
	wantVerdict(t, "sibling /64 throttled", g2.AuthCheck(v6(1, 2, 1), u), Defer, "auth.account_throttle")
	wantVerdict(t, "owner's /64 after restart", Login(g2, v6(1, 1, 0x55), u, func() bool { return true }), Accept, "")
	// The owner's host keeps its ×5 per-host allowance: 20 more failures
	// from it (the plain per-host limit) do not ban it.
	for i := range 20 {
		wantVerdict(t, "owner mistypes "+strconv.Itoa(i+1), g2.AuthResult(home, "typo"+strconv.Itoa(i/4)+"@corp.test", false), Accept, "")
	}
}
