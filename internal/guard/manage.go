package guard

import (
	"cmp"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Ban bans an IP or a network for d (0: the backoff length, BanBase × 4 per
// earlier strike, capped at BanMax). An active ban is never shortened.
func (g *Guard) Ban(prefix netip.Prefix, d time.Duration, rule string) {
	if rule == "" {
		rule = "admin"
	}
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	g.addBan(prefix, d, rule, false, nil, "banned by the administrator", t, now, &lg)
	g.mu.Unlock()
	lg.emit()
}

// addBan records a ban; called with g.mu held. auto marks bans set by a
// rule, which may be evicted when the table is full.
func (g *Guard) addBan(prefix netip.Prefix, d time.Duration, rule string, auto bool, counts map[string]int, detail string, t time.Time, now int64, lg *logBuf) (Ban, bool) {
	p, ok := normPrefix(prefix)
	if !ok {
		lg.add(slog.LevelWarn, "guard ban: invalid prefix", slog.String("prefix", prefix.String()), slog.String("rule", rule))
		return Ban{}, false
	}
	prev := 0
	if s, ok := g.bans.strikes[p]; ok && now < s.Expires+strikeMemory {
		prev = s.Count
	}
	if d <= 0 {
		d = backoff(g.conf().BanBase, g.conf().BanMax, prev)
	}
	exp := now + d.Milliseconds()
	old, exists := g.bans.m[p]
	if exists && old.expires > exp {
		exp = old.expires
	}
	if exists && !old.auto {
		auto = false
	}
	if auto && !exists && g.bans.auto >= maxBans {
		g.bans.evictAuto()
	}
	b := Ban{CIDR: p.String(), Expires: msTime(exp), Rule: rule, Strikes: prev + 1, Node: g.conf().Node}
	g.bans.put(p, banEntry{ban: b, expires: exp, auto: auto})
	if _, ok := g.bans.strikes[p]; !ok && len(g.bans.strikes) >= 2*maxBans {
		for k := range g.bans.strikes {
			delete(g.bans.strikes, k)
			break
		}
	}
	g.bans.strikes[p] = strike{Count: prev + 1, Expires: exp}
	g.dirty = true
	g.share(Shared{Kind: SharedBan, Time: t, Rule: rule, CIDR: b.CIDR, Expires: b.Expires, Strikes: b.Strikes, Auto: auto})
	ipStr := ""
	if p.IsSingleIP() {
		ipStr = p.Addr().String()
	}
	g.enqueue(event{alert: Alert{Time: t, Kind: "banned", IP: ipStr, Rule: rule, Counts: counts, Detail: detail,
		Extra: map[string]string{"cidr": b.CIDR, "until": b.Expires.Format(time.RFC3339), "strikes": strconv.Itoa(b.Strikes)}}}, lg)
	lg.add(slog.LevelWarn, "guard banned", slog.String("rule", rule), slog.String("cidr", b.CIDR),
		slog.Time("until", b.Expires), slog.Int("strikes", b.Strikes), slog.Duration("for", time.Duration(exp-now)*time.Millisecond),
		slog.Any("counts", counts))
	return b, true
}

// Unban lifts the ban of exactly prefix. It reports whether an active ban
// was lifted. Strikes are remembered: a new ban still grows.
func (g *Guard) Unban(prefix netip.Prefix) bool {
	p, ok := normPrefix(prefix)
	if !ok {
		return false
	}
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	e, found := g.unban(p)
	active := found && e.expires > now
	g.share(Shared{Kind: SharedUnban, Time: t, CIDR: p.String()})
	if found {
		lg.add(slog.LevelInfo, "guard unbanned", slog.String("cidr", p.String()), slog.String("rule", e.ban.Rule))
		if active {
			g.enqueue(event{alert: Alert{Time: t, Kind: "released", Rule: e.ban.Rule, Detail: "ban of " + p.String() + " lifted by the administrator",
				Extra: map[string]string{"cidr": p.String()}}}, &lg)
		}
	}
	g.mu.Unlock()
	lg.emit()
	return active
}

// unban removes the ban of p (normalised) and forgets the failures that
// would ban it again at once; called with g.mu held.
func (g *Guard) unban(p netip.Prefix) (banEntry, bool) {
	e, found := g.bans.remove(p)
	if found {
		g.dirty = true
		if p == hostPrefix(p.Addr()) || p.IsSingleIP() {
			if st := g.ips.lookup(hostOf(p.Addr())); st != nil {
				st.authFails = window{} // else the next failure bans it again at once
			}
		}
	}
	return e, found
}

// Banned returns the active ban covering ip, if any.
func (g *Guard) Banned(ip netip.Addr) (Ban, bool) {
	ip = normAddr(ip)
	_, now := g.clock()
	g.mu.Lock()
	e, ok := g.bans.lookup(ip, now)
	g.mu.Unlock()
	return e.ban, ok
}

// Release clears the isolation of an IP, or the isolation, suspension and
// login throttle of a user (an address), and resets that sender's
// counters. It reports whether there was anything to clear.
func (g *Guard) Release(ipOrUser string) bool {
	s := strings.TrimSpace(ipOrUser)
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	released, rule, alert := g.release(s, now)
	alert.Time = t
	sh := Shared{Kind: SharedRelease, Time: t, Rule: rule, IP: alert.IP, User: alert.User}
	if sh.IP != "" || sh.User != "" {
		g.share(sh)
	}
	if released {
		g.dirty = true
		alert.Rule = rule
		alert.Detail = "released by the administrator; counters reset"
		g.enqueue(event{alert: alert}, &lg)
		lg.add(slog.LevelWarn, "guard released", slog.String("rule", rule), slog.String("ip", alert.IP), slog.String("user", alert.User))
	}
	g.mu.Unlock()
	lg.emit()
	return released
}

// release clears the isolation of an IP, or the isolation, suspension and
// login throttle of a user, and resets that sender's counters; called
// with g.mu held. The alert names the IP or the user.
func (g *Guard) release(s string, now int64) (released bool, rule string, alert Alert) {
	alert.Kind = "released"
	if ip, err := netip.ParseAddr(s); err == nil {
		ip = normAddr(ip)
		if iso, ok := g.isoIP[ip]; ok {
			released, rule = true, iso.Rule
			delete(g.isoIP, ip)
		}
		g.resetIP(ip)
		alert.IP = ip.String()
	} else {
		user := normUser(s)
		if iso, ok := g.isoUser[user]; ok {
			released, rule = true, iso.Rule
			delete(g.isoUser, user)
		}
		if sus, ok := g.suspended[user]; ok {
			released, rule = true, sus.Rule
			delete(g.suspended, user)
		}
		delete(g.byUser, user)
		if n := g.names.lookup(user); n != nil {
			if n.throttled(now) && !released {
				released, rule = true, decThrottled.Rule
			}
			*n = nameState{}
		}
		if a := g.accounts[user]; a != nil {
			a.newNetAt, a.newNetMsgs = 0, 0
		}
		alert.User = user
	}
	if released {
		g.dirty = true
	}
	return released, rule, alert
}

// resetIP forgets the counters of an IP and of the envelope senders last
// seen from it.
func (g *Guard) resetIP(ip netip.Addr) {
	delete(g.byIP, ip)
	for k, st := range g.byFrom {
		if st.ip == ip {
			delete(g.byFrom, k)
		}
	}
}

// Suspend suspends an account by hand (rule "" means "admin").
func (g *Guard) Suspend(user, rule string) {
	if rule == "" {
		rule = "admin"
	}
	user = normUser(user)
	if user == "" {
		return
	}
	t, _ := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	g.suspend(user, rule, netip.Addr{}, nil, "suspended by the administrator", nil, nil, t, &lg)
	g.mu.Unlock()
	lg.emit()
}

// IsSuspended reports whether the account is suspended.
func (g *Guard) IsSuspended(user string) bool {
	user = normUser(user)
	g.mu.Lock()
	_, ok := g.suspended[user]
	g.mu.Unlock()
	return ok
}

// LastLogins returns each known account's last successful login.
func (g *Guard) LastLogins() map[string]time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]time.Time, len(g.accounts))
	for u, a := range g.accounts {
		if a.lastLogin != 0 {
			out[u] = msTime(a.lastLogin)
		}
	}
	return out
}

// Snapshot lists isolated senders, suspended accounts and active bans,
// oldest first.
func (g *Guard) Snapshot() Snapshot {
	_, now := g.clock()
	g.mu.Lock()
	s := Snapshot{Isolated: []Isolation{}, Suspended: []Suspension{}, Bans: []Ban{}}
	if st, ok := g.SharedStatus(); ok {
		s.Shared = &st
	}
	for _, iso := range g.isoIP {
		s.Isolated = append(s.Isolated, copyIso(iso))
	}
	for _, iso := range g.isoUser {
		s.Isolated = append(s.Isolated, copyIso(iso))
	}
	for _, sus := range g.suspended {
		s.Suspended = append(s.Suspended, sus)
	}
	for _, e := range g.bans.m {
		if e.expires > now {
			s.Bans = append(s.Bans, e.ban)
		}
	}
	g.names.each(func(u string, n *nameState) bool {
		if n.throttled(now) {
			s.Throttled = append(s.Throttled, Throttle{User: u, Since: msTime(n.since), Until: msTime(n.until),
				Failures: n.fails.get(now, quarterMS)})
		}
		return len(s.Throttled) < maxListedThrottles
	})
	g.mu.Unlock()
	slices.SortFunc(s.Isolated, func(a, b Isolation) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.User, b.User), cmp.Compare(a.IP, b.IP))
	})
	slices.SortFunc(s.Suspended, func(a, b Suspension) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.User, b.User))
	})
	slices.SortFunc(s.Bans, func(a, b Ban) int {
		return cmp.Or(a.Expires.Compare(b.Expires), cmp.Compare(a.CIDR, b.CIDR))
	})
	return s
}

func copyIso(iso *Isolation) Isolation {
	c := *iso
	c.Counts = maps.Clone(iso.Counts)
	return c
}

// sweep drops expired bans and strikes, idle counters and old network
// logins. Run calls it every minute.
func (g *Guard) sweep() {
	_, now := g.clock()
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, e := range g.bans.m {
		if e.expires <= now {
			g.bans.remove(p)
			g.dirty = true
		}
	}
	for p, s := range g.bans.strikes {
		if s.Expires+strikeMemory <= now {
			delete(g.bans.strikes, p)
			g.dirty = true
		}
	}
	for _, m := range []map[string]*senderStats{g.byUser, g.byFrom} {
		for k, st := range m {
			if now-st.last > idleStats {
				delete(m, k)
			}
		}
	}
	for k, st := range g.byIP {
		if now-st.last > idleStats {
			delete(g.byIP, k)
		}
	}
	for n, at := range g.netLogins {
		if at <= now-netLoginMemory {
			delete(g.netLogins, n)
		}
	}
}
