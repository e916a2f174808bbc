package metrics

import (
	"sync"
	"time"
)

// RingMinutes is how many minutes the traffic ring keeps: the last hour.
const RingMinutes = 60

// Minute counts one minute of traffic and guard activity: the fields of
// admin.TrafficMinute, which the live view converts it to.
type Minute struct {
	Time     time.Time // start of the minute, UTC
	In       int       // messages accepted (all origins, held ones included)
	Out      int       // deliveries made (recipients, remote and local)
	Refused  int       // commands refused at RCPT or DATA
	Held     int       // messages accepted into held (guard or content)
	Bounced  int       // recipients failed permanently
	Guard    int       // guard decisions other than accept
	Isolated int       // isolations and suspensions started
}

// Ring fields.
const (
	fieldIn = iota
	fieldOut
	fieldRefused
	fieldHeld
	fieldBounced
	fieldGuard
	fieldIsolated
	numFields
)

// ring is a fixed 60-slot per-minute ring: slot minute%60 holds that
// minute's counts while its stamp says so; an event in a newer minute
// clears the slot first. O(1) per event, fixed memory.
type ring struct {
	mu    sync.Mutex
	slots [RingMinutes]slot
}

type slot struct {
	minute int64 // Unix minute the counts belong to
	n      [numFields]int
}

func unixMinute(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 59) / 60
	}
	return s / 60
}

func slotOf(minute int64) int {
	i := int(minute % RingMinutes)
	if i < 0 {
		i += RingMinutes
	}
	return i
}

func (r *ring) add(now time.Time, field, n int) {
	minute := unixMinute(now)
	r.mu.Lock()
	s := &r.slots[slotOf(minute)]
	switch {
	case s.minute > minute:
		// A late event for a minute already overwritten: dropped.
		r.mu.Unlock()
		return
	case s.minute < minute:
		// An older minute's counts (or an empty slot): start afresh.
		*s = slot{minute: minute}
	}
	s.n[field] += n
	r.mu.Unlock()
}

// Traffic returns the last hour at now, one Minute per minute, oldest
// first; the last one is the current (partial) minute. Minutes without
// events are present with zero counts.
func (m *Metrics) Traffic(now time.Time) []Minute {
	out := make([]Minute, RingMinutes)
	cur := unixMinute(now)
	var r *ring
	if m != nil {
		r = &m.ring
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	for i := range out {
		minute := cur - RingMinutes + 1 + int64(i)
		out[i].Time = time.Unix(minute*60, 0).UTC()
		if r == nil {
			continue
		}
		if s := r.slots[slotOf(minute)]; s.minute == minute {
			out[i].In, out[i].Out, out[i].Refused = s.n[fieldIn], s.n[fieldOut], s.n[fieldRefused]
			out[i].Held, out[i].Bounced = s.n[fieldHeld], s.n[fieldBounced]
			out[i].Guard, out[i].Isolated = s.n[fieldGuard], s.n[fieldIsolated]
		}
	}
	return out
}
