package server

import (
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
)

// instrument hooks the metrics stage to what it reads at scrape time
// (the queue by state, the guard's isolations, suspensions and bans) and
// to the resolver's queries. The stages that count events get mt in their
// configs.
func instrument(mt *metrics.Metrics, q *queue.Queue, g *guard.Guard, res *resolver.Resolver) {
	res.SetObserver(mt.DNSQuery)
	mt.WatchQueue(func() (map[string]int, map[string]int64) {
		// Counters the queue keeps by state: O(states), not O(messages).
		msgs, bytes := map[string]int{}, map[string]int64{}
		for s, n := range q.Stats() {
			msgs[string(s)] = n
		}
		for s, n := range q.StateBytes() {
			bytes[string(s)] = n
		}
		return msgs, bytes
	})
	if _, ok := g.SharedStatus(); ok {
		mt.WatchSharedCounters(func() bool { s, _ := g.SharedStatus(); return s.Up })
	}
	mt.WatchGuard(func() (isolated, suspended, bans, throttled int) {
		s := g.Snapshot()
		return len(s.Isolated), len(s.Suspended), len(s.Bans), len(s.Throttled)
	})
}

// guardDecisions counts the guard's decisions (guard.Config.OnDecision).
func guardDecisions(mt *metrics.Metrics) func(stage, rule string, v guard.Verdict) {
	if mt == nil {
		return nil
	}
	return func(stage, rule string, v guard.Verdict) { mt.GuardDecision(stage, rule, v.String()) }
}
