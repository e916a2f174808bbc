package guard

import (
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"time"
)

// pairKey is one client IP trying one account.
type pairKey struct {
	ip   netip.Addr
	user string
}

type pairState struct {
	fails   window // per 15 min
	blocked int64  // ms; blocked until then
	strikes int    // blocks so far (backoff grows with it)
}

// netState tracks the distinct usernames that failed from one network, to
// catch password spraying from behind many addresses.
type netState struct {
	users []userSeen
}

type userSeen struct {
	h  uint64
	at int64
}

// add records a failure for the username with hash h and returns how many
// distinct usernames failed within the last 15 minutes. At most capacity
// names are kept; the oldest makes room.
func (n *netState) add(h uint64, now int64, capacity int) int {
	since := now - quarterMS
	oldest := -1
	found := false
	for i := range n.users {
		u := &n.users[i]
		if u.h == h {
			u.at = now
			found = true
			break
		}
		if oldest < 0 || u.at < n.users[oldest].at {
			oldest = i
		}
	}
	if !found {
		switch {
		case len(n.users) < capacity:
			n.users = append(n.users, userSeen{h, now})
		case oldest >= 0:
			n.users[oldest] = userSeen{h, now}
		}
	}
	c := 0
	for _, u := range n.users {
		if u.at > since {
			c++
		}
	}
	return c
}

// failRing remembers an account's most recent failures (from which IP,
// when), for "failures followed by a success".
type failRing struct {
	ips  [userFailRingSize]netip.Addr
	at   [userFailRingSize]int64
	next int
}

func (r *failRing) add(ip netip.Addr, now int64) {
	r.ips[r.next] = ip
	r.at[r.next] = now
	r.next = (r.next + 1) % userFailRingSize
}

// fromOthers counts failures after since that came from an address other
// than ip.
func (r *failRing) fromOthers(ip netip.Addr, since int64) int {
	c := 0
	for i := range r.ips {
		if r.at[i] > since && r.ips[i].IsValid() && r.ips[i] != ip {
			c++
		}
	}
	return c
}

// account is what the guard remembers of a user that has logged in or sent.
type account struct {
	nets       []netSeen // networks of successful logins, at most loginNetsCap
	lastLogin  int64     // ms
	newNet     netip.Prefix
	newNetAt   int64 // ms of the last login from a never-seen network; 0: none
	newNetMsgs int
	hist       history
}

type netSeen struct {
	net  netip.Prefix
	last int64
}

func (a *account) knows(net netip.Prefix) bool {
	for _, n := range a.nets {
		if n.net == net {
			return true
		}
	}
	return false
}

// touch records a login from net, forgetting the least recently seen
// network when full.
func (a *account) touch(net netip.Prefix, now int64) {
	oldest := -1
	for i := range a.nets {
		if a.nets[i].net == net {
			a.nets[i].last = now
			return
		}
		if oldest < 0 || a.nets[i].last < a.nets[oldest].last {
			oldest = i
		}
	}
	if len(a.nets) < loginNetsCap {
		a.nets = append(a.nets, netSeen{net, now})
		return
	}
	a.nets[oldest] = netSeen{net, now}
}

// netsSince counts the distinct networks logged in from after since.
func (a *account) netsSince(since int64) int {
	c := 0
	for _, n := range a.nets {
		if n.last > since {
			c++
		}
	}
	return c
}

func (g *Guard) account(user string) *account {
	a := g.accounts[user]
	if a == nil {
		a = &account{}
		g.accounts[user] = a
	}
	return a
}

// AuthCheck is asked before the password is checked: a banned IP gets Drop,
// a suspended account Reject 535 5.7.8, an IP+account pair blocked for brute
// force Defer 454 4.7.0.
func (g *Guard) AuthCheck(ip netip.Addr, user string) Decision {
	ip, user = normAddr(ip), normUser(user)
	_, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	d := Decision{}
	if b, ok := g.bans.lookup(ip, now); ok {
		d = decBannedLater
		if lg.on() {
			lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user), slog.String("ban", b.ban.CIDR))
		}
	} else if s, ok := g.suspended[user]; ok {
		d = decSuspended
		d.Rule = s.Rule
		lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user))
	} else if p := g.pairs.lookup(pairKey{ip, user}); p != nil && p.blocked > now {
		d = decPairBlocked
		lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user),
			slog.Time("until", msTime(p.blocked)))
	}
	g.mu.Unlock()
	lg.emit()
	return d
}

// AuthResult records the outcome of a login. A failure may block the
// IP+account pair or ban the IP (Drop, so the session ends). A success runs
// the login detectors and may suspend the account (Reject 535 5.7.8).
func (g *Guard) AuthResult(ip netip.Addr, user string, ok bool) Decision {
	ip, user = normAddr(ip), normUser(user)
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	var d Decision
	if ok {
		d = g.authSuccess(ip, user, t, now, &lg)
	} else {
		d = g.authFailure(ip, user, t, now, &lg)
	}
	g.mu.Unlock()
	lg.emit()
	return d
}

func (g *Guard) authFailure(ip netip.Addr, user string, t time.Time, now int64, lg *logBuf) Decision {
	net := netOf(ip)
	a := g.accounts[user]
	known := a != nil && a.knows(net)
	protected := g.netLogins[net] > now-netLoginMemory

	ipFails := g.ips.get(ip).authFails.add(now, quarterMS, 1)
	g.userFails.get(user).add(ip, now)
	ipLimit, sprayLimit := g.cfg.AuthFailsPerIP, g.cfg.AuthUsersPerNet
	if protected {
		ipLimit *= protectedFactor
		sprayLimit *= protectedFactor
	}
	users := g.nets.get(net).add(maphash.String(g.seed, user), now, sprayLimit)

	// The pair block: never where this account has logged in before, so
	// that an attacker behind the same NAT cannot lock the real user out.
	pairBlocked, pairFails := false, 0
	if !known {
		p := g.pairs.get(pairKey{ip, user})
		pairFails = p.fails.add(now, quarterMS, 1)
		if pairFails >= g.cfg.AuthFailsPerPair && p.blocked <= now {
			d := backoff(g.cfg.BanBase, g.cfg.BanMax, p.strikes)
			p.strikes++
			p.blocked = now + d.Milliseconds()
			pairBlocked = true
			lg.add(slog.LevelWarn, "guard blocked login pair", slog.String("rule", "auth.bruteforce"),
				slog.String("ip", ip.String()), slog.String("user", user), slog.Int("failures", pairFails),
				slog.Int("strikes", p.strikes), slog.Duration("for", d))
		}
	}

	attrs := []slog.Attr{slog.String("ip", ip.String()), slog.String("user", user),
		slog.Int("ip_failures", ipFails), slog.Int("users_failing_on_net", users), slog.Bool("protected_net", protected)}
	switch {
	case ipFails >= ipLimit:
		g.ban(ip, "auth.bruteforce", map[string]int{"auth_failures": ipFails},
			"AUTH failures from one address within 15 minutes", t, now, lg)
		d := decBannedLater
		d.Rule = "auth.bruteforce"
		lg.decision("auth", d, attrs...)
		return d
	case users >= sprayLimit:
		g.ban(ip, "auth.spray", map[string]int{"distinct_users": users, "auth_failures": ipFails},
			"AUTH failures for many usernames from network "+net.String()+" within 15 minutes", t, now, lg)
		d := decBannedLater
		d.Rule = "auth.spray"
		lg.decision("auth", d, attrs...)
		return d
	case pairBlocked:
		lg.decision("auth", decPairDrop, append(attrs, slog.Int("pair_failures", pairFails))...)
		return decPairDrop
	}
	return Decision{}
}

// ban bans a single address found abusing AUTH, with backoff.
func (g *Guard) ban(ip netip.Addr, rule string, counts map[string]int, detail string, t time.Time, now int64, lg *logBuf) {
	bits := 32
	if ip.Is6() {
		bits = 128
	}
	g.addBan(netip.PrefixFrom(ip, bits), 0, rule, true, counts, detail, t, now, lg)
}

func (g *Guard) authSuccess(ip netip.Addr, user string, t time.Time, now int64, lg *logBuf) Decision {
	net := netOf(ip)
	a := g.account(user)
	first := len(a.nets) == 0
	known := a.knows(net)
	a.touch(net, now)
	a.lastLogin = now
	g.netLogins[net] = now
	g.dirty = true
	if p := g.pairs.lookup(pairKey{ip, user}); p != nil {
		p.fails = window{}
	}
	fr := g.userFails.lookup(user)
	others := 0
	if fr != nil {
		others = fr.fromOthers(ip, now-quarterMS)
		*fr = failRing{} // a success ends the run of failures
	}
	newNet := !known && !first

	var rule, detail string
	var counts map[string]int
	switch nets := a.netsSince(now - tenMinMS); {
	case newNet && others >= failThenSuccess:
		rule = "login.fail_then_success"
		counts = map[string]int{"failures_from_other_ips": others}
		detail = "login from never-seen network " + net.String() + " right after " + strconv.Itoa(others) + " failures from other addresses"
	case nets >= g.cfg.LoginNetworks:
		rule = "login.networks"
		counts = map[string]int{"networks_10m": nets}
		detail = "logins from " + strconv.Itoa(nets) + " networks within 10 minutes"
	}
	if rule == "" && newNet {
		a.newNet, a.newNetAt, a.newNetMsgs = net, now, 0
		lg.add(slog.LevelInfo, "guard signal: login from a new network", slog.String("rule", "login.new_network"),
			slog.String("ip", ip.String()), slog.String("user", user), slog.String("net", net.String()),
			slog.Int("known_networks", len(a.nets)-1))
	}
	if rule != "" {
		g.suspend(user, rule, ip, counts, detail, nil, nil, t, lg)
	}
	if s, ok := g.suspended[user]; ok {
		d := decSuspended
		d.Rule = s.Rule
		lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user))
		return d
	}
	return Decision{}
}
