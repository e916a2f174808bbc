package mailbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/mamori-mail/mamori/internal/store"
)

// A clustered node keeps a copy of the shared directory in its own
// database, so that it can start — and serve logins and local mail —
// while the shared store is unreachable. Without it a node restarted
// during a Redis outage would refuse every message. The copy is written
// when the directory is loaded from the shared store and after each
// change or reload that altered it (a digest avoids rewriting an
// unchanged copy), so it is at most one resync period old.

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

// saveCopy writes the copy when the directory differs from the last copy
// written. Without KeepCopy it does nothing.
func (d *Directory) saveCopy() error {
	d.copyMu.Lock()
	defer d.copyMu.Unlock()
	if d.copyTo == nil {
		return nil
	}
	d.mu.RLock()
	rows := map[string]map[string][]byte{bucketUsers: {}, bucketAliases: {}, bucketDomains: {}}
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
	sum := digest(rows)
	if bytes.Equal(sum, d.copySum) {
		return nil
	}
	err = d.copyTo.Update(func(tx store.Tx) error {
		for bucket, want := range rows {
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
			for k, v := range want {
				if err := tx.Put(copyPrefix+bucket, k, v); err != nil {
					return err
				}
			}
		}
		// The marker says a copy was saved, even of an empty directory.
		return tx.Put(copyPrefix+"meta", "saved", []byte("1"))
	})
	if err != nil {
		return fmt.Errorf("save directory copy: %w", err)
	}
	d.copySum = sum
	return nil
}

// digest is a hash of every row, in a fixed order.
func digest(rows map[string]map[string][]byte) []byte {
	h := sha256.New()
	for _, bucket := range []string{bucketUsers, bucketAliases, bucketDomains} {
		keys := make([]string, 0, len(rows[bucket]))
		for k := range rows[bucket] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "%s\x00%d:%s\x00%d:%s\n", bucket, len(k), k, len(rows[bucket][k]), rows[bucket][k])
		}
	}
	return h.Sum(nil)
}

// OpenDirectoryFromCopy opens a directory on the shared store st, which
// is unreachable, from the copy KeepCopy saved in local. The directory
// serves logins and lookups from that copy and refuses changes until
// Follow reaches st and reloads it. ErrNoCopy: there is no copy.
func OpenDirectoryFromCopy(st, local store.KV, staticDomains []string) (*Directory, error) {
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
	d.st = st
	d.offline.Store(true)
	return d, nil
}
