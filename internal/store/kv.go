package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// KV is the surface mamori's shared state is kept behind: named buckets of
// string keys and byte values, atomic multi-key updates, and notifications
// of changes. *Store (embedded, one process) and redisstore.Store (Redis,
// shared by the nodes of a cluster) implement it.
type KV interface {
	// Get returns a copy of the value under key in bucket, or nil, nil
	// when there is none.
	Get(bucket, key string) ([]byte, error)
	// Put stores val under key in bucket; durable (or, for Redis,
	// acknowledged) when it returns.
	Put(bucket, key string, val []byte) error
	// Delete removes key from bucket; a missing key is not an error.
	Delete(bucket, key string) error
	// ForEach calls fn for every key of bucket in ascending byte order,
	// over one consistent view. An error from fn stops it and is returned.
	ForEach(bucket string, fn func(key string, val []byte) error) error
	// Update runs fn in one transaction: every change fn makes is
	// committed together, or — when fn returns an error — none is.
	// Implementations that detect conflicts optimistically (Redis) may run
	// fn more than once: it must not have effects outside tx.
	Update(fn func(tx Tx) error) error
	// Watch reports committed changes to the given buckets (all when none
	// is named) until ctx ends, when the channel is closed. A Change with
	// Resync set means changes may have been missed (a reconnect): the
	// receiver should reload what it caches. Receivers must keep up;
	// see each implementation for what happens when they do not.
	Watch(ctx context.Context, buckets ...string) <-chan Change
}

// Tx is the transaction an Update callback works in. Reads see the
// transaction's own writes. It must not be used after the callback returns.
type Tx interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, val []byte) error
	Delete(bucket, key string) error
	ForEach(bucket string, fn func(key string, val []byte) error) error
}

// Change is one committed change, as Watch reports it.
type Change struct {
	Bucket  string
	Key     string
	Node    string // the node that made it ("" for an unnamed embedded store)
	Deleted bool   // the key was deleted (else put)
	Resync  bool   // not a change: changes may have been missed, reload
}

// ErrUnavailable is wrapped by the errors of a shared store that cannot be
// reached (Redis down, network cut). Callers that keep a local cache go on
// serving reads from it; writes fail with this error.
var ErrUnavailable = errors.New("shared store unavailable")

// watchBuffer is how many changes an embedded watcher may fall behind
// before changes are dropped (and a Resync is sent in their place).
const watchBuffer = 256

// watchers fans committed changes out to Watch's receivers. With none, the
// cost on the write path is one atomic load.
type watchers struct {
	n    atomic.Int32
	mu   sync.Mutex
	list []*watcher
}

type watcher struct {
	buckets []string
	ch      chan Change
	lost    bool // a change was dropped; send Resync when there is room
}

func (w *watchers) active() bool { return w.n.Load() > 0 }

func (w *watchers) add(ctx context.Context, buckets []string) <-chan Change {
	x := &watcher{buckets: slices.Clone(buckets), ch: make(chan Change, watchBuffer)}
	w.mu.Lock()
	w.list = append(w.list, x)
	w.n.Add(1)
	w.mu.Unlock()
	go func() {
		<-ctx.Done()
		w.mu.Lock()
		defer w.mu.Unlock()
		if i := slices.Index(w.list, x); i >= 0 {
			w.list = slices.Delete(w.list, i, i+1)
			w.n.Add(-1)
		}
		close(x.ch)
	}()
	return x.ch
}

// notify hands c to every watcher of its bucket without blocking: the
// writer may hold locks its watchers need. A watcher that is full loses
// the change and gets a Resync once it has room again.
func (w *watchers) notify(c Change) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.list {
		if len(x.buckets) > 0 && !slices.Contains(x.buckets, c.Bucket) {
			continue
		}
		if x.lost {
			select {
			case x.ch <- Change{Resync: true, Node: c.Node}:
				x.lost = false
			default:
				continue
			}
		}
		select {
		case x.ch <- c:
		default:
			x.lost = true
		}
	}
}

var _ KV = (*Store)(nil)
