package share

import (
	"context"
	"math"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
)

// Counters keeps local senders' rate windows in Redis for every node
// (guard.Counters): one Lua script per message adds its increments to all
// of its keys' windows atomically and returns them, so two nodes counting
// the same sender at the same moment both see the other's message.
type Counters struct{ rs *redisstore.Store }

// NewCounters returns the guard's shared counters on rs.
func NewCounters(rs *redisstore.Store) *Counters { return &Counters{rs: rs} }

// Count implements guard.Counters.
func (c *Counters) Count(ctx context.Context, adds []guard.CountAdd) (int64, []guard.SharedCounts, error) {
	keys := make([]string, len(adds))
	incs := make([][]int64, len(adds))
	for i, a := range adds {
		keys[i] = a.Key
		incs[i] = []int64{int64(a.Msgs), int64(a.Msgs), int64(a.Rcpts), int64(a.Rcpts), int64(a.Rcpts), int64(a.New)}
	}
	now, ws, err := c.rs.AddWindows(ctx, guard.SharedWidths[:], keys, incs)
	if err != nil {
		return 0, nil, err
	}
	out := make([]guard.SharedCounts, len(ws))
	for i, kw := range ws {
		for j := range out[i] {
			out[i][j] = guard.WindowState{Idx: kw[j].Idx, Cur: clamp(kw[j].Cur), Prev: clamp(kw[j].Prev)}
		}
	}
	return now, out, nil
}

func clamp(v int64) uint32 { return uint32(min(max(v, 0), math.MaxUint32)) }
