package guard

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestConnectionPoolsIsolated: a flood of outside connections that fills
// port 25's budget refuses neither submission nor the trusted LAN on port
// 25; each pool and class has its own budget, and per-IP caps are per pool.
func TestConnectionPoolsIsolated(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{MaxConnections: 50, MaxConnsPerIP: 2, MaxConnsPerNet: 1000, ConnsPerMinute: 100000}, nil)
	var rels []func()
	defer func() {
		for _, r := range rels {
			r()
		}
	}()
	// 50 outsiders on 25, from many networks.
	for i := range 50 {
		ip := netip.MustParseAddr(fmt.Sprintf("198.51.%d.%d", i/200, 1+i%200))
		d, rel := g.ConnectTo("smtp", ip, false)
		if d.Verdict != Accept {
			t.Fatalf("outsider %d refused early: %+v", i, d)
		}
		rels = append(rels, rel)
	}
	if d, _ := g.ConnectTo("smtp", netip.MustParseAddr("203.0.113.9"), false); d.Verdict != Drop || d.Rule != decConnGlobal.Rule {
		t.Fatalf("51st outsider on smtp: %+v, want the pool cap", d)
	}
	for _, tc := range []struct {
		pool    Pool
		ip      string
		trusted bool
	}{
		{"submission", "203.0.113.9", false}, // a user on the road
		{"submissions", "203.0.113.9", false},
		{"smtp", "10.0.0.5", true}, // the office LAN on port 25
		{"imap", "198.51.0.1", false},
	} {
		d, rel := g.ConnectTo(tc.pool, netip.MustParseAddr(tc.ip), tc.trusted)
		if d.Verdict != Accept {
			t.Errorf("%s from %s (trusted %v) refused while smtp is full: %+v", tc.pool, tc.ip, tc.trusted, d)
			continue
		}
		rels = append(rels, rel)
	}
	// Per-IP caps are per pool too: an address at its cap on 25 still
	// reaches submission (a NAT shared by an attacker and a user).
	ip := netip.MustParseAddr("192.0.2.77")
	g2, _, _ := newTestGuard(t, Config{MaxConnections: 50, MaxConnsPerIP: 2, MaxConnsPerNet: 1000, ConnsPerMinute: 100000}, nil)
	for range 2 {
		d, rel := g2.ConnectTo("smtp", ip, false)
		if d.Verdict != Accept {
			t.Fatal(d)
		}
		defer rel()
	}
	if d, _ := g2.ConnectTo("smtp", ip, false); d.Verdict != Drop {
		t.Fatalf("third connection of one IP on smtp accepted")
	}
	if d, rel := g2.ConnectTo("submission", ip, false); d.Verdict != Accept {
		t.Fatalf("submission refused for an IP at its smtp cap: %+v", d)
	} else {
		rel()
	}
}

// TestPoolConnFactor: a pool's factor raises its per-IP cap (an office
// NAT with many mail clients) and leaves other pools' caps alone.
func TestPoolConnFactor(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{MaxConnections: 1000, MaxConnsPerIP: 2, MaxConnsPerNet: 1000, ConnsPerMinute: 100000,
		PoolConnFactor: map[Pool]int{"imaps": 5}}, nil)
	ip := netip.MustParseAddr("192.0.2.8")
	for pool, limit := range map[Pool]int{"imaps": 10, "smtp": 2} {
		var rels []func()
		for i := range limit {
			d, rel := g.ConnectTo(pool, ip, false)
			if d.Verdict != Accept {
				t.Fatalf("%s connection %d refused below the cap %d: %+v", pool, i+1, limit, d)
			}
			rels = append(rels, rel)
		}
		if d, _ := g.ConnectTo(pool, ip, false); d.Verdict != Drop || d.Rule != decConnPerIP.Rule {
			t.Errorf("%s connection %d: %+v, want the per-IP cap", pool, limit+1, d)
		}
		for _, r := range rels {
			r()
		}
	}
}
