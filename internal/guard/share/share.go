// Package share keeps the guard's decisions — bans, isolations,
// suspensions — in a store shared by the nodes of a cluster, and puts the
// other nodes' decisions in force on this one.
//
// Why a package of its own: the guard depends on the standard library only
// and keeps its hot path in memory; this package is the bridge between its
// Replicator interface and a store.KV (Redis in practice).
//
// How: each decision of this node is written to the store (buckets
// guard.bans, guard.isolated, guard.suspended, one record per ban or
// sender, in this package's own saved format); unbans and releases delete
// the record. The store announces every write to every node (store.KV
// Watch); the others read the record and apply it (guard.ApplyShared),
// changes made by this node itself are skipped, so nothing echoes. A node
// that starts later, or comes back after the store was unreachable, reloads
// every record (Resync, and every ResyncEvery anyway) and drops the other
// nodes' decisions the store no longer has. Decisions made while the store
// is unreachable are kept in order (at most maxPending) and written when it
// is back: the node goes on deciding alone meanwhile.
//
// Dependencies: the guard and the store packages only.
package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/store"
)

// Buckets of the shared store.
const (
	BucketBans      = "guard.bans"
	BucketIsolated  = "guard.isolated"
	BucketSuspended = "guard.suspended"
)

// maxPending bounds the decisions kept while the store is unreachable;
// beyond, the oldest are dropped (and a warning logged).
const maxPending = 10_000

// retryEvery is how often pending decisions are retried while the store
// is unreachable.
const retryEvery = time.Second

// banRecord, isoRecord and suspRecord are the saved formats.
type banRecord struct {
	CIDR    string    `json:"cidr"`
	Expires time.Time `json:"expires"`
	Rule    string    `json:"rule"`
	Strikes int       `json:"strikes,omitempty"`
	Auto    bool      `json:"auto,omitempty"`
	Node    string    `json:"node"`
	At      time.Time `json:"at"`
}

type isoRecord struct {
	IP     string         `json:"ip,omitempty"`
	User   string         `json:"user,omitempty"`
	Sender string         `json:"sender,omitempty"`
	Rule   string         `json:"rule"`
	Counts map[string]int `json:"counts,omitempty"`
	Since  time.Time      `json:"since"`
	Node   string         `json:"node"`
}

type suspRecord struct {
	User  string    `json:"user"`
	IP    string    `json:"ip,omitempty"`
	Rule  string    `json:"rule"`
	Since time.Time `json:"since"`
	Node  string    `json:"node"`
}

// Guard is what Run needs of the guard.
type Guard interface {
	ApplyShared(guard.Shared)
	Snapshot() guard.Snapshot
}

// Replicator implements guard.Replicator over a store.KV.
type Replicator struct {
	kv   store.KV
	node string
	log  *slog.Logger

	mu      sync.Mutex
	pending []guard.Shared
	dropped int
	wake    chan struct{}
}

var _ guard.Replicator = (*Replicator)(nil)

// New returns a Replicator writing to kv as node.
func New(kv store.KV, node string, log *slog.Logger) *Replicator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Replicator{kv: kv, node: node, log: log, wake: make(chan struct{}, 1)}
}

// Publish queues one of this node's decisions for the store; it never
// blocks (the guard calls it with its lock held).
func (r *Replicator) Publish(s guard.Shared) {
	r.mu.Lock()
	if len(r.pending) >= maxPending {
		r.pending = r.pending[1:]
		r.dropped++
	}
	r.pending = append(r.pending, s)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Pending is how many decisions wait for the store.
func (r *Replicator) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Run writes this node's decisions and applies the others' to g until ctx
// ends. resync is the period of the full reload.
func (r *Replicator) Run(ctx context.Context, g Guard, resync time.Duration) {
	changes := r.kv.Watch(ctx, BucketBans, BucketIsolated, BucketSuspended)
	full := time.NewTicker(resync)
	defer full.Stop()
	retry := time.NewTicker(retryEvery)
	defer retry.Stop()
	failing := false
	note := func(err error) {
		switch {
		case err != nil && !failing:
			r.log.Warn("guard: shared store unreachable; deciding locally, decisions kept until it is back", "err", err.Error())
			failing = true
		case err == nil && failing:
			r.log.Info("guard: shared store reachable again; decisions exchanged")
			failing = false
		}
	}
	// again is armed while another node's decision may have been missed:
	// a notice whose record could not be read, or a resync that failed.
	// Without it the decision would wait for the next full resync.
	var again <-chan time.Time
	// Only an unreachable store is worth retrying soon (a record that
	// does not decode waits for the full resync), and less often the
	// longer it lasts.
	retryWait := missedChangeRetry
	missed := func(err error) {
		note(err)
		if err == nil {
			retryWait = missedChangeRetry
		}
		if errors.Is(err, store.ErrUnavailable) && again == nil {
			again = time.After(retryWait)
			retryWait = min(2*retryWait, maxMissedChangeRetry)
		}
	}
	for {
		select {
		case <-ctx.Done():
			r.flush() // a last try
			return
		case <-r.wake:
			note(r.flush())
		case <-retry.C:
			if r.Pending() > 0 {
				note(r.flush())
			}
		case c, ok := <-changes:
			if !ok {
				return
			}
			switch {
			case c.Resync:
				missed(r.resync(g))
			case c.Node == r.node:
				// Our own write: already in force here.
			default:
				missed(r.apply(g, c))
			}
		case <-again:
			again = nil
			missed(r.resync(g))
		case <-full.C:
			missed(r.resync(g))
		}
	}
}

// maxMissedChangeRetry bounds the retry interval while the store stays
// unreachable (the resubscription says Resync when it is back anyway).
const maxMissedChangeRetry = 4 * time.Second

// missedChangeRetry is how soon Run resyncs after it may have missed
// another node's decision: well within the second in which decisions
// reach every node.
const missedChangeRetry = 250 * time.Millisecond

// flush writes the pending decisions in order; on the first failure the
// rest stay pending.
func (r *Replicator) flush() error {
	for {
		r.mu.Lock()
		if r.dropped > 0 {
			r.log.Warn("guard: decisions dropped while the shared store was unreachable", "count", r.dropped)
			r.dropped = 0
		}
		if len(r.pending) == 0 {
			r.mu.Unlock()
			return nil
		}
		s := r.pending[0]
		r.mu.Unlock()
		if err := r.write(s); err != nil {
			return err
		}
		r.mu.Lock()
		if len(r.pending) > 0 {
			r.pending = r.pending[1:]
		}
		r.mu.Unlock()
	}
}

// write stores one decision of this node.
func (r *Replicator) write(s guard.Shared) error {
	put := func(tx store.Tx, bucket, key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", bucket, key, err)
		}
		return tx.Put(bucket, key, b)
	}
	err := r.kv.Update(func(tx store.Tx) error {
		switch s.Kind {
		case guard.SharedBan:
			// A longer ban already stored (by any node) stays.
			if old, err := readBan(tx, s.CIDR); err != nil || (old != nil && old.Expires.After(s.Expires)) {
				return err
			}
			return put(tx, BucketBans, s.CIDR, banRecord{CIDR: s.CIDR, Expires: s.Expires, Rule: s.Rule,
				Strikes: s.Strikes, Auto: s.Auto, Node: r.node, At: s.Time})
		case guard.SharedUnban:
			return tx.Delete(BucketBans, s.CIDR)
		case guard.SharedIsolate:
			iso := guard.Isolation{IP: s.IP, User: s.User}
			return put(tx, BucketIsolated, guard.SharedKey(iso), isoRecord{IP: s.IP, User: s.User, Sender: s.Sender,
				Rule: s.Rule, Counts: s.Counts, Since: s.Time, Node: r.node})
		case guard.SharedSuspend:
			return put(tx, BucketSuspended, s.User, suspRecord{User: s.User, IP: s.IP, Rule: s.Rule, Since: s.Time, Node: r.node})
		case guard.SharedRelease:
			if s.IP != "" {
				return tx.Delete(BucketIsolated, guard.SharedKey(guard.Isolation{IP: s.IP}))
			}
			if err := tx.Delete(BucketIsolated, guard.SharedKey(guard.Isolation{User: s.User})); err != nil {
				return err
			}
			return tx.Delete(BucketSuspended, s.User)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("share %s decision: %w", s.Kind, err)
	}
	return nil
}

func readBan(tx store.Tx, cidr string) (*banRecord, error) {
	v, err := tx.Get(BucketBans, cidr)
	if err != nil || v == nil {
		return nil, err
	}
	var b banRecord
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, nil // unreadable: overwritten
	}
	return &b, nil
}

// apply puts one change of another node in force.
func (r *Replicator) apply(g Guard, c store.Change) error {
	if c.Deleted {
		if s, ok := removal(c.Bucket, c.Key, c.Node); ok {
			g.ApplyShared(s)
		}
		return nil
	}
	v, err := r.kv.Get(c.Bucket, c.Key)
	if err != nil {
		return err
	}
	if v == nil { // deleted since: its own notification follows
		return nil
	}
	s, err := decode(c.Bucket, v)
	if err != nil {
		r.log.Warn("guard: unreadable shared decision", "bucket", c.Bucket, "key", c.Key, "err", err.Error())
		return nil
	}
	g.ApplyShared(s)
	return nil
}

// removal is the decision a deleted record stands for.
func removal(bucket, key, node string) (guard.Shared, bool) {
	switch bucket {
	case BucketBans:
		return guard.Shared{Kind: guard.SharedUnban, CIDR: key, Node: node}, true
	case BucketIsolated:
		ip, user, ok := guard.ParseSharedKey(key)
		return guard.Shared{Kind: guard.SharedRelease, IP: ip, User: user, Node: node}, ok
	case BucketSuspended:
		return guard.Shared{Kind: guard.SharedRelease, User: key, Node: node}, true
	}
	return guard.Shared{}, false
}

// decode reads a stored record as the decision it records.
func decode(bucket string, v []byte) (guard.Shared, error) {
	switch bucket {
	case BucketBans:
		var b banRecord
		if err := json.Unmarshal(v, &b); err != nil {
			return guard.Shared{}, err
		}
		return guard.Shared{Kind: guard.SharedBan, Node: b.Node, Time: b.At, Rule: b.Rule, CIDR: b.CIDR,
			Expires: b.Expires, Strikes: b.Strikes, Auto: b.Auto}, nil
	case BucketIsolated:
		var i isoRecord
		if err := json.Unmarshal(v, &i); err != nil {
			return guard.Shared{}, err
		}
		return guard.Shared{Kind: guard.SharedIsolate, Node: i.Node, Time: i.Since, Rule: i.Rule,
			IP: i.IP, User: i.User, Sender: i.Sender, Counts: i.Counts}, nil
	case BucketSuspended:
		var s suspRecord
		if err := json.Unmarshal(v, &s); err != nil {
			return guard.Shared{}, err
		}
		return guard.Shared{Kind: guard.SharedSuspend, Node: s.Node, Time: s.Since, Rule: s.Rule, User: s.User, IP: s.IP}, nil
	}
	return guard.Shared{}, fmt.Errorf("unknown bucket %q", bucket)
}

// resync writes what is pending, then reloads every record: the other
// nodes' decisions are applied (idempotently), the other nodes' decisions
// in force here that the store no longer has are lifted, and expired bans
// are removed from the store.
func (r *Replicator) resync(g Guard) error {
	if err := r.flush(); err != nil {
		return err
	}
	// Taken before reading the store: whatever is in force here by then
	// came from the store, so its absence now means it was lifted.
	before := g.Snapshot()
	now := time.Now()
	type rec struct {
		bucket, key string
		s           guard.Shared
	}
	var recs []rec
	var expired []string
	for _, bucket := range []string{BucketBans, BucketIsolated, BucketSuspended} {
		err := r.kv.ForEach(bucket, func(k string, v []byte) error {
			s, err := decode(bucket, v)
			if err != nil {
				r.log.Warn("guard: unreadable shared decision", "bucket", bucket, "key", k, "err", err.Error())
				return nil
			}
			if bucket == BucketBans && !s.Expires.After(now) {
				expired = append(expired, k)
				return nil
			}
			recs = append(recs, rec{bucket, k, s})
			return nil
		})
		if err != nil {
			return fmt.Errorf("reload shared guard decisions: %w", err)
		}
	}
	have := map[string]bool{}
	for _, x := range recs {
		have[x.bucket+"\x00"+x.key] = true
		if x.s.Node != r.node {
			g.ApplyShared(x.s)
		}
	}
	others := func(node string) bool { return node != "" && node != r.node }
	if len(recs) == 0 && len(expired) == 0 && heldFromOthers(before, others) {
		// Every shared decision gone at once is a Redis that lost its
		// data, not the other nodes lifting all of theirs: keep them in
		// force here (a release made meanwhile arrives as a change).
		r.log.Error("guard: the shared store holds no decisions but other nodes' decisions are in force here; keeping them (did Redis lose its data?)")
		return nil
	}
	for _, b := range before.Bans {
		if others(b.Node) && !have[BucketBans+"\x00"+b.CIDR] && b.Expires.After(now) {
			g.ApplyShared(guard.Shared{Kind: guard.SharedUnban, CIDR: b.CIDR, Node: b.Node})
		}
	}
	for _, i := range before.Isolated {
		// A suspension isolates its user too, without a record of its own.
		suspended := i.User != "" && have[BucketSuspended+"\x00"+i.User]
		if others(i.Node) && !have[BucketIsolated+"\x00"+guard.SharedKey(i)] && !suspended {
			s, _ := removal(BucketIsolated, guard.SharedKey(i), i.Node)
			g.ApplyShared(s)
		}
	}
	for _, s := range before.Suspended {
		if others(s.Node) && !have[BucketSuspended+"\x00"+s.User] {
			g.ApplyShared(guard.Shared{Kind: guard.SharedRelease, User: s.User, Node: s.Node})
		}
	}
	if len(expired) > 0 {
		err := r.kv.Update(func(tx store.Tx) error {
			for _, k := range expired {
				// Re-read: another node may have renewed it meanwhile.
				if b, err := readBan(tx, k); err != nil {
					return err
				} else if b != nil && b.Expires.After(now) {
					continue
				}
				if err := tx.Delete(BucketBans, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("drop expired shared bans: %w", err)
		}
	}
	return nil
}

// heldFromOthers says whether snap holds a decision another node made.
func heldFromOthers(snap guard.Snapshot, others func(string) bool) bool {
	for _, b := range snap.Bans {
		if others(b.Node) {
			return true
		}
	}
	for _, i := range snap.Isolated {
		if others(i.Node) {
			return true
		}
	}
	for _, x := range snap.Suspended {
		if others(x.Node) {
			return true
		}
	}
	return false
}
