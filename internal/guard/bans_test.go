package guard

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestBanBackoffAndExpiry(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		gaps  []time.Duration // wait after each ban expires before the next one
		wants []time.Duration // length of each successive ban
	}{
		{"×4 per strike", Config{}, []time.Duration{time.Minute, time.Minute, time.Minute},
			[]time.Duration{10 * time.Minute, 40 * time.Minute, 160 * time.Minute, 640 * time.Minute}},
		{"capped", Config{BanBase: time.Minute, BanMax: 20 * time.Minute}, []time.Duration{0, 0, 0},
			[]time.Duration{time.Minute, 4 * time.Minute, 16 * time.Minute, 20 * time.Minute}},
		{"strikes forgotten 30 days after expiry", Config{}, []time.Duration{29 * 24 * time.Hour, 31 * 24 * time.Hour},
			[]time.Duration{10 * time.Minute, 40 * time.Minute, 10 * time.Minute}},
	}
	p := netip.MustParsePrefix("203.0.113.66/32")
	ip := p.Addr()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, clk, _ := newTestGuard(t, tc.cfg, nil)
			for i, want := range tc.wants {
				start := clk.Now()
				g.Ban(p, 0, "test")
				b, ok := g.Banned(ip)
				if !ok || !b.Expires.Equal(start.Add(want)) || b.Rule != "test" {
					t.Fatalf("ban %d = %+v %v, want %v long", i+1, b, ok, want)
				}
				clk.Advance(want - time.Second)
				if _, ok := g.Banned(ip); !ok {
					t.Fatalf("ban %d expired early", i+1)
				}
				clk.Advance(time.Second)
				if _, ok := g.Banned(ip); ok {
					t.Fatalf("ban %d did not expire", i+1)
				}
				if d, _ := g.Connect(ip, false); d.Verdict != Accept {
					t.Fatalf("connect after expiry = %+v", d)
				}
				g.sweep()
				if i < len(tc.gaps) {
					clk.Advance(tc.gaps[i])
				}
			}
		})
	}
}

func TestBanNeverShortened(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	p := netip.MustParsePrefix("192.0.2.0/24")
	g.Ban(p, 24*time.Hour, "")
	g.Ban(p, time.Minute, "again")
	b, ok := g.Banned(addr("192.0.2.1"))
	if !ok || !b.Expires.Equal(t0.Add(24*time.Hour)) || b.Strikes != 2 {
		t.Fatalf("ban = %+v", b)
	}
}

func TestBanLookupByCIDR(t *testing.T) {
	g, clk, _ := newTestGuard(t, Config{}, nil)
	g.Ban(netip.MustParsePrefix("192.0.2.77/24"), time.Hour, "") // masked to /24
	g.Ban(netip.MustParsePrefix("198.51.100.7/32"), time.Hour, "")
	g.Ban(netip.MustParsePrefix("2001:db8:1::/48"), time.Hour, "")
	g.Ban(netip.MustParsePrefix("::ffff:100.64.0.0/112"), time.Hour, "") // = 100.64.0.0/16
	g.Ban(netip.MustParsePrefix("10.0.0.0/8"), time.Minute, "short")
	clk.Advance(2 * time.Minute) // the /8 ban has expired
	tests := []struct {
		ip   string
		cidr string // "" = not banned
	}{
		{"192.0.2.55", "192.0.2.0/24"},
		{"::ffff:192.0.2.9", "192.0.2.0/24"},
		{"192.0.3.1", ""},
		{"198.51.100.7", "198.51.100.7/32"},
		{"198.51.100.8", ""},
		{"2001:db8:1:2::5", "2001:db8:1::/48"},
		{"2001:db8:2::1", ""},
		{"100.64.200.1", "100.64.0.0/16"},
		{"10.1.2.3", ""},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			b, ok := g.Banned(addr(tc.ip))
			if ok != (tc.cidr != "") || b.CIDR != tc.cidr {
				t.Fatalf("Banned(%s) = %+v %v, want %q", tc.ip, b, ok, tc.cidr)
			}
			d, _ := g.Connect(addr(tc.ip), false)
			if (d.Verdict == Drop) != (tc.cidr != "") {
				t.Fatalf("Connect(%s) = %+v", tc.ip, d)
			}
		})
	}
	if !g.Unban(netip.MustParsePrefix("192.0.2.0/24")) {
		t.Fatal("Unban = false")
	}
	if _, ok := g.Banned(addr("192.0.2.55")); ok {
		t.Fatal("still banned after Unban")
	}
	if g.Unban(netip.MustParsePrefix("192.0.2.0/24")) {
		t.Fatal("second Unban = true")
	}
	if g.Unban(netip.MustParsePrefix("10.0.0.0/8")) {
		t.Fatal("Unban of an expired ban = true")
	}
	snap := g.Snapshot()
	if len(snap.Bans) != 3 {
		t.Fatalf("active bans = %+v, want 3", snap.Bans)
	}
	for _, b := range snap.Bans {
		if b.Rule != "admin" {
			t.Fatalf("ban %+v: rule %q, want admin", b, b.Rule)
		}
	}
}

func TestConnectLimits(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		trusted bool
		ip      func(i int) netip.Addr
		release bool // release each connection at once
		allowed int
		rule    string
	}{
		{name: "per IP", ip: func(int) netip.Addr { return addr("192.0.2.1") }, allowed: 20, rule: "conn.per_ip"},
		{name: "per IP, trusted ×4", trusted: true, ip: func(int) netip.Addr { return addr("10.0.0.1") }, allowed: 80, rule: "conn.per_ip"},
		{name: "per /24", ip: func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 200)}) },
			allowed: 60, rule: "conn.per_net"},
		{name: "per /48", ip: func(i int) netip.Addr { return addr(fmt.Sprintf("2001:db8:5:%x::1", i)) },
			allowed: 60, rule: "conn.per_net"},
		{name: "global", cfg: Config{MaxConnections: 5}, ip: func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, byte(i), 1}) },
			allowed: 5, rule: "conn.global"},
		{name: "rate", release: true, ip: func(int) netip.Addr { return addr("192.0.2.1") }, allowed: 120, rule: "conn.rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := newTestGuard(t, tc.cfg, nil)
			var rels []func()
			for i := range tc.allowed {
				d, rel := g.Connect(tc.ip(i), tc.trusted)
				wantVerdict(t, "connection "+fmt.Sprint(i+1), d, Accept, "")
				if tc.release {
					rel()
				} else {
					rels = append(rels, rel)
				}
			}
			d, rel := g.Connect(tc.ip(tc.allowed), tc.trusted)
			wantVerdict(t, "one more", d, Drop, tc.rule)
			if d.Code != 421 || d.Enhanced != [3]int{4, 7, 0} {
				t.Fatalf("reply %d %v, want 421 4.7.0", d.Code, d.Enhanced)
			}
			rel() // a refused connection's release is a no-op
			if tc.release {
				return
			}
			rels[0]()
			rels[0]() // twice: still frees one slot only
			d, rel = g.Connect(tc.ip(tc.allowed), tc.trusted)
			wantVerdict(t, "after a release", d, Accept, "")
			rels = append(rels, rel)
			d, _ = g.Connect(tc.ip(tc.allowed), tc.trusted)
			wantVerdict(t, "full again", d, Drop, tc.rule)
			for _, r := range rels[1:] {
				r()
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.conns) != 0 || len(g.connIP) != 0 || len(g.connNet) != 0 {
				t.Fatalf("after releasing all: %d pools, %d IPs, %d nets", len(g.conns), len(g.connIP), len(g.connNet))
			}
		})
	}
}

// TestOutsidersBounded: a million distinct client addresses, and many
// failing logins with made-up names, do not grow the guard's tables past
// their bounds.
func TestOutsidersBounded(t *testing.T) {
	const max = 50_000
	g, _, _ := newTestGuard(t, Config{MaxTracked: max, AuthUsersPerNet: 1 << 20, AuthFailsPerIP: 1 << 20}, nil)
	for i := range 1_000_000 {
		ip := netip.AddrFrom4([4]byte{byte(1 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		d, rel := g.Connect(ip, false)
		if d.Verdict != Accept {
			t.Fatalf("connection %d refused: %+v", i, d)
		}
		rel()
		if i%20 == 0 {
			g.AuthResult(ip, fmt.Sprintf("guess%d@corp.test", i), false)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, n := range map[string]int{"ips": g.ips.len(), "nets": g.nets.len(), "pairs": g.pairs.len(), "names": g.names.len()} {
		if n > max {
			t.Errorf("%s: %d entries, bound %d", name, n, max)
		}
	}
	if g.ips.len() != max {
		t.Errorf("ips = %d, want it full at %d", g.ips.len(), max)
	}
	if len(g.accounts) != 0 || len(g.connIP) != 0 || len(g.byIP) != 0 {
		t.Errorf("unbounded maps grew: %d accounts, %d connIP, %d byIP", len(g.accounts), len(g.connIP), len(g.byIP))
	}
}

func TestAutoBansBounded(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	g.Ban(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "") // an admin ban is never evicted
	lg := logBuf{log: g.log}
	g.mu.Lock()
	for i := range maxBans + 10 {
		ip := netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
		g.addBan(hostPrefix(ip), 0, "auth.bruteforce", true, nil, "", t0, t0.UnixMilli(), &lg)
	}
	n, auto := len(g.bans.m), g.bans.auto
	g.mu.Unlock()
	flush(g)
	if auto != maxBans || n != maxBans+1 {
		t.Fatalf("bans = %d (auto %d), want %d auto + 1 admin", n, auto, maxBans)
	}
	if _, ok := g.Banned(addr("192.0.2.1")); !ok {
		t.Fatal("admin ban evicted")
	}
}

func TestSweep(t *testing.T) {
	g, clk, _ := newTestGuard(t, Config{}, nil)
	p := netip.MustParsePrefix("203.0.113.0/24")
	g.Ban(p, time.Minute, "")
	g.Message(mail(pc5, 0, "x@ext.test"))
	g.Message(mail(alice, 0, "x@ext.test"))
	g.AuthResult(alice.IP, alice.User, true)

	clk.Advance(3 * 24 * time.Hour)
	g.sweep()
	g.mu.Lock()
	if len(g.bans.m) != 0 || len(g.bans.lens4) != 0 {
		t.Errorf("expired ban kept: %v, lengths %v", g.bans.m, g.bans.lens4)
	}
	if len(g.bans.strikes) != 1 {
		t.Errorf("strikes = %v, want kept for 30 days", g.bans.strikes)
	}
	if len(g.byIP)+len(g.byUser)+len(g.byFrom) != 0 {
		t.Errorf("idle counters kept: %d %d %d", len(g.byIP), len(g.byUser), len(g.byFrom))
	}
	if len(g.netLogins) != 2 || len(g.accounts) != 1 { // the /24 and the host
		t.Errorf("login memory dropped early: %v, %d accounts", g.netLogins, len(g.accounts))
	}
	g.mu.Unlock()

	clk.Advance(30 * 24 * time.Hour)
	g.sweep()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.bans.strikes) != 0 || len(g.netLogins) != 0 {
		t.Errorf("after 33 days: strikes %v, network logins %v", g.bans.strikes, g.netLogins)
	}
	if len(g.accounts) != 1 {
		t.Error("account forgotten: its login networks protect it from lock-out")
	}
}
