package mailbox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mamori-mail/mamori/internal/store"
)

// A clustered node keeps a copy of the shared directory in its own
// database, so that it can start — and serve logins and local mail —
// while the shared store is unreachable. Without it a node restarted
// during a Redis outage would refuse every message. The copy is written
// when the directory is loaded from the shared store and after each
// change or reload that altered it (only the records that differ), so it
// is at most a second or so old.

// The dataset marker tells a store that kept its data from one that lost
// it: a random id put in the store when a directory first opens on it
// (and whenever it is missing), saved with the copy. A node that starts
// from its copy takes the store's directory whole on its first reload —
// deletions made while it was away included — only when the store still
// carries the copy's marker; an emptied store has none (or a new one), so
// its near-emptiness is refused as data loss, as on a running node.

// datasetKey is the marker's key in bucketMeta (and in the copy's meta).
const datasetKey = "dataset"

// ensureDataset returns st's dataset marker, putting a new one there
// first if it has none.
func ensureDataset(st store.KV) (string, error) {
	var id string
	err := st.Update(func(tx store.Tx) error {
		v, err := tx.Get(bucketMeta, datasetKey)
		if err != nil {
			return err
		}
		if v != nil {
			id = string(v)
			return nil
		}
		var b [12]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		return tx.Put(bucketMeta, datasetKey, []byte(id))
	})
	if err != nil {
		return "", fmt.Errorf("dataset marker: %w", err)
	}
	return id, nil
}

// copyPrefix names the local buckets that hold the copy.
const copyPrefix = "copy."

// copyKV reads the copy's buckets under the directory's own bucket names.
type copyKV struct{ store.KV }

func (c copyKV) ForEach(bucket string, fn func(key string, val []byte) error) error {
	return c.KV.ForEach(copyPrefix+bucket, fn)
}

// ErrNoCopy is returned by OpenDirectoryFromCopy when the node has never
// saved a copy of the directory.
var ErrNoCopy = errors.New("no local copy of the directory")

// KeepCopy makes the directory save a copy of itself in local (the node's
// own database) now and whenever it changes; Follow keeps it current.
func (d *Directory) KeepCopy(local store.KV) error {
	d.copyMu.Lock()
	d.copyTo = local
	d.copyMu.Unlock()
	return d.saveCopy()
}

// saveCopy writes to the copy what differs from the copy last written.
// Without KeepCopy it does nothing.
func (d *Directory) saveCopy() error {
	d.copyMu.Lock()
	defer d.copyMu.Unlock()
	if d.copyTo == nil {
		return nil
	}
	d.mu.RLock()
	rows := map[string]map[string][]byte{bucketUsers: {}, bucketAliases: {}, bucketDomains: {}, "meta": {datasetKey: []byte(d.dataset)}}
	var err error
	for k, u := range d.users {
		if rows[bucketUsers][k], err = json.Marshal(u.rec); err != nil {
			break
		}
	}
	for k, t := range d.aliases {
		if rows[bucketAliases][k], err = json.Marshal(t); err != nil {
			break
		}
	}
	for k, r := range d.runtime {
		if rows[bucketDomains][k], err = json.Marshal(r); err != nil {
			break
		}
	}
	d.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("save directory copy: %w", err)
	}
	// Only what differs from the copy last written is written: last
	// logins change a few records a minute, not the whole directory.
	type change struct {
		bucket, key string
		val         []byte // nil: delete
	}
	var changes []change
	for bucket, want := range rows {
		had := d.copyRows[bucket]
		for k, v := range want {
			if old, ok := had[k]; !ok || !bytes.Equal(old, v) {
				changes = append(changes, change{bucket, k, v})
			}
		}
		for k := range had {
			if _, ok := want[k]; !ok {
				changes = append(changes, change{bucket, k, nil})
			}
		}
	}
	if d.copyRows != nil && len(changes) == 0 {
		return nil
	}
	first := d.copyRows == nil
	err = d.copyTo.Update(func(tx store.Tx) error {
		if first {
			// The first save of this process: whatever an earlier one
			// left that is no longer in the directory goes.
			for bucket, want := range rows {
				if bucket == "meta" {
					continue // holds "saved" too
				}
				var stale []string
				if err := tx.ForEach(copyPrefix+bucket, func(k string, _ []byte) error {
					if _, ok := want[k]; !ok {
						stale = append(stale, k)
					}
					return nil
				}); err != nil {
					return err
				}
				for _, k := range stale {
					if err := tx.Delete(copyPrefix+bucket, k); err != nil {
						return err
					}
				}
			}
		}
		for _, c := range changes {
			var err error
			if c.val == nil {
				err = tx.Delete(copyPrefix+c.bucket, c.key)
			} else {
				err = tx.Put(copyPrefix+c.bucket, c.key, c.val)
			}
			if err != nil {
				return err
			}
		}
		// "saved" says a copy was saved, even of an empty directory.
		return tx.Put(copyPrefix+"meta", "saved", []byte("1"))
	})
	if err != nil {
		return fmt.Errorf("save directory copy: %w", err)
	}
	d.copyRows = rows
	return nil
}

// LostData reports whether the store d was opened from looks like one that
// lost its data, judged against the copy cp this node saved: a different
// dataset marker and no users, or most of the copy's users missing (the
// rule Reload applies on a running node).
func (d *Directory) LostData(cp *Directory) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	cp.mu.RLock()
	defer cp.mu.RUnlock()
	if d.dataset == cp.dataset && cp.dataset != "" {
		return false // the same store: what it lacks was deleted
	}
	if len(cp.users) == 0 {
		return false
	}
	_, lost := lacksMost(d.users, cp.users)
	return len(d.users) == 0 || lost
}

// OpenDirectoryFromCopy opens a directory on the shared store st from the
// copy KeepCopy saved in local. The directory serves logins and lookups
// from that copy and refuses changes until Follow reaches st and reloads
// it. catchUp says the store, once reachable, is newer than the copy (the
// node was away while it changed): its first reload is then taken whole,
// even when it drops many users, instead of being refused as a store that
// lost its data — if the store still carries the copy's dataset marker.
// ErrNoCopy: there is no copy.
func OpenDirectoryFromCopy(st, local store.KV, staticDomains []string, catchUp bool) (*Directory, error) {
	saved, err := local.Get(copyPrefix+"meta", "saved")
	if err != nil {
		return nil, fmt.Errorf("open directory from the local copy: %w", err)
	}
	if saved == nil {
		return nil, ErrNoCopy
	}
	d, err := OpenDirectory(copyKV{local}, staticDomains)
	if err != nil {
		return nil, fmt.Errorf("open directory from the local copy: %w", err)
	}
	ds, err := local.Get(copyPrefix+"meta", datasetKey)
	if err != nil {
		return nil, fmt.Errorf("open directory from the local copy: %w", err)
	}
	d.st = st
	d.dataset = string(ds)
	d.offline.Store(true)
	d.fromCopy.Store(catchUp)
	return d, nil
}
