package redisstore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// windowScript adds to two-bucket rate windows (a bucket per width-long
// slice of time, the one before it kept for the sliding estimate) and
// returns them, atomically for all keys. The time is Redis's own (TIME),
// so nodes whose clocks differ still count in the same buckets. ARGV: the
// number of windows W, W widths (ms), then W increments per key. Each key
// is a hash of three fields per window — bucket number, its count, the
// count of the bucket before — so it never grows; it expires after the
// longest width twice over without traffic. Returns now (ms), then per key
// and window: bucket number, count, previous count.
var windowScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nw = tonumber(ARGV[1])
local longest = 0
for w = 1, nw do
  longest = math.max(longest, tonumber(ARGV[1 + w]))
end
local out = {now}
for k = 1, #KEYS do
  for w = 1, nw do
    local width = tonumber(ARGV[1 + w])
    local inc = tonumber(ARGV[1 + nw + (k - 1) * nw + w])
    local idx = math.floor(now / width)
    local v = redis.call('HMGET', KEYS[k], w .. ':i', w .. ':c', w .. ':p')
    local oi, cur, prev = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
    if oi == nil then
      oi = idx
    end
    if idx > oi then
      if idx == oi + 1 then prev = cur else prev = 0 end
      cur = 0
    else
      idx = oi
    end
    cur = cur + inc
    if inc > 0 or idx ~= tonumber(v[1]) then
      redis.call('HSET', KEYS[k], w .. ':i', idx, w .. ':c', cur, w .. ':p', prev)
    end
    out[#out + 1] = idx
    out[#out + 1] = cur
    out[#out + 1] = prev
  end
  redis.call('PEXPIRE', KEYS[k], 2 * longest)
end
return out
`)

// Window is one rate window as AddWindows returns it.
type Window struct {
	Idx       int64 // bucket number: now / width
	Cur, Prev int64 // counts of bucket Idx and Idx-1
}

// AddWindows adds incs[k][w] to window w (of widths[w] ms) of each key k,
// at Redis's time, atomically for all keys (one script, one round trip;
// all keys share the prefix's hash slot, so this works on Redis Cluster),
// and returns that time (Unix ms) and every window after the addition.
// Keys are names in the prefix's "c:" space chosen by the caller.
func (s *Store) AddWindows(ctx context.Context, widths []int64, keys []string, incs [][]int64) (int64, [][]Window, error) {
	if len(keys) != len(incs) {
		return 0, nil, fmt.Errorf("redisstore: AddWindows: %d keys, %d increments", len(keys), len(incs))
	}
	full := make([]string, len(keys))
	args := make([]any, 0, 1+len(widths)+len(keys)*len(widths))
	args = append(args, len(widths))
	for _, w := range widths {
		args = append(args, w)
	}
	for i, k := range keys {
		full[i] = "{" + s.prefix + "}:c:" + k
		if len(incs[i]) != len(widths) {
			return 0, nil, fmt.Errorf("redisstore: AddWindows: key %d has %d increments for %d windows", i, len(incs[i]), len(widths))
		}
		for _, n := range incs[i] {
			args = append(args, n)
		}
	}
	vals, err := windowScript.Run(ctx, s.rdb, full, args...).Int64Slice()
	if err != nil {
		return 0, nil, s.fail("add windows", err)
	}
	if len(vals) != 1+3*len(keys)*len(widths) {
		return 0, nil, fmt.Errorf("redisstore: add windows: %d values for %d keys", len(vals), len(keys))
	}
	now := vals[0]
	vals = vals[1:]
	out := make([][]Window, len(keys))
	for i := range keys {
		out[i] = make([]Window, len(widths))
		for w := range widths {
			v := vals[3*(i*len(widths)+w):]
			out[i][w] = Window{Idx: v[0], Cur: v[1], Prev: v[2]}
		}
	}
	return now, out, nil
}

// FlushForTest empties the Redis database (tests of a Redis that lost its
// data).
func (s *Store) FlushForTest(ctx context.Context) error {
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.FlushDB(ctx).Err() })
	}
	return s.rdb.FlushDB(ctx).Err()
}
