// Package store keeps mamori's small, durable state (users, domains, aliases,
// guard state, indexes) in one embedded key/value database under data_dir.
//
// It exists so that the rest of mamori talks to a tiny, generic surface —
// named buckets of string keys and byte values, atomic multi-key updates and
// change notifications (the KV interface, kv.go) — instead of to a particular
// database. Two implementations exist: Store here, embedded in the process
// (the default, one node), and redisstore.Store in the subpackage, shared by
// the nodes of a cluster through Redis. Callers keep their own saved formats
// (their own record types, encoded as they like); the store sees bytes.
//
// Dependencies:
//   - go.etcd.io/bbolt: a pure-Go, single-file, transactional B+tree. It gives
//     crash-safe commits (fsync on every write transaction) without a separate
//     server process, and an exclusive file lock so two mamori processes can
//     never write the same state file at once (see ErrLocked).
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long Open waits for another process to release the
// database file lock when Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// ErrLocked is returned by Open when another process (or another Store in this
// process) holds the database file lock for longer than Options.LockTimeout.
// Typically it means a mamori server is already running on the same data_dir;
// CLI commands should then go through the admin API instead.
var ErrLocked = errors.New("store: database is locked by another process")

// ErrReadOnly is returned by write operations on a Store opened with
// Options.ReadOnly.
var ErrReadOnly = errors.New("store: database is open read-only")

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock. Zero means
	// DefaultLockTimeout; a negative value means try once and fail at once.
	LockTimeout time.Duration
	// ReadOnly opens the database with a shared lock: several read-only
	// Stores may coexist, but none while a writer has it open. The file must
	// already exist.
	ReadOnly bool
	// Node names this process in the changes Watch reports.
	Node string
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db       *bolt.DB
	readOnly bool
	node     string
	watch    watchers
}

// Open opens (creating it if needed, unless read-only) the database file at
// path. The parent directory is created with mode 0700 if missing.
func Open(path string, opt Options) (*Store, error) {
	timeout := opt.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		// bbolt treats 0 as "wait forever"; any positive value below its
		// 50 ms retry step gives up after the first attempt.
		timeout = time.Nanosecond
	}
	if !opt.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opt.ReadOnly})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &Store{db: db, readOnly: opt.ReadOnly, node: opt.Node}, nil
}

// Close releases the database and its file lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Path returns the database file name.
func (s *Store) Path() string { return s.db.Path() }

// Get returns a copy of the value stored under key in bucket, or nil, nil when
// the bucket or key does not exist.
func (s *Store) Get(bucket, key string) ([]byte, error) {
	var val []byte
	err := s.db.View(func(btx *bolt.Tx) error {
		val = (&boltTx{btx: btx}).get(bucket, key)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	return val, nil
}

// Put stores val under key in bucket, creating the bucket if needed. The
// change is durable when Put returns.
func (s *Store) Put(bucket, key string, val []byte) error {
	return s.Update(func(tx Tx) error { return tx.Put(bucket, key, val) })
}

// Delete removes key from bucket. Deleting a missing key is not an error.
func (s *Store) Delete(bucket, key string) error {
	return s.Update(func(tx Tx) error { return tx.Delete(bucket, key) })
}

// ForEach calls fn for every key of bucket in ascending byte order, inside one
// consistent read snapshot. val is a copy the callback may keep. A missing
// bucket has no keys. An error from fn stops the iteration and is returned.
func (s *Store) ForEach(bucket string, fn func(key string, val []byte) error) error {
	return s.db.View(func(btx *bolt.Tx) error {
		return (&boltTx{btx: btx}).ForEach(bucket, fn)
	})
}

// Update runs fn in one read-write transaction: either every change fn makes
// is committed durably, or — when fn returns an error or panics — none is.
// Write transactions are serialised; keep fn short and free of I/O. Once
// committed, the changes are reported to Watch's receivers, if any.
func (s *Store) Update(fn func(tx Tx) error) error {
	if s.readOnly {
		return ErrReadOnly
	}
	watched := s.watch.active()
	var changed []Change
	err := s.db.Update(func(btx *bolt.Tx) error {
		tx := &boltTx{btx: btx, record: watched}
		err := fn(tx)
		changed = tx.changed
		return err
	})
	if err != nil {
		return fmt.Errorf("store: update: %w", err)
	}
	if watched {
		for _, c := range changed {
			c.Node = s.node
			s.watch.notify(c)
		}
	}
	return nil
}

// Watch reports the changes committed by this Store to the given buckets
// (all when none is named) until ctx ends; see KV.
func (s *Store) Watch(ctx context.Context, buckets ...string) <-chan Change {
	return s.watch.add(ctx, buckets)
}

// boltTx is the Tx handed to Update's callback. It must not be used after
// the callback returns.
type boltTx struct {
	btx     *bolt.Tx
	record  bool // collect changed for watchers
	changed []Change
}

func (tx *boltTx) get(bucket, key string) []byte {
	b := tx.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil
	}
	// bbolt values point into the memory map and are only valid during the
	// transaction; hand out a copy.
	return append([]byte{}, v...)
}

// Get is like Store.Get but sees the transaction's own uncommitted changes.
func (tx *boltTx) Get(bucket, key string) ([]byte, error) {
	return tx.get(bucket, key), nil
}

// Put is like Store.Put within the transaction.
func (tx *boltTx) Put(bucket, key string, val []byte) error {
	b, err := tx.btx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if val == nil {
		// bbolt stores a nil value as an empty one anyway; be explicit so
		// that Get returns a non-nil (empty) slice for a present key.
		val = []byte{}
	}
	if err := b.Put([]byte(key), val); err != nil {
		return fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	if tx.record {
		tx.changed = append(tx.changed, Change{Bucket: bucket, Key: key})
	}
	return nil
}

// Delete is like Store.Delete within the transaction.
func (tx *boltTx) Delete(bucket, key string) error {
	b := tx.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	if tx.record {
		tx.changed = append(tx.changed, Change{Bucket: bucket, Key: key, Deleted: true})
	}
	return nil
}

// ForEach is like Store.ForEach within the transaction. fn must not modify
// bucket while iterating over it.
func (tx *boltTx) ForEach(bucket string, fn func(key string, val []byte) error) error {
	b := tx.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			return nil // nested bucket; this package never creates them
		}
		return fn(string(k), append([]byte{}, v...))
	})
}
