package guard

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/netip"
	"time"
)

// The windows kept per local sender key.
const (
	wMsgsMin   = iota // messages per minute
	wMsgsHour         // messages per hour (for the history detector)
	wRcptsMin         // recipients per minute
	wRcptsHour        // recipients per hour
	wRcptsDay         // recipients per day
	wNewMin           // first-time recipients per minute
	wRcpts10          // RCPT commands per 10 min (accepted or refused)
	wBad10            // refused RCPT commands per 10 min
	wHdrFrom10        // header From mismatches per 10 min
	wContent10        // messages refused or held by the content policy per 10 min
	nWindows
)

var widths = [nWindows]int64{minuteMS, hourMS, minuteMS, hourMS, dayMS, minuteMS, tenMinMS, tenMinMS, tenMinMS, tenMinMS}

// senderStats are the counters of one local sender key.
type senderStats struct {
	w        [nWindows]window
	limits   Limits
	known    map[uint64]struct{} // hashes of recipients mailed before, at most knownRcptsCap
	subjects [sampleCount]string // most recent, as a ring
	rcpts    [sampleCount]string
	nsubj    int
	nrcpt    int
	last     int64      // ms of the last activity
	ip       netip.Addr // last client IP, so releasing an IP also resets its envelope senders
	lastNew  int        // first-time recipients of the last message (for shared counting)
}

// tally is a snapshot of a key's counters after a message.
type tally struct {
	msgsMin, msgsHour, rcptsMin, rcptsHour, rcptsDay, newMin, rcpts10, bad10, hdrFrom, content int
}

func (c tally) counts() map[string]int {
	return map[string]int{
		"msgs_per_minute": c.msgsMin, "msgs_per_hour": c.msgsHour,
		"rcpts_per_minute": c.rcptsMin, "rcpts_per_hour": c.rcptsHour, "rcpts_per_day": c.rcptsDay,
		"new_rcpts_per_minute": c.newMin, "rcpts_10m": c.rcpts10, "refused_rcpts_10m": c.bad10,
		"header_from_mismatches_10m": c.hdrFrom, "content_hits_10m": c.content,
	}
}

func (st *senderStats) knows(h uint64) bool {
	_, ok := st.known[h]
	return ok
}

// learn remembers a recipient; when full, an arbitrary one (Go map order is
// random) makes room.
func (st *senderStats) learn(h uint64) {
	if st.known == nil {
		st.known = make(map[uint64]struct{})
	}
	if len(st.known) >= knownRcptsCap {
		for k := range st.known {
			delete(st.known, k)
			break
		}
	}
	st.known[h] = struct{}{}
}

func (st *senderStats) samples() (subjects, rcpts []string) {
	ring := func(r *[sampleCount]string, n int) []string {
		var out []string
		for i := max(n-sampleCount, 0); i < n; i++ {
			out = append(out, r[i%sampleCount])
		}
		return out
	}
	return ring(&st.subjects, st.nsubj), ring(&st.rcpts, st.nrcpt)
}

// idle reports whether every window reads zero at now.
func (st *senderStats) idle(now int64) bool {
	for i := range st.w {
		if !st.w[i].stale(now, widths[i]) {
			return false
		}
	}
	return true
}

func (g *Guard) statsIP(ip netip.Addr) *senderStats {
	st := g.byIP[ip]
	if st == nil {
		st = &senderStats{limits: g.limitsForIP(ip)}
		g.byIP[ip] = st
	}
	return st
}

func (g *Guard) statsUser(user string) *senderStats {
	st := g.byUser[user]
	if st == nil {
		st = &senderStats{limits: g.limitsForAddr(user)}
		g.byUser[user] = st
	}
	return st
}

func (g *Guard) statsFrom(from string) *senderStats {
	st := g.byFrom[from]
	if st == nil {
		st = &senderStats{limits: g.limitsForAddr(from)}
		g.byFrom[from] = st
	}
	return st
}

// keys returns the counters a local sender's mail counts against: an
// authenticated user's own; for a trusted unauthenticated client, its IP
// and its envelope sender. An authenticated sender is not also counted
// against its IP, so that a per-user override works wherever the user
// sends from, and users behind one NAT do not share an allowance.
func (g *Guard) keys(ip netip.Addr, user, from string, trusted bool) [3]*senderStats {
	var k [3]*senderStats
	switch {
	case user != "":
		k[0] = g.statsUser(user)
	case trusted:
		k[1] = g.statsIP(ip)
		if from != "" {
			k[2] = g.statsFrom(from)
		}
	}
	return k
}

// isolationFor returns the isolation that holds mail from this sender, if
// any: the user's (isolated or suspended) or the client IP's.
func (g *Guard) isolationFor(ip netip.Addr, user string, t time.Time) *Isolation {
	if user != "" {
		if iso := g.isoUser[user]; iso != nil {
			return iso
		}
		if s, ok := g.suspended[user]; ok {
			iso := &Isolation{User: user, Rule: s.Rule, Since: t}
			g.isoUser[user] = iso
			return iso
		}
	}
	return g.isoIP[ip]
}

// Rcpt counts a recipient (accepted or refused) for the unknown-recipient
// detector, judged at the end of DATA. It answers Accept, except to an
// outsider over InboundRcptsPerMinute (Defer 451 4.7.1).
func (g *Guard) Rcpt(s Sender, rcpt string, accepted bool) Decision {
	if s.Peer {
		return Decision{}
	}
	ip := normAddr(s.IP)
	t, now := g.clock()
	lg := logBuf{log: g.log}
	d := Decision{}
	g.mu.Lock()
	if s.Local() {
		user := normUser(s.User)
		if g.isolationFor(ip, user, t) == nil {
			for _, st := range g.keys(ip, user, normUser(s.From), s.Trusted) {
				if st == nil {
					continue
				}
				st.w[wRcpts10].add(now, tenMinMS, 1)
				if !accepted {
					st.w[wBad10].add(now, tenMinMS, 1)
				}
				st.last = now
			}
			g.dirty = true
		}
	} else {
		host := hostOf(ip)
		g.active.outside(host, now)
		if n := g.ips.get(host).rcpts.add(now, minuteMS, 1); n > g.conf().InboundRcptsPerMinute {
			d = decInRcpts
			if lg.on() {
				lg.decision("rcpt", d, slog.String("ip", ip.String()), slog.String("from", s.From),
					slog.Int("rcpts_per_minute", n), slog.Int("limit", g.conf().InboundRcptsPerMinute))
			}
		}
	}
	g.mu.Unlock()
	lg.emit()
	g.observe("rcpt", d)
	return d
}

// Message decides at the end of DATA, before the message is queued.
//
// A local sender's message counts against each of its keys. If the sender
// is already isolated or suspended the message is held (Defer 451 4.7.1
// past HoldCap). If this message trips a limit or detector the sender is
// isolated (the user if authenticated, else the IP), this message held and
// the hooks told; so at most the allowance gets out.
//
// An outsider is deferred past InboundMsgsPerMinute.
func (g *Guard) Message(m Message) Decision {
	if m.Peer && m.Foreign == 0 {
		// Local mail a peer passes on: counted there. Mail a peer
		// relays to other domains is not what peers exchange, so it is
		// judged as any trusted sender's below.
		g.observe("data", Decision{})
		return Decision{}
	}
	m.IP = normAddr(m.IP)
	t, now := g.clock()
	lg := logBuf{log: g.log}
	g.mu.Lock()
	var d Decision
	var share *pendingShare
	user := normUser(m.User)
	if m.Local() {
		from := normUser(m.From)
		d = g.localMessage(&m, user, from, t, now, &lg)
		g.active.local(m.IP, user, m.Trusted, now)
		if d.Verdict == Accept && g.conf().Counters != nil {
			share = g.shareOf(&m, user, from)
		}
	} else {
		g.active.outside(hostOf(m.IP), now)
		st := g.ips.get(hostOf(m.IP))
		fails := st.spoofs.get(now, tenMinMS)
		if m.AuthFail {
			fails = st.spoofs.add(now, tenMinMS, 1)
		}
		if n := st.msgs.add(now, minuteMS, 1); n > g.conf().InboundMsgsPerMinute {
			d = decInMsgs
			if lg.on() {
				lg.decision("data", d, slog.String("ip", m.IP.String()), slog.String("from", m.From),
					slog.Int("msgs_per_minute", n), slog.Int("limit", g.conf().InboundMsgsPerMinute))
			}
		} else if fails > g.conf().InboundAuthFails {
			d = decAuthFails
			if lg.on() {
				lg.decision("data", d, slog.String("ip", m.IP.String()), slog.String("from", m.From),
					slog.Int("auth_fails_10m", fails), slog.Int("limit", g.conf().InboundAuthFails))
			}
		}
	}
	g.mu.Unlock()
	lg.emit()
	if share != nil {
		if sd, ok := g.sharedMessage(&m, user, share); ok {
			d = sd
		}
	}
	g.observe("data", d)
	return d
}

func (g *Guard) localMessage(m *Message, user, from string, t time.Time, now int64, lg *logBuf) Decision {
	if iso := g.isolationFor(m.IP, user, t); iso != nil {
		return g.holdMore(iso, m, user, lg)
	}
	g.dirty = true
	var (
		tripRule string
		tripKey  string
		tripSt   *senderStats
		tripC    tally
	)
	keys := g.keys(m.IP, user, from, m.Trusted)
	for i, st := range keys {
		if st == nil {
			continue
		}
		rule, c := g.count(st, m, now)
		if tripRule == "" && rule != "" {
			tripRule, tripSt, tripC = rule, st, c
			tripKey = [...]string{"user", "ip", "sender"}[i]
		}
	}
	var extra map[string]int
	if user != "" {
		a := g.account(user)
		a.hist.add(now)
		st := keys[0]
		if hour := st.w[wMsgsHour].value(now, hourMS); tripRule == "" && a.hist.mature(now) &&
			float64(hour) > g.conf().HistoryFactor*float64(max(a.hist.peak, 1)) && hour > st.limits.MsgsPerMinute {
			tripRule, tripSt, tripKey = "history.volume", st, "user"
			tripC = g.tallyOf(st, now)
			extra = map[string]int{"usual_hourly_peak": a.hist.peak}
		}
		if a.newNetAt != 0 && now-a.newNetAt >= newNetWindow {
			a.newNetAt, a.newNetMsgs = 0, 0
		}
		if a.newNetAt != 0 {
			if a.newNet.Contains(m.IP) {
				a.newNetMsgs++
			}
			if tripRule != "" || a.newNetMsgs > newNetMaxMsgs {
				if tripSt == nil {
					tripSt = st
					tripC = g.tallyOf(st, now)
				}
				counts := tripC.counts()
				counts["msgs_from_new_network"] = a.newNetMsgs
				detail := fmt.Sprintf("%d messages within 10 minutes of a login from never-seen network %s", a.newNetMsgs, a.newNet)
				if tripRule != "" {
					detail = fmt.Sprintf("tripped %s within 10 minutes of a login from never-seen network %s", tripRule, a.newNet)
				}
				subjects, rcpts := tripSt.samples()
				g.suspend(user, "login.new_network_burst", m.IP, counts, detail, subjects, rcpts, t, lg)
				a.forget(a.newNet) // the burst's network is not the owner's
				return g.holdMore(g.isoUser[user], m, user, lg)
			}
		}
	}
	if tripRule == "" {
		return Decision{}
	}
	counts := tripC.counts()
	for k, v := range extra {
		counts[k] = v
	}
	iso := g.isolate(m, user, tripRule, tripKey, tripSt, counts, t, lg)
	return g.holdMore(iso, m, user, lg)
}

// count adds the message to one key's windows and returns the first rule it
// breaks, if any.
func (g *Guard) count(st *senderStats, m *Message, now int64) (string, tally) {
	n := len(m.Rcpts)
	newN := 0
	for _, r := range m.Rcpts {
		h := maphash.String(g.seed, r)
		if !st.knows(h) {
			newN++
			st.learn(h)
		}
		st.rcpts[st.nrcpt%sampleCount] = r
		st.nrcpt++
	}
	st.lastNew = newN
	st.subjects[st.nsubj%sampleCount] = m.Subject
	st.nsubj++
	st.last = now
	st.ip = m.IP
	st.w[wMsgsMin].add(now, minuteMS, 1)
	st.w[wMsgsHour].add(now, hourMS, 1)
	st.w[wRcptsMin].add(now, minuteMS, n)
	st.w[wRcptsHour].add(now, hourMS, n)
	st.w[wRcptsDay].add(now, dayMS, n)
	st.w[wNewMin].add(now, minuteMS, newN)
	if m.HeaderFromMismatch {
		st.w[wHdrFrom10].add(now, tenMinMS, 1)
	}
	if m.ContentHit != "" {
		st.w[wContent10].add(now, tenMinMS, 1)
	}
	c := g.tallyOf(st, now)
	if rule := rateRule(c, st.limits); rule != "" {
		return rule, c
	}
	switch {
	case c.rcpts10 >= unknownMinRcpts && float64(c.bad10) > g.conf().UnknownRcptRatio*float64(c.rcpts10):
		return "unknown_rcpts", c
	case c.hdrFrom > g.conf().HeaderFromMismatches:
		return "header_from", c
	case c.content >= g.conf().ContentHits:
		return "content.dangerous", c
	}
	return "", c
}

func (g *Guard) tallyOf(st *senderStats, now int64) tally {
	return tally{
		msgsMin:   st.w[wMsgsMin].get(now, minuteMS),
		msgsHour:  st.w[wMsgsHour].get(now, hourMS),
		rcptsMin:  st.w[wRcptsMin].get(now, minuteMS),
		rcptsHour: st.w[wRcptsHour].get(now, hourMS),
		rcptsDay:  st.w[wRcptsDay].get(now, dayMS),
		newMin:    st.w[wNewMin].get(now, minuteMS),
		rcpts10:   st.w[wRcpts10].get(now, tenMinMS),
		bad10:     st.w[wBad10].get(now, tenMinMS),
		hdrFrom:   st.w[wHdrFrom10].get(now, tenMinMS),
		content:   st.w[wContent10].get(now, tenMinMS),
	}
}

// holdMore holds one more message of an isolated sender, up to HoldCap.
func (g *Guard) holdMore(iso *Isolation, m *Message, user string, lg *logBuf) Decision {
	attrs := func() []slog.Attr {
		return []slog.Attr{slog.String("ip", m.IP.String()), slog.String("user", user), slog.String("from", m.From),
			slog.Int("rcpts", len(m.Rcpts)), slog.Int("held", iso.Held), slog.Int("hold_cap", g.conf().HoldCap)}
	}
	if iso.Held >= g.conf().HoldCap {
		d := decHoldCap
		d.Rule = iso.Rule
		lg.decision("data", d, attrs()...)
		return d
	}
	iso.Held++
	g.dirty = true
	d := Decision{Verdict: Hold, Text: "Message held for review", Rule: iso.Rule}
	lg.decision("data", d, attrs()...)
	return d
}

// isolate isolates the sender of m: the user if authenticated, else the
// client IP. It queues the hook calls that hold its queued mail and alert.
func (g *Guard) isolate(m *Message, user, rule, key string, st *senderStats, counts map[string]int, t time.Time, lg *logBuf) *Isolation {
	iso := &Isolation{IP: m.IP.String(), Sender: m.From, User: user, Rule: rule, Counts: counts, Since: t, Node: g.conf().Node}
	ev := event{hold: true}
	if user != "" {
		g.isoUser[user] = iso
		ev.holdUser = user
	} else {
		g.isoIP[m.IP] = iso
		ev.holdIP = m.IP
	}
	g.dirty = true
	subjects, rcpts := st.samples()
	ev.alert = Alert{Time: t, Kind: "isolated", IP: iso.IP, User: user, Sender: m.From, Rule: rule,
		Counts: counts, Subjects: subjects, Rcpts: rcpts, Extra: map[string]string{"key": key},
		Detail: fmt.Sprintf("%s tripped on the %s key; its new mail is held and its queued mail too", rule, key)}
	g.enqueue(ev, lg)
	sh := Shared{Kind: SharedIsolate, Time: t, Rule: rule, Sender: m.From, User: user, Counts: counts}
	if user == "" {
		sh.IP = iso.IP
	}
	g.share(sh)
	lg.add(slog.LevelWarn, "guard isolated sender", slog.String("rule", rule), slog.String("key", key),
		slog.String("ip", iso.IP), slog.String("user", user), slog.String("from", m.From), slog.Any("counts", counts))
	return iso
}

// suspend suspends an account (and so isolates it), unless it already is.
func (g *Guard) suspend(user, rule string, ip netip.Addr, counts map[string]int, detail string, subjects, rcpts []string, t time.Time, lg *logBuf) {
	if _, ok := g.suspended[user]; ok {
		return
	}
	node := g.conf().Node
	g.suspended[user] = Suspension{User: user, Rule: rule, Since: t, Node: node}
	ipStr := ""
	if ip.IsValid() {
		ipStr = ip.String()
	}
	if g.isoUser[user] == nil {
		g.isoUser[user] = &Isolation{IP: ipStr, User: user, Rule: rule, Counts: counts, Since: t, Node: node}
	}
	g.dirty = true
	g.share(Shared{Kind: SharedSuspend, Time: t, Rule: rule, User: user, IP: ipStr, Counts: counts})
	g.endSessions(user, lg)
	g.enqueue(event{hold: true, holdUser: user, alert: Alert{Time: t, Kind: "suspended", IP: ipStr, User: user,
		Rule: rule, Counts: counts, Subjects: subjects, Rcpts: rcpts,
		Detail: detail + "; AUTH is refused and the account's mail held"}}, lg)
	lg.add(slog.LevelWarn, "guard suspended account", slog.String("rule", rule), slog.String("ip", ipStr),
		slog.String("user", user), slog.String("detail", detail), slog.Any("counts", counts))
}

// histHours is how much hourly history is kept per user: one week.
const histHours = 168

// history is a user's messages per hour over the last week, to tell a
// hijacked account's volume from its owner's habits.
type history struct {
	Start  int64             `json:"start"` // hour number of the first message seen; 0: none
	Hour   int64             `json:"hour"`  // hour number of the newest slot
	Counts [histHours]uint16 `json:"counts"`
	peak   int               // busiest completed hour in Counts
}

func (h *history) add(now int64) {
	hr := now / hourMS
	switch {
	case h.Start == 0:
		h.Start, h.Hour = hr, hr
	case hr > h.Hour:
		if hr-h.Hour >= histHours {
			clear(h.Counts[:])
		} else {
			for x := h.Hour + 1; x <= hr; x++ {
				h.Counts[x%histHours] = 0
			}
		}
		h.Hour = hr
		h.recompute()
	}
	if i := h.Hour % histHours; h.Counts[i] < math.MaxUint16 {
		h.Counts[i]++
	}
}

// recompute finds the busiest hour other than the current one; it runs
// once per hour per active user.
func (h *history) recompute() {
	h.peak = 0
	cur := h.Hour % histHours
	for i, c := range h.Counts {
		if int64(i) != cur && int(c) > h.peak {
			h.peak = int(c)
		}
	}
}

// mature reports whether the history spans enough time to judge by.
func (h *history) mature(now int64) bool {
	return h.Start != 0 && now/hourMS-h.Start >= historyMinAge/hourMS
}
