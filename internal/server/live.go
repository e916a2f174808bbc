package server

import (
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/live"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/queue"
)

// newLive assembles the live view (GET /api/v1/live: the dashboard and
// `mamori top`) from the guard, the alert notifier and the queue; traffic
// per minute and open sessions come from traffic when it is set (the
// metrics stage), else those parts stay empty.
func newLive(def *defences, q *queue.Queue, traffic live.TrafficSource) *live.Live {
	return &live.Live{Guard: def.guard, Alerts: def.alert, Queue: q, Traffic: traffic}
}

// metricsTraffic adapts the metrics stage's per-minute ring and session
// gauges to the live view.
type metricsTraffic struct{ m *metrics.Metrics }

func (t metricsTraffic) Traffic(now time.Time) []admin.TrafficMinute {
	mins := t.m.Traffic(now)
	out := make([]admin.TrafficMinute, len(mins))
	for i, m := range mins {
		out[i] = admin.TrafficMinute{Time: m.Time, In: m.In, Out: m.Out, Refused: m.Refused, Held: m.Held,
			Bounced: m.Bounced, Guard: m.Guard, Isolated: m.Isolated}
	}
	return out
}

func (t metricsTraffic) Sessions() map[string]int { return t.m.Sessions() }
