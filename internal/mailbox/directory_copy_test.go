package mailbox

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mamori-mail/mamori/internal/store"
)

// countingKV counts Update calls (the copy's writes).
type countingKV struct {
	store.KV
	updates int
}

func (c *countingKV) Update(fn func(store.Tx) error) error { c.updates++; return c.KV.Update(fn) }

// TestDirectoryCopy: the local copy holds what the directory holds
// (users, aliases, runtime domains; deletions too), is rewritten only when
// something changed, and a directory opened from it serves logins and
// lookups while refusing changes to the unreachable shared store.
func TestDirectoryCopy(t *testing.T) {
	shared := openStore(t, filepath.Join(t.TempDir(), "shared.db"))
	local := &countingKV{KV: openStore(t, filepath.Join(t.TempDir(), "local.db"))}
	d, err := OpenDirectory(shared, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDirectoryFromCopy(shared, local, nil, true); !errors.Is(err, ErrNoCopy) {
		t.Fatalf("no copy yet: %v, want ErrNoCopy", err)
	}
	must(t, d.KeepCopy(local))
	must(t, d.AddDomain("extra.test"))
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@extra.test", testPassword))
	must(t, d.AddUser("gone@example.test", testPassword))
	must(t, d.AddAlias("sales@example.test", []string{"alice@example.test"}))
	must(t, d.DelUser("gone@example.test"))
	must(t, d.SetDisabled("bob@extra.test", true))
	must(t, d.saveCopy())
	n := local.updates
	must(t, d.saveCopy())
	if local.updates != n {
		t.Fatal("an unchanged directory rewrote its copy")
	}

	down := &failingKV{KV: shared}
	c, err := OpenDirectoryFromCopy(down, local, []string{"example.test"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatalf("alice from the copy: %v", err)
	}
	if err := c.Authenticate("bob@extra.test", testPassword); !errors.Is(err, ErrDisabled) {
		t.Fatalf("bob (disabled) from the copy: %v", err)
	}
	if err := c.Authenticate("gone@example.test", testPassword); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("deleted user from the copy: %v", err)
	}
	if targets, ok := c.Lookup("sales@example.test"); !ok || !slices.Equal(targets, []string{"alice@example.test"}) {
		t.Fatalf("alias from the copy: %v %v", targets, ok)
	}
	if !c.IsLocalDomain("extra.test") {
		t.Fatal("runtime domain missing from the copy")
	}
	if err := c.AddUser("carol@example.test", testPassword); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("change with the shared store down: %v, want ErrUnavailable", err)
	}
	if !c.offline.Load() {
		t.Fatal("a directory opened from the copy is not marked offline")
	}
}

// failingKV is a shared store that does not answer.
type failingKV struct{ store.KV }

func (failingKV) Get(string, string) ([]byte, error) { return nil, store.ErrUnavailable }
func (failingKV) Put(string, string, []byte) error   { return store.ErrUnavailable }
func (failingKV) Update(func(store.Tx) error) error  { return store.ErrUnavailable }
func (failingKV) ForEach(string, func(string, []byte) error) error {
	return store.ErrUnavailable
}

// TestCopyCatchesUp: a node that started from an old copy takes in, on
// its first reload, what changed while it was away — even users deleted
// in bulk, which a running node would take for a store that lost its
// data — and revokes what changed. Without catchUp (a store believed to
// have lost its data) the same reload is refused.
func TestCopyCatchesUp(t *testing.T) {
	for _, catchUp := range []bool{true, false} {
		shared := openStore(t, filepath.Join(t.TempDir(), "shared.db"))
		local := openStore(t, filepath.Join(t.TempDir(), "local.db"))
		d, err := OpenDirectory(shared, []string{"example.test"})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"a", "b", "c"} {
			must(t, d.AddUser(u+"@example.test", testPassword))
		}
		must(t, d.KeepCopy(local)) // the copy the node leaves with
		// While the node is away:
		must(t, d.DelUser("b@example.test"))
		must(t, d.DelUser("c@example.test"))
		must(t, d.SetPassword("a@example.test", "a new long password"))

		c, err := OpenDirectoryFromCopy(shared, local, []string{"example.test"}, catchUp)
		if err != nil {
			t.Fatal(err)
		}
		var log revokeLog
		c.SetRevokeHook(log.hook)
		if err := c.Authenticate("b@example.test", testPassword); err != nil {
			t.Fatalf("catchUp %v: b from the copy before the reload: %v", catchUp, err)
		}
		err = c.Reload()
		if !catchUp {
			if !errors.Is(err, errEmptyStore) {
				t.Fatalf("without catchUp: reload %v, want it refused", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("first reload after starting from the copy: %v", err)
		}
		if err := c.Authenticate("b@example.test", testPassword); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("b deleted while away still logs in: %v", err)
		}
		if err := c.Authenticate("a@example.test", testPassword); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("a's old password still works: %v", err)
		}
		got := log.take()
		slices.Sort(got)
		if !slices.Equal(got, []string{"a@example.test", "b@example.test", "c@example.test"}) {
			t.Fatalf("revoked %q, want a, b and c", got)
		}
		// From then on the usual protection holds again.
		if c.fromCopy.Load() {
			t.Fatal("fromCopy still set after the reload")
		}
	}
}

// TestCopyOfAnEarlierProcessReplaced: the first save of a process drops
// what an earlier process's copy held that the directory no longer has.
func TestCopyOfAnEarlierProcessReplaced(t *testing.T) {
	local := openStore(t, filepath.Join(t.TempDir(), "local.db"))
	old, _ := newDirectory(t, "example.test")
	must(t, old.AddUser("a@example.test", testPassword))
	must(t, old.AddUser("b@example.test", testPassword))
	must(t, old.KeepCopy(local))
	now, _ := newDirectory(t, "example.test")
	must(t, now.AddUser("a@example.test", testPassword))
	must(t, now.KeepCopy(local))
	c, err := OpenDirectoryFromCopy(&failingKV{}, local, []string{"example.test"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if users := c.Users(); len(users) != 1 || users[0].Address != "a@example.test" {
		t.Fatalf("copy holds %+v, want only a", users)
	}
}

// TestCopyNotWipedByAnEmptiedStore: a node started from its copy while
// the store had lost its data does not take a store that has since had a
// user added for the truth: its dataset marker is not the copy's.
func TestCopyNotWipedByAnEmptiedStore(t *testing.T) {
	shared := openStore(t, filepath.Join(t.TempDir(), "shared.db"))
	local := openStore(t, filepath.Join(t.TempDir(), "local.db"))
	d, err := OpenDirectory(shared, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b", "c", "d", "e"} {
		must(t, d.AddUser(u+"@example.test", testPassword))
	}
	must(t, d.KeepCopy(local))

	emptied := openStore(t, filepath.Join(t.TempDir(), "emptied.db")) // the store, after losing its data
	c, err := OpenDirectoryFromCopy(emptied, local, []string{"example.test"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); !errors.Is(err, errEmptyStore) {
		t.Fatalf("reload from an empty store: %v, want refused", err)
	}
	other, err := OpenDirectory(emptied, []string{"example.test"}) // another node, adding a user
	if err != nil {
		t.Fatal(err)
	}
	must(t, other.AddUser("z@example.test", testPassword))
	if err := c.Reload(); !errors.Is(err, errEmptyStore) {
		t.Fatalf("reload from an emptied store with one new user: %v, want refused", err)
	}
	if n := len(c.Users()); n != 5 {
		t.Fatalf("%d users in memory, want the copy's 5", n)
	}
}

// TestLostData: a store is taken for one that lost its data only when it
// is not the dataset the copy was saved from and lacks most of the copy.
func TestLostData(t *testing.T) {
	mk := func(dataset string, users ...string) *Directory {
		d := &Directory{dataset: dataset, users: map[string]*userEntry{}}
		for _, u := range users {
			d.users[u] = &userEntry{}
		}
		return d
	}
	copyOf := mk("A", "a", "b", "c", "d")
	for _, tc := range []struct {
		name  string
		store *Directory
		want  bool
	}{
		{"same dataset, most users deleted meanwhile", mk("A", "a"), false},
		{"same dataset, empty", mk("A"), false},
		{"new dataset, empty", mk("B"), true},
		{"new dataset, one user re-added", mk("B", "z"), true},
		{"new dataset, most users there", mk("B", "a", "b", "c"), false},
	} {
		if got := tc.store.LostData(copyOf); got != tc.want {
			t.Errorf("%s: LostData = %v, want %v", tc.name, got, tc.want)
		}
	}
	if mk("B").LostData(mk("A")) {
		t.Error("an empty copy: nothing to lose")
	}
}

// readOnlyKV reads but refuses every write.
type readOnlyKV struct{ store.KV }

func (readOnlyKV) Update(func(store.Tx) error) error { return store.ErrUnavailable }
func (readOnlyKV) Put(string, string, []byte) error  { return store.ErrUnavailable }

// TestMarkerWriteFailureHarmless: a store without a marker that cannot
// take one still opens and reloads (and a reload that applies nothing
// new revokes nothing).
func TestMarkerWriteFailureHarmless(t *testing.T) {
	shared := openStore(t, filepath.Join(t.TempDir(), "shared.db"))
	d, err := OpenDirectory(shared, []string{"example.test"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, shared.Delete(bucketMeta, datasetKey)) // a store from before markers
	ro, err := OpenDirectory(readOnlyKV{shared}, []string{"example.test"})
	if err != nil {
		t.Fatalf("open on a store that refuses the marker: %v", err)
	}
	var log revokeLog
	ro.SetRevokeHook(log.hook)
	for range 3 {
		if err := ro.Reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	if got := log.take(); len(got) != 0 {
		t.Fatalf("reloads that changed nothing revoked %q", got)
	}
	if err := ro.Authenticate("alice@example.test", testPassword); err != nil {
		t.Fatal(err)
	}
}
