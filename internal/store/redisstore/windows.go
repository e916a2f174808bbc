package redisstore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// windowScript adds to two-bucket rate windows (a bucket per width-long
// slice of time, the one before it kept for the sliding estimate) and
// returns them, atomically for all keys. ARGV: now (ms), the number of
// windows W, W widths, then W increments per key. Each key is a hash with
// one field per window and bucket ("w:idx"); older buckets are deleted and
// the key expires after the longest width twice over. Returns, per key and
// window: idx, count of bucket idx, count of bucket idx-1.
var windowScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local nw = tonumber(ARGV[2])
local longest = 0
for w = 1, nw do
  longest = math.max(longest, tonumber(ARGV[2 + w]))
end
local out = {}
for k = 1, #KEYS do
  for w = 1, nw do
    local width = tonumber(ARGV[2 + w])
    local inc = tonumber(ARGV[2 + nw + (k - 1) * nw + w])
    local idx = math.floor(now / width)
    local f = w .. ':' .. idx
    local cur
    if inc > 0 then
      cur = redis.call('HINCRBY', KEYS[k], f, inc)
    else
      cur = tonumber(redis.call('HGET', KEYS[k], f) or '0')
    end
    local prev = tonumber(redis.call('HGET', KEYS[k], w .. ':' .. (idx - 1)) or '0')
    redis.call('HDEL', KEYS[k], w .. ':' .. (idx - 2))
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

// AddWindows adds incs[k][w] to window w (of widths[w] ms) of each key k
// at now (ms), atomically for all keys (one script, one round trip; all
// keys share the prefix's hash slot, so this works on Redis Cluster), and
// returns every window after the addition. Keys are names in the
// prefix's "c:" space chosen by the caller.
func (s *Store) AddWindows(ctx context.Context, now int64, widths []int64, keys []string, incs [][]int64) ([][]Window, error) {
	if len(keys) != len(incs) {
		return nil, fmt.Errorf("redisstore: AddWindows: %d keys, %d increments", len(keys), len(incs))
	}
	full := make([]string, len(keys))
	args := make([]any, 0, 2+len(widths)+len(keys)*len(widths))
	args = append(args, now, len(widths))
	for _, w := range widths {
		args = append(args, w)
	}
	for i, k := range keys {
		full[i] = "{" + s.prefix + "}:c:" + k
		if len(incs[i]) != len(widths) {
			return nil, fmt.Errorf("redisstore: AddWindows: key %d has %d increments for %d windows", i, len(incs[i]), len(widths))
		}
		for _, n := range incs[i] {
			args = append(args, n)
		}
	}
	vals, err := windowScript.Run(ctx, s.rdb, full, args...).Int64Slice()
	if err != nil {
		return nil, s.fail("add windows", err)
	}
	if len(vals) != 3*len(keys)*len(widths) {
		return nil, fmt.Errorf("redisstore: add windows: %d values for %d keys", len(vals), len(keys))
	}
	out := make([][]Window, len(keys))
	for i := range keys {
		out[i] = make([]Window, len(widths))
		for w := range widths {
			v := vals[3*(i*len(widths)+w):]
			out[i][w] = Window{Idx: v[0], Cur: v[1], Prev: v[2]}
		}
	}
	return out, nil
}
