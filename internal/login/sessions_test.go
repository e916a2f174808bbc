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
	s.Add("alice@example.test", "imap", 0, end(0))
	removeA1 := s.Add("alice@example.test", "smtp", 0, end(1))
	s.Add("bob@example.test", "imap", 0, end(2))
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
	none.Add("x", "imap", 0, func() { t.Error("ended") })()
	if none.Revoke("x") != 0 || none.Count("x") != 0 {
		t.Fatal("nil Sessions counted something")
	}
}

func TestSessionsRevokeByProtocol(t *testing.T) {
	var s Sessions
	done := make(chan string, 3)
	s.Add("carol@example.test", "smtp", 0, func() { done <- "smtp" })
	s.Add("carol@example.test", "imap", 0, func() { done <- "imap" })
	s.Add("carol@example.test", "pop3", 0, func() { done <- "pop3" })
	if n := s.Revoke("carol@example.test", "imap", "pop3"); n != 2 {
		t.Fatalf("ended %d sessions, want 2", n)
	}
	got := map[string]bool{<-done: true, <-done: true}
	if !got["imap"] || !got["pop3"] {
		t.Fatalf("ended %v, want imap and pop3", got)
	}
	if n := s.Count("carol@example.test"); n != 1 {
		t.Fatalf("%d sessions left, want the SMTP one", n)
	}
	select {
	case p := <-done:
		t.Fatalf("%s ended too", p)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestSessionsLoginRacingRevoke: a login whose password was checked
// before a revocation and that registers after it is ended at once.
func TestSessionsLoginRacingRevoke(t *testing.T) {
	var s Sessions
	user := Key("  Dave@Example.test ")
	if user != "dave@example.test" {
		t.Fatalf("Key = %q", user)
	}
	gen := s.Gen(user, "imap") // before the password check
	s.Revoke(user)             // the administrator, meanwhile
	done := make(chan struct{})
	s.Add(user, "imap", gen, func() { close(done) })
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("a session checked before the revocation survived it")
	}
	if n := s.Count(user); n != 0 {
		t.Fatalf("%d sessions registered", n)
	}
	// A login after the revocation stays.
	s.Add(user, "imap", s.Gen(user, "imap"), func() {})
	if n := s.Count(user); n != 1 {
		t.Fatalf("a login after the revocation: %d sessions registered, want 1", n)
	}
	// A revocation of mailbox access only does not end a racing SMTP login.
	smtpGen := s.Gen(user, "smtp")
	s.Revoke(user, "imap", "pop3")
	s.Add(user, "smtp", smtpGen, func() { t.Error("SMTP login ended by an IMAP/POP3 revocation") })
	time.Sleep(50 * time.Millisecond)
	if n := s.Count(user); n != 1 {
		t.Fatalf("%d sessions registered, want the SMTP one", n)
	}
}
