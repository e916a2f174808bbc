package mailbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mamori-mail/mamori/internal/store"
)

// Follow keeps the directory's memory in step with a store that other
// nodes write too (clustered mode): each change they announce is re-read
// at once, and the whole directory is reloaded every resync interval and
// after every reconnect, for changes whose announcement was lost. While the
// store is unreachable the directory keeps serving from memory (logins
// work; changes fail with an error wrapping [store.ErrUnavailable]). Follow
// returns when ctx ends. With the embedded store it is not needed: this
// process makes every change itself.
func (d *Directory) Follow(ctx context.Context, resync time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	changes := d.st.Watch(ctx, bucketUsers, bucketAliases, bucketDomains)
	t := time.NewTicker(resync)
	defer t.Stop()
	failing := false
	note := func(err error) {
		d.offline.Store(err != nil && !errors.Is(err, errEmptyStore))
		switch {
		case err != nil && !failing && errors.Is(err, errEmptyStore):
			log.Error("directory: the shared store looks like it lost its data; keeping the directory in memory — restore it from its backup", "err", err.Error())
			failing = true
		case err != nil && !failing:
			log.Warn("directory: shared store unreachable; serving logins and lookups from memory", "err", err.Error())
			failing = true
		case err == nil && failing:
			log.Info("directory: shared store reachable again; memory reloaded")
			failing = false
		}
	}
	// again is armed while a change may have been missed: a notice whose
	// record could not be read, or a reload that failed. Without it the
	// change would wait for the next periodic resync.
	var again <-chan time.Time
	// copyDue is armed after a successful change or reload: the local
	// copy is saved a moment later, once for a burst of changes (a
	// minute's last logins arrive as one notice per user).
	var copyDue <-chan time.Time
	// Only an unreachable store is worth retrying soon (a record that
	// does not decode waits for the periodic resync), and less often the
	// longer it lasts.
	retryWait := missedChangeRetry
	done := func(err error) {
		note(err)
		if err == nil {
			retryWait = missedChangeRetry
			if copyDue == nil {
				copyDue = time.After(copyDelay)
			}
		}
		if errors.Is(err, store.ErrUnavailable) && again == nil {
			again = time.After(retryWait)
			retryWait = min(2*retryWait, maxMissedChangeRetry)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			if c.Resync {
				done(d.Reload())
				continue
			}
			done(d.refresh(c.Bucket, c.Key))
		case <-again:
			again = nil
			done(d.Reload())
		case <-copyDue:
			copyDue = nil
			if err := d.saveCopy(); err != nil {
				log.Warn("directory: cannot save the local copy", "err", err.Error())
			}
		case <-t.C:
			done(d.Reload())
		}
	}
}

// maxMissedChangeRetry bounds the retry interval while the store stays
// unreachable (Watch's resubscription says Resync when it is back anyway).
const maxMissedChangeRetry = 4 * time.Second

// copyDelay is how long after a change the local copy is saved.
const copyDelay = time.Second

// missedChangeRetry is how soon Follow reloads after it may have missed a
// change: well within the second in which changes reach every node.
const missedChangeRetry = 250 * time.Millisecond

// Reload reads the whole directory from the store again and puts it in
// force. Last logins newer in memory than in the store are kept. When the
// store has lost every user (a Redis restarted without its data) while
// memory has some, Reload refuses and keeps memory: deletions reach other
// nodes one by one, through Follow's change notifications, never as an
// empty store.
//
// The store is read before the lock is taken, so that an unreachable store
// holds up nothing; a change of this node's that lands in between is put
// back by its own change notification, which Follow handles next.
func (d *Directory) Reload() error {
	runtime, users, aliases, err := load(d.st)
	if err != nil {
		return fmt.Errorf("reload directory: %w", err)
	}
	ds, err := d.st.Get(bucketMeta, datasetKey)
	if err != nil {
		return fmt.Errorf("reload directory: %w", err)
	}
	var revoked []string
	defer func() { d.revoked(revoked...) }() // runs last, with no lock held
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if len(users) == 0 && len(d.users) > 0 {
		return fmt.Errorf("reload directory: the store has no users but %d are known here: %w", len(d.users), errEmptyStore)
	}
	// Deletions reach this node one by one, as change notices; a reload
	// that would drop most users at once is a store that lost its data
	// (and has had a user or two added since), not an administrator.
	// Except for a node that started from its local copy: it heard no
	// notices while it was away, so the store is right and its copy old.
	d.mu.RLock()
	catchUp := d.fromCopy.Load() && len(ds) > 0 && string(ds) == d.dataset
	d.mu.RUnlock()
	if gone, lost := lacksMost(users, d.users); lost && !catchUp {
		return fmt.Errorf("reload directory: the store lacks %d of the %d users known here: %w", gone, len(d.users), errEmptyStore)
	}
	for addr, u := range users {
		if old := d.users[addr]; old != nil {
			u.rec = mergeLogin(u.rec, old.rec.LastLogin)
		}
	}
	for addr, old := range d.users {
		if revokes(old, users[addr]) {
			revoked = append(revoked, addr)
		}
	}
	if len(ds) == 0 {
		// A store without a marker that is nonetheless whole (written
		// before markers existed): give it one. A store that cannot
		// take it now is reloaded all the same (the copy then records
		// no marker, which never allows a catch-up).
		if id, err := ensureDataset(d.st); err == nil {
			ds = []byte(id)
		} else {
			slog.Warn("mailbox: cannot write the directory's dataset marker", "err", err.Error())
		}
	}
	d.mu.Lock()
	d.runtime, d.users, d.aliases = runtime, users, aliases
	d.dataset = string(ds)
	d.mu.Unlock()
	d.fromCopy.Store(false)
	return nil
}

var errEmptyStore = errors.New("store emptied (lost its data?); keeping the directory in memory")

// refresh re-reads one changed record (outside the locks, as Reload).
func (d *Directory) refresh(bucket, key string) error {
	v, err := d.st.Get(bucket, key)
	if err != nil {
		return fmt.Errorf("refresh %s %s: %w", bucket, key, err)
	}
	var revoked []string
	defer func() { d.revoked(revoked...) }() // runs last, with no lock held
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch bucket {
	case bucketUsers:
		if v == nil {
			if d.users[key] != nil {
				revoked = append(revoked, key)
			}
			delete(d.users, key)
			return nil
		}
		var r userRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("refresh user %s: %w", key, err)
		}
		u := &userEntry{rec: r, persistedLogin: r.LastLogin}
		if old := d.users[key]; old != nil {
			u.rec = mergeLogin(r, old.rec.LastLogin)
		}
		if revokes(d.users[key], u) {
			revoked = append(revoked, key)
		}
		d.users[key] = u
	case bucketAliases:
		if v == nil {
			delete(d.aliases, key)
			return nil
		}
		var t []string
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("refresh alias %s: %w", key, err)
		}
		d.aliases[key] = t
	case bucketDomains:
		if v == nil {
			delete(d.runtime, key)
			return nil
		}
		var r domainRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("refresh domain %s: %w", key, err)
		}
		d.runtime[key] = r
	}
	return nil
}

// countKnown counts the users of known that users still has.
// lacksMost reports how many of the users known here users lacks, and
// whether that is most of them (at least two): a store that lost its
// data rather than an administrator's deletions, which arrive one by one.
// The one rule for Reload and for a node (re)starting against its copy.
func lacksMost[U any](users, known map[string]U) (gone int, lost bool) {
	gone = len(known) - countKnown(users, known)
	return gone, gone >= 2 && gone*2 > len(known)
}

func countKnown[U any](users, known map[string]U) int {
	n := 0
	for k := range known {
		if _, ok := users[k]; ok {
			n++
		}
	}
	return n
}
