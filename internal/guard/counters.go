package guard

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Shared counting (clustered mode). A worm that spreads its mail over
// several nodes must be isolated after the same allowance as on one node,
// so a local sender's rate windows — messages per minute and hour,
// recipients per minute, hour and day, first-time recipients per minute —
// are also kept in the shared store, where every node adds to them
// atomically.
//
// How the hot path stays fast and safe: the local decision is made first,
// as without a cluster, under the guard's lock. Only a message the local
// windows accept goes on to the shared store — one round trip (a Lua
// script), without the lock held — and is judged again against the
// larger of the local and the cluster-wide count of each window. When the
// shared store does not answer within CountersTimeout, the local decision
// stands: the node keeps limiting on its own counts (never unlimited), says
// so once in the log and in SharedStatus, and tries the store again after
// sharedRetry. Counts made while the store was down stay local; taking the
// larger of both when it is back merges them without double counting.

// CountAdd is one message's increments to one sender key's shared windows.
type CountAdd struct {
	Key              string // "u:" user, "i:" IP, "f:" envelope sender
	Msgs, Rcpts, New int
}

// WindowState is one shared window: the counts of bucket Idx (time/width)
// and of the bucket before it, as in the local windows.
type WindowState struct {
	Idx       int64
	Cur, Prev uint32
}

// NShared is how many windows are shared, in this order: messages per
// minute and per hour, recipients per minute, hour and day, first-time
// recipients per minute.
const NShared = 6

// SharedWidths are the widths in milliseconds of the shared windows.
var SharedWidths = [NShared]int64{minuteMS, hourMS, minuteMS, hourMS, dayMS, minuteMS}

// SharedCounts are a key's shared windows after an Add.
type SharedCounts [NShared]WindowState

// Counters keeps local senders' rate windows in a store every node adds
// to (internal/guard/share on Redis).
type Counters interface {
	// Count adds each key's increments and returns the store's time (Unix
	// ms: one clock for every node, whatever theirs say) and each key's
	// windows, cluster-wide, in the order of adds.
	Count(ctx context.Context, adds []CountAdd) (now int64, _ []SharedCounts, err error)
}

// sharedRetry is how long a node limits on its own after the shared
// store failed, before it asks the store again.
const sharedRetry = 2 * time.Second

// slowStrikes is how many answers in a row over half CountersTimeout
// make the store count as down.
const slowStrikes = 3

// ProbeShared keeps SharedStatus true without local traffic: every
// interval it calls ping (a PING of the shared store) and marks the store
// down or back. It returns when ctx ends; without Counters it returns at
// once.
func (g *Guard) ProbeShared(ctx context.Context, ping func(context.Context) error, every time.Duration) {
	if g.conf().Counters == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, g.conf().CountersTimeout)
		err := ping(pctx)
		cancel()
		_, now := g.clock()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			g.sharedFailed(now, err)
		case g.shared.down.Load():
			g.sharedOK(now)
		}
	}
}

// defaultCountersTimeout bounds one round trip to the shared store.
const defaultCountersTimeout = 200 * time.Millisecond

// SharedStatus says whether shared counting works.
type SharedStatus struct {
	Up    bool      `json:"up"`
	Since time.Time `json:"since,omitzero"` // when it last went up or down
	Err   string    `json:"error,omitempty"`
}

// sharedState is the health of the shared store as the guard sees it.
type sharedState struct {
	down    atomic.Bool
	since   atomic.Int64 // ms
	retryAt atomic.Int64 // ms; while down, no call before this
	slow    atomic.Int32 // answers in a row that took over half the timeout
	err     atomic.Pointer[string]
}

// SharedStatus reports shared counting; ok is false when the guard has no
// Counters (one node, or embedded store).
func (g *Guard) SharedStatus() (s SharedStatus, ok bool) {
	if g.conf().Counters == nil {
		return SharedStatus{}, false
	}
	s.Up = !g.shared.down.Load()
	if ms := g.shared.since.Load(); ms != 0 {
		s.Since = msTime(ms)
	}
	if e := g.shared.err.Load(); e != nil && !s.Up {
		s.Err = *e
	}
	return s, true
}

// pendingShare is what a locally accepted message adds to the shared
// windows, and the local keys it counted against.
type pendingShare struct {
	adds []CountAdd
	sts  []*senderStats
	keys []string // "user", "ip", "sender": the isolation key of each
}

// shareOf collects, under g.mu and after localMessage counted the
// message, the shared increments of its keys.
func (g *Guard) shareOf(m *Message, user, from string) *pendingShare {
	keys := g.keys(m.IP, user, from, m.Trusted)
	p := &pendingShare{}
	for i, st := range keys {
		if st == nil {
			continue
		}
		var k string
		switch i {
		case 0:
			k = "u:" + user
		case 1:
			k = "i:" + m.IP.String()
		case 2:
			k = "f:" + from
		}
		p.adds = append(p.adds, CountAdd{Key: k, Msgs: 1, Rcpts: len(m.Rcpts), New: st.lastNew})
		p.sts = append(p.sts, st)
		p.keys = append(p.keys, [...]string{"user", "ip", "sender"}[i])
	}
	if len(p.adds) == 0 {
		return nil
	}
	return p
}

// sharedMessage judges a locally accepted message again against the
// cluster-wide windows. It returns the new decision and true when the
// message now trips a rule (or its sender was isolated meanwhile).
func (g *Guard) sharedMessage(m *Message, user string, p *pendingShare) (Decision, bool) {
	c := g.conf().Counters
	t, now := g.clock()
	if g.shared.down.Load() {
		// While down, one message at a time tries the store again, once
		// per sharedRetry; the others go on with the local decision.
		r := g.shared.retryAt.Load()
		if now < r || !g.shared.retryAt.CompareAndSwap(r, now+sharedRetry.Milliseconds()) {
			return Decision{}, false
		}
	}
	timeout := g.conf().CountersTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	start := time.Now()
	sharedNow, res, err := c.Count(ctx, p.adds)
	took := time.Since(start)
	cancel()
	if err == nil && len(res) != len(p.adds) {
		err = errShortCount
	}
	if err != nil {
		g.sharedFailed(now, err)
		return Decision{}, false
	}
	if took > timeout/2 {
		// A store that answers, but slowly, costs every local message
		// its latency: three slow answers in a row count as down.
		if g.shared.slow.Add(1) >= slowStrikes {
			g.shared.slow.Store(0)
			g.sharedFailed(now, fmt.Errorf("shared store slow: %v for one call (timeout %v)", took.Round(time.Millisecond), timeout))
		}
	} else {
		g.shared.slow.Store(0)
		g.sharedOK(now)
	}

	lg := logBuf{log: g.log}
	g.mu.Lock()
	var d Decision
	tripped := false
	if iso := g.isolationFor(m.IP, user, t); iso != nil {
		d, tripped = g.holdMore(iso, m, user, &lg), true
	} else {
		for j, st := range p.sts {
			tl := g.tallyOf(st, now)
			tl.merge(&res[j], sharedNow)
			if rule := rateRule(tl, st.limits); rule != "" {
				counts := tl.counts()
				counts["cluster_wide"] = 1
				iso := g.isolate(m, user, rule, p.keys[j], st, counts, t, &lg)
				d, tripped = g.holdMore(iso, m, user, &lg), true
				break
			}
		}
	}
	g.mu.Unlock()
	lg.emit()
	return d, tripped
}

type countError string

func (e countError) Error() string { return string(e) }

const errShortCount = countError("shared counters: short answer")

func (g *Guard) sharedFailed(now int64, err error) {
	g.shared.retryAt.Store(now + sharedRetry.Milliseconds())
	msg := err.Error()
	g.shared.err.Store(&msg)
	if !g.shared.down.Swap(true) {
		g.shared.since.Store(now)
		g.log.Warn("shared counters unavailable: this node limits on its own counts until the shared store answers",
			slog.String("err", msg))
	}
}

func (g *Guard) sharedOK(now int64) {
	if g.shared.down.Swap(false) {
		g.shared.since.Store(now)
		g.log.Info("shared counters back: counting cluster-wide again")
	} else if g.shared.since.Load() == 0 {
		g.shared.since.CompareAndSwap(0, now)
	}
}

// merge raises each shared window of c to its cluster-wide value.
func (c *tally) merge(s *SharedCounts, now int64) {
	fields := [NShared]*int{&c.msgsMin, &c.msgsHour, &c.rcptsMin, &c.rcptsHour, &c.rcptsDay, &c.newMin}
	for i, f := range fields {
		w := window{Idx: s[i].Idx, Cur: s[i].Cur, Prev: s[i].Prev}
		if v := w.get(now, SharedWidths[i]); v > *f {
			*f = v
		}
	}
}

// rateRule is the first rate limit of l that c breaks, or "".
func rateRule(c tally, l Limits) string {
	switch {
	case c.msgsMin > l.MsgsPerMinute:
		return "rate.msgs_per_minute"
	case c.rcptsMin > l.RcptsPerMinute:
		return "rate.rcpts_per_minute"
	case c.rcptsHour > l.RcptsPerHour:
		return "rate.rcpts_per_hour"
	case c.rcptsDay > l.RcptsPerDay:
		return "rate.rcpts_per_day"
	case c.newMin > l.NewRcptsPerMinute:
		return "burst.new_rcpts"
	}
	return ""
}
