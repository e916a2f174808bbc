package guard

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// stateVersion is the version of the saved JSON document.
const stateVersion = 1

// savedState is the guard state that survives a restart: bans and strikes,
// suspensions, isolations, what each account's logins and hourly volume
// look like, the current counter windows of local senders (so a restart
// does not hand a worm a fresh allowance), and the per-name failure
// counters and throttles (so a restart does not hand a distributed guesser
// a fresh allowance either; at most maxSavedThrottles, most recent first).
// The other outsider tables are not saved: they are short-lived and
// rebuilt by traffic.
type savedState struct {
	Version   int            `json:"version"`
	Bans      []savedBan     `json:"bans,omitempty"`
	Strikes   []savedStrike  `json:"strikes,omitempty"`
	Suspended []Suspension   `json:"suspended,omitempty"`
	Isolated  []savedIso     `json:"isolated,omitempty"`
	Accounts  []savedAccount `json:"accounts,omitempty"`
	Senders   []savedSender  `json:"senders,omitempty"`
	Names     []savedName    `json:"names,omitempty"`
}

// savedName is the failure counter and throttle of one login name.
type savedName struct {
	User  string `json:"user"`
	Fails window `json:"fails"`
	Until int64  `json:"until,omitempty"` // ms
	Since int64  `json:"since,omitempty"` // ms
}

type savedBan struct {
	Ban
	Auto bool `json:"auto,omitempty"`
}

type savedStrike struct {
	CIDR string `json:"cidr"`
	strike
}

type savedIso struct {
	Kind string `json:"kind"` // "ip" or "user"
	Isolation
}

type savedAccount struct {
	User       string     `json:"user"`
	LastLogin  int64      `json:"last_login,omitempty"` // ms
	Nets       []savedNet `json:"nets,omitempty"`
	Hosts      []savedNet `json:"hosts,omitempty"` // hosts (/32, /64) of successful logins
	NewNet     string     `json:"new_net,omitempty"`
	NewNetAt   int64      `json:"new_net_at,omitempty"`
	NewNetMsgs int        `json:"new_net_msgs,omitempty"`
	Hist       *history   `json:"hist,omitempty"`
}

type savedNet struct {
	CIDR  string `json:"cidr"`
	Last  int64  `json:"last"`            // ms
	First int64  `json:"first,omitempty"` // ms; absent in older states: Last
	Days  int    `json:"days,omitempty"`  // absent in older states: 1
}

type savedSender struct {
	Kind string           `json:"kind"` // "ip", "user" or "sender"
	Key  string           `json:"key"`
	IP   string           `json:"ip,omitempty"` // last client IP of an envelope sender
	Last int64            `json:"last"`
	W    [nWindows]window `json:"w"`
}

// export copies the state to save; called with g.mu held.
func (g *Guard) export(now int64) savedState {
	s := savedState{Version: stateVersion}
	for _, e := range g.bans.m {
		if e.expires > now {
			s.Bans = append(s.Bans, savedBan{Ban: e.ban, Auto: e.auto})
		}
	}
	for p, st := range g.bans.strikes {
		s.Strikes = append(s.Strikes, savedStrike{CIDR: p.String(), strike: st})
	}
	for _, sus := range g.suspended {
		s.Suspended = append(s.Suspended, sus)
	}
	for _, iso := range g.isoIP {
		s.Isolated = append(s.Isolated, savedIso{Kind: "ip", Isolation: copyIso(iso)})
	}
	for _, iso := range g.isoUser {
		s.Isolated = append(s.Isolated, savedIso{Kind: "user", Isolation: copyIso(iso)})
	}
	for u, a := range g.accounts {
		sa := savedAccount{User: u, LastLogin: a.lastLogin, NewNetAt: a.newNetAt, NewNetMsgs: a.newNetMsgs}
		if a.newNetAt != 0 {
			sa.NewNet = a.newNet.String()
		}
		for _, n := range a.nets {
			sa.Nets = append(sa.Nets, savedNet{CIDR: n.net.String(), Last: n.last, First: n.first, Days: n.days})
		}
		for _, n := range a.hosts {
			sa.Hosts = append(sa.Hosts, savedNet{CIDR: n.net.String(), Last: n.last, First: n.first, Days: n.days})
		}
		if a.hist.Start != 0 {
			h := a.hist
			sa.Hist = &h
		}
		s.Accounts = append(s.Accounts, sa)
	}
	add := func(kind, key string, st *senderStats) {
		if st.idle(now) {
			return
		}
		ss := savedSender{Kind: kind, Key: key, Last: st.last, W: st.w}
		if kind == "sender" && st.ip.IsValid() {
			ss.IP = st.ip.String()
		}
		s.Senders = append(s.Senders, ss)
	}
	for ip, st := range g.byIP {
		add("ip", ip.String(), st)
	}
	g.names.each(func(u string, n *nameState) bool {
		if n.throttled(now) || !n.fails.stale(now, quarterMS) {
			s.Names = append(s.Names, savedName{User: u, Fails: n.fails, Until: n.until, Since: n.since})
		}
		return len(s.Names) < maxSavedThrottles
	})
	for u, st := range g.byUser {
		add("user", u, st)
	}
	for f, st := range g.byFrom {
		add("sender", f, st)
	}
	return s
}

// restore loads a saved state into a new guard.
func (g *Guard) restore(b []byte) error {
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if s.Version != stateVersion {
		return fmt.Errorf("unsupported state version %d", s.Version)
	}
	for _, sb := range s.Bans {
		p, err := netip.ParsePrefix(sb.CIDR)
		if err != nil {
			return fmt.Errorf("ban %q: %w", sb.CIDR, err)
		}
		p, _ = normPrefix(p)
		g.bans.put(p, banEntry{ban: sb.Ban, expires: sb.Expires.UnixMilli(), auto: sb.Auto})
	}
	for _, ss := range s.Strikes {
		p, err := netip.ParsePrefix(ss.CIDR)
		if err != nil {
			return fmt.Errorf("strike %q: %w", ss.CIDR, err)
		}
		p, _ = normPrefix(p)
		g.bans.strikes[p] = ss.strike
	}
	for _, sus := range s.Suspended {
		g.suspended[sus.User] = sus
	}
	for _, si := range s.Isolated {
		iso := si.Isolation
		switch si.Kind {
		case "ip":
			ip, err := netip.ParseAddr(iso.IP)
			if err != nil {
				return fmt.Errorf("isolated ip %q: %w", iso.IP, err)
			}
			g.isoIP[normAddr(ip)] = &iso
		case "user":
			g.isoUser[iso.User] = &iso
		default:
			return fmt.Errorf("isolation of unknown kind %q", si.Kind)
		}
	}
	for _, sa := range s.Accounts {
		a := &account{lastLogin: sa.LastLogin, newNetAt: sa.NewNetAt, newNetMsgs: sa.NewNetMsgs}
		if sa.NewNet != "" {
			p, err := netip.ParsePrefix(sa.NewNet)
			if err != nil {
				return fmt.Errorf("account %q: %w", sa.User, err)
			}
			a.newNet = p
		} else {
			a.newNetAt = 0
		}
		var err error
		if a.nets, err = g.restoreSeen(sa.Nets); err != nil {
			return fmt.Errorf("account %q: %w", sa.User, err)
		}
		if a.hosts, err = g.restoreSeen(sa.Hosts); err != nil {
			return fmt.Errorf("account %q: %w", sa.User, err)
		}
		if sa.Hist != nil {
			a.hist = *sa.Hist
			a.hist.recompute()
		}
		g.accounts[sa.User] = a
	}
	// Most recent first in the file: restore the oldest first, so the LRU
	// order comes back as it was.
	for i := len(s.Names) - 1; i >= 0; i-- {
		sn := s.Names[i]
		n := g.names.get(normUser(sn.User))
		n.fails, n.until, n.since = sn.Fails, sn.Until, sn.Since
	}
	for _, ss := range s.Senders {
		var st *senderStats
		switch ss.Kind {
		case "ip":
			ip, err := netip.ParseAddr(ss.Key)
			if err != nil {
				return fmt.Errorf("sender ip %q: %w", ss.Key, err)
			}
			st = g.statsIP(normAddr(ip))
		case "user":
			st = g.statsUser(ss.Key)
		case "sender":
			st = g.statsFrom(ss.Key)
			if ip, err := netip.ParseAddr(ss.IP); err == nil {
				st.ip = ip
			}
		default:
			return fmt.Errorf("sender counters of unknown kind %q", ss.Kind)
		}
		st.w, st.last = ss.W, ss.Last
	}
	return nil
}

// save writes the state through the Persister (if any).
func (g *Guard) save() error {
	if g.store == nil {
		return nil
	}
	g.saveMu.Lock()
	defer g.saveMu.Unlock()
	_, now := g.clock()
	g.mu.Lock()
	s := g.export(now)
	g.dirty = false
	g.mu.Unlock()
	b, err := json.Marshal(s)
	if err == nil {
		err = g.store.SaveGuardState(b)
	}
	if err != nil {
		g.mu.Lock()
		g.dirty = true
		g.mu.Unlock()
		return fmt.Errorf("save guard state: %w", err)
	}
	return nil
}

// restoreSeen restores the networks or hosts of an account's successful
// logins (at most loginNetsCap) and the recent logins of each.
func (g *Guard) restoreSeen(saved []savedNet) ([]netSeen, error) {
	var out []netSeen
	for _, n := range saved {
		p, err := netip.ParsePrefix(n.CIDR)
		if err != nil {
			return nil, err
		}
		first, days := n.First, n.Days
		if first == 0 || first > n.Last {
			first = n.Last
		}
		if days < 1 {
			days = 1
		}
		if len(out) < loginNetsCap {
			out = append(out, netSeen{net: p, first: first, last: n.Last, days: days})
		}
		if n.Last > g.netLogins[p] {
			g.netLogins[p] = n.Last
		}
	}
	return out, nil
}
