// Package live assembles the live view of a running server — what the
// dashboard and `mamori top` show every second (GET /api/v1/live,
// admin.Live): traffic per minute over the last hour, open sessions by
// listener, the busiest senders against their limits, what the guard
// isolated, suspended and banned, the latest alerts, and the queue by
// state.
//
// Why a package of its own: each part belongs to another stage (the
// guard, the alert notifier, the queue, the metrics), and the admin API
// must not depend on them all; this package only asks each for what it
// already keeps, through small interfaces, and converts to the API's
// types. Every source is cheap and bounded by design — the guard's
// TopSenders walks at most its tables of recent senders, the queue keeps
// its counters by state, the notifier a ring of 20 alerts — and a view is
// reused for MinInterval, so several dashboards and terminals watching at
// once cost what one does.
//
// A source left nil gives an empty part (never a JSON null), so the view
// works while a stage is disabled or not built yet.
//
// Dependencies: the standard library, and mamori's admin (the API types),
// guard and queue (their types).
package live

import (
	"slices"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

// TopN is how many senders of each kind the view lists.
const TopN = 10

// DefaultMinInterval is how long a view is reused when MinInterval is 0.
const DefaultMinInterval = 500 * time.Millisecond

// Guard is what the view needs of the guard. *guard.Guard implements it.
type Guard interface {
	TopSenders(n int) (ips, users []guard.Rate)
	Snapshot() guard.Snapshot
}

// Alerts gives the latest alerts, newest first. *alert.Notifier
// implements it.
type Alerts interface {
	Recent() []guard.Alert
}

// Queue gives the queue by state. *queue.Queue implements it.
type Queue interface {
	Stats() map[queue.State]int
	StateBytes() map[queue.State]int64
}

// TrafficSource gives traffic per minute and open sessions: the metrics
// stage.
type TrafficSource interface {
	// Traffic is the last hour at now, one entry per minute, oldest
	// first, the last one the current minute.
	Traffic(now time.Time) []admin.TrafficMinute
	// Sessions counts open sessions by listener name.
	Sessions() map[string]int
}

// Live assembles views. Its fields are set once, before the first call;
// Live is then safe for concurrent use.
type Live struct {
	Guard   Guard
	Alerts  Alerts
	Queue   Queue
	Traffic TrafficSource
	// MinInterval: a view younger than this is returned again (0:
	// DefaultMinInterval; negative: never).
	MinInterval time.Duration
	Now         func() time.Time // time.Now when nil

	mu   sync.Mutex
	last admin.Live
	at   time.Time
}

// Live returns the current view. It implements admin.LiveSource. The
// view may be shared with other callers within MinInterval: read it, do
// not change it.
func (l *Live) Live() admin.Live {
	now := time.Now()
	if l.Now != nil {
		now = l.Now()
	}
	every := l.MinInterval
	if every == 0 {
		every = DefaultMinInterval
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if every > 0 && !l.at.IsZero() && now.Sub(l.at) >= 0 && now.Sub(l.at) < every {
		return l.last
	}
	v := l.assemble(now)
	l.last, l.at = v, now
	return v
}

func (l *Live) assemble(now time.Time) admin.Live {
	v := admin.Live{
		Time:     now.UTC(),
		Traffic:  []admin.TrafficMinute{},
		TopIPs:   []admin.TopSender{},
		TopUsers: []admin.TopSender{},
		Guard:    guard.Snapshot{Isolated: []guard.Isolation{}, Suspended: []guard.Suspension{}, Bans: []guard.Ban{}},
		Alerts:   []admin.AlertItem{},
		Queue: admin.QueueCounts{
			Messages: map[string]int{},
			Bytes:    map[string]int64{},
		},
		Sessions: map[string]int{},
	}
	if l.Traffic != nil {
		if t := l.Traffic.Traffic(now); t != nil {
			v.Traffic = t
		}
		for k, n := range l.Traffic.Sessions() {
			v.Sessions[k] = n
		}
	}
	if l.Guard != nil {
		ips, users := l.Guard.TopSenders(TopN)
		v.TopIPs = senders(v.TopIPs, ips)
		v.TopUsers = senders(v.TopUsers, users)
		s := l.Guard.Snapshot()
		v.GuardTotals = admin.GuardTotals{Isolated: len(s.Isolated), Suspended: len(s.Suspended), Bans: len(s.Bans)}
		if s.Isolated != nil {
			slices.SortFunc(s.Isolated, func(a, b guard.Isolation) int { return b.Since.Compare(a.Since) })
			v.Guard.Isolated = s.Isolated[:min(len(s.Isolated), admin.LiveListCap)]
		}
		if s.Suspended != nil {
			slices.SortFunc(s.Suspended, func(a, b guard.Suspension) int { return b.Since.Compare(a.Since) })
			v.Guard.Suspended = s.Suspended[:min(len(s.Suspended), admin.LiveListCap)]
		}
		if s.Bans != nil {
			slices.SortFunc(s.Bans, func(a, b guard.Ban) int { return b.Expires.Compare(a.Expires) })
			v.Guard.Bans = s.Bans[:min(len(s.Bans), admin.LiveListCap)]
		}
		v.Guard.Throttled = s.Throttled
	}
	if l.Alerts != nil {
		for _, a := range l.Alerts.Recent() {
			if len(v.Alerts) == alertCap {
				break
			}
			v.Alerts = append(v.Alerts, admin.AlertItem{Time: a.Time.UTC(), Kind: a.Kind, Rule: a.Rule,
				IP: a.IP, User: a.User, Detail: a.Detail})
		}
	}
	for _, s := range []queue.State{queue.StateActive, queue.StateDeferred, queue.StateHeld} {
		v.Queue.Messages[string(s)] = 0
		v.Queue.Bytes[string(s)] = 0
	}
	if l.Queue != nil {
		for s, n := range l.Queue.Stats() {
			v.Queue.Messages[string(s)] = n
		}
		for s, n := range l.Queue.StateBytes() {
			v.Queue.Bytes[string(s)] = n
		}
	}
	return v
}

// alertCap is how many alerts a view lists (admin.Live: at most 20).
const alertCap = 20

func senders(dst []admin.TopSender, rs []guard.Rate) []admin.TopSender {
	for _, r := range rs {
		if len(dst) == TopN {
			break
		}
		dst = append(dst, admin.TopSender{Key: r.Key, Trusted: r.Trusted, Outside: r.Outside,
			MsgsPerMin: r.Msgs, RcptsPerMin: r.Rcpts, LimitMsgs: r.LimitMsgs, LimitRcpts: r.LimitRcpts,
			Isolated: r.Isolated})
	}
	return dst
}
