package mailbox

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/store/redisstore"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// revokeLog records what the revoke hook was told.
type revokeLog struct {
	mu    sync.Mutex
	addrs []string
}

func (r *revokeLog) hook(addr string) { r.mu.Lock(); r.addrs = append(r.addrs, addr); r.mu.Unlock() }
func (r *revokeLog) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.addrs
	r.addrs = nil
	return a
}

// TestRevokeHook: exactly the changes that invalidate a login's
// credentials — password, disable, delete — tell the hook; the others
// (quota, enable, last login, aliases) do not.
func TestRevokeHook(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	var log revokeLog
	d.SetRevokeHook(log.hook)
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@example.test", testPassword))
	tests := []struct {
		name   string
		change func() error
		want   []string
	}{
		{"add another user", func() error { return d.AddUser("carol@example.test", testPassword) }, nil},
		{"quota", func() error { return d.SetQuota("alice@example.test", 1000) }, nil},
		{"last login", func() error { d.RecordLogin("alice@example.test", time.Now()); return d.Flush() }, nil},
		{"alias", func() error { return d.AddAlias("sales@example.test", []string{"alice@example.test"}) }, nil},
		{"password", func() error { return d.SetPassword("Alice@Example.test", "another password") }, []string{"alice@example.test"}},
		{"disable", func() error { return d.SetDisabled("alice@example.test", true) }, []string{"alice@example.test"}},
		{"disable again", func() error { return d.SetDisabled("alice@example.test", true) }, nil},
		{"enable", func() error { return d.SetDisabled("alice@example.test", false) }, nil},
		{"delete", func() error { return d.DelUser("bob@example.test") }, []string{"bob@example.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			must(t, tc.change())
			if got := log.take(); !slices.Equal(got, tc.want) {
				t.Fatalf("hook told %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRevokeHookFollows: a revocation made on another node reaches this
// node's hook — through the change notice, and through a full reload.
func TestRevokeHookFollows(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := clusterDirs(t, r)
	var log revokeLog
	a.SetRevokeHook(log.hook)
	time.Sleep(100 * time.Millisecond) // subscriptions in place
	must(t, b.AddUser("alice@example.test", testPassword))
	must(t, b.AddUser("bob@example.test", testPassword))
	within(t, "users on a", func() bool { return len(a.Users()) == 2 })

	for _, step := range []struct {
		name   string
		change func() error
		want   string
	}{
		{"password on b", func() error { return b.SetPassword("alice@example.test", "another password") }, "alice@example.test"},
		{"disable on b", func() error { return b.SetDisabled("bob@example.test", true) }, "bob@example.test"},
		{"delete on b", func() error { return b.DelUser("alice@example.test") }, "alice@example.test"},
	} {
		must(t, step.change())
		within(t, step.name, func() bool {
			got := log.take()
			if len(got) > 1 || len(got) == 1 && got[0] != step.want {
				t.Fatalf("%s: hook told %q, want %q", step.name, got, step.want)
			}
			return len(got) == 1
		})
	}
	if err := b.SetQuota("bob@example.test", 1000); err != nil {
		t.Fatal(err)
	}
	within(t, "quota on a", func() bool { return a.QuotaOf("bob@example.test", 0) == 1000 })
	if got := log.take(); len(got) != 0 {
		t.Fatalf("a quota change told the hook %q", got)
	}

	// A node that missed the notices (here: one that does not follow)
	// revokes on its next full reload.
	st, err := redisstore.Open(context.Background(), redisstore.Options{URL: r.URL, Node: "c"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := OpenDirectory(st, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	var clog revokeLog
	c.SetRevokeHook(clog.hook)
	must(t, b.SetPassword("bob@example.test", "a third password"))
	must(t, b.AddUser("erin@example.test", testPassword))
	if got := clog.take(); len(got) != 0 {
		t.Fatalf("c does not follow, yet its hook was told %q", got)
	}
	must(t, c.Reload())
	if got := clog.take(); !slices.Equal(got, []string{"bob@example.test"}) {
		t.Fatalf("reload told the hook %q, want bob", got)
	}
}

// TestRevokeHookMayUseTheDirectory: the hook runs with no lock held, so
// it may call back into the directory (here: a change of its own).
func TestRevokeHookMayUseTheDirectory(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@example.test", testPassword))
	d.SetRevokeHook(func(addr string) { _ = d.SetQuota(addr, 1000) })
	for name, change := range map[string]func() error{
		"password": func() error { return d.SetPassword("alice@example.test", "another password") },
		"delete":   func() error { return d.DelUser("bob@example.test") },
	} {
		done := make(chan error, 1)
		go func() { done <- change() }()
		select {
		case err := <-done:
			must(t, err)
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: deadlock: the hook ran with the directory's lock held", name)
		}
	}
	if q := d.QuotaOf("alice@example.test", 0); q != 1000 {
		t.Fatalf("the hook's own change: quota %d", q)
	}
}
