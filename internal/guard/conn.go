package guard

import (
	"log/slog"
	"net/netip"
)

// trustedConnFactor multiplies the per-IP and per-network connection caps
// for trusted clients (an office NAT, a print server).
const trustedConnFactor = 4

func noRelease() {}

// Connect decides on a new connection from ip: bans (Drop 554 5.7.1), the
// connection rate of the IP, and the global, per-IP and per-network caps on
// concurrent connections (Drop 421 4.7.0). On Accept the returned func
// releases the slot and must be called once, at disconnect (further calls
// do nothing); otherwise it is a no-op.
func (g *Guard) Connect(ip netip.Addr, trusted bool) (Decision, func()) {
	ip = normAddr(ip)
	_, now := g.clock()
	lg := logBuf{log: g.log}
	d, net := g.connect(ip, trusted, now, &lg)
	lg.emit()
	if d.Verdict != Accept {
		return d, noRelease
	}
	done := false
	return d, func() {
		g.mu.Lock()
		if !done {
			done = true
			g.releaseConn(ip, net)
		}
		g.mu.Unlock()
	}
}

func (g *Guard) connect(ip netip.Addr, trusted bool, now int64, lg *logBuf) (Decision, netip.Prefix) {
	net := netOf(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.bans.lookup(ip, now); ok {
		if lg.on() {
			lg.decision("connect", decBanned, slog.String("ip", ip.String()), slog.String("ban", b.ban.CIDR),
				slog.String("ban_rule", b.ban.Rule), slog.Time("until", b.ban.Expires))
		}
		return decBanned, net
	}
	st := g.ips.get(ip)
	rate := st.conns.add(now, minuteMS, 1)
	perIP, perNet := g.cfg.MaxConnsPerIP, g.cfg.MaxConnsPerNet
	if trusted {
		perIP *= trustedConnFactor
		perNet *= trustedConnFactor
	}
	var d Decision
	var count, limit int
	switch {
	case rate > g.cfg.ConnsPerMinute:
		d, count, limit = decConnRate, rate, g.cfg.ConnsPerMinute
	case g.conns >= g.cfg.MaxConnections:
		d, count, limit = decConnGlobal, g.conns, g.cfg.MaxConnections
	case int(g.connIP[ip]) >= perIP:
		d, count, limit = decConnPerIP, int(g.connIP[ip]), perIP
	case int(g.connNet[net]) >= perNet:
		d, count, limit = decConnPerNet, int(g.connNet[net]), perNet
	}
	if d.Verdict != Accept {
		if lg.on() {
			lg.decision("connect", d, slog.String("ip", ip.String()), slog.Bool("trusted", trusted),
				slog.Int("count", count), slog.Int("limit", limit))
		}
		return d, net
	}
	g.conns++
	g.connIP[ip]++
	g.connNet[net]++
	return Decision{}, net
}

func (g *Guard) releaseConn(ip netip.Addr, net netip.Prefix) {
	g.conns--
	if n := g.connIP[ip] - 1; n > 0 {
		g.connIP[ip] = n
	} else {
		delete(g.connIP, ip)
	}
	if n := g.connNet[net] - 1; n > 0 {
		g.connNet[net] = n
	} else {
		delete(g.connNet, net)
	}
}
