package queue

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"
)

// TestStateBytes: the byte counters by state follow every change (enqueue,
// hold, release, a deferral, delivery, delete) and survive a reopen, always
// equal to the sum over List.
func TestStateBytes(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	q := openQueue(t, dir, Options{Now: clock.Now, NoSync: true})
	check := func(q *Queue, step string) {
		t.Helper()
		want := map[State]int64{StateActive: 0, StateDeferred: 0, StateHeld: 0}
		wantN := map[State]int{StateActive: 0, StateDeferred: 0, StateHeld: 0}
		for _, m := range q.List(Filter{}) {
			want[m.State] += m.Size
			wantN[m.State]++
		}
		if got := q.StateBytes(); !maps.Equal(got, want) {
			t.Errorf("%s: StateBytes = %v, want %v", step, got, want)
		}
		if got := q.Stats(); !maps.Equal(got, wantN) {
			t.Errorf("%s: Stats = %v, want %v", step, got, wantN)
		}
	}
	check(q, "empty")
	var ids []string
	for i := range 6 {
		m := msg(fmt.Sprintf("s%d@example.org", i), "a@example.com")
		if i == 5 {
			m.State = StateHeld
		}
		ids = append(ids, mustEnqueue(t, q, m, bodyFor(i, 1000+100*i)).ID)
	}
	check(q, "enqueued")
	if _, err := q.Hold(Filter{IDs: ids[:2]}, "admin"); err != nil {
		t.Fatal(err)
	}
	check(q, "held")
	if _, err := q.Release(Filter{IDs: ids[5:]}); err != nil {
		t.Fatal(err)
	}
	check(q, "released")
	if _, err := q.Delete(Filter{IDs: ids[1:2]}); err != nil {
		t.Fatal(err)
	}
	check(q, "deleted")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One attempt defers its message, the next delivers one (it leaves).
	l, err := q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Finish(l, Attempt{Rcpts: l.Meta.Rcpts, NextAttempt: clock.Now().Add(time.Hour), LastError: "451 later"}); err != nil {
		t.Fatal(err)
	}
	check(q, "deferred")
	l, err = q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := []Rcpt{{Addr: l.Meta.Rcpts[0].Addr, Status: RcptDelivered}}
	if err := q.Finish(l, Attempt{Rcpts: done}); err != nil {
		t.Fatal(err)
	}
	check(q, "delivered")
	before := q.StateBytes()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2 := openQueue(t, dir, Options{Now: clock.Now, NoSync: true})
	check(q2, "reopened")
	if after := q2.StateBytes(); !maps.Equal(before, after) {
		t.Errorf("after reopen %v, before %v", after, before)
	}
}
