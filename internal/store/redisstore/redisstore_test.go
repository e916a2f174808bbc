package redisstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/testutil"
)

func open(t *testing.T, url string, node string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{URL: url, Node: node, Prefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRoundTrip(t *testing.T) { testRoundTrip(t, testutil.StartRedis(t).URL) }

func testRoundTrip(t *testing.T, url string) {
	s := open(t, url, "a")
	tests := []struct {
		name, bucket, key string
		val               []byte
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
				t.Fatal(err)
			}
			got, err := s.Get(tc.bucket, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || string(got) != string(tc.val) {
				t.Fatalf("Get = %q, want %q (non-nil)", got, tc.val)
			}
		})
	}
	if v, err := s.Get("users", "missing"); v != nil || err != nil {
		t.Fatalf("missing key: %q, %v", v, err)
	}
	if err := s.Delete("users", "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get("users", "alice@example.test"); v != nil {
		t.Fatalf("deleted key still there: %q", v)
	}
	var keys []string
	if err := s.ForEach("users", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != "empty" || keys[1] != "nil" {
		t.Fatalf("ForEach keys = %q, want [empty nil] in order", keys)
	}
}

func TestUpdateRollbackAndOwnWrites(t *testing.T) {
	testUpdateRollbackAndOwnWrites(t, testutil.StartRedis(t).URL)
}

func testUpdateRollbackAndOwnWrites(t *testing.T, url string) {
	s := open(t, url, "a")
	if err := s.Put("b", "keep", []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := s.Update(func(tx store.Tx) error {
		tx.Put("b", "keep", []byte("new"))
		tx.Put("b", "added", []byte("x"))
		if v, _ := tx.Get("b", "keep"); string(v) != "new" {
			t.Errorf("tx.Get = %q, want its own write", v)
		}
		n := 0
		tx.ForEach("b", func(string, []byte) error { n++; return nil })
		if n != 2 {
			t.Errorf("tx.ForEach saw %d keys, want 2", n)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if v, _ := s.Get("b", "keep"); string(v) != "old" {
		t.Fatalf("after rollback keep = %q", v)
	}
	if v, _ := s.Get("b", "added"); v != nil {
		t.Fatalf("after rollback added = %q", v)
	}
}

// Two clients (two nodes) increment one counter concurrently through
// read-modify-write transactions: none is lost.
func TestUpdateAtomicAcrossClients(t *testing.T) {
	testUpdateAtomicAcrossClients(t, testutil.StartRedis(t).URL)
}

func testUpdateAtomicAcrossClients(t *testing.T, url string) {
	nodes := []*Store{open(t, url, "a"), open(t, url, "b")}
	const per = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for _, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				errs <- s.Update(func(tx store.Tx) error {
					v, err := tx.Get("c", "n")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(string(v))
					// A second bucket written in the same transaction.
					if err := tx.Put("log", strconv.Itoa(n+1), []byte(s.Node())); err != nil {
						return err
					}
					return tx.Put("c", "n", []byte(strconv.Itoa(n+1)))
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	v, _ := nodes[0].Get("c", "n")
	if string(v) != strconv.Itoa(2*per) {
		t.Fatalf("counter = %s, want %d: updates were lost", v, 2*per)
	}
	n := 0
	nodes[1].ForEach("log", func(string, []byte) error { n++; return nil })
	if n != 2*per {
		t.Fatalf("log has %d entries, want %d", n, 2*per)
	}
}

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no change within 5 s")
	}
	return store.Change{}
}

func TestWatch(t *testing.T) { testWatch(t, testutil.StartRedis(t).URL) }

func testWatch(t *testing.T, url string) {
	a, b := open(t, url, "a"), open(t, url, "b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.Watch(ctx, "users")
	if c := next(t, ch); !c.Resync {
		t.Fatalf("first change %+v, want the subscription's Resync", c)
	}
	b.Put("other", "x", nil) // not watched
	b.Update(func(tx store.Tx) error {
		tx.Put("users", "u1", []byte("1"))
		return tx.Delete("users", "u2")
	})
	want := []store.Change{{Bucket: "users", Key: "u1", Node: "b"}, {Bucket: "users", Key: "u2", Node: "b", Deleted: true}}
	for _, w := range want {
		if c := next(t, ch); c != w {
			t.Fatalf("change %+v, want %+v", c, w)
		}
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after cancel")
		}
	}
}

// Redis goes away and comes back: reads and writes fail fast with
// ErrUnavailable meanwhile, Watch resubscribes by itself and says Resync,
// and changes flow again.
func TestReconnect(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := open(t, r.URL, "a"), open(t, r.URL, "b")
	if err := a.Put("users", "kept", []byte("1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.Watch(ctx, "users")
	next(t, ch) // Resync of the first subscription

	r.Kill()
	start := time.Now()
	err := b.Put("users", "u", []byte("x"))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Put with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := b.Get("users", "kept"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Get with Redis down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*DefaultTimeout+time.Second {
		t.Fatalf("failing took %v", d)
	}

	r.Start()
	if c := next(t, ch); !c.Resync {
		t.Fatalf("after reconnect got %+v, want Resync", c)
	}
	if err := b.Put("users", "after", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if c := next(t, ch); c.Key != "after" || c.Node != "b" {
		t.Fatalf("after reconnect got %+v", c)
	}
	if v, _ := a.Get("users", "kept"); string(v) != "1" {
		t.Fatalf("data written before the restart: %q", v)
	}
}

func TestURLs(t *testing.T) {
	tests := []struct {
		url      string
		sentinel bool
		want     string // multiHost's output; "" = error
	}{
		{"h1:1,h2:2/mymaster", true, "redis://h1:1?addr=h2%3A2&master_name=mymaster"},
		{"u:p@h1:1/mymaster/2?dial_timeout=3s", true, "redis://u:p@h1:1/2?dial_timeout=3s&master_name=mymaster"},
		{"h1:1", true, ""},
		{"h1:1,h2:2", false, "redis://h1:1?addr=h2%3A2"},
		{"h1:1,,h2:2", false, ""},
	}
	for _, tt := range tests {
		got, err := multiHost("redis", tt.url, tt.sentinel)
		if tt.want == "" {
			if err == nil {
				t.Errorf("multiHost(%q) = %q, want an error", tt.url, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("multiHost(%q) = %q, %v; want %q", tt.url, got, err, tt.want)
		}
	}
	for _, u := range []string{"redis://h:1", "rediss://h:1/2", "redis+sentinel://h:1/m", "redis+cluster://h:1,h:2"} {
		c, _, err := newClient(u)
		if err != nil {
			t.Errorf("newClient(%q): %v", u, err)
			continue
		}
		c.Close()
	}
	for _, u := range []string{"http://h:1", "h:1", "redis+foo://h:1"} {
		if _, _, err := newClient(u); err == nil {
			t.Errorf("newClient(%q) accepted", u)
		}
	}
	if got := Redact("redis://user:secret@h:1/0"); got != "redis://user:xxxxx@h:1/0" {
		t.Errorf("Redact = %q", got)
	}
}
