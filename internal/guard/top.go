package guard

import (
	"net/netip"
	"sort"
)

// Top senders: who sends the most right now, for the live view (`mamori
// top`, the dashboard).
//
// The counters themselves are the guard's own windows; what is added here
// is a way to find the busy ones without walking every table under the
// lock. Three small LRU tables remember the senders that sent recently —
// trusted-network IPs, authenticated users, outside client IPs on port 25
// — each touched once per message (outsiders also per RCPT) with the time.
// Their order is the order of last activity, so TopSenders walks each from
// the most recent and stops at the first one idle for two minutes (when
// its one-minute windows read zero) or after activeCap entries: its cost
// is bounded by activeCap, whatever the number of senders the guard
// tracks. A sender drops out of a table only when activeCap others sent
// after its last message; a busy sender is touched every few seconds and
// stays. Outsiders have a table of their own, so a botnet of rotating
// addresses can never push a local worm out of view. With all three tables
// full and active, a call takes about 0.34 ms (BenchmarkTopSenders, at
// MaxTracked outside IPs); a message pays one more map operation.

// activeCap bounds each table of recent senders.
const activeCap = 1024

// activeIdle is how long after its last message a sender stops being
// listed: the one-minute windows weight the previous minute, so they read
// zero two minutes after the last event.
const activeIdle = 2 * minuteMS

// Rate is one sender's traffic in the last 60 seconds against the
// per-minute limits that apply to it.
type Rate struct {
	// Key is the client IP (an outside IPv6 client as its /64, the unit
	// the guard counts it by) or the user address.
	Key     string
	Trusted bool // an IP of the trusted networks (counted as a local sender)
	Outside bool // an untrusted, unauthenticated client IP (port 25)
	// Msgs and Rcpts count the last 60 seconds (the guard's sliding
	// window). A sender's messages held after its isolation are not
	// counted: its window shows what it sent until the guard stopped it.
	Msgs, Rcpts int
	// LimitMsgs and LimitRcpts are the per-minute limits that apply:
	// msgs_per_minute and rcpts_per_minute of [guard] or of an override
	// for a local sender, inbound_msgs_per_minute and
	// inbound_rcpts_per_minute for an outsider.
	LimitMsgs, LimitRcpts int
	// Isolated: the IP is isolated, or the user isolated or suspended.
	Isolated bool
}

// activeSenders are the tables of recent senders; the value is the time
// of the last touch, in ms. Protected by the guard's lock.
type activeSenders struct {
	ips   *lru[netip.Addr, int64] // trusted IPs
	users *lru[string, int64]     // authenticated users
	out   *lru[netip.Addr, int64] // outsiders, by hostOf
}

func newActiveSenders() activeSenders {
	return activeSenders{
		ips:   newLRU[netip.Addr, int64](activeCap),
		users: newLRU[string, int64](activeCap),
		out:   newLRU[netip.Addr, int64](activeCap),
	}
}

// local notes a message of a local sender: the user's if authenticated,
// else the trusted IP's (the keys its mail counts against).
func (a *activeSenders) local(ip netip.Addr, user string, trusted bool, now int64) {
	switch {
	case user != "":
		*a.users.get(user) = now
	case trusted:
		*a.ips.get(ip) = now
	}
}

// outside notes a message or recipient of an outsider (host as hostOf).
func (a *activeSenders) outside(host netip.Addr, now int64) {
	*a.out.get(host) = now
}

// TopSenders returns the busiest senders of the last minute, by messages
// then recipients, at most n of each (n <= 0: all that are active): ips
// mixes trusted-network IPs and outside client IPs, users are
// authenticated users. Senders that sent nothing in the last minute are
// left out, unless isolated and active in the last two minutes. It holds
// the guard's lock for a walk of at most 3 × activeCap entries, without
// formatting or allocating per entry (see BenchmarkTopSenders).
func (g *Guard) TopSenders(n int) (ips, users []Rate) {
	_, now := g.clock()
	cutoff := now - activeIdle
	ipRates, userRates := topN{n: n}, topN{n: n}
	g.mu.Lock()
	g.active.ips.each(func(ip netip.Addr, last *int64) bool {
		if *last < cutoff {
			return false
		}
		iso := g.isoIP[ip] != nil
		if st := g.byIP[ip]; st != nil {
			r := g.localRate(st, now)
			r.Trusted, r.Isolated = true, iso
			ipRates.add(keyedRate{ip: ip, Rate: r})
		} else if iso { // counters gone (restart), isolation kept
			l := g.limitsForIP(ip)
			ipRates.add(keyedRate{ip: ip, Rate: Rate{Trusted: true, LimitMsgs: l.MsgsPerMinute, LimitRcpts: l.RcptsPerMinute, Isolated: true}})
		}
		return true
	})
	g.active.users.each(func(user string, last *int64) bool {
		if *last < cutoff {
			return false
		}
		_, suspended := g.suspended[user]
		iso := suspended || g.isoUser[user] != nil
		if st := g.byUser[user]; st != nil {
			r := g.localRate(st, now)
			r.Key, r.Isolated = user, iso
			userRates.add(keyedRate{Rate: r})
		} else if iso { // suspended before sending, or counters gone (restart)
			l := g.limitsForAddr(user)
			userRates.add(keyedRate{Rate: Rate{Key: user, LimitMsgs: l.MsgsPerMinute, LimitRcpts: l.RcptsPerMinute, Isolated: true}})
		}
		return true
	})
	g.active.out.each(func(host netip.Addr, last *int64) bool {
		if *last < cutoff {
			return false
		}
		if st := g.ips.peek(host); st != nil {
			ipRates.add(keyedRate{ip: host, Rate: Rate{Outside: true,
				Msgs: st.msgs.get(now, minuteMS), Rcpts: st.rcpts.get(now, minuteMS),
				LimitMsgs: g.conf().InboundMsgsPerMinute, LimitRcpts: g.conf().InboundRcptsPerMinute}})
		}
		return true
	})
	g.mu.Unlock()
	return ipRates.rates(), userRates.rates()
}

// keyedRate is a Rate whose IP is not formatted yet: only the n listed
// are.
type keyedRate struct {
	ip netip.Addr
	Rate
}

func (g *Guard) localRate(st *senderStats, now int64) Rate {
	return Rate{
		Msgs:       st.w[wMsgsMin].get(now, minuteMS),
		Rcpts:      st.w[wRcptsMin].get(now, minuteMS),
		LimitMsgs:  st.limits.MsgsPerMinute,
		LimitRcpts: st.limits.RcptsPerMinute,
	}
}

// topN keeps the n best rates seen, best first (n <= 0: all, sorted at
// the end): with n small, a sender that does not make the list costs one
// comparison.
type topN struct {
	n  int
	rs []keyedRate
}

// before orders rates: more messages, then more recipients, then by key.
func before(a, b *keyedRate) bool {
	if a.Msgs != b.Msgs {
		return a.Msgs > b.Msgs
	}
	if a.Rcpts != b.Rcpts {
		return a.Rcpts > b.Rcpts
	}
	if c := a.ip.Compare(b.ip); c != 0 {
		return c < 0
	}
	return a.Key < b.Key
}

// add considers r, unless it shows nothing worth listing.
func (t *topN) add(r keyedRate) {
	if r.Msgs == 0 && r.Rcpts == 0 && !r.Isolated {
		return
	}
	if t.n <= 0 {
		t.rs = append(t.rs, r)
		return
	}
	if len(t.rs) == t.n && !before(&r, &t.rs[t.n-1]) {
		return
	}
	i := sort.Search(len(t.rs), func(i int) bool { return before(&r, &t.rs[i]) })
	if len(t.rs) < t.n {
		t.rs = append(t.rs, keyedRate{})
	}
	copy(t.rs[i+1:], t.rs[i:])
	t.rs[i] = r
}

// rates returns the list with the keys formatted (an outsider's IPv6 host
// as its /64).
func (t *topN) rates() []Rate {
	if t.n <= 0 {
		sort.Slice(t.rs, func(i, j int) bool { return before(&t.rs[i], &t.rs[j]) })
	}
	out := make([]Rate, len(t.rs))
	for i, r := range t.rs {
		out[i] = r.Rate
		switch {
		case !r.ip.IsValid():
		case r.Outside && r.ip.Is6():
			out[i].Key = hostPrefix(r.ip).String()
		default:
			out[i].Key = r.ip.String()
		}
	}
	return out
}
