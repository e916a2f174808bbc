package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mamori-mail/mamori/internal/testdns"
)

func setup(t *testing.T, records ...string) (*testdns.Server, *Resolver) {
	t.Helper()
	s, err := testdns.Start(nil)
	if err != nil {
		t.Fatalf("testdns: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	for _, rr := range records {
		if err := s.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(s.Addr, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, r
}

func TestLookupMX(t *testing.T) {
	s, r := setup(t,
		"example.test. 60 IN MX 20 B.example.test.",
		"example.test. 60 IN MX 10 a.example.test.",
		"example.test. 60 IN MX 30 c.example.test.",
		"nullmx.test. 60 IN MX 0 .",
		"noMX.test. 60 IN A 192.0.2.1",
		"servfail.test. 60 IN MX 10 x.test.",
		"slow.test. 60 IN MX 10 x.test.",
	)
	s.SetRcode("servfail.test", dns.RcodeServerFailure)
	s.SetDelay("slow.test", 3*time.Second)

	tests := []struct {
		domain  string
		want    []MX
		wantErr []error
		notErr  []error
	}{
		{domain: "example.test", want: []MX{{"a.example.test", 10}, {"b.example.test", 20}, {"c.example.test", 30}}},
		{domain: "EXAMPLE.TEST.", want: []MX{{"a.example.test", 10}, {"b.example.test", 20}, {"c.example.test", 30}}},
		{domain: "nullmx.test", wantErr: []error{ErrNullMX}, notErr: []error{ErrNotFound, ErrTemporary}},
		{domain: "nomx.test", wantErr: []error{ErrNotFound}, notErr: []error{ErrNXDomain, ErrTemporary}},
		{domain: "missing.test", wantErr: []error{ErrNotFound, ErrNXDomain}, notErr: []error{ErrTemporary}},
		{domain: "servfail.test", wantErr: []error{ErrTemporary}, notErr: []error{ErrNotFound}},
		{domain: "slow.test", wantErr: []error{ErrTemporary}, notErr: []error{ErrNotFound}},
		{domain: "bad..name", wantErr: []error{ErrNotFound}},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			got, err := r.LookupMX(context.Background(), tc.domain)
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			for _, not := range tc.notErr {
				if errors.Is(err, not) {
					t.Errorf("err = %v, must not be %v", err, not)
				}
			}
			if tc.wantErr == nil && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLookupMXRandomizesEqualPreference(t *testing.T) {
	_, r := setup(t,
		"eq.test. 60 IN MX 10 one.eq.test.",
		"eq.test. 60 IN MX 10 two.eq.test.",
		"eq.test. 60 IN MX 5 first.eq.test.",
	)
	seen := map[string]bool{}
	for range 64 {
		mxs, err := r.LookupMX(context.Background(), "eq.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(mxs) != 3 || mxs[0].Host != "first.eq.test" {
			t.Fatalf("bad order %v", mxs)
		}
		seen[mxs[1].Host] = true
	}
	if !seen["one.eq.test"] || !seen["two.eq.test"] {
		t.Errorf("equal-preference hosts never reordered in 64 lookups: %v", seen)
	}
}

func TestLookupIP(t *testing.T) {
	s, r := setup(t,
		"both.test. 60 IN A 192.0.2.1",
		"both.test. 60 IN AAAA 2001:db8::1",
		"v4.test. 60 IN A 192.0.2.2",
		"v6.test. 60 IN AAAA 2001:db8::2",
		"txtonly.test. 60 IN TXT \"x\"",
		"alias.test. 60 IN CNAME v4.test.",
	)
	s.SetRcode("broken.test", dns.RcodeServerFailure)

	tests := []struct {
		host    string
		want    []string
		wantErr error
	}{
		{"both.test", []string{"192.0.2.1", "2001:db8::1"}, nil},
		{"v4.test", []string{"192.0.2.2"}, nil},
		{"v6.test", []string{"2001:db8::2"}, nil},
		{"alias.test", []string{"192.0.2.2"}, nil},
		{"192.0.2.9", []string{"192.0.2.9"}, nil},
		{"[2001:db8::9]", []string{"2001:db8::9"}, nil},
		{"txtonly.test", nil, ErrNotFound},
		{"missing.test", nil, ErrNotFound},
		{"broken.test", nil, ErrTemporary},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			got, err := r.LookupIP(context.Background(), tc.host)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(addrStrings(got), tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCombineIP(t *testing.T) {
	v4 := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	v6 := []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	tmp := fmt.Errorf("x: %w", ErrTemporary)
	nf := fmt.Errorf("x: %w", ErrNotFound)
	tests := []struct {
		name       string
		a, aaaa    []netip.Addr
		errA, errB error
		want       int
		wantErr    error
	}{
		{"both answer", v4, v6, nil, nil, 2, nil},
		{"AAAA fails temporarily, A answers", v4, nil, nil, tmp, 1, nil},
		{"A fails temporarily, AAAA answers", nil, v6, tmp, nil, 1, nil},
		{"one not found, other temporary", nil, nil, nf, tmp, 0, ErrTemporary},
		{"both not found", nil, nil, nf, nf, 0, ErrNotFound},
		{"no data on both", nil, nil, nil, nil, 0, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := combineIP("h.test", tc.a, tc.errA, tc.aaaa, tc.errB)
			if len(got) != tc.want {
				t.Errorf("got %v, want %d addresses", got, tc.want)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestLookupA(t *testing.T) {
	_, r := setup(t,
		"2.0.0.127.bl.test. 60 IN A 127.0.0.2",
		"2.0.0.127.bl.test. 60 IN AAAA ::1",
	)
	got, err := r.LookupA(context.Background(), "2.0.0.127.bl.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(addrStrings(got), []string{"127.0.0.2"}) {
		t.Errorf("got %v", got)
	}
	if _, err := r.LookupA(context.Background(), "3.0.0.127.bl.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("listed-not: err = %v, want ErrNotFound", err)
	}
}

func TestLookupTXTJoinsStringsAndFallsBackToTCP(t *testing.T) {
	s, r := setup(t, `spf.test. 60 IN TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"`)
	got, err := r.LookupTXT(context.Background(), "spf.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"v=spf1 ip4:192.0.2.0/24 -all"}) {
		t.Errorf("got %q", got)
	}
	if n := s.Queries("tcp"); n != 0 {
		t.Errorf("small answer used TCP (%d queries)", n)
	}

	// 30 records of ~200 bytes do not fit the UDP size we advertise.
	var want []string
	for i := range 30 {
		v := fmt.Sprintf("%02d-%s", i, strings.Repeat("y", 200))
		want = append(want, v)
		if err := s.Add(fmt.Sprintf("big.test. 60 IN TXT %q", v)); err != nil {
			t.Fatal(err)
		}
	}
	got, err = r.LookupTXT(context.Background(), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("got %d records, want %d", len(got), len(want))
	}
	if n := s.Queries("tcp"); n != 1 {
		t.Errorf("truncated answer: %d TCP queries, want 1", n)
	}
}

func TestCache(t *testing.T) {
	s, r := setup(t,
		"cached.test. 60 IN A 192.0.2.1",
		"uncached.test. 0 IN A 192.0.2.2",
	)
	ctx := context.Background()
	tests := []struct {
		name        string
		lookup      func() error
		wantQueries int // over two lookups
	}{
		{"positive ttl 60 cached", func() error { _, err := r.LookupA(ctx, "cached.test"); return err }, 1},
		{"ttl 0 not cached", func() error { _, err := r.LookupA(ctx, "uncached.test"); return err }, 2},
		{"nxdomain without soa not cached", func() error { _, err := r.LookupA(ctx, "gone.test"); return ignore(err, ErrNotFound) }, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Queries("udp")
			for range 2 {
				if err := tc.lookup(); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Queries("udp") - before; got != tc.wantQueries {
				t.Errorf("%d queries, want %d", got, tc.wantQueries)
			}
		})
	}

	// A cached answer is served even after the record changes, until expiry.
	s.Remove("cached.test")
	if _, err := r.LookupA(ctx, "cached.test"); err != nil {
		t.Errorf("cached answer lost: %v", err)
	}
	// Temporary failures are never cached.
	s.SetRcode("flaky.test", dns.RcodeServerFailure)
	if _, err := r.LookupA(ctx, "flaky.test"); !errors.Is(err, ErrTemporary) {
		t.Fatalf("err = %v", err)
	}
	s.SetRcode("flaky.test", dns.RcodeSuccess)
	if err := s.Add("flaky.test. 60 IN A 192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupA(ctx, "flaky.test"); err != nil {
		t.Errorf("SERVFAIL was cached: %v", err)
	}
}

func TestCacheBounded(t *testing.T) {
	r := &Resolver{cache: make(map[cacheKey]cacheEntry)}
	rr, _ := dns.NewRR("x.test. 60 IN A 192.0.2.1")
	for i := range maxCacheEntries + 100 {
		r.store(cacheKey{fmt.Sprintf("n%d.test.", i), dns.TypeA}, cacheEntry{rrs: []dns.RR{rr}}, time.Minute)
	}
	if n := len(r.cache); n > maxCacheEntries {
		t.Errorf("cache holds %d entries, bound is %d", n, maxCacheEntries)
	}
	// Expired entries are dropped first.
	r.cache = make(map[cacheKey]cacheEntry)
	for i := range maxCacheEntries {
		r.cache[cacheKey{fmt.Sprintf("old%d.", i), dns.TypeA}] = cacheEntry{expires: time.Now().Add(-time.Second)}
	}
	fresh := cacheKey{"fresh.", dns.TypeA}
	r.store(fresh, cacheEntry{rrs: []dns.RR{rr}}, time.Minute)
	if len(r.cache) != 1 {
		t.Errorf("after eviction %d entries, want 1", len(r.cache))
	}
	if _, ok := r.cached(fresh); !ok {
		t.Error("fresh entry missing")
	}
}

func TestCanceledContext(t *testing.T) {
	s, r := setup(t, "slow.test. 60 IN A 192.0.2.1")
	s.SetDelay("slow.test", 5*time.Second)
	r.timeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := r.LookupA(ctx, "slow.test")
	if !errors.Is(err, ErrTemporary) {
		t.Errorf("err = %v, want ErrTemporary", err)
	}
}

func TestServerFailover(t *testing.T) {
	bad, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.SetRcode("x.test", dns.RcodeServerFailure)
	good, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := good.Add("x.test. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{servers: []string{bad.Addr, good.Addr}, timeout: time.Second, cache: map[cacheKey]cacheEntry{}}
	got, err := r.LookupA(context.Background(), "x.test")
	if err != nil || len(got) != 1 {
		t.Fatalf("got %v, %v", got, err)
	}
	if bad.Queries("udp") != 1 {
		t.Errorf("first server asked %d times, want 1", bad.Queries("udp"))
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		server string
		want   string
	}{
		{"127.0.0.1:5353", "127.0.0.1:5353"},
		{"127.0.0.1", "127.0.0.1:53"},
		{"::1", "[::1]:53"},
		{"[::1]:54", "[::1]:54"},
	}
	for _, tc := range tests {
		r, err := New(tc.server, 0)
		if err != nil {
			t.Fatalf("New(%q): %v", tc.server, err)
		}
		if got := r.Servers(); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("New(%q) servers %v, want %s", tc.server, got, tc.want)
		}
		if r.timeout != defaultTimeout {
			t.Errorf("timeout %v", r.timeout)
		}
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		r, err := New("", time.Second)
		if err != nil {
			t.Logf("New(\"\"): %v (resolv.conf without nameserver?)", err)
		} else if len(r.Servers()) == 0 || len(r.Servers()) > maxServers {
			t.Errorf("resolv.conf servers %v", r.Servers())
		}
	}
}

func addrStrings(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

func ignore(err, target error) error {
	if errors.Is(err, target) {
		return nil
	}
	if err == nil {
		return errors.New("expected an error")
	}
	return err
}

func TestLookupPTR(t *testing.T) {
	_, r := setup(t,
		"10.2.0.192.in-addr.arpa. 60 IN PTR Mail.Example.test.",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 60 IN PTR v6.example.test.",
	)
	ctx := context.Background()
	for _, tc := range []struct {
		ip   string
		want []string
	}{
		{"192.0.2.10", []string{"mail.example.test"}},
		{"::ffff:192.0.2.10", []string{"mail.example.test"}},
		{"2001:db8::1", []string{"v6.example.test"}},
	} {
		got, err := r.LookupPTR(ctx, netip.MustParseAddr(tc.ip))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("LookupPTR(%s) = %v, %v; want %v", tc.ip, got, err, tc.want)
		}
	}
	if _, err := r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.11")); !errors.Is(err, ErrNotFound) {
		t.Errorf("LookupPTR(no record) err = %v, want ErrNotFound", err)
	}
}
