package mailbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/store"
)

const testPassword = "correct horse battery"

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newDirectory(t *testing.T, static ...string) (*Directory, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	d, err := OpenDirectory(openStore(t, path), static)
	if err != nil {
		t.Fatalf("OpenDirectory: %v", err)
	}
	return d, path
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// lookupFixture builds a directory exercising every resolution rule.
func lookupFixture(t *testing.T) *Directory {
	t.Helper()
	d, _ := newDirectory(t, "Example.TEST", "other.test.")
	must(t, d.AddDomain("third.test"))
	for _, u := range []string{"alice@example.test", "Bob@Example.Test", "carol@other.test", "postmaster@example.test"} {
		must(t, d.AddUser(u, testPassword))
	}
	aliases := []struct {
		alias   string
		targets []string
	}{
		{"sales@example.test", []string{"alice@example.test", "bob@example.test"}},
		{"team@example.test", []string{"sales@example.test", "carol@other.test", "ALICE@example.test"}},
		{"loop1@example.test", []string{"loop2@example.test"}},
		{"loop2@example.test", []string{"loop1@example.test", "bob@example.test"}},
		{"fwd@example.test", []string{"Someone@Foreign.Example."}},
		{"ghost@example.test", []string{"nobody@example.test"}},
		{"mixed@example.test", []string{"nobody@example.test", "alice@example.test"}},
		{"@other.test", []string{"carol@other.test"}},
		{"pm-fwd@third.test", []string{"postmaster@third.test"}},
	}
	for _, a := range aliases {
		must(t, d.AddAlias(a.alias, a.targets))
	}
	// d0 → d1 → … → d11 → alice: only d2 and deeper stay within 10 levels.
	for i := 0; i < 11; i++ {
		must(t, d.AddAlias(fmt.Sprintf("d%d@example.test", i), []string{fmt.Sprintf("d%d@example.test", i+1)}))
	}
	must(t, d.AddAlias("d11@example.test", []string{"alice@example.test"}))
	// short reaches d9 first through the long chain (level 9, so d10 and d11
	// are cut off), then directly at level 2: alice must still be found.
	must(t, d.AddAlias("short@example.test", []string{"d2@example.test", "d9@example.test"}))
	must(t, d.AddAlias("wide@example.test", []string{"d1@example.test", "sales@example.test"}))
	return d
}

func TestLookup(t *testing.T) {
	d := lookupFixture(t)
	tests := []struct {
		name string
		addr string
		want []string // nil means ok=false
	}{
		{"user", "alice@example.test", []string{"alice@example.test"}},
		{"user stored lower-case", "bob@example.test", []string{"bob@example.test"}},
		{"case-insensitive", "ALICE@Example.TEST", []string{"alice@example.test"}},
		{"trailing dot", "alice@example.test.", []string{"alice@example.test"}},
		{"two trailing dots", "alice@example.test..", nil},
		{"foreign domain", "alice@foreign.example", nil},
		{"unknown user", "nobody@example.test", nil},
		{"alias one-to-many", "sales@example.test", []string{"alice@example.test", "bob@example.test"}},
		{"nested alias, duplicates removed", "Team@example.test",
			[]string{"alice@example.test", "bob@example.test", "carol@other.test"}},
		{"loop", "loop1@example.test", []string{"bob@example.test"}},
		{"loop from the other side", "loop2@example.test", []string{"bob@example.test"}},
		{"foreign target keeps local case", "fwd@example.test", []string{"Someone@foreign.example"}},
		{"target resolving to nothing", "ghost@example.test", nil},
		{"dangling target dropped", "mixed@example.test", []string{"alice@example.test"}},
		{"catch-all", "anything@other.test", []string{"carol@other.test"}},
		{"catch-all trailing dot and case", "Anything@OTHER.test.", []string{"carol@other.test"}},
		{"user wins over catch-all", "carol@other.test", []string{"carol@other.test"}},
		{"catch-all is per domain", "anything@third.test", nil},
		{"catch-all ignores percent hack", "a%b@other.test", nil},
		{"catch-all ignores bang path", "b!a@other.test", nil},
		{"catch-all ignores quoted", `"a@b"@other.test`, nil},
		{"catch-all ignores slash", "a/b@other.test", nil},
		{"depth 10 ok", "d2@example.test", []string{"alice@example.test"}},
		{"depth 11 dropped", "d1@example.test", nil},
		{"shallower path re-expands", "short@example.test", []string{"alice@example.test"}},
		{"too deep branch dropped, others kept", "wide@example.test", []string{"alice@example.test", "bob@example.test"}},
		{"postmaster user", "postmaster@example.test", []string{"postmaster@example.test"}},
		{"postmaster fallback", "PostMaster@third.test", []string{"postmaster@example.test"}},
		{"postmaster via catch-all first", "postmaster@other.test", []string{"carol@other.test"}},
		{"alias to fallback postmaster", "pm-fwd@third.test", []string{"postmaster@example.test"}},
		{"empty", "", nil},
		{"no at", "alice", nil},
		{"empty local", "@example.test", nil},
		{"ip literal", "alice@[127.0.0.1]", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := d.Lookup(tc.addr)
			if tc.want == nil {
				if ok || got != nil {
					t.Fatalf("Lookup(%q) = %v, %v; want nil, false", tc.addr, got, ok)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Lookup(%q) = %v, %v; want %v, true", tc.addr, got, ok, tc.want)
			}
		})
	}
}

func TestLookupPostmaster(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, d *Directory)
		want  []string
	}{
		{"nobody", func(*testing.T, *Directory) {}, nil},
		{"first domain's user", func(t *testing.T, d *Directory) {
			must(t, d.AddUser("postmaster@b.test", testPassword))
			must(t, d.AddUser("postmaster@a.test", testPassword))
		}, []string{"postmaster@b.test"}}, // b.test is first in the config
		{"alias before user", func(t *testing.T, d *Directory) {
			must(t, d.AddUser("postmaster@b.test", testPassword))
			must(t, d.AddUser("admin@a.test", testPassword))
			must(t, d.AddAlias("postmaster@a.test", []string{"admin@a.test", "ops@elsewhere.example"}))
		}, []string{"admin@a.test", "ops@elsewhere.example"}},
		{"runtime domain user", func(t *testing.T, d *Directory) {
			must(t, d.AddDomain("z.test"))
			must(t, d.AddUser("postmaster@z.test", testPassword))
		}, []string{"postmaster@z.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDirectory(t, "b.test", "a.test", "c.test")
			tc.setup(t, d)
			// c.test has neither a postmaster user nor an alias.
			for _, dom := range []string{"c.test", "C.TEST."} {
				got, ok := d.Lookup("postmaster@" + dom)
				if tc.want == nil {
					if ok {
						t.Fatalf("postmaster@%s = %v, want ok=false", dom, got)
					}
					continue
				}
				if !ok || !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("postmaster@%s = %v, %v; want %v", dom, got, ok, tc.want)
				}
			}
		})
	}
}

func TestIsLocalDomain(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddDomain("Runtime.TEST."))
	tests := []struct {
		domain string
		want   bool
	}{
		{"example.test", true},
		{"EXAMPLE.Test", true},
		{"example.test.", true},
		{"example.test..", false},
		{"runtime.test", true},
		{"sub.example.test", false},
		{"test", false},
		{"", false},
		{"[127.0.0.1]", false},
	}
	for _, tc := range tests {
		if got := d.IsLocalDomain(tc.domain); got != tc.want {
			t.Errorf("IsLocalDomain(%q) = %v, want %v", tc.domain, got, tc.want)
		}
	}
	if got, want := d.Domains(), []string{"example.test", "runtime.test"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Domains() = %v, want %v", got, want)
	}
}

func TestAuthenticate(t *testing.T) {
	d, path := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("dave@example.test", testPassword))
	must(t, d.SetDisabled("dave@example.test", true))

	tests := []struct {
		name, user, pass string
		want             error
	}{
		{"good", "alice@example.test", testPassword, nil},
		{"good, username case and dot", "Alice@EXAMPLE.test.", testPassword, nil},
		{"bad password", "alice@example.test", testPassword + "x", ErrAuthFailed},
		{"empty password", "alice@example.test", "", ErrAuthFailed},
		{"unknown user", "mallory@example.test", testPassword, ErrAuthFailed},
		{"malformed username", "alice", testPassword, ErrAuthFailed},
		{"disabled, right password", "dave@example.test", testPassword, ErrDisabled},
		{"disabled, wrong password", "dave@example.test", "guessing!", ErrAuthFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Authenticate(tc.user, tc.pass)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Authenticate(%q) = %v, want %v", tc.user, err, tc.want)
			}
		})
	}

	// Re-enabled, then password changed.
	must(t, d.SetDisabled("dave@example.test", false))
	must(t, d.Authenticate("dave@example.test", testPassword))
	must(t, d.SetPassword("dave@example.test", "new password 1"))
	if err := d.Authenticate("dave@example.test", testPassword); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("old password after change: %v, want ErrAuthFailed", err)
	}
	must(t, d.Authenticate("dave@example.test", "new password 1"))

	// The stored form is an argon2id PHC string, never the password.
	raw := storedUser(t, d, "alice@example.test")
	if !strings.HasPrefix(raw.Hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("stored hash %q is not argon2id PHC with OWASP parameters", raw.Hash)
	}
	if raw.Hash == testPassword || strings.Contains(raw.Hash, testPassword) {
		t.Fatalf("stored hash contains the password")
	}
	if _, err := parsePHC(raw.Hash); err != nil {
		t.Fatalf("parsePHC(stored) = %v", err)
	}
	if other := storedUser(t, d, "dave@example.test"); other.Hash == raw.Hash {
		t.Fatalf("two hashes of passwords are identical: salt not random?")
	}
	_ = path
}

func storedUser(t *testing.T, d *Directory, addr string) userRecord {
	t.Helper()
	b, err := d.st.Get(bucketUsers, addr)
	if err != nil || b == nil {
		t.Fatalf("store has no user %s: %v", addr, err)
	}
	var r userRecord
	must(t, json.Unmarshal(b, &r))
	return r
}

func TestCorruptHashRefused(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	d.users["alice@example.test"].rec.Hash = "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	if err := d.Authenticate("alice@example.test", testPassword); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("Authenticate with absurd stored parameters = %v, want ErrAuthFailed", err)
	}
}

func TestUserErrors(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddAlias("sales@example.test", []string{"alice@example.test"}))

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"unknown domain", d.AddUser("x@foreign.example", testPassword), ErrUnknownDomain},
		{"exists", d.AddUser("ALICE@example.test", testPassword), ErrExists},
		{"alias of that name", d.AddUser("sales@example.test", testPassword), ErrExists},
		{"weak", d.AddUser("bob@example.test", "1234567"), ErrWeakPassword},
		{"weak counts characters", d.AddUser("bob@example.test", "ééé"), ErrWeakPassword},
		{"bad local part", d.AddUser("a%b@example.test", testPassword), errInvalidAddress},
		{"del missing", d.DelUser("bob@example.test"), ErrNotFound},
		{"passwd missing", d.SetPassword("bob@example.test", testPassword), ErrNotFound},
		{"passwd weak", d.SetPassword("alice@example.test", "short"), ErrWeakPassword},
		{"disable missing", d.SetDisabled("bob@example.test", true), ErrNotFound},
		{"alias named like a user", d.AddAlias("alice@example.test", []string{"x@foreign.example"}), ErrExists},
		{"alias in foreign domain", d.AddAlias("x@foreign.example", []string{"alice@example.test"}), ErrUnknownDomain},
		{"catch-all in foreign domain", d.AddAlias("@foreign.example", []string{"alice@example.test"}), ErrUnknownDomain},
		{"alias without targets", d.AddAlias("x@example.test", nil), errInvalidAddress},
		{"alias bad target", d.AddAlias("x@example.test", []string{"not an address"}), errInvalidAddress},
		{"alias self target", d.AddAlias("x@example.test", []string{"X@example.test"}), errInvalidAddress},
		{"del alias missing", d.DelAlias("x@example.test"), ErrNotFound},
		{"add domain exists", d.AddDomain("EXAMPLE.test."), ErrExists},
		{"add domain invalid", d.AddDomain("bad_domain.test"), errInvalidAddress},
		{"add domain ip", d.AddDomain("127.0.0.1"), errInvalidAddress},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// Nothing of the refused changes leaked into the directory.
	if got := len(d.Users()); got != 1 {
		t.Errorf("Users() has %d entries, want 1", got)
	}
	if got := d.Aliases(); len(got) != 1 || got[0].Alias != "sales@example.test" {
		t.Errorf("Aliases() = %v, want only sales", got)
	}
}

func TestOwns(t *testing.T) {
	d, _ := newDirectory(t, "example.test", "other.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@example.test", testPassword))
	must(t, d.AddAlias("sales@example.test", []string{"alice@example.test", "bob@example.test"}))
	must(t, d.AddAlias("info@other.test", []string{"sales@example.test"}))
	must(t, d.AddAlias("@other.test", []string{"alice@example.test"}))

	tests := []struct {
		user, addr string
		want       bool
	}{
		{"alice@example.test", "alice@example.test", true},
		{"alice@example.test", "Alice@Example.Test.", true},
		{"ALICE@example.test", "alice@example.test", true},
		{"alice@example.test", "bob@example.test", false},
		{"alice@example.test", "sales@example.test", true},
		{"bob@example.test", "sales@example.test", true},
		{"alice@example.test", "info@other.test", true}, // nested
		{"alice@example.test", "random@other.test", false},
		{"alice@example.test", "@other.test", false},
		{"ghost@example.test", "ghost@example.test", false},
		{"alice@example.test", "alice@foreign.example", false},
		{"alice@example.test", "", false},
	}
	for _, tc := range tests {
		if got := d.Owns(tc.user, tc.addr); got != tc.want {
			t.Errorf("Owns(%q, %q) = %v, want %v", tc.user, tc.addr, got, tc.want)
		}
	}
}

func TestAliasesAccumulate(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddAlias("list@example.test", []string{"alice@example.test", "x@foreign.example"}))
	must(t, d.AddAlias("List@example.test", []string{"ALICE@example.test", "y@foreign.example"}))
	want := []Alias{{Alias: "list@example.test",
		Targets: []string{"alice@example.test", "x@foreign.example", "y@foreign.example"}}}
	if got := d.Aliases(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Aliases() = %v, want %v", got, want)
	}
	must(t, d.DelAlias("LIST@example.test"))
	if _, ok := d.Lookup("list@example.test"); ok {
		t.Fatalf("deleted alias still resolves")
	}
}

func TestDelDomain(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	for _, dom := range []string{"users.test", "aliases.test", "catchall.test", "target.test", "empty.test"} {
		must(t, d.AddDomain(dom))
	}
	must(t, d.AddUser("u@users.test", testPassword))
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddAlias("a@aliases.test", []string{"alice@example.test"}))
	must(t, d.AddAlias("@catchall.test", []string{"alice@example.test"}))
	must(t, d.AddAlias("fwd@example.test", []string{"someone@target.test"}))

	tests := []struct {
		domain string
		want   error
	}{
		{"example.test", ErrStatic},
		{"Example.Test.", ErrStatic},
		{"nowhere.test", ErrNotFound},
		{"users.test", ErrInUse},
		{"aliases.test", ErrInUse},
		{"catchall.test", ErrInUse},
		{"target.test", ErrInUse},
		{"EMPTY.test.", nil},
	}
	for _, tc := range tests {
		err := d.DelDomain(tc.domain)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("DelDomain(%q) = %v, want %v", tc.domain, err, tc.want)
		}
	}
	if d.IsLocalDomain("empty.test") {
		t.Errorf("empty.test still local after DelDomain")
	}
	if !d.IsLocalDomain("users.test") {
		t.Errorf("users.test lost after a refused DelDomain")
	}
	// Once emptied, the domain can go.
	must(t, d.DelUser("u@users.test"))
	must(t, d.DelDomain("users.test"))
	if _, ok := d.Lookup("u@users.test"); ok {
		t.Errorf("address in deleted domain still resolves")
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := store.Open(path, store.Options{})
	must(t, err)
	d, err := OpenDirectory(st, []string{"example.test"})
	must(t, err)
	must(t, d.AddDomain("runtime.test"))
	must(t, d.AddDomain("gone.test"))
	must(t, d.DelDomain("gone.test"))
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@runtime.test", testPassword))
	must(t, d.AddUser("temp@example.test", testPassword))
	must(t, d.DelUser("temp@example.test"))
	must(t, d.SetDisabled("bob@runtime.test", true))
	must(t, d.AddAlias("@runtime.test", []string{"alice@example.test"}))
	login := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	d.RecordLogin("alice@example.test", login)
	d.RecordLogin("alice@example.test", login.Add(10*time.Second)) // coalesced, needs Flush
	must(t, d.Flush())
	before := d.Users()
	must(t, st.Close())

	st2 := openStore(t, path)
	d2, err := OpenDirectory(st2, []string{"example.test"})
	must(t, err)
	if got, want := d2.Domains(), []string{"example.test", "runtime.test"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Domains after reopen = %v, want %v", got, want)
	}
	after := d2.Users()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("Users after reopen = %+v, want %+v", after, before)
	}
	if len(after) != 2 || !after[0].LastLogin.Equal(login.Add(10*time.Second)) || !after[1].Disabled {
		t.Errorf("Users after reopen = %+v: want alice with last login and bob disabled", after)
	}
	must(t, d2.Authenticate("alice@example.test", testPassword))
	if err := d2.Authenticate("bob@runtime.test", testPassword); !errors.Is(err, ErrDisabled) {
		t.Errorf("bob after reopen: %v, want ErrDisabled", err)
	}
	if got, ok := d2.Lookup("x@runtime.test"); !ok || !reflect.DeepEqual(got, []string{"alice@example.test"}) {
		t.Errorf("catch-all after reopen = %v, %v", got, ok)
	}
	// A static domain dropped from the config is no longer local.
	d3, err := OpenDirectory(st2, nil)
	must(t, err)
	if d3.IsLocalDomain("example.test") {
		t.Errorf("example.test local without being configured")
	}
}

// TestRecordLoginPersistedByFlush: a login is recorded in memory at once
// and written by Flush (PersistLogins' periodic write), never on the
// login's path; an older login never overwrites a newer one.
func TestRecordLoginPersistedByFlush(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	steps := []struct {
		when       time.Time
		flush      bool
		wantMemory time.Time
		wantStored time.Time
	}{
		{t0, false, t0, time.Time{}},
		{t0, true, t0, t0},
		{t0.Add(30 * time.Second), false, t0.Add(30 * time.Second), t0},
		{t0.Add(10 * time.Second), true, t0.Add(30 * time.Second), t0.Add(30 * time.Second)}, // older: ignored
	}
	for i, s := range steps {
		d.RecordLogin("Alice@example.test", s.when)
		if s.flush {
			must(t, d.Flush())
		}
		if got := d.Users()[0].LastLogin; !got.Equal(s.wantMemory) {
			t.Errorf("step %d: memory LastLogin = %v, want %v", i, got, s.wantMemory)
		}
		if got := storedUser(t, d, "alice@example.test").LastLogin; !got.Equal(s.wantStored) {
			t.Errorf("step %d: stored LastLogin = %v, want %v", i, got, s.wantStored)
		}
	}
	d.RecordLogin("nobody@example.test", t0) // unknown: no effect, no panic
}

func TestConcurrentUse(t *testing.T) {
	d, _ := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				a := fmt.Sprintf("a%d-%d@example.test", w, i)
				if err := d.AddAlias(a, []string{"alice@example.test"}); err != nil {
					t.Errorf("AddAlias: %v", err)
					return
				}
				if got, ok := d.Lookup(a); !ok || got[0] != "alice@example.test" {
					t.Errorf("Lookup(%s) = %v, %v", a, got, ok)
					return
				}
				d.RecordLogin("alice@example.test", time.Now())
				_ = d.Users()
				_ = d.Aliases()
			}
		}()
	}
	wg.Wait()
	if got := len(d.Aliases()); got != 200 {
		t.Fatalf("Aliases() has %d entries, want 200", got)
	}
}

func TestOpenDirectoryRejectsBadConfig(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if _, err := OpenDirectory(st, []string{"good.test", "bad domain"}); err == nil {
		t.Fatalf("OpenDirectory accepted an invalid configured domain")
	}
	if _, err := OpenDirectory(nil, nil); err == nil {
		t.Fatalf("OpenDirectory accepted a nil store")
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d, err := OpenDirectory(st, []string{"example.test"})
	if err != nil {
		b.Fatal(err)
	}
	if err := d.AddUser("alice@example.test", testPassword); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := d.Authenticate("alice@example.test", testPassword); err != nil {
			b.Fatal(err)
		}
	}
}

func TestQuota(t *testing.T) {
	d, path := newDirectory(t, "example.test")
	must(t, d.AddUser("alice@example.test", testPassword))
	must(t, d.AddUser("bob@example.test", testPassword))
	must(t, d.AddUser("carol@example.test", testPassword))
	must(t, d.SetQuota("Bob@Example.test", 5<<20))
	must(t, d.SetQuota("carol@example.test", QuotaNone))
	if err := d.SetQuota("nobody@example.test", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("quota of an unknown user: %v", err)
	}
	if err := d.SetQuota("alice@example.test", -2); err == nil {
		t.Error("quota -2 accepted")
	}
	const def = 1 << 30
	check := func(d *Directory) {
		t.Helper()
		for addr, want := range map[string]int64{
			"alice@example.test": def, "bob@example.test": 5 << 20, "carol@example.test": 0, "stranger@example.test": def,
		} {
			if got := d.QuotaOf(addr, def); got != want {
				t.Errorf("QuotaOf(%s) = %d, want %d", addr, got, want)
			}
		}
	}
	check(d)
	// Stored, not only in memory.
	if r := storedUser(t, d, "bob@example.test"); r.Quota != 5<<20 {
		t.Errorf("stored quota %d", r.Quota)
	}
	for _, u := range d.Users() {
		if u.Address == "bob@example.test" && u.Quota != 5<<20 {
			t.Errorf("Users() quota %d", u.Quota)
		}
	}
	_ = path
}
