package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func TestRoundTrip(t *testing.T) {
	s, _ := openTemp(t)

	tests := []struct {
		name   string
		bucket string
		key    string
		val    []byte
	}{
		{"simple", "users", "alice@example.test", []byte("v1")},
		{"other bucket same key", "aliases", "alice@example.test", []byte("v2")},
		{"binary", "bin", "k", []byte{0, 1, 2, 255}},
		{"empty value", "users", "empty", []byte{}},
		{"nil value stored as empty", "users", "nil", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Put(tc.bucket, tc.key, tc.val); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, err := s.Get(tc.bucket, tc.key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got == nil {
				t.Fatalf("Get returned nil for a present key")
			}
			if string(got) != string(tc.val) {
				t.Fatalf("Get = %q, want %q", got, tc.val)
			}
		})
	}

	// Values of different buckets do not mix.
	if got, _ := s.Get("users", "alice@example.test"); string(got) != "v1" {
		t.Fatalf("users bucket = %q, want v1", got)
	}

	// Missing bucket and missing key: nil, nil.
	for _, bk := range [][2]string{{"nobucket", "k"}, {"users", "nokey"}} {
		got, err := s.Get(bk[0], bk[1])
		if err != nil || got != nil {
			t.Fatalf("Get(%q,%q) = %q, %v; want nil, nil", bk[0], bk[1], got, err)
		}
	}

	// The returned slice is a copy: mutating it does not change the store.
	got, _ := s.Get("users", "alice@example.test")
	got[0] = 'X'
	if again, _ := s.Get("users", "alice@example.test"); string(again) != "v1" {
		t.Fatalf("stored value changed through returned slice: %q", again)
	}

	// Delete, including of missing keys and buckets.
	if err := s.Delete("users", "alice@example.test"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got, _ := s.Get("users", "alice@example.test"); got != nil {
		t.Fatalf("after Delete Get = %q, want nil", got)
	}
	if err := s.Delete("users", "alice@example.test"); err != nil {
		t.Fatalf("Delete of missing key: %v", err)
	}
	if err := s.Delete("nobucket", "k"); err != nil {
		t.Fatalf("Delete in missing bucket: %v", err)
	}

	// An empty key is refused by bbolt; the error must surface.
	if err := s.Put("users", "", []byte("x")); err == nil {
		t.Fatalf("Put with empty key succeeded")
	}
}

func TestForEach(t *testing.T) {
	s, _ := openTemp(t)
	for _, k := range []string{"c", "a", "b"} {
		if err := s.Put("b1", k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	var vals []string
	if err := s.ForEach("b1", func(k string, v []byte) error {
		keys = append(keys, k)
		vals = append(vals, string(v))
		return nil
	}); err != nil {
		t.Fatalf("ForEach: %v", err)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys = %v, want %v", keys, want)
	}
	if want := []string{"va", "vb", "vc"}; !reflect.DeepEqual(vals, want) {
		t.Fatalf("vals = %v, want %v", vals, want)
	}

	stop := errors.New("stop")
	n := 0
	err := s.ForEach("b1", func(string, []byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ForEach with error: err=%v calls=%d, want stop after 1", err, n)
	}

	calls := 0
	if err := s.ForEach("missing", func(string, []byte) error { calls++; return nil }); err != nil || calls != 0 {
		t.Fatalf("ForEach on missing bucket: err=%v calls=%d", err, calls)
	}
}

func TestUpdateAtomic(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.Put("b", "keep", []byte("old")); err != nil {
		t.Fatal(err)
	}

	// A failing transaction leaves nothing behind.
	boom := errors.New("boom")
	err := s.Update(func(tx Tx) error {
		if err := tx.Put("b", "keep", []byte("new")); err != nil {
			return err
		}
		if err := tx.Put("b", "added", []byte("x")); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if v, _ := tx.Get("b", "keep"); string(v) != "new" {
			t.Errorf("tx.Get inside tx = %q, want new", v)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update err = %v, want boom", err)
	}
	if v, _ := s.Get("b", "keep"); string(v) != "old" {
		t.Fatalf("after rollback keep = %q, want old", v)
	}
	if v, _ := s.Get("b", "added"); v != nil {
		t.Fatalf("after rollback added = %q, want nil", v)
	}

	// A successful one commits every change together.
	err = s.Update(func(tx Tx) error {
		if err := tx.Delete("b", "keep"); err != nil {
			return err
		}
		if err := tx.Put("b", "moved", []byte("old")); err != nil {
			return err
		}
		n := 0
		if err := tx.ForEach("b", func(string, []byte) error { n++; return nil }); err != nil {
			return err
		}
		if n != 1 {
			t.Errorf("tx.ForEach saw %d keys, want 1", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if v, _ := s.Get("b", "keep"); v != nil {
		t.Fatalf("keep still present: %q", v)
	}
	if v, _ := s.Get("b", "moved"); string(v) != "old" {
		t.Fatalf("moved = %q, want old", v)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("users", "bob@example.test", []byte("hash")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if v, _ := s2.Get("users", "bob@example.test"); string(v) != "hash" {
		t.Fatalf("after reopen = %q, want hash", v)
	}
}

func TestLocked(t *testing.T) {
	s, path := openTemp(t)

	tests := []struct {
		name string
		opt  Options
	}{
		{"writer", Options{LockTimeout: 100 * time.Millisecond}},
		{"reader", Options{LockTimeout: 100 * time.Millisecond, ReadOnly: true}},
		{"no wait", Options{LockTimeout: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s2, err := Open(path, tc.opt)
			if err == nil {
				s2.Close()
				t.Fatalf("second Open succeeded while the first holds the lock")
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("second Open err = %v, want ErrLocked", err)
			}
		})
	}

	// Once released, the file opens again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s3.Close()
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if _, err := Open(path, Options{ReadOnly: true}); err == nil {
		t.Fatalf("read-only Open of a missing file succeeded")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("b", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	r1, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only Open: %v", err)
	}
	defer r1.Close()
	// Readers share the lock.
	r2, err := Open(path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	defer r2.Close()

	if v, _ := r2.Get("b", "k"); string(v) != "v" {
		t.Fatalf("read-only Get = %q", v)
	}
	if err := r1.Put("b", "k", []byte("w")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Put on read-only store err = %v, want ErrReadOnly", err)
	}
	// A writer cannot open while readers hold the shared lock.
	if _, err := Open(path, Options{LockTimeout: 100 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("writer Open with readers err = %v, want ErrLocked", err)
	}
}

func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("users", "before", []byte("x")); err != nil { // nobody watches: not recorded
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	users := s.Watch(ctx, "users")
	all := s.Watch(ctx)
	if err := s.Put("users", "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("other", "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("users", "a"); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.Update(func(tx Tx) error { tx.Put("users", "rolledback", nil); return boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ch   <-chan Change
		want []Change
	}{
		{"users", users, []Change{{Bucket: "users", Key: "a", Node: "n1"}, {Bucket: "users", Key: "a", Node: "n1", Deleted: true}}},
		{"all", all, []Change{{Bucket: "users", Key: "a", Node: "n1"}, {Bucket: "other", Key: "b", Node: "n1"}, {Bucket: "users", Key: "a", Node: "n1", Deleted: true}}},
	}
	for _, tt := range tests {
		for i, w := range tt.want {
			select {
			case c := <-tt.ch:
				if c != w {
					t.Errorf("%s: change %d = %+v, want %+v", tt.name, i, c, w)
				}
			case <-time.After(time.Second):
				t.Fatalf("%s: change %d not delivered", tt.name, i)
			}
		}
		select {
		case c := <-tt.ch:
			t.Errorf("%s: unexpected change %+v", tt.name, c)
		default:
		}
	}
	cancel()
	for _, ch := range []<-chan Change{users, all} {
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("change after cancel")
			}
		case <-time.After(time.Second):
			t.Fatal("channel not closed after cancel")
		}
	}
}

func TestWatchSlowReceiverGetsResync(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := s.Watch(ctx, "b")
	for i := range watchBuffer + 10 {
		if err := s.Put("b", fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for range watchBuffer { // drain: the writes beyond the buffer were lost
		<-ch
	}
	if err := s.Put("b", "last", nil); err != nil {
		t.Fatal(err)
	}
	if c := <-ch; !c.Resync {
		t.Fatalf("after a loss got %+v, want a Resync", c)
	}
	if c := <-ch; c.Key != "last" {
		t.Fatalf("after the Resync got %+v, want key last", c)
	}
}
