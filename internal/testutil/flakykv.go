package testutil

import (
	"fmt"
	"sync/atomic"

	"github.com/mamori-mail/mamori/internal/store"
)

// FlakyKV is a store.KV whose next Get calls fail as an unreachable shared
// store's would, while its change notifications still arrive: a notice
// whose record cannot be read at that moment.
type FlakyKV struct {
	store.KV
	failGets atomic.Int32
}

// FailGets makes the next n Get calls fail with store.ErrUnavailable.
func (f *FlakyKV) FailGets(n int) { f.failGets.Store(int32(n)) }

// Get fails while failures are pending, then reads through.
func (f *FlakyKV) Get(bucket, key string) ([]byte, error) {
	if f.failGets.Add(-1) >= 0 {
		return nil, fmt.Errorf("flaky get %s %s: %w", bucket, key, store.ErrUnavailable)
	}
	f.failGets.Store(0)
	return f.KV.Get(bucket, key)
}
