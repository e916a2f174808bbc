package dnsbl

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/miekg/dns"

	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/testdns"
)

// setup starts a test DNS server and returns it with a resolver pointed at
// it. Test records use TTL 0 so the resolver's own cache never hides a
// query from the counts.
func setup(t *testing.T) (*testdns.Server, *resolver.Resolver) {
	t.Helper()
	srv, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	res, err := resolver.New(srv.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return srv, res
}

func add(t *testing.T, srv *testdns.Server, rrs ...string) {
	t.Helper()
	for _, rr := range rrs {
		if err := srv.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
}

func queries(srv *testdns.Server) int { return srv.Queries("udp") + srv.Queries("tcp") }

func TestCheck(t *testing.T) {
	ip := netip.MustParseAddr("127.0.0.2")
	tests := []struct {
		name   string
		zones  []string
		setup  func(t *testing.T, srv *testdns.Server)
		want   Result
		cached bool
	}{
		{
			name:  "listed with reason",
			zones: []string{"bl.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv,
					"2.0.0.127.bl.test. 0 IN A 127.0.0.4",
					"2.0.0.127.bl.test. 0 IN A 127.0.0.2",
					`2.0.0.127.bl.test. 0 IN TXT "Listed: see" " https://bl.test/q?127.0.0.2"`)
			},
			want: Result{Listed: true, Zone: "bl.test",
				Codes:  []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.4")},
				Reason: "Listed: see https://bl.test/q?127.0.0.2"},
			cached: true,
		},
		{
			name:  "listed without TXT",
			zones: []string{"BL.test."},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv, "2.0.0.127.bl.test. 0 IN A 127.0.0.10")
			},
			want:   Result{Listed: true, Zone: "bl.test", Codes: []netip.Addr{netip.MustParseAddr("127.0.0.10")}},
			cached: true,
		},
		{
			name:   "NXDOMAIN is not listed",
			zones:  []string{"bl.test"},
			setup:  func(t *testing.T, srv *testdns.Server) {},
			cached: true,
		},
		{
			name:  "error code 127.255.255.x is not listed and not cached",
			zones: []string{"bl.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv, "2.0.0.127.bl.test. 0 IN A 127.255.255.254")
			},
		},
		{
			name:  "SERVFAIL fails open and is not cached",
			zones: []string{"bl.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv, "2.0.0.127.bl.test. 0 IN A 127.0.0.2")
				srv.SetRcode("2.0.0.127.bl.test.", dns.RcodeServerFailure)
			},
		},
		{
			name:  "answer outside 127/8 is not a listing",
			zones: []string{"bl.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv, "2.0.0.127.bl.test. 0 IN A 192.0.2.1")
			},
			cached: true,
		},
		{
			name:  "first zone in order wins",
			zones: []string{"one.test", "two.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv,
					"2.0.0.127.two.test. 0 IN A 127.0.0.3",
					"2.0.0.127.one.test. 0 IN A 127.0.0.2")
				// The second zone answers first; the first must still win.
				srv.SetDelay("2.0.0.127.one.test.", 100*time.Millisecond)
			},
			want:   Result{Listed: true, Zone: "one.test", Codes: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
			cached: true,
		},
		{
			name:  "later zone lists when earlier is clean",
			zones: []string{"one.test", "two.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				add(t, srv, "2.0.0.127.two.test. 0 IN A 127.0.0.3")
			},
			want:   Result{Listed: true, Zone: "two.test", Codes: []netip.Addr{netip.MustParseAddr("127.0.0.3")}},
			cached: true,
		},
		{
			name:  "listing wins over a failing zone",
			zones: []string{"one.test", "two.test"},
			setup: func(t *testing.T, srv *testdns.Server) {
				srv.SetRcode("2.0.0.127.one.test.", dns.RcodeServerFailure)
				add(t, srv, "2.0.0.127.two.test. 0 IN A 127.0.0.3")
			},
			want:   Result{Listed: true, Zone: "two.test", Codes: []netip.Addr{netip.MustParseAddr("127.0.0.3")}},
			cached: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, res := setup(t)
			tt.setup(t, srv)
			c := New(res, tt.zones, 0, nil)
			got := c.Check(context.Background(), ip)
			if !equal(got, tt.want) {
				t.Fatalf("Check = %+v, want %+v", got, tt.want)
			}
			if n := c.CacheLen(); (n == 1) != tt.cached {
				t.Fatalf("cache has %d entries, want cached=%v", n, tt.cached)
			}
		})
	}
}

func equal(a, b Result) bool {
	return a.Listed == b.Listed && a.Zone == b.Zone && a.Reason == b.Reason && slices.Equal(a.Codes, b.Codes)
}

func TestCheckTimeoutWithinBudget(t *testing.T) {
	srv, res := setup(t)
	add(t, srv,
		"2.0.0.127.slow.test. 0 IN A 127.0.0.2",
		"2.0.0.127.fast.test. 0 IN A 127.0.0.3")
	srv.SetDelay("2.0.0.127.slow.test.", 30*time.Second)
	const budget = 200 * time.Millisecond
	ip := netip.MustParseAddr("127.0.0.2")

	tests := []struct {
		name  string
		zones []string
		want  Result
	}{
		{"only a slow zone", []string{"slow.test"}, Result{}},
		// The slow zone comes first but never answers: the fast listing
		// counts once the budget is spent.
		{"slow zone before a listing one", []string{"slow.test", "fast.test"},
			Result{Listed: true, Zone: "fast.test", Codes: []netip.Addr{netip.MustParseAddr("127.0.0.3")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(res, tt.zones, budget, nil)
			start := time.Now()
			got := c.Check(context.Background(), ip)
			if d := time.Since(start); d > 3*budget {
				t.Fatalf("Check took %v, budget %v", d, budget)
			}
			if !equal(got, tt.want) {
				t.Fatalf("Check = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckDecidedEarly(t *testing.T) {
	srv, res := setup(t)
	add(t, srv,
		"2.0.0.127.one.test. 0 IN A 127.0.0.2",
		"2.0.0.127.two.test. 0 IN A 127.0.0.3")
	srv.SetDelay("2.0.0.127.two.test.", 30*time.Second)
	var logs syncBuffer
	const budget = 500 * time.Millisecond
	c := New(res, []string{"one.test", "two.test"}, budget, slog.New(slog.NewTextHandler(&logs, nil)))
	start := time.Now()
	r := c.Check(context.Background(), netip.MustParseAddr("127.0.0.2"))
	if d := time.Since(start); d >= budget {
		t.Fatalf("Check waited %v for a zone after the first zone listed the IP", d)
	}
	if r.Zone != "one.test" {
		t.Fatalf("Check = %+v, want listed by one.test", r)
	}
	// The abandoned query to two.test is not a zone failure. (miekg/dns
	// ends a UDP read at the context's deadline, not at its cancellation,
	// so the abandoned query returns only once the budget has passed.)
	time.Sleep(budget + 300*time.Millisecond)
	if strings.Contains(logs.String(), "zone failed") {
		t.Fatalf("abandoned query logged as a failure:\n%s", logs.String())
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.SyncBuffer

func TestCheckCallerContext(t *testing.T) {
	srv, res := setup(t)
	srv.SetDelay("2.0.0.127.bl.test.", 30*time.Second)
	c := New(res, []string{"bl.test"}, 10*time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan Result, 1)
	go func() { done <- c.Check(ctx, netip.MustParseAddr("127.0.0.2")) }()
	select {
	case r := <-done:
		if r.Listed {
			t.Fatalf("got %+v, want not listed", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Check ignored its context")
	}
}

func TestCheckCache(t *testing.T) {
	srv, res := setup(t)
	add(t, srv, "2.0.0.127.bl.test. 0 IN A 127.0.0.2")
	c := New(res, []string{"bl.test"}, 0, nil)
	now := time.Now()
	c.now = func() time.Time { return now }
	ctx := context.Background()
	listed := netip.MustParseAddr("127.0.0.2")
	clean := netip.MustParseAddr("127.0.0.3")

	steps := []struct {
		name     string
		advance  time.Duration
		ip       netip.Addr
		listed   bool
		newQuery bool
	}{
		{"listed, first", 0, listed, true, true},
		{"listed, cached", 0, listed, true, false},
		{"clean, first", 0, clean, false, true},
		{"clean, cached", 0, clean, false, false},
		{"clean after 9 min, cached", 9 * time.Minute, clean, false, false},
		{"clean after 11 min, asked again", 2 * time.Minute, clean, false, true},
		{"listed after 50 min, cached", 39 * time.Minute, listed, true, false},
		{"listed after 61 min, asked again", 11 * time.Minute, listed, true, true},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		before := queries(srv)
		r := c.Check(ctx, s.ip)
		if r.Listed != s.listed {
			t.Fatalf("%s: Listed = %v, want %v", s.name, r.Listed, s.listed)
		}
		if asked := queries(srv) > before; asked != s.newQuery {
			t.Fatalf("%s: asked DNS = %v, want %v", s.name, asked, s.newQuery)
		}
	}

	// The cached result is a copy: mutating it does not change the cache.
	r := c.Check(ctx, listed)
	r.Codes[0] = netip.MustParseAddr("10.0.0.1")
	if r2 := c.Check(ctx, listed); r2.Codes[0] != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("cache was modified through a returned Result: %v", r2.Codes)
	}
}

func TestCheckErrorsNotCached(t *testing.T) {
	srv, res := setup(t)
	srv.SetRcode("2.0.0.127.bl.test.", dns.RcodeServerFailure)
	var logs syncBuffer
	c := New(res, []string{"bl.test"}, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	ip := netip.MustParseAddr("127.0.0.2")
	for i := range 3 {
		before := queries(srv)
		if r := c.Check(context.Background(), ip); r.Listed {
			t.Fatalf("SERVFAIL gave %+v", r)
		}
		if queries(srv) == before {
			t.Fatalf("check %d: a failed lookup was served from the cache", i)
		}
	}
	// Logged, but once per zone per minute, not once per check.
	if n := strings.Count(logs.String(), "zone failed"); n != 1 {
		t.Fatalf("%d failure log lines for 3 failures, want 1:\n%s", n, logs.String())
	}
}

func TestCheckConcurrentDedupe(t *testing.T) {
	srv, res := setup(t)
	add(t, srv, "2.0.0.127.bl.test. 0 IN A 127.0.0.2")
	// Keep the first lookup in flight while the others arrive.
	srv.SetDelay("2.0.0.127.bl.test.", 300*time.Millisecond)
	c := New(res, []string{"bl.test"}, 5*time.Second, nil)
	ip := netip.MustParseAddr("127.0.0.2")

	const n = 20
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := range n {
		wg.Go(func() { results[i] = c.Check(context.Background(), ip) })
	}
	wg.Wait()
	for i, r := range results {
		if !r.Listed {
			t.Fatalf("caller %d: not listed", i)
		}
	}
	// One A query and one TXT query for all 20 callers.
	if q := queries(srv); q != 2 {
		t.Fatalf("%d DNS queries for %d concurrent checks, want 2", q, n)
	}
}

func TestReverse(t *testing.T) {
	tests := []struct {
		ip   string
		want string
	}{
		{"127.0.0.2", "2.0.0.127"},
		{"192.0.2.99", "99.2.0.192"},
		{"::ffff:192.0.2.99", "99.2.0.192"}, // Check unmaps first; reverse sees 4in6 as v6
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"},
		{"2001:db8:1234:5678:9abc:def0:1:ff", "f.f.0.0.1.0.0.0.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2"},
	}
	for _, tt := range tests {
		got := reverse(netip.MustParseAddr(tt.ip).Unmap())
		if got != tt.want {
			t.Errorf("reverse(%s) = %s, want %s", tt.ip, got, tt.want)
		}
		if n := strings.Count(got, ".") + 1; !netip.MustParseAddr(tt.ip).Unmap().Is4() && n != 32 {
			t.Errorf("reverse(%s) has %d labels, want 32", tt.ip, n)
		}
	}
}

func TestCheckIPv6AndMapped(t *testing.T) {
	srv, res := setup(t)
	add(t, srv,
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test. 0 IN A 127.0.0.2",
		"2.0.0.127.bl.test. 0 IN A 127.0.0.5")
	c := New(res, []string{"bl.test"}, 0, nil)
	for _, s := range []string{"2001:db8::1", "::ffff:127.0.0.2"} {
		if r := c.Check(context.Background(), netip.MustParseAddr(s)); !r.Listed {
			t.Errorf("%s: not listed", s)
		}
	}
	if r := c.Check(context.Background(), netip.MustParseAddr("2001:db8::2")); r.Listed {
		t.Errorf("2001:db8::2 listed: %+v", r)
	}
}

func TestCheckNoZonesOrInvalidIP(t *testing.T) {
	_, res := setup(t)
	if r := New(res, nil, 0, nil).Check(context.Background(), netip.MustParseAddr("127.0.0.2")); r.Listed {
		t.Fatal("listed without zones")
	}
	if r := New(res, []string{"bl.test"}, 0, nil).Check(context.Background(), netip.Addr{}); r.Listed {
		t.Fatal("zero Addr listed")
	}
}

func TestCacheBounded(t *testing.T) {
	c := New(nil, []string{"bl.test"}, 0, nil)
	c.limit = 64
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		c.finish(ip, &call{done: make(chan struct{})}, Result{}, true)
		if n := c.CacheLen(); n > c.limit {
			t.Fatalf("cache grew to %d entries, limit %d", n, c.limit)
		}
	}
	// The newest entry is always kept.
	c.mu.Lock()
	_, ok := c.cache[netip.AddrFrom4([4]byte{10, 0, 3, 231})]
	c.mu.Unlock()
	if !ok {
		t.Fatal("newest entry was evicted")
	}
}

func TestSanitizeReason(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"Listed by bl.test", "Listed by bl.test"},
		{"a\r\nb\x00c", "a b?c"},
		{"  spaced\t\tout  ", "spaced out"},
		{"caf\u00e9 \xff", "caf? ?"},
		{strings.Repeat("x", 500), strings.Repeat("x", maxReason)},
	}
	for _, tt := range tests {
		if got := sanitizeReason(tt.in); got != tt.want {
			t.Errorf("sanitizeReason(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
