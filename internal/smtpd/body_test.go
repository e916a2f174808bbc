package smtpd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestReadBodyBudget(t *testing.T) {
	s := New(Config{MaxInflightBytes: 200 << 10}, nil, nil, nil)
	small := strings.Repeat("x", 100<<10)
	got, reserved, err := s.readBody(strings.NewReader(small))
	if err != nil || string(got) != small {
		t.Fatalf("small body: err %v, %d bytes", err, len(got))
	}
	if s.bodyBytes.Load() != reserved || reserved < int64(len(small)) {
		t.Errorf("reserved %d, counter %d for a %d-byte body", reserved, s.bodyBytes.Load(), len(small))
	}
	// While the first body is held, a second large one exceeds the budget.
	_, r2, err := s.readBody(bytes.NewReader(make([]byte, 1<<20)))
	if !errors.Is(err, errBodyBudget) {
		t.Fatalf("over budget: err %v", err)
	}
	s.bodyBytes.Add(-r2)
	s.bodyBytes.Add(-reserved)
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
	// With the first released, the large one fits in a bigger budget.
	s.cfg.MaxInflightBytes = 4 << 20
	big, r3, err := s.readBody(bytes.NewReader(make([]byte, 1<<20)))
	if err != nil || len(big) != 1<<20 {
		t.Fatalf("1 MiB in a 4 MiB budget: err %v len %d", err, len(big))
	}
	s.bodyBytes.Add(-r3)
}
