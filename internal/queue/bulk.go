package queue

import (
	"fmt"
	"time"
)

// change is one message's part in a bulk operation.
type change struct {
	e      *entry
	remove bool
	meta   Meta // new Meta unless remove
	revoke bool // a worker holding a lease on it must stop
}

// bulk applies decide to every matching message and commits all the
// resulting records with one group commit. The index is updated before the
// commit completes (under the same lock that orders the log), so a held or
// deleted message is out of Next's reach at once; the call returns only once
// the records are durable.
func (q *Queue) bulk(op string, f Filter, decide func(e *entry) (change, bool)) (int, error) {
	m, err := compileFilter(f, q.now())
	if err != nil {
		return 0, fmt.Errorf("queue: %s: %w", op, err)
	}
	if err := q.begin(); err != nil {
		return 0, err
	}
	defer q.end()

	q.mu.Lock()
	var changes []change
	var recs [][]byte
	var encErr error
	inflight := 0
	q.forEachMatchLocked(m, func(e *entry) {
		c, ok := decide(e)
		if !ok || encErr != nil {
			return
		}
		if l := e.lease; l != nil && l.sending && c.revoke {
			// Being handed over right now: let that transaction finish,
			// start no other, and take what is still undelivered at Finish.
			l.stopped = true
			cc := c
			l.pending = &cc
			inflight++
			return
		}
		c.e = e
		if c.remove {
			recs = append(recs, encodeRecord(recRemove, e.meta.ID, []byte(e.meta.ID), nil))
		} else {
			data, err := encodeMeta(&c.meta)
			if err != nil {
				encErr = err
				return
			}
			recs = append(recs, encodeRecord(recUpdate, e.meta.ID, data, nil))
		}
		changes = append(changes, c)
	})
	if encErr != nil {
		q.mu.Unlock()
		return 0, fmt.Errorf("queue: %s: %w", op, encErr)
	}
	if inflight > 0 {
		q.log.Info("queue: messages in delivery right now; the operation applies when their attempt ends",
			"op", op, "count", inflight)
	}
	if len(changes) == 0 {
		q.mu.Unlock()
		return 0, nil
	}
	q.wmu.Lock()
	_, seq, err := q.appendLocked(recs)
	q.wmu.Unlock()
	if err != nil {
		q.mu.Unlock()
		return 0, fmt.Errorf("queue: %s: %w", op, err)
	}
	for _, c := range changes {
		if c.revoke && c.e.lease != nil {
			c.e.lease.revoked.Store(true)
		}
		if c.remove {
			q.removeLocked(c.e)
			continue
		}
		q.setMetaLocked(c.e, c.meta)
		q.placeLocked(c.e)
	}
	q.mu.Unlock()
	if err := q.waitDurable(seq); err != nil {
		return 0, fmt.Errorf("queue: %s: %w", op, err)
	}
	q.log.Info("queue: "+op, "messages", len(changes))
	return len(changes), nil
}

// Hold moves matching active and deferred messages to held with the given
// rule. A worker holding a lease on one sees Revoked, and its Finish keeps
// the message held.
func (q *Queue) Hold(f Filter, rule string) (int, error) {
	return q.bulk("hold", f, func(e *entry) (change, bool) {
		if e.meta.State != StateActive && e.meta.State != StateDeferred {
			return change{}, false
		}
		m := cloneMeta(e.meta)
		m.State = StateHeld
		m.Rule = rule
		return change{meta: m, revoke: true}, true
	})
}

// Release moves matching held messages to active, due now, and clears
// their rule.
func (q *Queue) Release(f Filter) (int, error) {
	return q.bulk("release", f, func(e *entry) (change, bool) {
		if e.meta.State != StateHeld {
			return change{}, false
		}
		m := cloneMeta(e.meta)
		m.State = StateActive
		m.Rule = ""
		m.NextAttempt = time.Time{}
		return change{meta: m}, true
	})
}

// Delete removes matching messages in any state. A worker holding a lease
// on one sees Revoked.
func (q *Queue) Delete(f Filter) (int, error) {
	return q.bulk("delete", f, func(e *entry) (change, bool) {
		return change{remove: true, revoke: true}, true
	})
}

// Retry makes matching deferred messages active, due now. A message being
// attempted right now (leased) is left alone.
func (q *Queue) Retry(f Filter) (int, error) {
	return q.bulk("retry", f, func(e *entry) (change, bool) {
		if e.meta.State != StateDeferred || e.lease != nil {
			return change{}, false
		}
		m := cloneMeta(e.meta)
		m.State = StateActive
		m.NextAttempt = time.Time{}
		return change{meta: m}, true
	})
}
