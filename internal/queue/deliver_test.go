package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

const waitLimit = 5 * time.Second

// nextAsync runs Next in the background.
func nextAsync(q *Queue, ctx context.Context) <-chan leaseResult {
	ch := make(chan leaseResult, 1)
	go func() {
		l, err := q.Next(ctx)
		ch <- leaseResult{l, err}
	}()
	return ch
}

type leaseResult struct {
	l   *Lease
	err error
}

func expectLease(t *testing.T, ch <-chan leaseResult, wantID string) *Lease {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Next: %v", r.err)
		}
		if r.l.Meta.ID != wantID {
			t.Fatalf("Next leased %s, want %s", r.l.Meta.ID, wantID)
		}
		return r.l
	case <-time.After(waitLimit):
		t.Fatalf("Next did not return %s within %v", wantID, waitLimit)
	}
	return nil
}

func expectNothingDue(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if l, err := q.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		id := ""
		if l != nil {
			id = l.Meta.ID
		}
		t.Fatalf("Next = %q, %v; want nothing due", id, err)
	}
}

func TestNextWakesOnEnqueue(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	expectNothingDue(t, q)
	ch := nextAsync(q, context.Background())
	m := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), []byte("x"))
	l := expectLease(t, ch, m.ID)
	if l.Recovered {
		t.Error("new message marked Recovered")
	}
	// Leased: not handed out twice.
	expectNothingDue(t, q)
}

func TestNextOrderAndHeld(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	held := msg("a@b.test", "c@d.test")
	held.State, held.Rule = StateHeld, "guard"
	mustEnqueue(t, q, held, nil)
	a := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
	b := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
	for _, want := range []string{a.ID, b.ID} {
		l, err := q.Next(context.Background())
		if err != nil || l.Meta.ID != want {
			t.Fatalf("Next = %v, %v; want %s", l, err, want)
		}
	}
	expectNothingDue(t, q) // the held one is never due
}

func TestNextWakesOnReleaseAndRetry(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	held := msg("a@b.test", "c@d.test")
	held.State, held.Rule = StateHeld, "guard"
	h := mustEnqueue(t, q, held, nil)

	ch := nextAsync(q, context.Background())
	if n, err := q.Release(Filter{IDs: []string{h.ID}}); n != 1 || err != nil {
		t.Fatalf("Release = %d, %v", n, err)
	}
	l := expectLease(t, ch, h.ID)
	if l.Meta.State != StateActive || l.Meta.Rule != "" {
		t.Errorf("released message: state %q rule %q", l.Meta.State, l.Meta.Rule)
	}
	// Defer it far into the future, then Retry wakes a waiting Next.
	if err := q.Finish(l, Attempt{NextAttempt: time.Now().Add(time.Hour), LastError: "451"}); err != nil {
		t.Fatal(err)
	}
	expectNothingDue(t, q)
	ch = nextAsync(q, context.Background())
	if n, err := q.Retry(Filter{From: "a@b.test"}); n != 1 || err != nil {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	l = expectLease(t, ch, h.ID)
	if l.Meta.State != StateActive || !l.Meta.NextAttempt.IsZero() || l.Meta.Attempts != 1 {
		t.Errorf("retried message: %+v", l.Meta)
	}
}

func TestNextWakesWhenDeferredIsDue(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	m := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
	l, err := q.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(150 * time.Millisecond)
	ch := nextAsync(q, context.Background()) // blocks with nothing due at all
	if err := q.Finish(l, Attempt{NextAttempt: due}); err != nil {
		t.Fatal(err)
	}
	l = expectLease(t, ch, m.ID)
	if now := time.Now(); now.Before(due) {
		t.Errorf("deferred message leased at %v, before its NextAttempt %v", now, due)
	}
	if l.Meta.State != StateDeferred || l.Meta.Attempts != 1 {
		t.Errorf("lease meta: %+v", l.Meta)
	}
}

func TestNextCancelAndClose(t *testing.T) {
	q, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := nextAsync(q, ctx)
	cancel()
	select {
	case r := <-ch:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Next after cancel: %v", r.err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Next ignored cancellation")
	}
	chs := []<-chan leaseResult{nextAsync(q, context.Background()), nextAsync(q, context.Background())}
	time.Sleep(10 * time.Millisecond) // let them block; correctness does not depend on it
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chs {
		select {
		case r := <-ch:
			if !errors.Is(r.err, ErrClosed) {
				t.Fatalf("Next after Close: %v", r.err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Next still blocked after Close")
		}
	}
}

// A waiter woken for a message that then gives up (cancelled) must pass the
// wake-up on, or the message would sit unnoticed.
func TestNoLostWakeups(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		doomed := nextAsync(q, ctx)
		live := nextAsync(q, context.Background())
		time.Sleep(time.Millisecond)
		m := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
		cancel()
		got := ""
		var l *Lease
		select {
		case r := <-doomed:
			if r.err == nil {
				got, l = r.l.Meta.ID, r.l
			}
		case <-time.After(waitLimit):
			t.Fatal("cancelled Next did not return")
		}
		if got == "" {
			l = expectLease(t, live, m.ID)
		} else {
			// The cancelled one won the race; the live one keeps waiting.
			if got != m.ID {
				t.Fatalf("leased %s, want %s", got, m.ID)
			}
			m2 := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
			l2 := expectLease(t, live, m2.ID)
			if err := q.Finish(l2, Attempt{Rcpts: done(l2.Meta.Rcpts)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Finish(l, Attempt{Rcpts: done(l.Meta.Rcpts)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := q.Count(Filter{}); n != 0 {
		t.Fatalf("%d messages left", n)
	}
}

func done(rs []Rcpt) []Rcpt {
	out := slices.Clone(rs)
	for i := range out {
		out[i].Status = RcptDelivered
	}
	return out
}

func TestFinish(t *testing.T) {
	next := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		during      func(t *testing.T, q *Queue, id string) // while leased
		rcpts       func([]Rcpt) []Rcpt
		wantGone    bool
		wantState   State
		wantRule    string
		wantRevoked bool
	}{
		{name: "all delivered removes", rcpts: done, wantGone: true},
		{name: "delivered and failed removes", rcpts: func(rs []Rcpt) []Rcpt {
			rs = done(rs)
			rs[1].Status, rs[1].Diag = RcptFailed, "550 no such user"
			return rs
		}, wantGone: true},
		{name: "pending defers", rcpts: func(rs []Rcpt) []Rcpt {
			rs = slices.Clone(rs)
			rs[0].Status, rs[0].Diag = RcptDelivered, "250 ok"
			rs[1].Diag = "451 try later"
			return rs
		}, wantState: StateDeferred},
		{name: "nil rcpts keeps them pending", rcpts: func([]Rcpt) []Rcpt { return nil }, wantState: StateDeferred},
		{name: "hold during lease wins", during: func(t *testing.T, q *Queue, id string) {
			if n, err := q.Hold(Filter{IDs: []string{id}}, "admin"); n != 1 || err != nil {
				t.Fatalf("got %d, %v", n, err)
			}
		}, rcpts: func(rs []Rcpt) []Rcpt { return rs }, wantState: StateHeld, wantRule: "admin", wantRevoked: true},
		{name: "hold then release during lease defers", during: func(t *testing.T, q *Queue, id string) {
			q.Hold(Filter{IDs: []string{id}}, "admin")
			q.Release(Filter{IDs: []string{id}})
		}, rcpts: func(rs []Rcpt) []Rcpt { return rs }, wantState: StateDeferred, wantRevoked: true},
		{name: "delete during lease wins", during: func(t *testing.T, q *Queue, id string) {
			if n, err := q.Delete(Filter{IDs: []string{id}}); n != 1 || err != nil {
				t.Fatalf("got %d, %v", n, err)
			}
		}, rcpts: func(rs []Rcpt) []Rcpt { return rs }, wantGone: true, wantRevoked: true},
		{name: "retry during lease is ignored", during: func(t *testing.T, q *Queue, id string) {
			if n, _ := q.Retry(Filter{IDs: []string{id}}); n != 0 {
				t.Fatal("retry touched a leased message")
			}
		}, rcpts: func(rs []Rcpt) []Rcpt { return rs }, wantState: StateDeferred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := openQueue(t, dir, Options{})
			m := mustEnqueue(t, q, msg("a@b.test", "r1@x.test", "r2@y.test"), []byte("body"))
			l, err := q.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tt.during != nil {
				tt.during(t, q, m.ID)
			}
			if l.Revoked() != tt.wantRevoked {
				t.Errorf("Revoked = %v, want %v", l.Revoked(), tt.wantRevoked)
			}
			rcpts := tt.rcpts(l.Meta.Rcpts)
			if err := q.Finish(l, Attempt{Rcpts: rcpts, NextAttempt: next, LastError: "451 try later"}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if err := q.Finish(l, Attempt{}); err == nil {
				t.Error("second Finish of the same lease succeeded")
			}
			check := func(q *Queue) {
				t.Helper()
				got, ok := q.Get(m.ID)
				if tt.wantGone {
					if ok {
						t.Fatalf("message still queued: %+v", got)
					}
					return
				}
				if !ok {
					t.Fatal("message gone")
				}
				if got.State != tt.wantState || got.Rule != tt.wantRule || got.Attempts != 1 ||
					!got.NextAttempt.Equal(next) || got.LastError != "451 try later" {
					t.Errorf("after Finish: %+v", got)
				}
				if rcpts != nil && !slices.Equal(got.Rcpts, rcpts) {
					t.Errorf("Rcpts = %+v, want %+v", got.Rcpts, rcpts)
				}
			}
			check(q)
			q.Close()
			check(openQueue(t, dir, Options{}))
		})
	}
}

func TestBulkOps(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	var abuser, normal []string
	for range 5 {
		normal = append(normal, mustEnqueue(t, q, msg("user@good.test", "x@y.test"), nil).ID)
	}
	for range 10 {
		abuser = append(abuser, mustEnqueue(t, q, msg("worm@evil.test", "x@y.test"), nil).ID)
	}
	// The two oldest (normal) messages get deferred.
	for i := range 2 {
		l, err := q.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if l.Meta.ID != normal[i] {
			t.Fatalf("Next = %s, want %s", l.Meta.ID, normal[i])
		}
		if err := q.Finish(l, Attempt{NextAttempt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	evil := Filter{From: "@evil.test"}
	steps := []struct {
		name string
		op   func() (int, error)
		want int
		st   map[State]int
	}{
		{"hold abuser", func() (int, error) { return q.Hold(evil, "worm") }, 10, map[State]int{StateActive: 3, StateDeferred: 2, StateHeld: 10}},
		{"hold again is a no-op", func() (int, error) { return q.Hold(evil, "worm") }, 0, map[State]int{StateActive: 3, StateDeferred: 2, StateHeld: 10}},
		{"retry deferred", func() (int, error) { return q.Retry(Filter{}) }, 2, map[State]int{StateActive: 5, StateDeferred: 0, StateHeld: 10}},
		{"release some", func() (int, error) { return q.Release(Filter{IDs: abuser[:3]}) }, 3, map[State]int{StateActive: 8, StateDeferred: 0, StateHeld: 7}},
		{"delete held abuser", func() (int, error) { return q.Delete(Filter{From: "worm@evil.test", State: StateHeld}) }, 7, map[State]int{StateActive: 8, StateDeferred: 0, StateHeld: 0}},
		{"release nothing held", func() (int, error) { return q.Release(Filter{}) }, 0, map[State]int{StateActive: 8, StateDeferred: 0, StateHeld: 0}},
		{"delete all", func() (int, error) { return q.Delete(Filter{}) }, 8, map[State]int{StateActive: 0, StateDeferred: 0, StateHeld: 0}},
	}
	for _, s := range steps {
		n, err := s.op()
		if err != nil || n != s.want {
			t.Fatalf("%s: %d, %v; want %d", s.name, n, err, s.want)
		}
		st := q.Stats()
		for state, want := range s.st {
			if st[state] != want {
				t.Fatalf("%s: Stats = %v, want %v", s.name, st, s.st)
			}
		}
	}
	if held := q.List(Filter{State: StateHeld}); len(held) != 0 {
		t.Fatalf("held left: %v", ids(held))
	}
}

func TestLeasedAtCrashIsDueAgain(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), []byte("x"))
	if _, err := q.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	q.Close() // the lease is never finished
	q2 := openQueue(t, dir, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	l, err := q2.Next(ctx)
	if err != nil || l.Meta.ID != m.ID {
		t.Fatalf("Next after reopen: %v", err)
	}
	if !l.Recovered {
		t.Error("lease of a message from before the restart is not marked Recovered")
	}
}

// Metadata stays small enough that every later Update fits in a record.
func TestMetaLimits(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	big := msg("a@b.test", "c@d.test")
	big.Subject = strings.Repeat("x", maxEnqueueMeta)
	if _, err := q.Enqueue(big, nil); err == nil {
		t.Fatal("Enqueue accepted over-sized metadata")
	}
	m := mustEnqueue(t, q, msg("a@b.test", "c@d.test", "e@f.test"), nil)
	l, err := q.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rc := slices.Clone(l.Meta.Rcpts)
	rc[0].Status, rc[0].Diag = RcptFailed, strings.Repeat("é", maxDiagLen) // 2 bytes each
	if err := q.Finish(l, Attempt{Rcpts: rc, LastError: strings.Repeat("z", 3*maxLastError)}); err != nil {
		t.Fatal(err)
	}
	got, _ := q.Get(m.ID)
	if d := got.Rcpts[0].Diag; len(d) > maxDiagLen || len(d) < maxDiagLen-1 || !utf8.ValidString(d) {
		t.Errorf("diag of %d bytes (valid UTF-8: %v), want %d", len(d), utf8.ValidString(d), maxDiagLen)
	}
	if len(got.LastError) != maxLastError {
		t.Errorf("LastError of %d bytes, want %d", len(got.LastError), maxLastError)
	}
}

// New mail and due retries take turns.
func TestNextAlternatesNewAndRetries(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	var retries []string
	for range 2 {
		m := msg("a@b.test", "c@d.test")
		m.State, m.NextAttempt = StateDeferred, time.Now().Add(-time.Minute)
		retries = append(retries, mustEnqueue(t, q, m, nil).ID)
	}
	var fresh []string
	for range 3 {
		fresh = append(fresh, mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil).ID)
	}
	want := []string{fresh[0], retries[0], fresh[1], retries[1], fresh[2]}
	for i, id := range want {
		l, err := q.Next(context.Background())
		if err != nil || l.Meta.ID != id {
			t.Fatalf("lease %d: %v, %v; want %s", i, l, err, id)
		}
	}
}

// TestBulkWhileSending: a Hold or Delete that arrives after the worker's
// BeginSend neither takes nor counts the message; it stops further sends
// and is applied at Finish to what is still undelivered — so no message is
// both delivered and counted as deleted.
func TestBulkWhileSending(t *testing.T) {
	del := func(q *Queue, id string) (int, error) { return q.Delete(Filter{IDs: []string{id}}) }
	hold := func(q *Queue, id string) (int, error) { return q.Hold(Filter{IDs: []string{id}}, "admin") }
	onePending := func(rs []Rcpt) []Rcpt {
		rs = slices.Clone(rs)
		rs[0].Status = RcptDelivered
		return rs
	}
	tests := []struct {
		name      string
		op        func(*Queue, string) (int, error)
		rcpts     func([]Rcpt) []Rcpt
		wantGone  bool
		wantState State
		wantRule  string
	}{
		{"delete, then all delivered", del, done, true, "", ""},
		{"delete, then one still pending", del, onePending, true, "", ""},
		{"hold, then all delivered", hold, done, true, "", ""},
		{"hold, then one still pending", hold, onePending, false, StateHeld, "admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := openQueue(t, dir, Options{})
			m := mustEnqueue(t, q, msg("a@b.test", "r1@x.test", "r2@y.test"), []byte("body"))
			l, err := q.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !l.BeginSend() {
				t.Fatal("BeginSend refused on a fresh lease")
			}
			n, err := tt.op(q, m.ID)
			if err != nil || n != 0 {
				t.Fatalf("operation on a message being sent: counted %d, err %v; want 0", n, err)
			}
			if l.BeginSend() {
				t.Error("no further send may start after the operation")
			}
			if _, ok := q.Get(m.ID); !ok {
				t.Fatal("message taken while its send was in flight")
			}
			if err := q.Finish(l, Attempt{Rcpts: tt.rcpts(l.Meta.Rcpts), NextAttempt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			check := func(q *Queue) {
				t.Helper()
				got, ok := q.Get(m.ID)
				if tt.wantGone {
					if ok {
						t.Fatalf("still queued: %+v", got)
					}
					return
				}
				if !ok || got.State != tt.wantState || got.Rule != tt.wantRule {
					t.Fatalf("got %+v (ok %v), want state %s rule %q", got, ok, tt.wantState, tt.wantRule)
				}
			}
			check(q)
			q.Close()
			check(openQueue(t, dir, Options{}))
		})
	}
}

// TestBulkBeforeSendTakesAtOnce: before BeginSend, Delete takes and counts
// the leased message, and BeginSend then refuses.
func TestBulkBeforeSendTakesAtOnce(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	m := mustEnqueue(t, q, msg("a@b.test", "r1@x.test"), []byte("body"))
	l, err := q.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := q.Delete(Filter{IDs: []string{m.ID}}); n != 1 || err != nil {
		t.Fatalf("delete before send: %d %v", n, err)
	}
	if l.BeginSend() {
		t.Fatal("BeginSend allowed a send after the message was deleted")
	}
}

// cancelAfterCtx is a context whose Err turns to Canceled after a given
// number of calls, while its Done channel never closes: it lands a cancel at
// each exact point where Next consults its context.
type cancelAfterCtx struct {
	context.Context
	mu    sync.Mutex
	calls int
	live  int // calls answered with nil
}

func (c *cancelAfterCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls > c.live {
		return context.Canceled
	}
	return nil
}

// Wherever a cancel lands while Next is being woken for a message, the
// message is either leased by that call or handed to the next waiter.
func TestNoLostWakeupAtAnyCancelPoint(t *testing.T) {
	for live := 1; live <= 4; live++ {
		t.Run(fmt.Sprintf("cancel-after-%d-checks", live), func(t *testing.T) {
			q := openQueue(t, t.TempDir(), Options{NoSync: true})
			doomedCtx := &cancelAfterCtx{Context: context.Background(), live: live}
			doomed := nextAsync(q, doomedCtx)
			waitWaiters(t, q, 1)
			other := nextAsync(q, context.Background())
			waitWaiters(t, q, 2)
			m := mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
			var r leaseResult
			select {
			case r = <-doomed:
			case <-time.After(waitLimit):
				t.Fatal("doomed Next did not return")
			}
			if r.err == nil {
				if r.l.Meta.ID != m.ID {
					t.Fatalf("leased %s, want %s", r.l.Meta.ID, m.ID)
				}
				return // it took the message itself; nothing to pass on
			}
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("doomed Next: %v", r.err)
			}
			expectLease(t, other, m.ID)
		})
	}
}

func waitWaiters(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		q.mu.Lock()
		got := len(q.waiters)
		q.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
