package guard

import (
	"log/slog"
	"net/netip"
)

// trustedConnFactor multiplies the per-IP and per-network connection caps
// for trusted clients (an office NAT, a print server).
const trustedConnFactor = 4

func noRelease() {}

// Pool names a budget of concurrent connections: one per listener (and
// per class of client within it, see ConnectTo), so that a flood on one
// door never closes another.
type Pool string

// DefaultPool is the pool of Connect.
const DefaultPool Pool = "default"

// poolKey is one pool's share for one class of client: trusted clients
// (the office LAN) and outsiders are counted apart.
type poolKey struct {
	pool    Pool
	trusted bool
}

type poolIP struct {
	pool Pool
	ip   netip.Addr
}

type poolNet struct {
	pool Pool
	net  netip.Prefix
}

// Connect is ConnectTo(DefaultPool, ip, trusted).
func (g *Guard) Connect(ip netip.Addr, trusted bool) (Decision, func()) {
	return g.ConnectTo(DefaultPool, ip, trusted)
}

// ConnectTo decides on a new connection from ip to a listener's pool:
// bans (Drop 554 5.7.1), the connection rate of the IP, and the caps on
// concurrent connections (Drop 421 4.7.0): MaxConnections for the pool
// and class of client (trusted or not), and the per-IP and per-network
// caps within the pool. Thousands of idle outsiders on port 25 therefore
// leave submission, the trusted LAN on port 25, and every other listener
// their full budgets. On Accept the returned func releases the slot and
// must be called once, at disconnect (further calls do nothing); otherwise
// it is a no-op.
func (g *Guard) ConnectTo(pool Pool, ip netip.Addr, trusted bool) (Decision, func()) {
	ip = normAddr(ip)
	_, now := g.clock()
	lg := logBuf{log: g.log}
	d, key, net := g.connect(pool, ip, trusted, now, &lg)
	lg.emit()
	g.observe("connect", d)
	if d.Verdict != Accept {
		return d, noRelease
	}
	done := false
	return d, func() {
		g.mu.Lock()
		if !done {
			done = true
			g.releaseConn(poolKey{pool, trusted}, poolIP{pool, key}, poolNet{pool, net})
		}
		g.mu.Unlock()
	}
}

// connect counts an outsider by hostOf (an IPv6 client rotating through
// its /64 is one client); a trusted client by its address, since a
// trusted LAN's /64 holds many hosts.
func (g *Guard) connect(pool Pool, ip netip.Addr, trusted bool, now int64, lg *logBuf) (Decision, netip.Addr, netip.Prefix) {
	net := netOf(ip)
	key := ip
	if !trusted {
		key = hostOf(ip)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.bans.lookup(ip, now); ok {
		if lg.on() {
			lg.decision("connect", decBanned, slog.String("ip", ip.String()), slog.String("ban", b.ban.CIDR),
				slog.String("ban_rule", b.ban.Rule), slog.Time("until", b.ban.Expires))
		}
		return decBanned, key, net
	}
	st := g.ips.get(key)
	rate := st.conns.add(now, minuteMS, 1)
	perIP, perNet := g.conf().MaxConnsPerIP, g.conf().MaxConnsPerNet
	if trusted {
		perIP *= trustedConnFactor
		perNet *= trustedConnFactor
	}
	if f := g.conf().PoolConnFactor[pool]; f > 1 {
		perIP *= f
		perNet *= f
	}
	pk, pi, pn := poolKey{pool, trusted}, poolIP{pool, key}, poolNet{pool, net}
	var d Decision
	var count, limit int
	switch {
	case rate > g.conf().ConnsPerMinute:
		d, count, limit = decConnRate, rate, g.conf().ConnsPerMinute
	case g.conns[pk] >= g.conf().MaxConnections:
		d, count, limit = decConnGlobal, g.conns[pk], g.conf().MaxConnections
	case int(g.connIP[pi]) >= perIP:
		d, count, limit = decConnPerIP, int(g.connIP[pi]), perIP
	case int(g.connNet[pn]) >= perNet:
		d, count, limit = decConnPerNet, int(g.connNet[pn]), perNet
	}
	if d.Verdict != Accept {
		if lg.on() {
			lg.decision("connect", d, slog.String("ip", ip.String()), slog.Bool("trusted", trusted),
				slog.String("pool", string(pool)), slog.Int("count", count), slog.Int("limit", limit))
		}
		return d, key, net
	}
	g.conns[pk]++
	g.connIP[pi]++
	g.connNet[pn]++
	return Decision{}, key, net
}

func (g *Guard) releaseConn(pk poolKey, pi poolIP, pn poolNet) {
	if n := g.conns[pk] - 1; n > 0 {
		g.conns[pk] = n
	} else {
		delete(g.conns, pk)
	}
	if n := g.connIP[pi] - 1; n > 0 {
		g.connIP[pi] = n
	} else {
		delete(g.connIP, pi)
	}
	if n := g.connNet[pn] - 1; n > 0 {
		g.connNet[pn] = n
	} else {
		delete(g.connNet, pn)
	}
}
