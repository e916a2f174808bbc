package guard

import (
	"net/netip"
	"time"
)

// strikeMemory is how long after a ban's expiry a new ban of the same
// prefix still counts as a repeat offence (and so lasts 4× longer).
const strikeMemory = 30 * dayMS

// maxBans bounds the automatic bans (and remembered strikes): a botnet that
// earns a million bans must not grow memory without bound. Past it, a
// random automatic ban makes room; bans set by the administrator are never
// evicted.
const maxBans = 100_000

type banEntry struct {
	ban     Ban
	expires int64 // ms
	auto    bool  // set by a rule, not by the administrator
}

type strike struct {
	Count   int   `json:"n"`
	Expires int64 `json:"exp"` // ms, expiry of the last ban
}

// banTable maps masked prefixes to bans. A lookup tries, for the address's
// family, only the prefix lengths that hold at least one ban, longest first:
// O(number of distinct lengths), typically 1–3, whatever the number of bans.
type banTable struct {
	m       map[netip.Prefix]banEntry
	count4  [33]int32
	count6  [129]int32
	lens4   []int // lengths with count > 0, longest first
	lens6   []int
	auto    int
	strikes map[netip.Prefix]strike
}

func newBanTable() banTable {
	return banTable{m: make(map[netip.Prefix]banEntry), strikes: make(map[netip.Prefix]strike)}
}

// normPrefix masks p and turns an IPv4-mapped IPv6 prefix into IPv4, so a
// ban matches however the address reaches us.
func normPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), true
	}
	return netip.PrefixFrom(a, p.Bits()).Masked(), true
}

// lookup finds an active ban covering ip (already normalised).
func (t *banTable) lookup(ip netip.Addr, now int64) (banEntry, bool) {
	lens := t.lens4
	if ip.Is6() {
		lens = t.lens6
	}
	for _, l := range lens {
		p, err := ip.Prefix(l)
		if err != nil {
			continue
		}
		if e, ok := t.m[p]; ok && e.expires > now {
			return e, true
		}
	}
	return banEntry{}, false
}

func (t *banTable) put(p netip.Prefix, e banEntry) {
	old, exists := t.m[p]
	t.m[p] = e
	if exists {
		if old.auto {
			t.auto--
		}
	} else {
		t.adjust(p, 1)
	}
	if e.auto {
		t.auto++
	}
}

func (t *banTable) remove(p netip.Prefix) (banEntry, bool) {
	e, ok := t.m[p]
	if !ok {
		return e, false
	}
	delete(t.m, p)
	if e.auto {
		t.auto--
	}
	t.adjust(p, -1)
	return e, true
}

// adjust keeps the per-length counts, and rebuilds the list of lengths in
// use when one appears or disappears (rare).
func (t *banTable) adjust(p netip.Prefix, d int32) {
	counts, lens := t.count4[:], &t.lens4
	if p.Addr().Is6() {
		counts, lens = t.count6[:], &t.lens6
	}
	before := counts[p.Bits()]
	counts[p.Bits()] += d
	if (before == 0) == (counts[p.Bits()] == 0) {
		return
	}
	*lens = (*lens)[:0]
	for l := len(counts) - 1; l >= 0; l-- {
		if counts[l] > 0 {
			*lens = append(*lens, l)
		}
	}
}

// evictAuto removes one automatic ban, any one (map order is random), to
// make room. It reports whether it found one.
func (t *banTable) evictAuto() bool {
	for p, e := range t.m {
		if e.auto {
			t.remove(p)
			return true
		}
	}
	return false
}

// backoff is the length of a ban (or an IP+account block) after prev
// earlier strikes: base × 4^prev, capped.
func backoff(base, capd time.Duration, prev int) time.Duration {
	d := base
	for i := 0; i < prev; i++ {
		if d >= capd/4 {
			return capd
		}
		d *= 4
	}
	return min(d, capd)
}
