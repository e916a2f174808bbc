package mailbox

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGroupSyncBatches: many concurrent waiters share far fewer syncs, and
// every waiter returns only after a sync that started after it called.
func TestGroupSyncBatches(t *testing.T) {
	var calls, covered, rounds atomic.Int64
	g := newGroupSync(func() error {
		calls.Add(1)
		time.Sleep(2 * time.Millisecond)
		return nil
	}, func(n int) {
		rounds.Add(1)
		covered.Add(int64(n))
	})
	const waiters = 200
	var wg sync.WaitGroup
	for i := 0; i < waiters; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			before := calls.Load() // syncs started before our "write"
			if err := g.wait(); err != nil {
				t.Error(err)
			}
			if after := calls.Load(); after <= before {
				t.Errorf("waiter %d returned without a sync started after it (before %d, after %d)", i, before, after)
			}
		}(i)
	}
	wg.Wait()
	if n := calls.Load(); n >= waiters/2 {
		t.Errorf("%d syncs for %d concurrent waiters: not batched", n, waiters)
	}
	// The batch sizes reported (for metrics) add up to the waiters, one
	// report per round.
	if covered.Load() != waiters || rounds.Load() != calls.Load() {
		t.Errorf("batches reported cover %d waiters in %d rounds; want %d in %d", covered.Load(), rounds.Load(), waiters, calls.Load())
	}
}

func TestGroupSyncError(t *testing.T) {
	fail := errors.New("disk on fire")
	var bad atomic.Bool
	g := newGroupSync(func() error {
		if bad.Load() {
			return fail
		}
		return nil
	}, nil)
	if err := g.wait(); err != nil {
		t.Fatal(err)
	}
	bad.Store(true)
	if err := g.wait(); !errors.Is(err, fail) {
		t.Fatalf("error not reported: %v", err)
	}
	bad.Store(false)
	if err := g.wait(); err != nil {
		t.Fatalf("an old failure reported for a later, good sync: %v", err)
	}
}

// TestDeliveredRemovesTornFile: a file of the wrong length (a crash before
// the sync) does not count as delivered and is removed.
func TestDeliveredRemovesTornFile(t *testing.T) {
	m := &Maildir{Root: t.TempDir()}
	p, err := m.Deliver("a@example.test", "Mtorn", []byte("H: v\r\n"), []byte("\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	full := int64(len("H: v\r\n\r\nbody\r\n"))
	if !m.Delivered("a@example.test", "Mtorn", full) {
		t.Fatal("complete file not recognised")
	}
	if err := os.Truncate(p, 3); err != nil {
		t.Fatal(err)
	}
	if m.Delivered("a@example.test", "Mtorn", full) {
		t.Fatal("torn file counted as delivered")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("torn file not removed: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.Root, "example.test", "a", "new")); len(ents) != 0 {
		t.Errorf("new/ still has %d entries", len(ents))
	}
}

// TestDeliverPerFileSync keeps the fallback path working.
func TestDeliverPerFileSync(t *testing.T) {
	m := &Maildir{Root: t.TempDir(), PerFileSync: true}
	p, err := m.Deliver("a@example.test", "Mpf", nil, []byte("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "x\r\n" {
		t.Errorf("got %q", b)
	}
	if m.grouped() != nil {
		t.Error("PerFileSync still uses the group syncer")
	}
}

// TestSyncfsSurvivesGC: the directory handle must stay open after the
// garbage collector runs (a finalizer once closed it under us).
func TestSyncfsSurvivesGC(t *testing.T) {
	fn, err := syncfsFunc(t.TempDir())
	if err != nil {
		t.Skipf("no syncfs here: %v", err)
	}
	for i := 0; i < 3; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if err := fn(); err != nil {
		t.Fatalf("syncfs after GC: %v", err)
	}
}
