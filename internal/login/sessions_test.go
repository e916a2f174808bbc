package login

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestSessionsRevoke(t *testing.T) {
	var s Sessions
	var ended [4]atomic.Bool
	done := make(chan int, 4)
	end := func(i int) func() { return func() { ended[i].Store(true); done <- i } }
	s.Add("alice@example.test", end(0))
	removeA1 := s.Add("alice@example.test", end(1))
	s.Add("bob@example.test", end(2))
	removeA1() // ended by itself: not ended again
	if n := s.Count("alice@example.test"); n != 1 {
		t.Fatalf("alice has %d sessions, want 1", n)
	}
	if n := s.Revoke("alice@example.test"); n != 1 {
		t.Fatalf("Revoke ended %d sessions, want 1", n)
	}
	select {
	case i := <-done:
		if i != 0 {
			t.Fatalf("session %d ended, want 0", i)
		}
	case <-time.After(time.Second):
		t.Fatal("the session was not ended")
	}
	if ended[1].Load() || ended[2].Load() {
		t.Fatal("a removed session or another user's was ended")
	}
	if n := s.Revoke("alice@example.test"); n != 0 {
		t.Fatalf("second Revoke ended %d", n)
	}
	if n := s.Count("bob@example.test"); n != 1 {
		t.Fatalf("bob has %d sessions", n)
	}
	// A nil registry tracks nothing and does not panic.
	var none *Sessions
	none.Add("x", func() { t.Error("ended") })()
	if none.Revoke("x") != 0 || none.Count("x") != 0 {
		t.Fatal("nil Sessions counted something")
	}
}
