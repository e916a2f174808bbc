package queue

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// deliverAll leases and finishes (delivered) every due message.
func deliverAll(t *testing.T, q *Queue) int {
	t.Helper()
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		l, err := q.Next(ctx)
		cancel()
		if err != nil {
			return n
		}
		if err := q.Finish(l, Attempt{Rcpts: done(l.Meta.Rcpts)}); err != nil {
			t.Fatal(err)
		}
		n++
	}
}

func TestRotationAndDeadSegments(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 4096}
	q := openQueue(t, dir, opt)
	for i := range 40 {
		mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(i, 500))
	}
	if n := len(segFiles(t, dir)); n < 5 {
		t.Fatalf("%d segments after 40 x 500 bytes with 4 KiB segments; want rotation", n)
	}
	if n := deliverAll(t, q); n != 40 {
		t.Fatalf("delivered %d, want 40", n)
	}
	if err := q.maintain(); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir)
	if len(segs) != 1 {
		t.Fatalf("segments after all delivered: %v, want only the head", segs)
	}
	q.Close()
	q2 := openQueue(t, dir, opt)
	if n := q2.Count(Filter{}); n != 0 {
		t.Fatalf("%d messages after reopen, want 0", n)
	}
	mustEnqueue(t, q2, msg("a@b.test", "c@d.test"), []byte("still works"))
}

// TestCompactionKeepsHeld: a held message pins the oldest segment; once
// everything around it is delivered, compaction moves it to the head and
// the old segments go away, without losing its body or state.
func TestCompactionKeepsHeld(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 4096}
	q := openQueue(t, dir, opt)
	var held []Meta
	for i := range 3 {
		m := msg(fmt.Sprintf("held%d@b.test", i), "c@d.test")
		m.State, m.Rule = StateHeld, "guard:rate"
		held = append(held, mustEnqueue(t, q, m, bodyFor(1000+i, 300)))
		for j := range 10 {
			mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(j, 500))
		}
	}
	// One held message gets a state change recorded in a later segment.
	if n, err := q.Release(Filter{IDs: []string{held[2].ID}}); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	if n, err := q.Hold(Filter{IDs: []string{held[2].ID}}, "admin"); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	held[2].Rule = "admin"
	first := segFiles(t, dir)[0]
	if n := deliverAll(t, q); n != 30 {
		t.Fatalf("delivered %d, want 30", n)
	}
	if err := q.maintain(); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir)
	if slices.Contains(segs, first) {
		t.Fatalf("oldest segment %s survived compaction: %v", filepath.Base(first), segs)
	}
	if len(segs) > 2 {
		t.Errorf("%d segments left for 3 small messages", len(segs))
	}
	check := func(q *Queue) {
		t.Helper()
		if n := q.Count(Filter{}); n != 3 {
			t.Fatalf("%d messages, want 3", n)
		}
		for i, want := range held {
			got, ok := q.Get(want.ID)
			if !ok || got.State != StateHeld || got.Rule != want.Rule || got.From != want.From {
				t.Fatalf("held %d: %+v, %v", i, got, ok)
			}
			b, err := q.Body(want.ID)
			if err != nil || !bytes.Equal(b, bodyFor(1000+i, 300)) {
				t.Fatalf("held %d body: %v", i, err)
			}
		}
	}
	check(q)
	q.Close()
	q2 := openQueue(t, dir, opt)
	check(q2)
	if err := q2.maintain(); err != nil {
		t.Fatal(err)
	}
	check(q2)
}

// TestCompactionUnderLoad runs enqueue/deliver/hold/delete traffic on tiny
// segments while maintenance runs continuously, then checks that every
// message that should be there is, with its body, before and after reopen.
func TestCompactionUnderLoad(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 8192, NoSync: true}
	q, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { // maintenance as fast as it can go
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := q.maintain(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var mu sync.Mutex
	keep := map[string][]byte{} // held messages that must survive
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				b := bodyFor(w*10000+i, 200+i%300)
				m := msg(fmt.Sprintf("w%d@x.test", w), "r@y.test")
				if i%10 == 0 {
					m.State, m.Rule = StateHeld, "test"
				}
				got, err := q.Enqueue(m, b)
				if err != nil {
					t.Error(err)
					return
				}
				if m.State == StateHeld {
					mu.Lock()
					keep[got.ID] = b
					mu.Unlock()
				}
				if i%7 == 0 {
					if _, err := q.Delete(Filter{From: "nobody@x.test"}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // a delivery worker
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for delivered := 0; delivered < 4*135; delivered++ {
			l, err := q.Next(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := q.Body(l.Meta.ID); err != nil {
				t.Error(err)
			}
			if err := q.Finish(l, Attempt{Rcpts: done(l.Meta.Rcpts)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	if t.Failed() {
		return
	}
	check := func(q *Queue) {
		t.Helper()
		if n := q.Count(Filter{}); n != len(keep) {
			t.Fatalf("%d messages, want %d held", n, len(keep))
		}
		for id, want := range keep {
			b, err := q.Body(id)
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("Body(%s): %v", id, err)
			}
		}
	}
	check(q)
	if err := q.maintain(); err != nil {
		t.Fatal(err)
	}
	// Disk use is bounded by the compaction rule: about twice the live
	// bytes plus a few segments of slack.
	var live, total int64
	q.wmu.Lock()
	for _, s := range q.segs {
		live += s.liveBytes.Load()
		total += s.size
	}
	nsegs := len(q.segs)
	q.wmu.Unlock()
	t.Logf("after maintenance: %d segments, %d bytes, %d live", nsegs, total, live)
	if total > 2*live+3*opt.SegmentSize {
		t.Errorf("log is %d bytes for %d live bytes", total, live)
	}
	q.Close()
	q2 := openQueue(t, dir, opt)
	check(q2)
}
