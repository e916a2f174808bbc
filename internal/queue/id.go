package queue

import (
	"encoding/base32"
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// idEncoding is base32hex in lower case: its alphabet is in ASCII order, so
// IDs sort like the numbers they encode, and it is safe in URLs and file
// names.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// idGen makes IDs from an 80-bit strictly increasing value: Unix nanoseconds
// in the upper 64 bits and a counter in the lower 16 that only matters when
// the clock stands still or goes back. 10 bytes encode to 16 characters.
type idGen struct {
	mu sync.Mutex
	hi uint64
	lo uint16
}

func (g *idGen) next(now time.Time) string {
	ns := max(now.UnixNano(), 0)
	g.mu.Lock()
	switch {
	case uint64(ns) > g.hi:
		g.hi, g.lo = uint64(ns), 0
	case g.lo == math.MaxUint16:
		g.hi, g.lo = g.hi+1, 0
	default:
		g.lo++
	}
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], g.hi)
	binary.BigEndian.PutUint16(b[8:], g.lo)
	g.mu.Unlock()
	return idEncoding.EncodeToString(b[:])
}

// observe makes later IDs sort after id (used at start-up, so that a clock
// that went back across a restart cannot repeat an ID).
func (g *idGen) observe(id string) {
	if len(id) != 16 {
		return
	}
	b, err := idEncoding.DecodeString(id)
	if err != nil || len(b) != 10 {
		return
	}
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint16(b[8:])
	g.mu.Lock()
	if hi > g.hi || (hi == g.hi && lo > g.lo) {
		g.hi, g.lo = hi, lo
	}
	g.mu.Unlock()
}
