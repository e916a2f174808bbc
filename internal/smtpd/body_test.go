package smtpd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestReadBodyBudget(t *testing.T) {
	s := New(Config{MaxInflightBytes: 400 << 10}, nil, nil, nil)
	small := strings.Repeat("x", 100<<10)
	b1 := s.newBudget(false)
	got, err := b1.readBody(strings.NewReader(small))
	if err != nil || string(got) != small {
		t.Fatalf("small body: err %v, %d bytes", err, len(got))
	}
	// Once joined, the reservation is the body itself.
	if s.bodyBytes.Load() != b1.reserved || b1.reserved != int64(len(small)) {
		t.Errorf("reserved %d, counter %d for a %d-byte body", b1.reserved, s.bodyBytes.Load(), len(small))
	}
	// While the first body is held, a second large one exceeds the budget.
	b2 := s.newBudget(false)
	if _, err = b2.readBody(bytes.NewReader(make([]byte, 1<<20))); !errors.Is(err, errBodyBudget) {
		t.Fatalf("over budget: err %v", err)
	}
	b2.release()
	b1.release()
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
	// The outsiders' share leaves a quarter for users: 300 KiB fits a
	// user's session but not an outsider's when 700 KiB are held.
	s.cfg.MaxInflightBytes = 1 << 20
	held := s.newBudget(false)
	if !held.take(700 << 10) {
		t.Fatal("700 KiB of 1 MiB refused")
	}
	outsider := s.newBudget(true)
	if _, err := outsider.readBody(bytes.NewReader(make([]byte, 100<<10))); !errors.Is(err, errBodyBudget) {
		t.Errorf("outsider over its share: %v", err)
	}
	outsider.release()
	user := s.newBudget(false)
	if _, err := user.readBody(bytes.NewReader(make([]byte, 100<<10))); err != nil {
		t.Errorf("user within the budget: %v", err)
	}
	user.release()
	held.release()
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
}
