package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openQueue(t testing.TB, dir string, opt Options) *Queue {
	t.Helper()
	q, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func msg(from string, to ...string) Meta {
	m := Meta{From: from, Origin: OriginInbound, ClientIP: "192.0.2.1"}
	for _, a := range to {
		m.Rcpts = append(m.Rcpts, Rcpt{Addr: a})
	}
	return m
}

func bodyFor(i int, size int) []byte {
	b := []byte(fmt.Sprintf("Subject: message %d\r\n\r\n", i))
	for len(b) < size {
		b = append(b, byte('a'+(i+len(b))%26))
	}
	return b
}

func mustEnqueue(t testing.TB, q *Queue, m Meta, body []byte) Meta {
	t.Helper()
	got, err := q.Enqueue(m, body)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return got
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segExt))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(ms []Meta) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}
