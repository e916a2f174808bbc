package mailbox

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// clusterDirs opens two directories (two nodes) on one Redis, each
// following the other's changes.
func clusterDirs(t *testing.T, r *testutil.Redis) (a, b *Directory) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var dirs []*Directory
	for _, node := range []string{"a", "b"} {
		st, err := redisstore.Open(ctx, redisstore.Options{URL: r.URL, Node: node, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		d, err := OpenDirectory(st, []string{"example.test"})
		if err != nil {
			t.Fatal(err)
		}
		go d.Follow(ctx, time.Hour, nil) // only notifications here, no periodic reload
		dirs = append(dirs, d)
	}
	return dirs[0], dirs[1]
}

// within polls cond for at most a second.
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a second", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFollowSharesChanges(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := clusterDirs(t, r)
	time.Sleep(100 * time.Millisecond) // subscriptions in place

	steps := []struct {
		name   string
		change func() error
		check  func() bool // on node a
	}{
		{"user added on b logs in on a", func() error { return b.AddUser("alice@example.test", testPassword) },
			func() bool { return a.Authenticate("alice@example.test", testPassword) == nil }},
		{"password changed on b", func() error { return b.SetPassword("alice@example.test", "another password") },
			func() bool { return a.Authenticate("alice@example.test", "another password") == nil }},
		{"disabled on b", func() error { return b.SetDisabled("alice@example.test", true) },
			func() bool { return errors.Is(a.Authenticate("alice@example.test", "another password"), ErrDisabled) }},
		{"domain added on b", func() error { return b.AddDomain("new.test") },
			func() bool { return a.IsLocalDomain("new.test") }},
		{"alias added on b", func() error { return b.AddAlias("sales@example.test", []string{"alice@example.test"}) },
			func() bool {
				t, ok := a.Lookup("sales@example.test")
				return ok && slices.Equal(t, []string{"alice@example.test"})
			}},
		{"user deleted on b", func() error { return b.DelUser("alice@example.test") },
			func() bool { return errors.Is(a.Authenticate("alice@example.test", "another password"), ErrAuthFailed) }},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		within(t, s.name, s.check)
	}
	// a's own stale copy never overwrites b's change: b re-enables, a sets
	// a quota at once — the user stays enabled.
	must(t, a.AddUser("bob@example.test", testPassword))
	within(t, "bob on b", func() bool { return b.Authenticate("bob@example.test", testPassword) == nil })
	must(t, b.SetDisabled("bob@example.test", true))
	must(t, a.SetQuota("bob@example.test", 1000)) // a may not have heard of the disable yet
	within(t, "bob disabled and with a quota on both", func() bool {
		return errors.Is(a.Authenticate("bob@example.test", testPassword), ErrDisabled) &&
			errors.Is(b.Authenticate("bob@example.test", testPassword), ErrDisabled) &&
			a.QuotaOf("bob@example.test", 0) == 1000 && b.QuotaOf("bob@example.test", 0) == 1000
	})
	// Two nodes adding the same user: one wins, the other is told.
	if err := b.AddUser("bob@example.test", testPassword); !errors.Is(err, ErrExists) {
		t.Fatalf("second add: %v, want ErrExists", err)
	}
}

// Redis down: logins go on from memory, changes fail clearly; Redis back:
// a change made on b reaches a again.
func TestFollowRedisDown(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := clusterDirs(t, r)
	must(t, b.AddUser("alice@example.test", testPassword))
	within(t, "alice on a", func() bool { return a.Authenticate("alice@example.test", testPassword) == nil })

	r.Kill()
	if err := a.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatalf("login with Redis down: %v", err)
	}
	if err := a.AddUser("carol@example.test", testPassword); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("add with Redis down: %v, want ErrUnavailable", err)
	}
	if a.Reload() == nil {
		t.Fatal("Reload with Redis down succeeded")
	}
	if err := a.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatalf("login after a failed reload: %v", err)
	}

	// Down long enough for the resubscribe attempts to back off to their
	// cap: the first change after Redis returns must still arrive within a
	// second.
	time.Sleep(3 * time.Second)
	r.Start()
	deadline := time.Now().Add(10 * time.Second)
	for b.AddUser("dave@example.test", testPassword) != nil {
		if time.Now().After(deadline) {
			t.Fatal("b cannot write after Redis came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	within(t, "dave on a after the reconnect", func() bool { return a.Authenticate("dave@example.test", testPassword) == nil })
	if err := a.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatalf("alice after the restart: %v", err)
	}
}

// A Redis that lost its data does not wipe a node's directory.
func TestReloadKeepsMemoryWhenStoreEmptied(t *testing.T) {
	r := testutil.StartRedis(t)
	a, _ := clusterDirs(t, r)
	must(t, a.AddUser("alice@example.test", testPassword))
	time.Sleep(200 * time.Millisecond) // a's Follow has seen its own change
	if _, err := r.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); !errors.Is(err, errEmptyStore) {
		t.Fatalf("Reload of an emptied store: %v, want errEmptyStore", err)
	}
	if err := a.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatalf("login after the store emptied: %v", err)
	}
}

// TestReloadAfterStoreLostData: a Redis that lost its data, then got one
// user added, does not make the other nodes forget every other user.
func TestReloadAfterStoreLostData(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := clusterDirs(t, r)
	users := []string{"u1@example.test", "u2@example.test", "u3@example.test", "u4@example.test", "u5@example.test"}
	for _, u := range users {
		if err := a.AddUser(u, "correct horse battery"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	r.Do("FLUSHALL")
	if err := a.AddUser("new@example.test", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); !errors.Is(err, errEmptyStore) {
		t.Errorf("reload of a store that lost 5 of 5 users: %v", err)
	}
	if err := b.Authenticate("u1@example.test", "correct horse battery"); err != nil {
		t.Errorf("u1 forgotten on b after the store lost its data: %v", err)
	}
}

// A change notice whose record cannot be read at that moment (a timeout, a
// stale connection) is not lost until the next periodic resync: the node
// reloads soon after.
func TestFollowUnreadableNoticeNotLost(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	flaky := &testutil.FlakyKV{KV: st}
	a, err := OpenDirectory(flaky, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenDirectory(st, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Follow(ctx, time.Hour, nil)
	time.Sleep(50 * time.Millisecond) // a watches

	flaky.FailGets(1) // the notice's re-read fails once
	must(t, b.AddUser("alice@example.test", testPassword))
	within(t, "alice on a after a failed re-read", func() bool {
		return a.Authenticate("alice@example.test", testPassword) == nil
	})
}
