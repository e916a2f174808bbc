package logscan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Counts are the totals of one key.
type Counts struct {
	Messages   int   `json:"messages"`
	Recipients int   `json:"recipients"`
	Rejects    int   `json:"rejects"`
	Deferrals  int   `json:"deferrals"`
	Bounces    int   `json:"bounces"`
	Bytes      int64 `json:"bytes"`
}

// Report rows; each list is sorted by messages, most first.
type (
	SenderRow struct {
		Address string `json:"address"`
		Counts
	}
	ClientRow struct {
		IP           string `json:"ip"`
		AuthFailures int    `json:"auth_failures"`
		Counts
	}
	UserRow struct {
		User string `json:"user"`
		Counts
	}
	HourRow struct {
		Hour time.Time `json:"hour"`
		Counts
	}
)

// Report is the result of a scan.
type Report struct {
	Files    []string    `json:"files"`
	Lines    int64       `json:"lines"`
	Totals   Counts      `json:"totals"`
	Orphans  int         `json:"orphan_lines"` // delivery lines of a queue id whose message was not in the logs read
	Findings []Finding   `json:"findings"`
	Senders  []SenderRow `json:"senders"`
	Clients  []ClientRow `json:"clients"`
	Users    []UserRow   `json:"users"`
	Hours    []HourRow   `json:"hours"`
	Warnings []string    `json:"warnings,omitempty"`
}

// stat is the counters of one key (sender, client IP or user), and for
// senders and clients their worm-detection rings. key is the aggregator's
// own copy of the key: events point into the chunk they were parsed from,
// and whatever outlives the chunk must not. (Mind that m[k] = v on an
// existing string key stores k anew: maps are only ever written with keys
// the aggregator owns.)
type stat struct {
	Counts
	key          string
	burst        *burst // nil until the key's first message
	overflow     bool   // the Overflow counters: many keys, never one subject
	class        ipClass
	authFailures int   // clients only
	last         int64 // time of the key's last event (follow mode forgets idle keys)
}

// ipClass sorts client IPs for the detectors: a loopback client is a
// content filter re-injecting or local software, never a worm's subject;
// only a public client can be an outsider using us as a relay.
type ipClass uint8

const (
	ipUnknown ipClass = iota
	ipPublic
	ipPrivate
	ipLoopback
)

func (s *stat) ipClass() ipClass {
	if s == nil || s.overflow {
		return ipUnknown
	}
	if s.class == ipUnknown {
		s.class = ipPublic
		if a, err := netip.ParseAddr(s.key); err == nil {
			switch a = a.Unmap(); {
			case a.IsLoopback():
				s.class = ipLoopback
			case a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified():
				s.class = ipPrivate
			}
		}
	}
	return s.class
}

// open is a queue id whose lines may still come.
type open struct {
	qid         string
	from        *stat // nil: not known (yet); the null sender is "<>"
	client      *stat
	user        *stat
	counted     bool
	nrcpt, done int
	rcpts       []string            // distinct recipients seen, for the counting rule
	rcptSet     map[string]struct{} // the same, once there are many (a list message)
	prev, next  *open               // the age list, oldest first

	// What counting the message added, so that it can be taken back when
	// the message turns out to be a content filter's re-injection.
	t, size  int64
	rcptsIn  int // recipients counted
	reinject bool
	// The first hop of a re-injected message: who really sent it.
	origClient, origUser *stat
	subject              string // a logged Subject header, if any
}

type aggregator struct {
	o       Options
	th      Thresholds
	rep     Report
	since   int64
	until   int64
	open    map[string]*open
	oldest  *open // the age list of open
	newest  *open
	senders map[string]*stat
	clients map[string]*stat
	users   map[string]*stat
	hours   map[int64]*Counts
	hourKey int64 // the last hour looked up, and its counters
	hourC   *Counts
	det     detectors

	// Local domains: given (Options.LocalDomains) and those seen receiving
	// local delivery. Until one is known, outside-to-outside candidates
	// wait in pending (bounded).
	local   map[string]bool
	pending []relayCandidate

	// Syslog times have no year: yearFix is set for chunks of such
	// formats, and a jump back by more than half a year (December to
	// January) adds a year to the rest; shift is the years added.
	follow    bool             // fed by Follow: keys remember their last event
	hoursFull bool             // MaxHours reached (warned once)
	latest    int64            // follow: the latest key event seen
	swept     map[string]int64 // follow: when each full table was last swept

	yearFix bool
	shift   int
	lastT   int64
	loc     *time.Location
}

type relayCandidate struct {
	t                     int64
	client, from, to, sub string // client: the aggregator's copy; the rest are copies too
}

// maxLocalDomains bounds the local domains learned from a log.
const maxLocalDomains = 10000

func newAggregator(o Options) *aggregator {
	if o.MaxOpen <= 0 {
		o.MaxOpen = 200000
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 200000
	}
	a := &aggregator{o: o, th: o.Thresholds.withDefaults(), open: map[string]*open{},
		senders: map[string]*stat{}, clients: map[string]*stat{},
		users: map[string]*stat{}, hours: map[int64]*Counts{}, hourKey: -1}
	a.det = newDetectors(a.th, o.MaxKeys)
	a.local = map[string]bool{}
	for _, d := range o.LocalDomains {
		a.local[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	a.loc = o.Clock.Loc
	if a.loc == nil {
		a.loc = time.UTC
	}
	if !o.Since.IsZero() {
		a.since = o.Since.Unix()
	}
	if !o.Until.IsZero() {
		a.until = o.Until.Unix()
	}
	return a
}

// MaxHours bounds the per-hour table: ten years of hours.
const MaxHours = 10 * 366 * 24

// Overflow is the key under which a table counts what arrives once it
// holds Options.MaxKeys keys.
const Overflow = "(other)"

// keyStat returns the counters of k in m ("": none), adding them (with a
// copy of k) on first sight; past MaxKeys, new keys share the Overflow
// counters (and a warning says so once per table).
func (a *aggregator) keyStat(m map[string]*stat, what, k string) *stat {
	if k == "" {
		return nil
	}
	s := m[k]
	if s == nil {
		if len(m) >= a.o.MaxKeys {
			a.sweep(m, what)
		}
		if len(m) >= a.o.MaxKeys {
			if s = m[Overflow]; s == nil {
				s = &stat{key: Overflow, overflow: true}
				m[Overflow] = s
				a.rep.Warnings = append(a.rep.Warnings, fmt.Sprintf("more than %d distinct %s: the rest are counted as %q", a.o.MaxKeys, what, Overflow))
			}
			return s
		}
		k = strings.Clone(k)
		s = &stat{key: k}
		m[k] = s
	}
	return s
}

func keyOf(s *stat) string {
	if s == nil {
		return ""
	}
	return s.key
}

// counters returns the counters an event of time t belongs to: the totals,
// those of the keys given (nil: none) and of t's hour.
func (a *aggregator) counters(t int64, keys ...*stat) []*Counts {
	cs := make([]*Counts, 0, 5)
	cs = append(cs, &a.rep.Totals)
	for _, k := range keys {
		if k != nil {
			cs = append(cs, &k.Counts)
		}
	}
	if t != 0 {
		h := t - t%3600
		if h != a.hourKey {
			a.hourKey, a.hourC = h, a.hours[h]
			if a.hourC == nil && len(a.hours) >= MaxHours {
				// Timestamps a log cannot really have (a JSON log with
				// random dates): the hours table stays bounded.
				if !a.hoursFull {
					a.hoursFull = true
					a.rep.Warnings = append(a.rep.Warnings, fmt.Sprintf("more than %d distinct hours: later new hours are left out of the per-hour table", MaxHours))
				}
			} else if a.hourC == nil {
				a.hourC = &Counts{}
				a.hours[h] = a.hourC
			}
		}
		if a.hourC != nil {
			cs = append(cs, a.hourC)
		}
	}
	return cs
}

func (a *aggregator) msg(qid string) *open {
	m := a.open[qid]
	if m == nil {
		m = &open{qid: strings.Clone(qid), prev: a.newest}
		if a.newest != nil {
			a.newest.next = m
		} else {
			a.oldest = m
		}
		a.newest = m
		a.open[m.qid] = m
		for len(a.open) > a.o.MaxOpen {
			a.drop(a.oldest)
		}
	}
	return m
}

// manyRcpts is where a message's recipients move from a slice to a set:
// a list message with 50,000 recipients must not cost 50,000² compares.
const manyRcpts = 32

// addRcpt records a recipient of m and reports whether it is new.
func (m *open) addRcpt(to string) bool {
	if m.rcptSet != nil {
		if _, ok := m.rcptSet[to]; ok {
			return false
		}
		m.rcptSet[strings.Clone(to)] = struct{}{}
		return true
	}
	if slices.Contains(m.rcpts, to) {
		return false
	}
	m.rcpts = append(m.rcpts, strings.Clone(to))
	if len(m.rcpts) > manyRcpts {
		m.rcptSet = make(map[string]struct{}, 2*len(m.rcpts))
		for _, r := range m.rcpts {
			m.rcptSet[r] = struct{}{}
		}
		m.rcpts = nil
	}
	return true
}

func (a *aggregator) drop(m *open) {
	if m.prev != nil {
		m.prev.next = m.next
	} else {
		a.oldest = m.next
	}
	if m.next != nil {
		m.next.prev = m.prev
	} else {
		a.newest = m.prev
	}
	m.prev, m.next = nil, nil
	delete(a.open, m.qid)
}

// burstOf returns the worm-detection rings of a sender or client (nil for
// none and for the null sender, which is not one sender).
func (a *aggregator) burstOf(s *stat) *burst {
	if s == nil || s.key == "<>" || s.overflow {
		return nil
	}
	if s.burst == nil {
		s.burst = &burst{msgs: newRing(a.th.Window), rcpts: newRing(a.th.Window)}
	}
	return s.burst
}

// fixTime gives a syslog time the year it really has. Lines carry no
// year: each gets the year, of the one in force and the ones before and
// after it, that puts it nearest the latest time seen, and a line that
// lands in the next year moves the year in force on (a log that crosses
// New Year's Eve). Out-of-order lines around the turn of the year and
// hostile ones that alternate December and January cannot push the year
// on more than once per real crossing.
func (a *aggregator) fixTime(raw int64) int64 {
	at := func(k int) int64 {
		if k == 0 {
			return raw
		}
		return time.Unix(raw, 0).In(a.loc).AddDate(k, 0, 0).Unix()
	}
	if a.lastT == 0 {
		if a.o.Clock.Year == 0 && raw > time.Now().Unix()+2*86400 {
			// The year was guessed as this one, and the log starts in
			// the future: it is last year's (a December log read in
			// January).
			a.shift = -1
		}
		a.lastT = at(a.shift)
		return a.lastT
	}
	t := at(a.shift)
	const halfYear = 183 * 86400
	if t < a.lastT-halfYear || t > a.lastT+halfYear {
		best, bestK := t, a.shift
		for _, k := range [2]int{a.shift - 1, a.shift + 1} {
			if c := at(k); absDiff(c, a.lastT) < absDiff(best, a.lastT) {
				best, bestK = c, k
			}
		}
		if bestK > a.shift {
			a.shift = bestK
		}
		t = best
	}
	a.lastT = max(a.lastT, t)
	return t
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

func (a *aggregator) add(ev *Event) {
	if ev.Time != 0 && a.yearFix {
		ev.Time = a.fixTime(ev.Time)
	}
	if a.since != 0 || a.until != 0 {
		// A line without a time cannot be shown to be in the range.
		if ev.Time == 0 || a.since != 0 && ev.Time < a.since || a.until != 0 && ev.Time >= a.until {
			return
		}
	}
	switch ev.Kind {
	case KindClient:
		m := a.msg(ev.QueueID)
		m.client, m.user = a.keyStat(a.clients, "clients", ev.Client), a.keyStat(a.users, "users", ev.User)
		a.touch(ev.Time, m.client, m.user, nil)
	case KindSubject:
		if m := a.open[ev.QueueID]; m != nil && m.subject == "" {
			m.subject = strings.Clone(ev.Text[:min(len(ev.Text), 200)])
		} else if m == nil {
			a.msg(ev.QueueID).subject = strings.Clone(ev.Text[:min(len(ev.Text), 200)])
		}
	case KindFrom, KindQueued:
		a.message(ev)
	case KindRcpt:
		a.recipient(ev)
	case KindRemoved:
		if m := a.open[ev.QueueID]; m != nil {
			a.drop(m)
		}
	case KindReject:
		from, client := a.keyStat(a.senders, "senders", ev.From), a.keyStat(a.clients, "clients", ev.Client)
		for _, c := range a.counters(ev.Time, from, client) {
			c.Rejects++
		}
		a.touch(ev.Time, from, client, nil)
		a.det.reject(ev)
		// A sender's rotating IPs count accepted mail only (refused mail
		// did no harm, and one forged spam sender is refused from many
		// IPs every day); a HELO's count refusals too (Postfix logs the
		// HELO only there).
		if client.ipClass() != ipLoopback {
			a.det.rotating(ev.Time, a.det.helo(ev.Helo), ev.Helo, "helo", keyOf(client))
		}
		if ev.From == "<>" && ev.To != "" && !ev.Relay {
			a.det.backscatter(ev.Time, domainOf(ev.To), ev.To, true)
		}
	case KindAuthFail:
		if c := a.keyStat(a.clients, "clients", ev.Client); c != nil {
			c.authFailures++
			a.touch(ev.Time, c, nil, nil)
		}
		a.det.authFail(ev)
	}
}

// touch notes the time of the last event of keys, for Follow to forget
// idle ones (a scan keeps every key: it costs nothing there).
func (a *aggregator) touch(t int64, k1, k2, k3 *stat) {
	if !a.follow {
		return
	}
	for _, k := range [...]*stat{k1, k2, k3} {
		if k != nil && t > k.last {
			k.last = t
		}
	}
	if t > a.latest && t <= time.Now().Add(5*time.Minute).Unix() {
		a.latest = t
	}
}

// sweep makes room in a full table while following: keys idle for two
// detection windows are forgotten (a worm or a relay storm is never
// idle), at most once a minute of log time per table. A scan never
// sweeps: it reports every key it can hold.
func (a *aggregator) sweep(m map[string]*stat, what string) {
	if !a.follow || a.latest == 0 || a.swept[what] > a.latest-60 {
		return
	}
	if a.swept == nil {
		a.swept = map[string]int64{}
	}
	a.swept[what] = a.latest
	cut := a.latest - 2*int64(a.th.Window/time.Second)
	for k, s := range m {
		if s.last < cut && !s.overflow {
			delete(m, k)
		}
	}
}

// ipsOf returns the rotating-IP window of a sender (nil for none).
func (a *aggregator) ipsOf(s *stat) *ipWindow {
	if b := a.burstOf(s); b != nil {
		return &b.ips
	}
	return nil
}

// message counts a message entering the queue (Postfix qmgr from=,
// Sendmail from=, Exim <=, mamori queued) once per queue id.
func (a *aggregator) message(ev *Event) {
	m := a.msg(ev.QueueID)
	if ev.Kind == KindQueued {
		// Sendmail logs the SASL user on a line of its own before from=.
		if ev.Client != "" {
			m.client = a.keyStat(a.clients, "clients", ev.Client)
		}
		if ev.User != "" {
			m.user = a.keyStat(a.users, "users", ev.User)
		}
		if ev.Text != "" && m.subject == "" {
			m.subject = strings.Clone(ev.Text[:min(len(ev.Text), 200)])
		}
	}
	m.from = a.keyStat(a.senders, "senders", ev.From)
	if m.counted {
		return // qmgr logs from= again when a deferred message is retried
	}
	m.counted, m.nrcpt = true, ev.Nrcpt
	if m.reinject {
		return // a content filter's re-injection of a message counted at its first hop
	}
	m.t, m.size = ev.Time, ev.Size
	for _, c := range a.counters(ev.Time, m.from, m.client, m.user) {
		c.Messages++
		c.Bytes += ev.Size
	}
	a.touch(ev.Time, m.from, m.client, m.user)
	cb := a.burstOf(m.client)
	if m.client.ipClass() == ipLoopback {
		cb = nil // a content filter or local software: not one sender
	}
	fb := a.burstOf(m.from)
	a.det.message(ev.Time, cb, keyOf(m.client), fb, keyOf(m.from), ev.Nrcpt)
	a.det.rate(ev.Time, fb, keyOf(m.from))
	if m.client.ipClass() != ipLoopback {
		a.det.rotating(ev.Time, a.ipsOf(m.from), keyOf(m.from), "address", keyOf(m.client))
		if ev.Helo != "" {
			a.det.rotating(ev.Time, a.det.helo(ev.Helo), ev.Helo, "helo", keyOf(m.client))
		}
	}
	if m.subject != "" {
		a.det.subject(cb, fb, m.subject)
	}
}

// uncount takes back what counting m added: m is a content filter's
// re-injection of a message counted at its first hop.
func (a *aggregator) uncount(m *open) {
	for _, c := range a.counters(m.t, m.from, m.client, m.user) {
		c.Messages--
		c.Bytes -= m.size
		c.Recipients -= m.rcptsIn
	}
	a.det.unmessage(m.t, nil, a.burstOf(m.from), m.nrcpt)
	m.rcptsIn = 0
}

// reinjected marks queue id qid as the copy a content filter handed back
// of orig's message: it is not counted (again), and its recipients are
// judged by orig's client for the relay finding.
func (a *aggregator) reinjected(qid string, orig *open) {
	r := a.msg(qid)
	if r.reinject || r == orig {
		return
	}
	r.reinject = true
	r.origClient, r.origUser = orig.client, orig.user
	if orig.origClient != nil {
		r.origClient, r.origUser = orig.origClient, orig.origUser // a second filter
	}
	if r.subject == "" {
		r.subject = orig.subject
	}
	if r.counted {
		a.uncount(r)
	}
}

func (a *aggregator) recipient(ev *Event) {
	m := a.open[ev.QueueID]
	if m == nil {
		if ev.From == "" { // Postfix: the message is not in the logs read
			a.rep.Orphans++
			for _, c := range a.counters(ev.Time) {
				a.rcpt(c, ev.Status, true)
			}
			return
		}
		m = a.msg(ev.QueueID) // mamori lines carry the message's keys
		m.from, m.client, m.user = a.keyStat(a.senders, "senders", ev.From), a.keyStat(a.clients, "clients", ev.Client), a.keyStat(a.users, "users", ev.User)
	}
	first := m.addRcpt(ev.To) && !m.reinject
	if first {
		m.rcptsIn++
	}
	client, user := m.client, m.user
	if m.reinject {
		// The outcome of a re-injected copy is its first hop's client's.
		client, user = m.origClient, m.origUser
	}
	for _, c := range a.counters(ev.Time, m.from, client, user) {
		a.rcpt(c, ev.Status, first)
	}
	if !m.reinject {
		cb := a.burstOf(m.client)
		if m.client.ipClass() == ipLoopback {
			cb = nil
		}
		a.det.recipient(cb, a.burstOf(m.from), ev.To)
	}
	switch ev.Dest {
	case DestFilter:
		if ev.Text != "" {
			a.reinjected(ev.Text, m)
		}
	case DestLocal:
		if d := domainOf(ev.To); d != "" && !a.local[d] && len(a.local) < maxLocalDomains {
			a.local[strings.Clone(d)] = true
			if len(a.pending) > 0 {
				a.replay()
			}
		}
		if m.from != nil && m.from.key == "<>" && client.ipClass() == ipPublic {
			a.det.backscatter(ev.Time, domainOf(ev.To), ev.To, false)
		}
	case DestRemote:
		if !ev.Forward && ev.Status != StatusNone {
			a.relayOut(ev.Time, m, ev.To)
		}
	}
	if ev.Status != StatusDeferred {
		m.done++
		if m.nrcpt > 0 && m.done >= m.nrcpt && ev.From != "" {
			a.drop(m) // mamori logs no "removed"
		}
	}
}

// relayOut checks a recipient sent to another host: from an
// unauthenticated public client, from a foreign sender to a foreign
// domain, it is mail relayed from outside to outside.
func (a *aggregator) relayOut(t int64, m *open, to string) {
	client, user := m.client, m.user
	if m.reinject {
		client, user = m.origClient, m.origUser
	}
	if user != nil || client.ipClass() != ipPublic || m.from == nil {
		return
	}
	c := relayCandidate{t: t, client: client.key, from: m.from.key, to: to, sub: m.subject}
	if len(a.local) == 0 {
		// Nothing says yet which domains are ours: wait for the first
		// local delivery (or the end of the log).
		if len(a.pending) < 1000 {
			c.from, c.to = strings.Clone(c.from), strings.Clone(c.to)
			a.pending = append(a.pending, c)
		}
		return
	}
	a.judge(c)
}

func (a *aggregator) judge(c relayCandidate) {
	if a.local[domainOf(c.to)] || c.from != "<>" && a.local[domainOf(c.from)] {
		return
	}
	a.det.relayed(c.t, c.client, c.from, c.to, c.sub)
}

// replay judges the waiting outside-to-outside candidates once local
// domains are known.
func (a *aggregator) replay() {
	p := a.pending
	a.pending = nil
	if len(a.local) == 0 {
		return // the end of a log without a local delivery: nothing to judge by
	}
	for _, c := range p {
		a.judge(c)
	}
}

// domainOf returns the lowercased domain of an address ("" without one).
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(addr[i+1:], ".")
}

func (a *aggregator) rcpt(c *Counts, s Status, first bool) {
	if first {
		c.Recipients++
	}
	switch s {
	case StatusDeferred:
		c.Deferrals++
	case StatusBounced:
		c.Bounces++
	}
}

func sortRows[T any](rows []T, counts func(T) Counts, key func(T) string) {
	slices.SortFunc(rows, func(x, y T) int {
		if c := cmp.Compare(counts(y).Messages, counts(x).Messages); c != 0 {
			return c
		}
		return strings.Compare(key(x), key(y))
	})
}

func (a *aggregator) report() *Report {
	r := &a.rep
	// A key whose only message was taken back (a content filter's
	// re-injection from 127.0.0.1) has nothing to show.
	for k, c := range a.senders {
		if c.Counts != (Counts{}) {
			r.Senders = append(r.Senders, SenderRow{k, c.Counts})
		}
	}
	sortRows(r.Senders, func(x SenderRow) Counts { return x.Counts }, func(x SenderRow) string { return x.Address })
	for k, c := range a.clients {
		if c.Counts != (Counts{}) || c.authFailures != 0 {
			r.Clients = append(r.Clients, ClientRow{k, c.authFailures, c.Counts})
		}
	}
	sortRows(r.Clients, func(x ClientRow) Counts { return x.Counts }, func(x ClientRow) string { return x.IP })
	for k, c := range a.users {
		if c.Counts != (Counts{}) {
			r.Users = append(r.Users, UserRow{k, c.Counts})
		}
	}
	sortRows(r.Users, func(x UserRow) Counts { return x.Counts }, func(x UserRow) string { return x.User })
	for k, c := range a.hours {
		r.Hours = append(r.Hours, HourRow{time.Unix(k, 0).UTC(), *c})
	}
	slices.SortFunc(r.Hours, func(x, y HourRow) int { return x.Hour.Compare(y.Hour) })
	a.replay()
	r.Findings = a.det.findings()
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	return r
}
