package guard

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentUse exercises every entry point from several goroutines;
// run with -race it checks the locking.
func TestConcurrentUse(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{HoldCap: 50}, &memStore{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				ip := netip.AddrFrom4([4]byte{10, 0, byte(w), byte(i % 7)})
				d, rel := g.Connect(ip, true)
				if d.Verdict == Accept {
					defer rel()
				}
				s := Sender{IP: ip, From: fmt.Sprintf("w%d@corp.test", w), Trusted: true}
				if i%3 == 0 {
					s.User = fmt.Sprintf("user%d@corp.test", w)
					g.AuthResult(ip, s.User, i%2 == 0)
					g.AuthCheck(ip, s.User)
				}
				g.Rcpt(s, "r@ext.test", i%5 != 0)
				g.Message(mail(s, i, "r@ext.test"))
				switch i % 50 {
				case 10:
					g.Snapshot()
					g.LastLogins()
					g.TopSenders(5)
				case 20:
					g.Ban(netip.PrefixFrom(ip, 32), 0, "")
					g.Unban(netip.PrefixFrom(ip, 32))
				case 30:
					g.Release(ip.String())
				case 40:
					_ = g.save()
					g.sweep()
				}
			}
		}()
	}
	wg.Wait()
	flush(g)
}

func BenchmarkConnect(b *testing.B) {
	ips := make([]netip.Addr, 1024)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)})
	}
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"accept", Config{ConnsPerMinute: 1 << 30}},
		{"flood-refused", Config{ConnsPerMinute: 1}}, // every connection after the first per IP is refused
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, err := New(bc.cfg, nil, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, rel := g.Connect(ips[i%len(ips)], false)
				rel()
				i++
			}
		})
	}
}

func BenchmarkMessage(b *testing.B) {
	big := Limits{MsgsPerMinute: 1 << 30, RcptsPerMinute: 1 << 30, RcptsPerHour: 1 << 30, RcptsPerDay: 1 << 30, NewRcptsPerMinute: 1 << 30}
	g, err := New(Config{Local: big}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	rcpts := rcptList("r", 3)
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := next.Add(1)
		s := Sender{IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}), From: fmt.Sprintf("pc%d@corp.test", n), Trusted: true}
		m := Message{Sender: s, Rcpts: rcpts, Subject: "report"}
		for pb.Next() {
			if d := g.Message(m); d.Verdict != Accept {
				b.Fatalf("decision %+v", d)
			}
		}
	})
}

func BenchmarkBanLookup(b *testing.B) {
	g, err := New(Config{}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 10_000 {
		bits := []int{32, 24, 16}[i%3]
		ip := netip.AddrFrom4([4]byte{byte(r.IntN(224)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		g.Ban(netip.PrefixFrom(ip, bits), 0, "bench")
	}
	flush(g)
	probes := make([]netip.Addr, 4096)
	for i := range probes {
		probes[i] = netip.AddrFrom4([4]byte{byte(r.IntN(224)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		g.Banned(probes[i%len(probes)])
		i++
	}
}
