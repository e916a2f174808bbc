// Package resolver performs the DNS lookups mamori needs (MX, A/AAAA, TXT,
// PTR) through the name server configured as [dns] resolver.
//
// Why not net.Resolver: mail routing has to tell apart "this domain does not
// exist" (NXDOMAIN: bounce), "it exists but has no such record" (no MX: fall
// back to the implicit MX, RFC 5321 §5.1) and "the name server failed"
// (SERVFAIL or timeout: retry later). net.Resolver folds these together and
// always uses the host's resolver configuration; it also cannot be pointed at
// a test server. This package uses github.com/miekg/dns so that the server,
// the timeouts and the response codes are ours to see and control.
//
// Everything is bounded: one query waits at most the configured timeout per
// server, UDP answers are limited by the EDNS0 buffer we advertise (a
// truncated answer is retried once over TCP, whose messages are at most
// 64 KiB by protocol), and the cache holds a fixed number of entries, each
// for no longer than its TTL (capped).
package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Errors returned by lookups. They are wrapped with the name and type that
// failed; test them with errors.Is.
var (
	// ErrNotFound: the name does not exist (NXDOMAIN) or has no record of
	// the requested type (NOERROR, empty answer).
	ErrNotFound = errors.New("dns: not found")
	// ErrNXDomain is the NXDOMAIN case of ErrNotFound: errors.Is(err,
	// ErrNotFound) is also true for it.
	ErrNXDomain = errors.New("dns: no such domain")
	// ErrTemporary: SERVFAIL, REFUSED, a timeout or a network error; asking
	// again later may succeed.
	ErrTemporary = errors.New("dns: temporary failure")
	// ErrNullMX: the domain publishes a null MX (RFC 7505) and accepts no mail.
	ErrNullMX = errors.New("dns: domain accepts no mail (null MX)")
)

const (
	defaultTimeout = 5 * time.Second
	// ednsSize is the UDP payload size we advertise (RFC 6891); larger
	// answers come back truncated and are retried over TCP.
	ednsSize = 1232
	// maxServers bounds how many resolv.conf name servers are tried.
	maxServers = 3

	maxCacheEntries = 2048
	maxCacheTTL     = 5 * time.Minute
	maxNegativeTTL  = time.Minute
	// maxCachedRRs: answers bigger than this are not cached (they are rare
	// and would make the cache's memory bound depend on remote data).
	maxCachedRRs = 64
)

// MX is one mail exchanger of a domain.
type MX struct {
	Host string // lower case, without the trailing dot
	Pref uint16
}

// Resolver sends queries to a fixed list of recursive name servers.
// It is safe for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry

	// observe, when set, is told about every query sent (not cache hits).
	observe func(qtype, result string, d time.Duration)
}

// Query results given to the observer.
const (
	ResultOK       = "ok"        // an answer with records
	ResultNotFound = "not_found" // NXDOMAIN or no data
	ResultError    = "error"     // SERVFAIL, timeout, network error
)

// SetObserver makes the resolver tell fn the type, result (Result*) and
// duration of every query it sends to a name server, for metrics. Call
// it before the first lookup; fn must be cheap.
func (r *Resolver) SetObserver(fn func(qtype, result string, d time.Duration)) { r.observe = fn }

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs     []dns.RR // answer records of qtype; nil for a negative entry
	nx      bool     // negative entry: NXDOMAIN (else no data)
	expires time.Time
}

// New returns a Resolver that asks server ("host:port"; a bare host gets
// port 53). An empty server means the name servers of /etc/resolv.conf, in
// order (at most three; the next is tried when one fails temporarily).
// timeout bounds each exchange with one server; <= 0 means 5 s.
func New(server string, timeout time.Duration) (*Resolver, error) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	var servers []string
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("resolver: read /etc/resolv.conf: %w", err)
		}
		for _, s := range conf.Servers {
			if len(servers) == maxServers {
				break
			}
			servers = append(servers, net.JoinHostPort(s, conf.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("resolver: no nameserver in /etc/resolv.conf")
		}
	} else {
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
		servers = []string{server}
	}
	return &Resolver{
		servers: servers,
		timeout: timeout,
		cache:   make(map[cacheKey]cacheEntry),
	}, nil
}

// Servers returns the name servers queried, in order.
func (r *Resolver) Servers() []string { return slices.Clone(r.servers) }

// LookupMX returns the mail exchangers of domain sorted by preference, hosts
// of equal preference in random order (RFC 5321 §5.1). A null MX (RFC 7505)
// returns ErrNullMX. No MX records at all returns ErrNotFound; the caller
// decides on the implicit MX.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	rrs, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]MX, 0, len(rrs))
	null := false
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if host == "" {
			null = true
			continue
		}
		mxs = append(mxs, MX{Host: host, Pref: mx.Preference})
	}
	if len(mxs) == 0 {
		if null {
			return nil, fmt.Errorf("resolver: MX %s: %w", domain, ErrNullMX)
		}
		return nil, fmt.Errorf("resolver: MX %s: %w", domain, ErrNotFound)
	}
	// Shuffle first, then a stable sort keeps the random order within each
	// preference.
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, nil
}

// LookupIP returns the IPv4 then IPv6 addresses of host, asking A and AAAA
// in parallel. It fails only when neither query returned an address: with
// ErrTemporary if either failed temporarily, else ErrNotFound. An IP literal
// is returned as is.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	type result struct {
		addrs []netip.Addr
		err   error
	}
	var v4, v6 result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		v4.addrs, v4.err = r.lookupAddrs(ctx, host, dns.TypeA)
	}()
	go func() {
		defer wg.Done()
		v6.addrs, v6.err = r.lookupAddrs(ctx, host, dns.TypeAAAA)
	}()
	wg.Wait()
	return combineIP(host, v4.addrs, v4.err, v6.addrs, v6.err)
}

// combineIP merges the A and AAAA results: any address wins; otherwise a
// temporary failure of either query wins over "not found".
func combineIP(host string, v4 []netip.Addr, err4 error, v6 []netip.Addr, err6 error) ([]netip.Addr, error) {
	if addrs := append(slices.Clip(v4), v6...); len(addrs) > 0 {
		return addrs, nil
	}
	switch {
	case errors.Is(err4, ErrTemporary):
		return nil, err4
	case errors.Is(err6, ErrTemporary):
		return nil, err6
	case err4 != nil:
		return nil, err4
	case err6 != nil:
		return nil, err6
	}
	return nil, fmt.Errorf("resolver: IP %s: %w", host, ErrNotFound)
}

// LookupA returns the IPv4 addresses of name (DNSBL answers are A records).
func (r *Resolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.lookupAddrs(ctx, name, dns.TypeA)
}

// LookupTXT returns the TXT records of name, each record's character strings
// joined into one string (as SPF, DKIM and DMARC require).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupPTR returns the names the reverse (PTR) records of ip point to,
// lower case and without the trailing dot, in the order the server gave
// them. The names are not forward-confirmed: that is the caller's check.
func (r *Resolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	if !ip.IsValid() {
		return nil, fmt.Errorf("resolver: PTR: invalid address: %w", ErrNotFound)
	}
	arpa, err := dns.ReverseAddr(ip.Unmap().WithZone("").String())
	if err != nil {
		return nil, fmt.Errorf("resolver: PTR %s: %w: %w", ip, err, ErrNotFound)
	}
	rrs, err := r.query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.ToLower(strings.TrimSuffix(rr.(*dns.PTR).Ptr, ".")))
	}
	return out, nil
}

func (r *Resolver) lookupAddrs(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	rrs, err := r.query(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			if qtype == dns.TypeA {
				a = a.Unmap()
			}
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// query returns the answer records of type qtype for name (following the
// CNAME chain the recursive server returns), from the cache when possible.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := strings.ToLower(dns.Fqdn(name))
	qname := dns.TypeToString[qtype]
	if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
		return nil, fmt.Errorf("resolver: %s %q: invalid name: %w", qname, name, ErrNotFound)
	}
	key := cacheKey{fqdn, qtype}
	if e, ok := r.cached(key); ok {
		return notFoundOr(e, fqdn, qname)
	}

	start := time.Now()
	resp, err := r.exchange(ctx, fqdn, qtype)
	if r.observe != nil {
		r.observe(qname, resultOf(resp, err), time.Since(start))
	}
	if err != nil {
		return nil, fmt.Errorf("resolver: %s %s: %w", qname, fqdn, err)
	}

	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		e := cacheEntry{nx: true}
		r.store(key, e, negativeTTL(resp))
		return notFoundOr(e, fqdn, qname)
	default:
		return nil, fmt.Errorf("resolver: %s %s: %s: %w", qname, fqdn, dns.RcodeToString[resp.Rcode], ErrTemporary)
	}

	var rrs []dns.RR
	ttl := maxCacheTTL
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || h.Class != dns.ClassINET {
			continue
		}
		rrs = append(rrs, rr)
		ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
	}
	if len(rrs) == 0 {
		e := cacheEntry{}
		r.store(key, e, negativeTTL(resp))
		return notFoundOr(e, fqdn, qname)
	}
	if len(rrs) <= maxCachedRRs {
		r.store(key, cacheEntry{rrs: rrs}, ttl)
	}
	return rrs, nil
}

// resultOf classifies an exchange for the observer.
func resultOf(resp *dns.Msg, err error) string {
	switch {
	case err != nil:
		return ResultError
	case resp.Rcode == dns.RcodeNameError:
		return ResultNotFound
	case resp.Rcode != dns.RcodeSuccess:
		return ResultError
	case len(resp.Answer) == 0:
		return ResultNotFound
	}
	return ResultOK
}

func notFoundOr(e cacheEntry, fqdn, qname string) ([]dns.RR, error) {
	switch {
	case e.nx:
		return nil, fmt.Errorf("resolver: %s %s: %w: %w", qname, fqdn, ErrNXDomain, ErrNotFound)
	case len(e.rrs) == 0:
		return nil, fmt.Errorf("resolver: %s %s: no data: %w", qname, fqdn, ErrNotFound)
	}
	return e.rrs, nil
}

// exchange asks each server in turn until one answers with something other
// than a temporary failure. A truncated UDP answer is retried over TCP.
func (r *Resolver) exchange(ctx context.Context, fqdn string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	var lastResp *dns.Msg
	var lastErr error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTemporary, err)
		}
		resp, err := r.exchangeOne(ctx, m, server)
		if err != nil {
			lastErr = err
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			// Another server may do better; keep this answer in case none does.
			lastResp = resp
			continue
		}
		return resp, nil
	}
	if lastResp != nil {
		return lastResp, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrTemporary, lastErr)
}

func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c = &dns.Client{Net: "tcp", Timeout: r.timeout}
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", server, err)
	}
	if resp.Id != m.Id {
		return nil, fmt.Errorf("ask %s: answer id mismatch", server)
	}
	return resp, nil
}

// negativeTTL is how long an NXDOMAIN or no-data answer may be cached: the
// SOA minimum from the authority section (RFC 2308), capped; no SOA, no
// caching.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := min(soa.Minttl, soa.Hdr.Ttl)
			return min(time.Duration(ttl)*time.Second, maxNegativeTTL)
		}
	}
	return 0
}

func (r *Resolver) cached(key cacheKey) (cacheEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return cacheEntry{}, false
	}
	if time.Now().After(e.expires) {
		delete(r.cache, key)
		return cacheEntry{}, false
	}
	return e, true
}

func (r *Resolver) store(key cacheKey, e cacheEntry, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	now := time.Now()
	e.expires = now.Add(ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[key]; !ok && len(r.cache) >= maxCacheEntries {
		r.evictLocked(now)
	}
	r.cache[key] = e
}

// evictLocked makes room for one entry: it drops every expired entry and, if
// none had expired, an arbitrary one (map order) — cheap and good enough for
// a cache whose entries live minutes at most.
func (r *Resolver) evictLocked(now time.Time) {
	for k, e := range r.cache {
		if now.After(e.expires) {
			delete(r.cache, k)
		}
	}
	if len(r.cache) < maxCacheEntries {
		return
	}
	for k := range r.cache {
		delete(r.cache, k)
		return
	}
}
