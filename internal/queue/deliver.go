package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Lease gives one delivery worker exclusive use of a message until Finish.
type Lease struct {
	Meta Meta
	// Recovered: the message was queued before this process started, so an
	// earlier attempt may have delivered to some recipients already.
	Recovered bool

	q       *Queue
	e       *entry
	revoked atomic.Bool
	done    bool    // guarded by q.mu
	sending bool    // guarded by q.mu: BeginSend said yes; bulk ops now wait for Finish
	pending *change // guarded by q.mu: a Hold or Delete that arrived while sending
	stopped bool    // guarded by q.mu: no further BeginSend (pending is set)
}

// Revoked reports whether Hold or Delete touched the leased message since it
// was leased: the worker must not start another send for it.
func (l *Lease) Revoked() bool { return l.revoked.Load() }

// BeginSend is the worker's commit point, called right before it hands the
// message to a mailbox or a remote server. It returns false when a Hold or
// Delete has taken the message. Once it has returned true, a Hold or Delete
// no longer takes the message at once (nor counts it): the transaction
// under way completes, no further one starts, and the operation is applied
// in Finish to whatever is still undelivered. So a message is never both
// delivered and counted as deleted, and never sent after a delete took it.
func (l *Lease) BeginSend() bool {
	l.q.mu.Lock()
	defer l.q.mu.Unlock()
	if l.done || l.revoked.Load() || l.stopped {
		return false
	}
	l.sending = true
	return true
}

// Attempt is the outcome of one delivery attempt.
type Attempt struct {
	Rcpts       []Rcpt    // full recipient list with updated statuses/diag
	NextAttempt time.Time // when to retry pending recipients
	LastError   string
}

// unplaceLocked takes a message out of the ready list and deferred heap.
func (q *Queue) unplaceLocked(e *entry) {
	if e.readyElem != nil {
		q.ready.Remove(e.readyElem)
		e.readyElem = nil
	}
	if e.heapIdx >= 0 {
		heap.Remove(&q.deferred, e.heapIdx)
	}
}

// placeLocked puts a message where Next will find it, according to its
// state, and wakes waiters that can use it. Call it after any change.
func (q *Queue) placeLocked(e *entry) {
	q.unplaceLocked(e)
	if e.lease != nil {
		return
	}
	switch e.meta.State {
	case StateActive:
		e.readyElem = q.ready.PushBack(e)
		q.signalLocked(1)
	case StateDeferred:
		heap.Push(&q.deferred, e)
		if e.heapIdx == 0 {
			// The earliest retry time moved: every waiter re-arms its timer.
			q.signalLocked(len(q.waiters))
		}
	}
}

// signalLocked wakes up to n blocked Next calls, oldest first.
func (q *Queue) signalLocked(n int) {
	n = min(n, len(q.waiters))
	for _, w := range q.waiters[:n] {
		w <- struct{}{} // buffered, and each waiter is signalled once
	}
	q.waiters = q.waiters[n:]
}

// dropWaiterLocked removes w from the waiters and reports whether it was
// still there (false: it was signalled).
func (q *Queue) dropWaiterLocked(w chan struct{}) bool {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// Next blocks until a message is due (active, or deferred with NextAttempt
// not after now; never held, never already leased) and leases it. It
// returns ctx.Err() when ctx is done and ErrClosed once the queue is closed.
func (q *Queue) Next(ctx context.Context) (*Lease, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// woken: the last wait ended with a signal meant for a message. If this
	// call then gives up, it passes the signal on. ctx is read once per
	// turn, under q.mu: reading it twice would let a cancel that lands
	// between the reads swallow the signal.
	woken := false
	q.mu.Lock()
	for {
		if q.shut {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			if woken {
				q.signalLocked(1)
			}
			q.mu.Unlock()
			return nil, err
		}
		if l := q.leaseDueLocked(); l != nil {
			q.mu.Unlock()
			return l, nil
		}
		var due <-chan time.Time
		if len(q.deferred) > 0 {
			d := q.deferred[0].meta.NextAttempt.Sub(q.now())
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			due = timer.C
		}
		w := make(chan struct{}, 1)
		q.waiters = append(q.waiters, w)
		q.mu.Unlock()

		select {
		case <-ctx.Done():
		case <-w:
		case <-due:
		}

		q.mu.Lock()
		woken = !q.dropWaiterLocked(w)
	}
}

// leaseDueLocked leases the next due message. When both new (active) and
// retry (due deferred) messages wait, it alternates, so neither a flood of
// new mail nor a retry backlog starves the other.
func (q *Queue) leaseDueLocked() *Lease {
	var retry *entry
	if len(q.deferred) > 0 && !q.deferred[0].meta.NextAttempt.After(q.now()) {
		retry = q.deferred[0]
	}
	el := q.ready.Front()
	switch {
	case el != nil && (retry == nil || !q.retryTurn):
		q.retryTurn = retry != nil
		return q.leaseLocked(el.Value.(*entry))
	case retry != nil:
		q.retryTurn = false
		return q.leaseLocked(retry)
	}
	return nil
}

func (q *Queue) leaseLocked(e *entry) *Lease {
	l := &Lease{Meta: cloneMeta(e.meta), Recovered: e.recovered, q: q, e: e}
	e.lease = l
	q.unplaceLocked(e)
	return l
}

// Finish records the outcome of a leased attempt and releases the lease;
// it returns once that is durable. With no pending recipient left the
// message is removed. Otherwise Attempts is incremented and the message is
// deferred until a.NextAttempt, unless a Hold arrived during the lease (it
// stays held). If a Delete arrived during the lease, there is nothing left
// to record and Finish returns nil.
func (q *Queue) Finish(l *Lease, a Attempt) error {
	if l == nil || l.q != q {
		return errors.New("queue: finish: lease does not belong to this queue")
	}
	if err := q.begin(); err != nil {
		return err
	}
	defer q.end()

	q.mu.Lock()
	if l.done {
		q.mu.Unlock()
		return fmt.Errorf("queue: finish %s: lease already finished", l.Meta.ID)
	}
	l.done = true
	e := l.e
	if q.index[e.meta.ID] != e || e.lease != l {
		q.mu.Unlock()
		return nil // deleted while leased
	}
	e.lease = nil

	rcpts := e.meta.Rcpts
	if a.Rcpts != nil {
		rcpts = a.Rcpts
	}
	var rec []byte
	var m Meta
	remove := !hasPending(rcpts)
	pend := l.pending
	if pend != nil && !remove && pend.remove {
		remove = true // a Delete that waited for this attempt
	}
	if pend != nil {
		q.log.Info("queue: operation that waited for a delivery attempt", "id", e.meta.ID,
			"op", map[bool]string{true: "delete", false: "hold"}[pend.remove], "applied", hasPending(rcpts))
	}
	if remove {
		rec = encodeRecord(recRemove, e.meta.ID, []byte(e.meta.ID), nil)
	} else {
		m = cloneMeta(e.meta)
		m.Rcpts = slices.Clone(rcpts)
		for i := range m.Rcpts {
			m.Rcpts[i].Diag = truncate(m.Rcpts[i].Diag, maxDiagLen)
		}
		m.Attempts++
		m.LastError = truncate(a.LastError, maxLastError)
		m.NextAttempt = normTime(a.NextAttempt)
		if m.State != StateHeld {
			m.State = StateDeferred
		}
		if pend != nil && !pend.remove {
			m.State, m.Rule = StateHeld, pend.meta.Rule
		}
		data, err := encodeMeta(&m)
		if err != nil {
			q.placeLocked(e)
			q.mu.Unlock()
			return fmt.Errorf("queue: finish: %w", err)
		}
		rec = encodeRecord(recUpdate, e.meta.ID, data, nil)
	}
	q.wmu.Lock()
	_, seq, err := q.appendLocked([][]byte{rec})
	q.wmu.Unlock()
	if err != nil {
		q.placeLocked(e) // back as it was, deliverable again
		q.mu.Unlock()
		return fmt.Errorf("queue: finish %s: %w", e.meta.ID, err)
	}
	if remove {
		q.removeLocked(e)
	} else {
		q.setMetaLocked(e, m)
		q.placeLocked(e)
	}
	q.mu.Unlock()
	if err := q.waitDurable(seq); err != nil {
		return fmt.Errorf("queue: finish %s: %w", l.Meta.ID, err)
	}
	return nil
}

// deferHeap orders deferred messages by NextAttempt (then ID).
type deferHeap []*entry

func (h deferHeap) Len() int { return len(h) }

func (h deferHeap) Less(i, j int) bool {
	if c := h[i].meta.NextAttempt.Compare(h[j].meta.NextAttempt); c != 0 {
		return c < 0
	}
	return strings.Compare(h[i].meta.ID, h[j].meta.ID) < 0
}

func (h deferHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *deferHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}

func (h *deferHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.heapIdx = -1
	*h = old[:len(old)-1]
	return e
}
