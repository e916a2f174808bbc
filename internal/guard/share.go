package guard

import (
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"time"
)

// Decisions shared between the nodes of a cluster.
//
// The guard's counters stay on each node (its hot path never leaves
// memory); what a node decides — a ban, an unban, an isolation, a
// suspension, a release — is told to its Replicator, which hands it to the
// other nodes; they put it in force with ApplyShared, which never tells
// the Replicator again (no echo). Without a Replicator (one node, the
// default) none of this costs anything.

// Kinds of Shared decisions.
const (
	SharedBan     = "ban"
	SharedUnban   = "unban"
	SharedIsolate = "isolate"
	SharedSuspend = "suspend"
	SharedRelease = "release"
)

// Shared is one decision as nodes tell each other. Which fields are set
// depends on Kind: CIDR, Expires, Strikes and Auto for a ban (CIDR for an
// unban); IP or User (and Sender, Counts) for an isolation; User for a
// suspension; IP or User for a release.
type Shared struct {
	Kind    string
	Node    string // the node that decided
	Time    time.Time
	Rule    string
	CIDR    string
	Expires time.Time
	Strikes int
	Auto    bool
	IP      string
	User    string
	Sender  string
	Counts  map[string]int
}

// Replicator takes this node's decisions to the other nodes. Publish is
// called with the guard's lock held: it must not block and must not call
// the guard.
type Replicator interface {
	Publish(Shared)
}

// share tells the Replicator, if any, of a decision made here; called with
// g.mu held.
func (g *Guard) share(s Shared) {
	r := g.conf().Replicator
	if r == nil {
		return
	}
	s.Node = g.conf().Node
	s.Counts = maps.Clone(s.Counts)
	r.Publish(s)
}

// Node is the name this guard gives its own decisions.
func (g *Guard) Node() string { return g.conf().Node }

// ApplyShared puts in force a decision another node made. It is
// idempotent (a decision already in force changes nothing), raises no
// alert (the deciding node did), holds this node's queued mail of an
// isolated or suspended sender, and is never passed on to the Replicator.
func (g *Guard) ApplyShared(s Shared) {
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	switch s.Kind {
	case SharedBan:
		g.applyBan(s, now, &lg)
	case SharedUnban:
		if p, err := netip.ParsePrefix(s.CIDR); err == nil {
			if p, ok := normPrefix(p); ok {
				if _, found := g.unban(p); found {
					lg.add(slog.LevelInfo, "guard unbanned by another node", slog.String("cidr", p.String()), slog.String("node", s.Node))
				}
			}
		}
	case SharedIsolate:
		g.applyIsolate(s, &lg)
	case SharedSuspend:
		user := normUser(s.User)
		if _, ok := g.suspended[user]; ok || user == "" {
			break
		}
		since := s.Time
		if since.IsZero() {
			since = t
		}
		g.suspended[user] = Suspension{User: user, Rule: s.Rule, Since: since, Node: s.Node}
		if g.isoUser[user] == nil {
			g.isoUser[user] = &Isolation{IP: s.IP, User: user, Rule: s.Rule, Since: since, Node: s.Node}
		}
		g.dirty = true
		g.endSessions(user, &lg)
		g.enqueue(event{hold: true, holdUser: user, noAlert: true, alert: Alert{Rule: s.Rule, User: user}}, &lg)
		lg.add(slog.LevelWarn, "guard suspended account by another node", slog.String("rule", s.Rule),
			slog.String("user", user), slog.String("node", s.Node))
	case SharedRelease:
		target := s.IP
		if target == "" {
			target = s.User
		}
		if released, rule, _ := g.release(target, now); released {
			lg.add(slog.LevelWarn, "guard released by another node", slog.String("rule", rule),
				slog.String("target", target), slog.String("node", s.Node))
		}
	default:
		lg.add(slog.LevelWarn, "guard: shared decision of unknown kind ignored", slog.String("kind", s.Kind), slog.String("node", s.Node))
	}
	g.mu.Unlock()
	lg.emit()
}

// applyBan puts a ban from another node in force, unless one as long or
// longer already is. Called with g.mu held.
func (g *Guard) applyBan(s Shared, now int64, lg *logBuf) {
	p, err := netip.ParsePrefix(s.CIDR)
	if err != nil {
		lg.add(slog.LevelWarn, "guard: shared ban with a bad prefix", slog.String("cidr", s.CIDR), slog.String("node", s.Node))
		return
	}
	p, ok := normPrefix(p)
	exp := s.Expires.UnixMilli()
	if !ok || exp <= now {
		return
	}
	if old, exists := g.bans.m[p]; exists && old.expires >= exp {
		return
	}
	auto := s.Auto
	if auto && !g.hasBan(p) && g.bans.auto >= maxBans {
		g.bans.evictAuto()
	}
	b := Ban{CIDR: p.String(), Expires: msTime(exp), Rule: s.Rule, Strikes: s.Strikes, Node: s.Node}
	g.bans.put(p, banEntry{ban: b, expires: exp, auto: auto})
	if st := g.bans.strikes[p]; st.Count < s.Strikes || st.Expires < exp {
		g.bans.strikes[p] = strike{Count: max(st.Count, s.Strikes), Expires: max(st.Expires, exp)}
	}
	g.dirty = true
	lg.add(slog.LevelWarn, "guard banned by another node", slog.String("rule", s.Rule), slog.String("cidr", b.CIDR),
		slog.Time("until", b.Expires), slog.String("node", s.Node))
}

func (g *Guard) hasBan(p netip.Prefix) bool {
	_, ok := g.bans.m[p]
	return ok
}

// applyIsolate isolates a sender another node isolated. Called with g.mu
// held.
func (g *Guard) applyIsolate(s Shared, lg *logBuf) {
	since := s.Time
	iso := &Isolation{IP: s.IP, Sender: s.Sender, User: normUser(s.User), Rule: s.Rule, Counts: maps.Clone(s.Counts), Since: since, Node: s.Node}
	ev := event{hold: true, noAlert: true, alert: Alert{Rule: s.Rule, IP: s.IP, User: iso.User}}
	if iso.User != "" {
		if g.isoUser[iso.User] != nil {
			return
		}
		g.isoUser[iso.User] = iso
		ev.holdUser = iso.User
	} else {
		ip, err := netip.ParseAddr(s.IP)
		if err != nil {
			lg.add(slog.LevelWarn, "guard: shared isolation without a sender", slog.String("ip", s.IP), slog.String("node", s.Node))
			return
		}
		ip = normAddr(ip)
		if g.isoIP[ip] != nil {
			return
		}
		g.isoIP[ip] = iso
		ev.holdIP = ip
	}
	g.dirty = true
	g.enqueue(ev, lg)
	lg.add(slog.LevelWarn, "guard isolated sender by another node", slog.String("rule", s.Rule),
		slog.String("ip", s.IP), slog.String("user", iso.User), slog.String("node", s.Node))
}

// SharedKey is how a shared store names an isolation: "ip:ADDR" or
// "user:ADDRESS".
func SharedKey(iso Isolation) string {
	if iso.User != "" {
		return "user:" + normUser(iso.User)
	}
	return "ip:" + iso.IP
}

// ParseSharedKey splits a SharedKey into its IP or user.
func ParseSharedKey(k string) (ip, user string, ok bool) {
	if s, found := strings.CutPrefix(k, "ip:"); found {
		return s, "", true
	}
	if s, found := strings.CutPrefix(k, "user:"); found {
		return "", s, true
	}
	return "", "", false
}
