package mailbox

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// groupSync makes many concurrent Maildir deliveries durable with one
// syncfs(2) instead of two fsyncs each (the file, then new/). On ext4 every
// fsync of a new file is a journal commit (~0.6 ms on the reference
// machine), and those commits queue behind each other — and behind the
// queue's own group commit, which every 250 reply waits for. One syncfs
// covers every delivery that finished writing before it started.
//
// Leader/follower: a caller that needs a sync and finds none running
// becomes the leader and runs one; callers arriving meanwhile wait for the
// next round, which must start after they wrote.
type groupSync struct {
	fn      func() error
	onBatch func(n int) // told each round's batch size; nil: nobody

	mu       sync.Mutex
	cond     *sync.Cond
	started  uint64 // rounds started
	ended    uint64 // rounds finished
	running  bool
	waiting  int    // callers whose round has not started yet
	errRound uint64 // last round that failed
	err      error
}

func newGroupSync(fn func() error, onBatch func(n int)) *groupSync {
	g := &groupSync{fn: fn, onBatch: onBatch}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// wait returns once a sync that started after the call has completed.
func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	need := g.started + 1 // a round already running started before our writes
	g.waiting++
	for g.ended < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		round := g.started
		// Every caller still waiting needs exactly this round: it covers
		// them all.
		batch := g.waiting
		g.waiting = 0
		g.mu.Unlock()
		if g.onBatch != nil {
			g.onBatch(batch)
		}
		err := g.fn()
		g.mu.Lock()
		g.running = false
		g.ended = round
		if err != nil {
			g.errRound, g.err = round, err
		}
		g.cond.Broadcast()
	}
	if g.errRound >= need {
		return g.err
	}
	return nil
}

// syncfsFunc returns a function that runs syncfs(2) on the filesystem that
// holds dir, or an error when the platform has no syncfs.
func syncfsFunc(dir string) (func() error, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		f.Close()
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("syncfs unsupported: %w", err)
		}
		return nil, fmt.Errorf("syncfs %s: %w", dir, err)
	}
	// f stays open for the life of the Maildir: the closure holds f itself
	// (not just its number), or the garbage collector's finalizer would
	// close the descriptor under us.
	return func() error {
		if err := unix.Syncfs(int(f.Fd())); err != nil {
			return fmt.Errorf("syncfs %s: %w", dir, err)
		}
		return nil
	}, nil
}
