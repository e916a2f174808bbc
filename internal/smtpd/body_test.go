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
	b1 := &budget{srv: s}
	got, err := b1.readBody(strings.NewReader(small), 0)
	if err != nil || string(got) != small {
		t.Fatalf("small body: err %v, %d bytes", err, len(got))
	}
	// Once joined, the reservation is the body itself.
	if s.bodyBytes.Load() != b1.reserved || b1.reserved != int64(len(small)) {
		t.Errorf("reserved %d, counter %d for a %d-byte body", b1.reserved, s.bodyBytes.Load(), len(small))
	}
	// While the first body is held, a second large one exceeds the budget.
	b2 := &budget{srv: s}
	if _, err = b2.readBody(bytes.NewReader(make([]byte, 1<<20)), 0); !errors.Is(err, errBodyBudget) {
		t.Fatalf("over budget: err %v", err)
	}
	b2.release()
	b1.release()
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
	// With a SIZE hint the buffer is allocated once: reserved = size+1.
	s.cfg.MaxInflightBytes = 4 << 20
	b3 := &budget{srv: s}
	big, err := b3.readBody(bytes.NewReader(make([]byte, 1<<20)), 1<<20)
	if err != nil || len(big) != 1<<20 {
		t.Fatalf("1 MiB in a 4 MiB budget: err %v len %d", err, len(big))
	}
	if b3.reserved != 1<<20+1 {
		t.Errorf("with SIZE hint reserved %d, want %d", b3.reserved, 1<<20+1)
	}
	b3.release()
	// A wrong (small) hint still reads the whole message.
	b4 := &budget{srv: s}
	big, err = b4.readBody(bytes.NewReader(make([]byte, 300<<10)), 10)
	if err != nil || len(big) != 300<<10 {
		t.Fatalf("small hint: err %v len %d", err, len(big))
	}
	b4.release()
}
