package logscan

import (
	"cmp"
	"fmt"
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
	authFailures int    // clients only
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
}

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
	if !o.Since.IsZero() {
		a.since = o.Since.Unix()
	}
	if !o.Until.IsZero() {
		a.until = o.Until.Unix()
	}
	return a
}

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
			if a.hourC == nil {
				a.hourC = &Counts{}
				a.hours[h] = a.hourC
			}
		}
		cs = append(cs, a.hourC)
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

func (a *aggregator) add(ev *Event) {
	if ev.Time != 0 && (a.since != 0 && ev.Time < a.since || a.until != 0 && ev.Time >= a.until) {
		return
	}
	switch ev.Kind {
	case KindClient:
		m := a.msg(ev.QueueID)
		m.client, m.user = a.keyStat(a.clients, "clients", ev.Client), a.keyStat(a.users, "users", ev.User)
	case KindFrom, KindQueued:
		m := a.msg(ev.QueueID)
		if ev.Kind == KindQueued {
			// Sendmail logs the SASL user on a line of its own before from=.
			if ev.Client != "" {
				m.client = a.keyStat(a.clients, "clients", ev.Client)
			}
			if ev.User != "" {
				m.user = a.keyStat(a.users, "users", ev.User)
			}
		}
		m.from = a.keyStat(a.senders, "senders", ev.From)
		if m.counted {
			return // qmgr logs from= again when a deferred message is retried
		}
		m.counted, m.nrcpt = true, ev.Nrcpt
		for _, c := range a.counters(ev.Time, m.from, m.client, m.user) {
			c.Messages++
			c.Bytes += ev.Size
		}
		a.det.message(ev.Time, a.burstOf(m.client), keyOf(m.client), a.burstOf(m.from), keyOf(m.from), ev.Nrcpt)
	case KindRcpt:
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
		first := m.addRcpt(ev.To)
		for _, c := range a.counters(ev.Time, m.from, m.client, m.user) {
			a.rcpt(c, ev.Status, first)
		}
		a.det.recipient(a.burstOf(m.client), a.burstOf(m.from), ev.To)
		if ev.Status != StatusDeferred {
			m.done++
			if m.nrcpt > 0 && m.done >= m.nrcpt && ev.From != "" {
				a.drop(m) // mamori logs no "removed"
			}
		}
	case KindRemoved:
		if m := a.open[ev.QueueID]; m != nil {
			a.drop(m)
		}
	case KindReject:
		for _, c := range a.counters(ev.Time, a.keyStat(a.senders, "senders", ev.From), a.keyStat(a.clients, "clients", ev.Client)) {
			c.Rejects++
		}
		a.det.reject(ev)
	case KindAuthFail:
		if c := a.keyStat(a.clients, "clients", ev.Client); c != nil {
			c.authFailures++
		}
		a.det.authFail(ev)
	}
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
	for k, c := range a.senders {
		r.Senders = append(r.Senders, SenderRow{k, c.Counts})
	}
	sortRows(r.Senders, func(x SenderRow) Counts { return x.Counts }, func(x SenderRow) string { return x.Address })
	for k, c := range a.clients {
		r.Clients = append(r.Clients, ClientRow{k, c.authFailures, c.Counts})
	}
	sortRows(r.Clients, func(x ClientRow) Counts { return x.Counts }, func(x ClientRow) string { return x.IP })
	for k, c := range a.users {
		r.Users = append(r.Users, UserRow{k, c.Counts})
	}
	sortRows(r.Users, func(x UserRow) Counts { return x.Counts }, func(x UserRow) string { return x.User })
	for k, c := range a.hours {
		r.Hours = append(r.Hours, HourRow{time.Unix(k, 0).UTC(), *c})
	}
	slices.SortFunc(r.Hours, func(x, y HourRow) int { return x.Hour.Compare(y.Hour) })
	r.Findings = a.det.findings()
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	return r
}
