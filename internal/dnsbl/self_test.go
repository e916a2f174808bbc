package dnsbl

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

type change struct {
	listed bool
	res    []Result
}

type recorder struct {
	mu      sync.Mutex
	changes []change
	ch      chan change
}

func (r *recorder) onChange(listed bool, res []Result) {
	r.mu.Lock()
	r.changes = append(r.changes, change{listed, res})
	r.mu.Unlock()
	if r.ch != nil {
		r.ch <- change{listed, res}
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

func TestSelfMonitorFlips(t *testing.T) {
	srv, res := setup(t)
	c := New(res, []string{"bl.test"}, 500*time.Millisecond, nil)
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.8"), netip.MustParseAddr("127.0.0.9")}
	rec := &recorder{}
	m := NewSelfMonitor(c, ips, time.Hour, rec.onChange, nil)
	ctx := context.Background()
	const name = "9.0.0.127.bl.test."

	steps := []struct {
		name    string
		do      func()
		want    bool
		changes int // total onChange calls after this step
	}{
		{"clean at start", func() {}, false, 0},
		{"still clean", func() {}, false, 0},
		{"listed", func() { add(t, srv, name+" 0 IN A 127.0.0.2") }, true, 1},
		{"still listed: no second call", func() {}, true, 1},
		{"zone fails while listed: status kept", func() { srv.SetRcode(name, dns.RcodeServerFailure) }, true, 1},
		{"zone back, still listed", func() { srv.SetRcode(name, dns.RcodeSuccess) }, true, 1},
		{"delisted (no cache in the way)", func() { srv.Remove(name) }, false, 2},
		{"still delisted", func() {}, false, 2},
		{"zone fails while clean: status kept", func() { srv.SetRcode(name, dns.RcodeServerFailure) }, false, 2},
	}
	for _, s := range steps {
		s.do()
		if got := m.CheckNow(ctx); got != s.want {
			t.Fatalf("%s: CheckNow = %v, want %v", s.name, got, s.want)
		}
		if m.Listed() != s.want {
			t.Fatalf("%s: Listed = %v, want %v", s.name, m.Listed(), s.want)
		}
		if n := rec.count(); n != s.changes {
			t.Fatalf("%s: onChange called %d times, want %d", s.name, n, s.changes)
		}
	}

	first := rec.changes[0]
	if !first.listed || len(first.res) != 2 || first.res[0].Listed || !first.res[1].Listed || first.res[1].Zone != "bl.test" {
		t.Fatalf("listing change = %+v, want per-IP results with the second listed", first)
	}
	if rec.changes[1].listed {
		t.Fatalf("second change = %+v, want delisting", rec.changes[1])
	}
	if c.CacheLen() != 0 {
		t.Fatalf("own checks filled the client cache (%d entries)", c.CacheLen())
	}
}

func TestSelfMonitorRun(t *testing.T) {
	srv, res := setup(t)
	add(t, srv, "9.0.0.127.bl.test. 0 IN A 127.0.0.2")
	c := New(res, []string{"bl.test"}, 500*time.Millisecond, nil)
	rec := &recorder{ch: make(chan change, 4)}
	m := NewSelfMonitor(c, []netip.Addr{netip.MustParseAddr("127.0.0.9")}, 20*time.Millisecond, rec.onChange, nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()

	// Checked at start: listed.
	select {
	case ch := <-rec.ch:
		if !ch.listed {
			t.Fatalf("first change %+v, want listed", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not check at start")
	}
	// A later periodic check notices the delisting.
	srv.Remove("9.0.0.127.bl.test.")
	select {
	case ch := <-rec.ch:
		if ch.listed {
			t.Fatalf("second change %+v, want delisted", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not check periodically")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
	if m.Listed() {
		t.Fatal("Listed after delisting")
	}
}
