package logscan

import (
	"cmp"
	"container/list"
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

// open is a queue id whose lines may still come.
type open struct {
	qid          string
	client, user string
	from         string
	counted      bool
	nrcpt, done  int
	rcpts        map[string]bool
	elem         *list.Element
}

type aggregator struct {
	o       Options
	th      Thresholds
	rep     Report
	since   int64
	until   int64
	open    map[string]*open
	order   *list.List // of *open, oldest first
	senders map[string]*Counts
	clients map[string]*Counts
	authF   map[string]int
	users   map[string]*Counts
	hours   map[int64]*Counts
	det     detectors
}

func newAggregator(o Options) *aggregator {
	if o.MaxOpen <= 0 {
		o.MaxOpen = 200000
	}
	a := &aggregator{o: o, th: o.Thresholds.withDefaults(), open: map[string]*open{}, order: list.New(),
		senders: map[string]*Counts{}, clients: map[string]*Counts{}, authF: map[string]int{},
		users: map[string]*Counts{}, hours: map[int64]*Counts{}}
	a.det = newDetectors(a.th)
	if !o.Since.IsZero() {
		a.since = o.Since.Unix()
	}
	if !o.Until.IsZero() {
		a.until = o.Until.Unix()
	}
	return a
}

func get[K comparable](m map[K]*Counts, k K) *Counts {
	c := m[k]
	if c == nil {
		c = &Counts{}
		m[k] = c
	}
	return c
}

// each applies fn to the counters of every key an event belongs to.
func (a *aggregator) each(t int64, from, client, user string, fn func(*Counts)) {
	fn(&a.rep.Totals)
	if from != "" {
		fn(get(a.senders, from))
	}
	if client != "" {
		fn(get(a.clients, client))
	}
	if user != "" {
		fn(get(a.users, user))
	}
	if t != 0 {
		fn(get(a.hours, t-t%3600))
	}
}

func (a *aggregator) msg(qid string) *open {
	m := a.open[qid]
	if m == nil {
		m = &open{qid: qid}
		m.elem = a.order.PushBack(m)
		a.open[qid] = m
		for len(a.open) > a.o.MaxOpen {
			a.drop(a.order.Front().Value.(*open))
		}
	}
	return m
}

func (a *aggregator) drop(m *open) {
	a.order.Remove(m.elem)
	delete(a.open, m.qid)
}

func (a *aggregator) add(ev Event) {
	if ev.Time != 0 && (a.since != 0 && ev.Time < a.since || a.until != 0 && ev.Time >= a.until) {
		return
	}
	switch ev.Kind {
	case KindClient:
		m := a.msg(ev.QueueID)
		m.client, m.user = ev.Client, ev.User
	case KindFrom, KindQueued:
		m := a.msg(ev.QueueID)
		if ev.Kind == KindQueued {
			m.client, m.user = ev.Client, ev.User
		}
		m.from = ev.From
		if m.counted {
			return // qmgr logs from= again when a deferred message is retried
		}
		m.counted, m.nrcpt = true, ev.Nrcpt
		a.each(ev.Time, m.from, m.client, m.user, func(c *Counts) { c.Messages++; c.Bytes += ev.Size })
		a.det.message(ev.Time, m.client, m.from, ev.Nrcpt)
	case KindRcpt:
		m := a.open[ev.QueueID]
		if m == nil {
			if ev.From == "" { // Postfix: the message is not in the logs read
				a.rep.Orphans++
				a.each(ev.Time, "", "", "", func(c *Counts) { a.rcpt(c, ev.Status, true) })
				return
			}
			m = a.msg(ev.QueueID) // mamori lines carry the message's keys
			m.from, m.client, m.user = ev.From, ev.Client, ev.User
		}
		if m.rcpts == nil {
			m.rcpts = map[string]bool{}
		}
		first := !m.rcpts[ev.To]
		m.rcpts[ev.To] = true
		a.each(ev.Time, m.from, m.client, m.user, func(c *Counts) { a.rcpt(c, ev.Status, first) })
		a.det.recipient(m.client, m.from, ev.To)
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
		a.each(ev.Time, ev.From, ev.Client, "", func(c *Counts) { c.Rejects++ })
		a.det.reject(ev)
	case KindAuthFail:
		if ev.Client != "" {
			a.authF[ev.Client]++
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
		r.Senders = append(r.Senders, SenderRow{k, *c})
	}
	sortRows(r.Senders, func(x SenderRow) Counts { return x.Counts }, func(x SenderRow) string { return x.Address })
	for k := range a.authF {
		get(a.clients, k)
	}
	for k, c := range a.clients {
		r.Clients = append(r.Clients, ClientRow{k, a.authF[k], *c})
	}
	sortRows(r.Clients, func(x ClientRow) Counts { return x.Counts }, func(x ClientRow) string { return x.IP })
	for k, c := range a.users {
		r.Users = append(r.Users, UserRow{k, *c})
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
