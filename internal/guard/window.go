package guard

import (
	"math"
	"time"
)

// Window widths, in milliseconds (the guard's internal time unit).
const (
	minuteMS  = int64(time.Minute / time.Millisecond)
	tenMinMS  = 10 * minuteMS
	quarterMS = 15 * minuteMS
	hourMS    = 60 * minuteMS
	dayMS     = 24 * hourMS
)

// window counts events in fixed buckets of one width (a minute, an hour…)
// and estimates the count over the last width by weighting the previous
// bucket by how much of it still overlaps: the usual sliding-window
// approximation. It is 16 bytes, whatever the rate, and never allocates.
//
// The fields are exported only so that encoding/json can persist them.
type window struct {
	Idx  int64  `json:"i"` // bucket number: time / width
	Cur  uint32 `json:"c"` // events in bucket Idx
	Prev uint32 `json:"p"` // events in bucket Idx-1
}

// roll moves the window to the bucket that holds now. A clock that went
// backwards keeps the current bucket.
func (w *window) roll(now, width int64) {
	idx := now / width
	switch {
	case idx <= w.Idx:
		return
	case idx == w.Idx+1:
		w.Prev = w.Cur
	default:
		w.Prev = 0
	}
	w.Cur = 0
	w.Idx = idx
}

// add records n events at now and returns the new estimate.
func (w *window) add(now, width int64, n int) int {
	w.roll(now, width)
	c := uint64(w.Cur) + uint64(max(n, 0))
	if c > math.MaxUint32 {
		c = math.MaxUint32
	}
	w.Cur = uint32(c)
	return w.value(now, width)
}

// get returns the estimate at now.
func (w *window) get(now, width int64) int {
	w.roll(now, width)
	return w.value(now, width)
}

// value is the estimate of a window already rolled to now: the current
// bucket plus the part of the previous one that is still inside the last
// width. Milliseconds keep the product well inside 64 bits.
func (w *window) value(now, width int64) int {
	elapsed := min(max(now-w.Idx*width, 0), width)
	return int(w.Cur) + int(uint64(w.Prev)*uint64(width-elapsed)/uint64(width))
}

// stale reports whether nothing was counted in the last two widths, so the
// window reads zero and need not be kept or saved.
func (w *window) stale(now, width int64) bool {
	return now/width > w.Idx+1 || (w.Cur == 0 && w.Prev == 0)
}
