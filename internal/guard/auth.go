package guard

// Logins. The rules here are built so that outsiders can neither guess a
// password at scale nor lock the owner out:
//
//   - Failures are counted per login name over every source, trusted or
//     not (names that do not exist are counted the same way, in a bounded
//     table), per client host (an IPv4 address or an IPv6 /64), per
//     IP+name pair and per network (/24, /48) for spraying.
//   - The account trusts only the exact hosts it logged in from and the
//     owner's networks (successful logins on at least ownerNetDays days);
//     a /24 or /48 merely once used is not trusted, since its other hosts
//     are anyone sharing the owner's carrier, cloud or VPN range.
//   - Past AuthFailsPerAccount failures, the name is throttled: logins
//     from sources it does not trust are refused 454 4.7.0 whatever the
//     password, while trusted ones keep working. The administrator is
//     alerted once per episode. Trusted hosts are not pair-blocked (an
//     office colleague mistyping must not lock the others out) until the
//     name has floodFactor × AuthFailsPerAccount failures; then they are,
//     and the administrator is alerted.
//   - The per-host limit is protectedFactor × higher for a host (not a
//     network) with a successful login in the last 30 days.
//   - An automatic suspension refuses logins from everywhere but the
//     owner's networks (successful logins on at least ownerNetDays distinct
//     days), so a thief cannot keep the account and the owner is not
//     locked out. A suspension by the administrator refuses everywhere.
//   - No oracle: once a login is refused for its name (throttle, pair
//     block, suspension), the reply and the guard's state evolve the same
//     whether the password was right or wrong, and a suspended account
//     answers exactly like a wrong password (InvalidCredentials), which is
//     what a name that does not exist gets too.

import (
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// pairKey is one client host (hostOf) trying one login name.
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

// failRing remembers a name's most recent failures (from which host,
// when), for "failures followed by a success from the same network".
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

// fromNet counts failures after since that came from network net.
func (r *failRing) fromNet(net netip.Prefix, since int64) int {
	c := 0
	for i := range r.ips {
		if r.at[i] > since && r.ips[i].IsValid() && net.Contains(r.ips[i]) {
			c++
		}
	}
	return c
}

// nets counts the distinct networks of the failures after since.
func (r *failRing) nets(since int64) int {
	var seen [userFailRingSize]netip.Prefix
	c := 0
	for i := range r.ips {
		if r.at[i] <= since || !r.ips[i].IsValid() {
			continue
		}
		n := netOf(r.ips[i])
		dup := false
		for _, s := range seen[:c] {
			dup = dup || s == n
		}
		if !dup {
			seen[c] = n
			c++
		}
	}
	return c
}

// clearNet forgets the failures from network net: a success from there
// ends that run of failures (and only that one).
func (r *failRing) clearNet(net netip.Prefix) {
	for i := range r.ips {
		if r.ips[i].IsValid() && net.Contains(r.ips[i]) {
			r.ips[i], r.at[i] = netip.Addr{}, 0
		}
	}
}

// nameState is what the guard knows of the failures of one login name,
// whether or not an account of that name exists. It lives in a bounded LRU
// table: random names cannot grow memory.
type nameState struct {
	ring       failRing
	fails      window // failures from every source, per 15 min
	until      int64  // ms; throttled until then
	since      int64  // ms; start of the current throttle episode
	rightPw    bool   // a right password was refused in this episode (alerted once)
	floodUntil int64  // ms; a flood from trusted sources was alerted, not again until then
}

func (n *nameState) throttled(now int64) bool { return n.until > now }

// account is what the guard remembers of a user that has logged in or sent.
type account struct {
	nets       []netSeen // networks of successful logins, at most loginNetsCap
	hosts      []netSeen // hosts (hostPrefix) of successful logins, at most loginNetsCap
	lastLogin  int64     // ms
	newNet     netip.Prefix
	newNetAt   int64 // ms of the last login from a never-seen network; 0: none
	newNetMsgs int
	hist       history
}

// netSeen is one network an account logged in from successfully.
type netSeen struct {
	net   netip.Prefix
	first int64 // ms of the first successful login from it
	last  int64 // ms of the last one
	days  int   // distinct UTC days with a successful login from it
}

func (a *account) find(net netip.Prefix) *netSeen { return findSeen(a.nets, net) }

func findSeen(s []netSeen, net netip.Prefix) *netSeen {
	for i := range s {
		if s[i].net == net {
			return &s[i]
		}
	}
	return nil
}

// trusts reports whether failures of this account from ip are the owner's
// own: ip's host (the IPv4 address or IPv6 /64) logged in successfully, or
// ip's network is one of the owner's (see owns). Only those are spared the
// throttle and the pair block below the flood bound. A network the account
// merely once used is not enough: its siblings are anyone sharing the
// owner's carrier, cloud or VPN range.
func (a *account) trusts(ip netip.Addr) bool {
	return a != nil && (findSeen(a.hosts, hostPrefix(ip)) != nil || a.owns(netOf(ip)))
}

func (a *account) knows(net netip.Prefix) bool { return a.find(net) != nil }

// owns reports whether net is one of the owner's networks: the account
// logged in successfully from it on at least ownerNetDays distinct days. A
// suspension by a guard rule does not refuse logins from these.
func (a *account) owns(net netip.Prefix) bool {
	n := a.find(net)
	return n != nil && n.days >= ownerNetDays
}

// touch records a login from net, forgetting the least recently seen
// network when full.
func (a *account) touch(net netip.Prefix, now int64) { a.nets = touchSeen(a.nets, net, now) }

// touchHost records a login from host (a hostPrefix).
func (a *account) touchHost(host netip.Prefix, now int64) { a.hosts = touchSeen(a.hosts, host, now) }

func touchSeen(s []netSeen, net netip.Prefix, now int64) []netSeen {
	if n := findSeen(s, net); n != nil {
		if now/dayMS != n.last/dayMS && now > n.last {
			n.days++
		}
		n.last = max(n.last, now)
		return s
	}
	seen := netSeen{net: net, first: now, last: now, days: 1}
	if len(s) < loginNetsCap {
		return append(s, seen)
	}
	oldest := 0
	for i := range s {
		if s[i].last < s[oldest].last {
			oldest = i
		}
	}
	s[oldest] = seen
	return s
}

// recent counts the distinct networks logged in from after since, with net
// (the login being judged) included, and how many of them were first used
// after since.
func (a *account) recent(net netip.Prefix, since int64) (nets, fresh int) {
	counted := false
	for _, n := range a.nets {
		if n.last > since {
			nets++
			if n.first > since {
				fresh++
			}
			counted = counted || n.net == net
		}
	}
	if !counted {
		nets++
		if !a.knows(net) {
			fresh++
		}
	}
	return nets, fresh
}

// forgetSince forgets the networks first used after since (those of a
// login storm that led to a suspension are nobody's yet).
func (a *account) forgetSince(since int64) {
	a.nets = keepSeen(a.nets, func(n netSeen) bool { return n.first <= since })
	a.hosts = keepSeen(a.hosts, func(n netSeen) bool { return n.first <= since })
}

func keepSeen(s []netSeen, keep func(netSeen) bool) []netSeen {
	kept := s[:0]
	for _, n := range s {
		if keep(n) {
			kept = append(kept, n)
		}
	}
	return kept
}

// forget forgets one network and the hosts in it.
func (a *account) forget(net netip.Prefix) {
	a.nets = keepSeen(a.nets, func(n netSeen) bool { return n.net != net })
	a.hosts = keepSeen(a.hosts, func(n netSeen) bool { return !net.Overlaps(n.net) })
}

func (g *Guard) account(user string) *account {
	a := g.accounts[user]
	if a == nil {
		a = &account{}
		g.accounts[user] = a
	}
	return a
}

// autoSuspension reports whether a suspension was set by a login or
// sending rule (rather than by the administrator): those spare the owner's
// networks.
func autoSuspension(rule string) bool { return strings.HasPrefix(rule, "login.") }

// refusal is the decision for a login of user from ip (host, in net) that
// does not depend on the password: a throttled name (unless the account
// trusts ip) or a blocked pair (Defer 454 4.7.0), or a suspended account
// (InvalidCredentials, unless net is one of the owner's and the suspension
// is automatic). The order matters: the checks that apply to every name
// alike come first, so a suspended account answers like any other name.
// Called with g.mu held.
func (g *Guard) refusal(ip, host netip.Addr, net netip.Prefix, user string, now int64) Decision {
	a := g.accounts[user]
	if n := g.names.lookup(user); n != nil && n.throttled(now) && !a.trusts(ip) {
		return decThrottled
	}
	// A pair is blocked from a trusted host only during a flood.
	if p := g.pairs.lookup(pairKey{host, user}); p != nil && p.blocked > now {
		return decPairBlocked
	}
	if s, ok := g.suspended[user]; ok && !(autoSuspension(s.Rule) && a != nil && a.owns(net)) {
		d := InvalidCredentials
		d.Rule = s.Rule
		return d
	}
	return Decision{}
}

// AuthCheck is asked before the password is checked. Drop (a banned
// address) means: refuse without checking the password. Any other refusal
// (a throttled name Defer 454 4.7.0, a blocked IP+name pair Defer 454
// 4.7.0, a suspended account InvalidCredentials) is only a forecast: check
// the password anyway (so that the time taken does not depend on the
// account) and let AuthResult decide. Login does both.
func (g *Guard) AuthCheck(ip netip.Addr, user string) Decision {
	ip, user = normAddr(ip), normUser(user)
	_, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	var d Decision
	if b, ok := g.bans.lookup(ip, now); ok {
		d = decBannedLater
		if lg.on() {
			lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user), slog.String("ban", b.ban.CIDR))
		}
	} else {
		d = g.refusal(ip, hostOf(ip), netOf(ip), user, now)
		if d.Verdict != Accept && lg.on() {
			lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user))
		}
	}
	g.mu.Unlock()
	lg.emit()
	if d.Verdict == Drop { // final: Login stops here; other refusals are a forecast
		g.observe("auth", d)
	}
	return d
}

// AuthResult records the outcome of a login and makes the final decision.
// When the login is refused for its name (see AuthCheck), it is counted as
// a failure whatever ok says, and the reply is the same for a right and a
// wrong password. A failure may throttle the name, block the IP+name pair
// or ban the address (Drop, so the session ends). A success runs the login
// detectors and may suspend the account.
func (g *Guard) AuthResult(ip netip.Addr, user string, ok bool) Decision {
	ip, user = normAddr(ip), normUser(user)
	host, net := hostOf(ip), netOf(ip)
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	var d Decision
	switch ref := g.refusal(ip, host, net, user, now); {
	case ref.Verdict != Accept:
		d = g.authFailure(ip, host, net, user, t, now, &lg)
		if ok {
			g.rightPasswordRefused(ip, user, ref, t, now, &lg)
		}
		if d.Verdict == Accept {
			d = ref
			if lg.on() {
				lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user))
			}
		}
	case ok:
		d = g.authSuccess(ip, host, net, user, t, now, &lg)
	default:
		d = g.authFailure(ip, host, net, user, t, now, &lg)
	}
	g.mu.Unlock()
	lg.emit()
	g.observe("auth", d)
	return d
}

// Authorizer is the part of the guard a login front end (SMTP AUTH, IMAP,
// POP3) talks to.
type Authorizer interface {
	AuthCheck(ip netip.Addr, user string) Decision
	AuthResult(ip netip.Addr, user string, ok bool) Decision
}

// Login runs the guard's login protocol around verify, which checks the
// password (and must cost the same for unknown users): AuthCheck, then
// verify unless the address is banned, then AuthResult. A non-Accept
// decision is the reply to send; Accept means "as verify said". Every
// protocol should log in through it so that none of them becomes an
// oracle.
func Login(g Authorizer, ip netip.Addr, user string, verify func() bool) Decision {
	if d := g.AuthCheck(ip, user); d.Verdict == Drop {
		return d
	}
	return g.AuthResult(ip, user, verify())
}

// rightPasswordRefused logs a right password refused for its name and,
// once per throttle episode, tells the administrator: the password may be
// known to whoever is guessing. Called with g.mu held.
func (g *Guard) rightPasswordRefused(ip netip.Addr, user string, ref Decision, t time.Time, now int64, lg *logBuf) {
	lg.add(slog.LevelWarn, "guard refused a login with the right password", slog.String("rule", ref.Rule),
		slog.String("ip", ip.String()), slog.String("user", user))
	if ref.Rule != decThrottled.Rule {
		return
	}
	n := g.names.lookup(user)
	if n == nil || n.rightPw {
		return
	}
	n.rightPw = true
	g.enqueue(event{alert: Alert{Time: t, Kind: "throttled", IP: ip.String(), User: user, Rule: "auth.right_password_refused",
		Detail: "the right password was presented from " + ip.String() + ", a host this account does not trust, while its logins were throttled; " +
			"if that was not the owner, the password is known: change it",
		Extra: map[string]string{"since": msTime(n.since).Format(time.RFC3339)}}}, lg)
}

func (g *Guard) authFailure(ip, host netip.Addr, net netip.Prefix, user string, t time.Time, now int64, lg *logBuf) Decision {
	trusted := g.accounts[user].trusts(ip)
	// The ×protectedFactor allowance of the per-host limit is keyed on the
	// host that logged in, not its network: a guesser spread over the
	// /48 or /24 of a user gets no more than anyone else.
	protectedHost := g.netLogins[hostPrefix(ip)] > now-netLoginMemory
	protectedNet := g.netLogins[net] > now-netLoginMemory

	ipFails := g.ips.get(host).authFails.add(now, quarterMS, 1)
	ns := g.names.get(user)
	ns.ring.add(host, now)
	// The per-name counter: every source together, trusted or not, so that
	// guessing spread over many networks (or many hosts of the owner's
	// network) is still counted once.
	n := ns.fails.add(now, quarterMS, 1)
	g.dirty = true
	if n >= g.conf().AuthFailsPerAccount {
		if !ns.throttled(now) {
			ns.since, ns.rightPw = now, false
			nets := ns.ring.nets(now - quarterMS)
			g.enqueue(event{alert: Alert{Time: t, Kind: "throttled", IP: ip.String(), User: user, Rule: decThrottled.Rule,
				Counts: map[string]int{"failures_15m": n, "recent_networks": nets},
				Detail: strconv.Itoa(n) + " failed logins within 15 minutes; " +
					"logins are refused for " + g.conf().AccountThrottle.String() + " except from the hosts this name logged in from and the owner's networks"}}, lg)
			lg.add(slog.LevelWarn, "guard throttled login name", slog.String("rule", decThrottled.Rule),
				slog.String("ip", ip.String()), slog.String("user", user), slog.Int("failures", n))
		}
		ns.until = now + g.conf().AccountThrottle.Milliseconds()
	}
	// Past floodFactor × the account threshold, trusted sources lose their
	// exemption from the pair block too, and the administrator hears of it:
	// that many failures are not an office mistyping.
	flood := n >= floodFactor*g.conf().AuthFailsPerAccount
	if flood && trusted && ns.floodUntil <= now {
		ns.floodUntil = now + g.conf().AccountThrottle.Milliseconds()
		g.enqueue(event{alert: Alert{Time: t, Kind: "throttled", IP: ip.String(), User: user, Rule: "auth.trusted_flood",
			Counts: map[string]int{"failures_15m": n, "recent_networks": ns.ring.nets(now - quarterMS)},
			Detail: strconv.Itoa(n) + " failed logins within 15 minutes, some from hosts or networks this name logs in from; " +
				"the guessing hosts are blocked for this name"}}, lg)
		lg.add(slog.LevelWarn, "guard saw a login flood from trusted sources", slog.String("rule", "auth.trusted_flood"),
			slog.String("ip", ip.String()), slog.String("user", user), slog.Int("failures", n))
	}
	ipLimit, sprayLimit := g.conf().AuthFailsPerIP, g.conf().AuthUsersPerNet
	if protectedHost {
		ipLimit *= protectedFactor
	}
	if protectedNet {
		sprayLimit *= protectedFactor
	}
	users := g.nets.get(net).add(maphash.String(g.seed, user), now, sprayLimit)

	// The pair block: never on a trusted host below the flood bound, so
	// that a colleague behind the owner's NAT cannot lock the owner out.
	pairBlocked := false
	p := g.pairs.get(pairKey{host, user})
	pairFails := p.fails.add(now, quarterMS, 1)
	if (!trusted || flood) && pairFails >= g.conf().AuthFailsPerPair && p.blocked <= now {
		d := backoff(g.conf().BanBase, g.conf().BanMax, p.strikes)
		p.strikes++
		p.blocked = now + d.Milliseconds()
		pairBlocked = true
		lg.add(slog.LevelWarn, "guard blocked login pair", slog.String("rule", "auth.bruteforce"),
			slog.String("ip", ip.String()), slog.String("user", user), slog.Int("failures", pairFails),
			slog.Int("strikes", p.strikes), slog.Duration("for", d))
	}

	attrs := []slog.Attr{slog.String("ip", ip.String()), slog.String("user", user),
		slog.Int("ip_failures", ipFails), slog.Int("users_failing_on_net", users), slog.Bool("protected_host", protectedHost), slog.Bool("protected_net", protectedNet)}
	switch {
	case ipFails >= ipLimit:
		g.addBan(hostPrefix(ip), 0, "auth.bruteforce", true, map[string]int{"auth_failures": ipFails},
			"AUTH failures from one address within 15 minutes", t, now, lg)
		d := decBannedLater
		d.Rule = "auth.bruteforce"
		lg.decision("auth", d, attrs...)
		return d
	case users >= sprayLimit:
		// An IPv6 site owns its whole /48 and can rotate through 65,536
		// /64s: ban the network, unless users log in from it.
		p := hostPrefix(ip)
		if ip.Is6() && !protectedNet {
			p = net
		}
		g.addBan(p, 0, "auth.spray", true, map[string]int{"distinct_users": users, "auth_failures": ipFails},
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

func (g *Guard) authSuccess(ip, host netip.Addr, net netip.Prefix, user string, t time.Time, now int64, lg *logBuf) Decision {
	a := g.account(user)
	first := len(a.nets) == 0
	newNet := !a.knows(net) && !first
	same := 0
	if ns := g.names.lookup(user); ns != nil {
		same = ns.ring.fromNet(net, now-quarterMS)
		ns.ring.clearNet(net)
	}

	var rule, detail string
	var counts map[string]int
	switch nets, fresh := a.recent(net, now-tenMinMS); {
	case newNet && same >= failThenSuccess:
		// The thief: guesses, then the right password, from one network
		// the account never used. Failures from elsewhere do not count:
		// outsiders must not be able to get the owner suspended.
		rule = "login.fail_then_success"
		counts = map[string]int{"failures_from_same_network": same}
		detail = "login from never-seen network " + net.String() + " right after " + strconv.Itoa(same) + " failures from that network"
	case nets >= g.conf().LoginNetworks && fresh > 0:
		rule = "login.networks"
		counts = map[string]int{"networks_10m": nets, "new_networks_10m": fresh}
		detail = "logins from " + strconv.Itoa(nets) + " networks within 10 minutes, " + strconv.Itoa(fresh) + " of them never used before"
	}
	if rule != "" {
		a.forgetSince(now - tenMinMS) // the storm's networks are nobody's
		g.suspend(user, rule, ip, counts, detail, nil, nil, t, lg)
	}
	if s, ok := g.suspended[user]; ok && !(autoSuspension(s.Rule) && a.owns(net)) {
		// Counted as a failure, like every refused login, so that a right
		// password leaves the same traces as a wrong one.
		if d := g.authFailure(ip, host, net, user, t, now, lg); d.Verdict != Accept {
			return d
		}
		d := InvalidCredentials
		d.Rule = s.Rule
		lg.decision("auth", d, slog.String("ip", ip.String()), slog.String("user", user))
		return d
	}
	a.touch(net, now)
	a.touchHost(hostPrefix(ip), now)
	a.lastLogin = now
	g.netLogins[net] = now
	g.netLogins[hostPrefix(ip)] = now
	g.dirty = true
	if p := g.pairs.lookup(pairKey{host, user}); p != nil {
		p.fails = window{}
	}
	if newNet && rule == "" {
		a.newNet, a.newNetAt, a.newNetMsgs = net, now, 0
		lg.add(slog.LevelInfo, "guard signal: login from a new network", slog.String("rule", "login.new_network"),
			slog.String("ip", ip.String()), slog.String("user", user), slog.String("net", net.String()),
			slog.Int("known_networks", len(a.nets)-1))
	}
	return Decision{}
}
