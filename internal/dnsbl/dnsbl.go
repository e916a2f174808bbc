// Package dnsbl asks DNS blocklists (DNSBLs) whether an IP address is
// listed: for the clients that connect to us, and for our own sending
// addresses.
//
// Why it exists: a DNSBL lookup on connect turns away most botnet spam
// before a single SMTP command is parsed (DESIGN.md S5), and watching our
// own public IPs in the same lists tells the administrator at once when a
// breach has got the server listed, before the whole organisation's mail
// starts bouncing.
//
// The SMTP session waits while we ask, so a lookup never takes longer than
// its budget: all zones are asked in parallel, a slow or failing zone counts
// as "not listed" (fail open) and is logged, and the answer is cached per IP
// (listed for an hour, clean for ten minutes, failures not at all) in a
// bounded cache. Concurrent checks of one IP share a single lookup, so a
// burst of connections from one address costs one round of queries.
//
// Dependencies: DNS goes through internal/resolver (github.com/miekg/dns
// underneath), which tells NXDOMAIN ("not listed") apart from SERVFAIL and
// timeouts ("could not ask") — a distinction net.Resolver does not expose.
// Everything else is the standard library; the request sharing is a few
// lines of our own rather than golang.org/x/sync/singleflight, which would
// add a module for one small function.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/resolver"
)

const (
	// DefaultBudget is the total time a Check may take when New is given 0.
	DefaultBudget = 1500 * time.Millisecond

	listedTTL = time.Hour
	cleanTTL  = 10 * time.Minute

	// maxCacheEntries bounds the cache; when it is full, expired entries
	// are dropped and, if that is not enough, an arbitrary sixteenth of the
	// entries, so the O(n) sweep is paid rarely.
	maxCacheEntries = 50000

	// maxReason bounds Result.Reason (TXT records come from a third party).
	maxReason = 200

	// logEvery throttles the "zone failed" warnings per zone: a dead zone
	// under a connection flood must not write one log line per connection.
	logEvery = time.Minute
)

// Result is the outcome of a Check.
type Result struct {
	Listed bool
	Zone   string       // the zone that lists the IP ("" when not listed)
	Codes  []netip.Addr // the 127.0.0.0/8 answers of that zone
	Reason string       // the zone's TXT record when it had one: printable ASCII, at most 200 bytes
}

// Checker looks IP addresses up in a fixed list of DNSBL zones. It is safe
// for concurrent use.
type Checker struct {
	res    *resolver.Resolver
	zones  []string
	budget time.Duration
	log    *slog.Logger
	now    func() time.Time // time.Now; replaced in tests
	limit  int              // maxCacheEntries; smaller in tests

	mu       sync.Mutex
	cache    map[netip.Addr]cacheEntry
	inflight map[netip.Addr]*call
	zoneLogs map[string]*zoneLog
}

type cacheEntry struct {
	res     Result
	expires time.Time
}

// call is one lookup shared by every concurrent Check of the same IP.
type call struct {
	done chan struct{} // closed when res is set
	res  Result
}

type zoneLog struct {
	last       time.Time
	suppressed int
}

// New returns a Checker that asks res about zones (for example
// "zen.spamhaus.org"; case and a trailing dot do not matter, empty and
// duplicate entries are ignored). budget is the total time a Check may take,
// all zones included; <= 0 means DefaultBudget. log may be nil.
func New(res *resolver.Resolver, zones []string, budget time.Duration, log *slog.Logger) *Checker {
	if budget <= 0 {
		budget = DefaultBudget
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var zs []string
	for _, z := range zones {
		z = strings.ToLower(strings.Trim(strings.TrimSpace(z), "."))
		if z != "" && !slices.Contains(zs, z) {
			zs = append(zs, z)
		}
	}
	return &Checker{
		res:      res,
		zones:    zs,
		budget:   budget,
		log:      log,
		now:      time.Now,
		limit:    maxCacheEntries,
		cache:    make(map[netip.Addr]cacheEntry),
		inflight: make(map[netip.Addr]*call),
		zoneLogs: make(map[string]*zoneLog),
	}
}

// Zones returns the zones asked, in order.
func (c *Checker) Zones() []string { return slices.Clone(c.zones) }

// Check reports whether ip is listed in any zone. It returns within the
// budget given to New (or sooner, when ctx ends); anything that did not
// answer by then counts as not listed. When several zones list ip, the
// first in configuration order wins. The returned Result is the caller's
// to keep.
func (c *Checker) Check(ctx context.Context, ip netip.Addr) Result {
	ip = ip.Unmap()
	if !ip.IsValid() || len(c.zones) == 0 || c.res == nil {
		return Result{}
	}

	c.mu.Lock()
	if e, ok := c.cache[ip]; ok {
		if c.now().Before(e.expires) {
			c.mu.Unlock()
			return cloneResult(e.res)
		}
		delete(c.cache, ip)
	}
	cl, ok := c.inflight[ip]
	if !ok {
		cl = &call{done: make(chan struct{})}
		c.inflight[ip] = cl
		// The shared lookup must not die with the caller that happened to
		// start it, but it keeps the caller's values and never outlives the
		// budget.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.budget)
		go func() {
			defer cancel()
			res, complete := c.lookup(lctx, ip)
			c.finish(ip, cl, res, complete)
		}()
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cloneResult(cl.res)
	case <-ctx.Done():
		return Result{}
	}
}

// finish publishes the result of a shared lookup and caches it: a listing
// for an hour, a clean answer for ten minutes, an incomplete answer (some
// zone failed or did not answer in time) not at all.
func (c *Checker) finish(ip netip.Addr, cl *call, res Result, complete bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ttl time.Duration
	switch {
	case res.Listed:
		ttl = listedTTL
	case complete:
		ttl = cleanTTL
	}
	if ttl > 0 {
		if _, ok := c.cache[ip]; !ok && len(c.cache) >= c.limit {
			c.evictLocked()
		}
		c.cache[ip] = cacheEntry{res: res, expires: c.now().Add(ttl)}
	}
	// Cached first, then released: a waiter's next Check hits the cache.
	cl.res = res
	delete(c.inflight, ip)
	close(cl.done)
}

// evictLocked makes room in the cache: it drops every expired entry and, if
// none had expired, an arbitrary sixteenth of the entries (Go's map order
// is unspecified, which makes this a cheap random eviction).
func (c *Checker) evictLocked() {
	now := c.now()
	for k, e := range c.cache {
		if !now.Before(e.expires) {
			delete(c.cache, k)
		}
	}
	if len(c.cache) < c.limit {
		return
	}
	drop := max(1, len(c.cache)/16)
	for k := range c.cache {
		if drop == 0 {
			break
		}
		delete(c.cache, k)
		drop--
	}
}

// CacheLen returns the number of cached results (for metrics and tests).
func (c *Checker) CacheLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cache)
}

// CheckDirect is Check without the cache and the request sharing, for a
// one-off diagnosis (mamori doctor): it also reports whether every zone
// gave a usable answer, so "not listed" can be told from "not known".
func (c *Checker) CheckDirect(ctx context.Context, ip netip.Addr) (res Result, complete bool) {
	return c.checkDirect(ctx, ip)
}

// checkDirect looks ip up without the cache and without sharing, within
// the budget. complete is false when a zone failed or did not answer.
func (c *Checker) checkDirect(ctx context.Context, ip netip.Addr) (Result, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() || len(c.zones) == 0 || c.res == nil {
		return Result{}, true
	}
	ctx, cancel := context.WithTimeout(ctx, c.budget)
	defer cancel()
	return c.lookup(ctx, ip)
}

// zoneAnswer is what one zone said.
type zoneAnswer struct {
	idx int
	res Result
	ok  bool // the zone answered usably (listed, or definitely not listed)
}

// lookup asks every zone in parallel and returns the listing of the first
// zone in configuration order that lists ip. It returns as soon as that is
// decided — a zone lists ip and every zone before it has said no — or when
// ctx ends. complete reports that every zone gave a usable answer.
func (c *Checker) lookup(ctx context.Context, ip netip.Addr) (res Result, complete bool) {
	rev := reverse(ip)
	// Buffered so that zone goroutines still running when we return (their
	// resolver calls end with ctx) never block.
	answers := make(chan zoneAnswer, len(c.zones))
	for i, zone := range c.zones {
		go func() {
			r, ok := c.askZone(ctx, ip, rev+"."+zone, zone)
			answers <- zoneAnswer{idx: i, res: r, ok: ok}
		}()
	}

	got := make([]*zoneAnswer, len(c.zones))
	decided := func() (Result, bool, bool) {
		// Walk the zones in order: stop at the first without an answer yet.
		all := true
		for _, a := range got {
			if a == nil {
				return Result{}, false, false
			}
			if a.res.Listed {
				return a.res, true, true
			}
			all = all && a.ok
		}
		return Result{}, all, true
	}
	for range c.zones {
		select {
		case a := <-answers:
			got[a.idx] = &a
			if r, comp, done := decided(); done {
				return r, comp
			}
		case <-ctx.Done():
			// Out of time: the first listing among the zones that did
			// answer wins; the rest count as not listed.
			for _, a := range got {
				if a != nil && a.res.Listed {
					return a.res, true
				}
			}
			for i, a := range got {
				if a == nil {
					c.zoneFailed(c.zones[i], ip, fmt.Errorf("no answer within %v: %w", c.budget, ctx.Err()))
				}
			}
			return Result{}, false
		}
	}
	// Unreachable: the loop returns once every zone has answered.
	r, comp, _ := decided()
	return r, comp
}

// askZone asks one zone about ip (qname is the reversed IP under zone).
// ok is false when the zone could not be asked or answered with an error
// code; the result is then "not listed".
func (c *Checker) askZone(ctx context.Context, ip netip.Addr, qname, zone string) (Result, bool) {
	addrs, err := c.res.LookupA(ctx, qname)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		return Result{}, true
	case err != nil:
		if errors.Is(ctx.Err(), context.Canceled) {
			// The lookup was decided without this zone: nothing to report.
			return Result{}, false
		}
		c.zoneFailed(zone, ip, err)
		return Result{}, false
	}

	var codes []netip.Addr
	for _, a := range addrs {
		if !loopback8.Contains(a) {
			// Not a DNSBL answer at all: typically a resolver that rewrites
			// NXDOMAIN into an advertising server's address.
			c.log.Debug("dnsbl: ignoring answer outside 127.0.0.0/8", "zone", zone, "ip", ip, "answer", a)
			continue
		}
		if errorCodes.Contains(a) {
			// 127.255.255.0/24: the zone refuses to answer us (public
			// resolver, over quota, …). Its answer says nothing about ip.
			c.zoneFailed(zone, ip, fmt.Errorf("zone returned error code %v (query refused; check the resolver and the zone's usage terms)", a))
			return Result{}, false
		}
		codes = append(codes, a)
	}
	if len(codes) == 0 {
		return Result{}, true
	}
	slices.SortFunc(codes, netip.Addr.Compare)
	res := Result{Listed: true, Zone: zone, Codes: slices.Compact(codes)}
	if txts, err := c.res.LookupTXT(ctx, qname); err == nil {
		res.Reason = sanitizeReason(strings.Join(txts, "; "))
	}
	c.log.Debug("dnsbl: listed", "zone", zone, "ip", ip, "codes", res.Codes, "reason", res.Reason)
	return res, true
}

// zoneFailed logs that zone could not tell us about ip, at most once per
// logEvery per zone, with the number of failures not logged in between.
func (c *Checker) zoneFailed(zone string, ip netip.Addr, err error) {
	c.mu.Lock()
	zl := c.zoneLogs[zone]
	if zl == nil {
		zl = &zoneLog{}
		c.zoneLogs[zone] = zl
	}
	now := c.now()
	if !zl.last.IsZero() && now.Sub(zl.last) < logEvery {
		zl.suppressed++
		c.mu.Unlock()
		return
	}
	suppressed := zl.suppressed
	zl.last, zl.suppressed = now, 0
	c.mu.Unlock()
	c.log.Warn("dnsbl: zone failed, treating as not listed", "zone", zone, "ip", ip, "err", err, "suppressed", suppressed)
}

var (
	loopback8  = netip.MustParsePrefix("127.0.0.0/8")
	errorCodes = netip.MustParsePrefix("127.255.255.0/24")
)

// reverse returns the DNSBL query label sequence for ip: the four octets
// of an IPv4 address reversed ("2.0.0.127"), or the 32 nibbles of an IPv6
// address reversed, as in ip6.arpa.
func reverse(ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d", a[3], a[2], a[1], a[0])
		return b.String()
	}
	const hexDigits = "0123456789abcdef"
	a := ip.As16()
	b.Grow(63)
	for i := len(a) - 1; i >= 0; i-- {
		if i != len(a)-1 {
			b.WriteByte('.')
		}
		b.WriteByte(hexDigits[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hexDigits[a[i]>>4])
	}
	return b.String()
}

// sanitizeReason keeps printable ASCII only (anything else becomes '?'),
// collapses runs of spaces and bounds the length: the text comes from a
// third party and ends up in SMTP replies and logs.
func sanitizeReason(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if b.Len() >= maxReason {
			break
		}
		switch {
		case r == ' ' || r == '\t' || r == '\r' || r == '\n':
			space = true
			continue
		case r < 0x20 || r > 0x7e:
			r = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > maxReason {
		out = out[:maxReason]
	}
	return out
}

func cloneResult(r Result) Result {
	r.Codes = slices.Clone(r.Codes)
	return r
}
