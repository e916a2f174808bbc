package mailbox

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDeliver(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	m := &Maildir{Root: root}
	header := []byte("From: a@example.test\r\nSubject: hi\r\n\r\n")
	body := []byte("line 1\r\nline 2\r\n\x00binary\xff\r\n")

	path, err := m.Deliver("Alice@Example.TEST.", "M42R0", header, body)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	base := filepath.Join(root, "example.test", "alice")
	if dir := filepath.Dir(path); dir != filepath.Join(base, "new") {
		t.Fatalf("delivered into %s, want %s/new", dir, base)
	}
	if !regexp.MustCompile(`^[0-9]+\.M42R0\.[^/:]+$`).MatchString(filepath.Base(path)) {
		t.Fatalf("file name %q does not follow <secs>.<uniq>.<host>", filepath.Base(path))
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(header) + string(body); string(got) != want {
		t.Fatalf("content = %q, want %q", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(base, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", sub, fi, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(base, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty after delivery: %v", ents)
	}

	// A second delivery to the existing Maildir.
	path2, err := m.Deliver("alice@example.test", "M43R0", nil, []byte("x"))
	if err != nil || path2 == path {
		t.Fatalf("second Deliver = %q, %v", path2, err)
	}
	// Same unique part in the same second: refused, never overwritten.
	if p, err := m.Deliver("alice@example.test", "M43R0", nil, []byte("y")); err == nil {
		if filepath.Base(p) == filepath.Base(path2) {
			t.Fatalf("redelivery replaced %s", p)
		}
	}
	if b, _ := os.ReadFile(path2); string(b) != "x" {
		t.Fatalf("first message with uniq M43R0 changed to %q", b)
	}
}

func TestDelivered(t *testing.T) {
	m := &Maildir{Root: t.TempDir()}
	if m.Delivered("alice@example.test", "M1R1", -1) {
		t.Fatalf("Delivered true for a mailbox that does not exist")
	}
	path, err := m.Deliver("alice@example.test", "M1R1", []byte("h\r\n\r\n"), []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	// A client moves it to cur/ with flags.
	cur := filepath.Join(filepath.Dir(filepath.Dir(path)), "cur", filepath.Base(path)+":2,S")
	if err := os.Rename(path, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Deliver("alice@example.test", "M2R1", nil, []byte("b")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr, uniq string
		want       bool
	}{
		{"alice@example.test", "M1R1", true}, // in cur/
		{"ALICE@example.test", "M2R1", true}, // in new/
		{"alice@example.test", "M1R", false}, // prefix only
		{"alice@example.test", "1R1", false}, // suffix only
		{"alice@example.test", "M1R10", false},
		{"bob@example.test", "M1R1", false},
		{"alice@example.test", "", false},
		{"alice@example.test", "M1.R1", false},
		{"../alice@example.test", "M1R1", false},
	}
	for _, tc := range tests {
		if got := m.Delivered(tc.addr, tc.uniq, -1); got != tc.want {
			t.Errorf("Delivered(%q, %q) = %v, want %v", tc.addr, tc.uniq, got, tc.want)
		}
	}
}

func TestDeliverRefusesTraversal(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "mail")
	m := &Maildir{Root: root}
	tests := []struct {
		name, addr, uniq string
	}{
		{"dotdot local", "..@example.test", "M1R0"},
		{"dot local", ".@example.test", "M1R0"},
		{"slash in local", "../../etc@example.test", "M1R0"},
		{"backslash in local", `a\b@example.test`, "M1R0"},
		{"slash local", "a/b@example.test", "M1R0"},
		{"empty local", "@example.test", "M1R0"},
		{"nul in local", "a\x00b@example.test", "M1R0"},
		{"dotdot domain", "alice@..", "M1R0"},
		{"slash domain", "alice@../etc", "M1R0"},
		{"domain with slash", "alice@a/b", "M1R0"},
		{"no at", "alice", "M1R0"},
		{"uniq with slash", "alice@example.test", "../../x"},
		{"uniq with dot", "alice@example.test", "M1.R0"},
		{"uniq with colon", "alice@example.test", "M1:2,S"},
		{"empty uniq", "alice@example.test", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := m.Deliver(tc.addr, tc.uniq, nil, []byte("evil")); err == nil {
				t.Fatalf("Deliver(%q, %q) succeeded: %s", tc.addr, tc.uniq, p)
			}
		})
	}
	// Nothing was written anywhere.
	err := filepath.Walk(parent, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			t.Errorf("unexpected file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Maildir{}).Deliver("alice@example.test", "M1R0", nil, nil); err == nil ||
		!strings.Contains(err.Error(), "root") {
		t.Fatalf("Deliver with empty Root = %v, want an error", err)
	}
}

func TestMain(m *testing.M) {
	// Keep test output readable: the directory logs every change.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// TestDeliverReplacesCrashLeftover: a crash between writing tmp/NAME and
// renaming it leaves a partial file; the retry must replace it, not fail.
func TestDeliverReplacesCrashLeftover(t *testing.T) {
	m := &Maildir{Root: t.TempDir()}
	if _, err := m.Deliver("x@example.test", "Mfirst", nil, []byte("warm up\r\n")); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(m.Root, "example.test", "x")
	// Plant leftovers for the next few seconds so the retry's name collides.
	now := time.Now().Unix()
	for s := now; s < now+3; s++ {
		name := fmt.Sprintf("%d.%s.%s", s, "Mleft", maildirHost())
		if err := os.WriteFile(filepath.Join(base, "tmp", name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path, err := m.Deliver("x@example.test", "Mleft", []byte("H: v\r\n"), []byte("\r\nfull body\r\n"))
	if err != nil {
		t.Fatalf("deliver over a crash leftover: %v", err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "H: v\r\n\r\nfull body\r\n" {
		t.Errorf("delivered %q", got)
	}
}

// TestDeliverOnce: a message that reached the mailbox before a crash is
// not delivered again on the retry after restart; a torn copy (wrong
// size) is replaced; without maybeDone no scan happens.
func TestDeliverOnce(t *testing.T) {
	md := &Maildir{Root: t.TempDir(), PerFileSync: true}
	body := []byte("Subject: x\r\n\r\nbody\r\n")
	count := func() int {
		ents, _ := os.ReadDir(filepath.Join(md.Root, "ours.test", "bob", "new"))
		return len(ents)
	}
	if err := md.DeliverOnce("bob@ours.test", "Q1", "a@b.test", body, false); err != nil {
		t.Fatal(err)
	}
	if err := md.DeliverOnce("bob@ours.test", "Q1", "a@b.test", body, true); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d files after a retry of a delivered message, want 1", n)
	}
	// A torn file from a crash: wrong size, replaced by a full copy.
	ents, _ := os.ReadDir(filepath.Join(md.Root, "ours.test", "bob", "new"))
	p := filepath.Join(md.Root, "ours.test", "bob", "new", ents[0].Name())
	if err := os.Truncate(p, 5); err != nil {
		t.Fatal(err)
	}
	if err := md.DeliverOnce("bob@ours.test", "Q1", "a@b.test", body, true); err != nil {
		t.Fatal(err)
	}
	ents, _ = os.ReadDir(filepath.Join(md.Root, "ours.test", "bob", "new"))
	if len(ents) != 1 {
		t.Fatalf("%d files after replacing a torn copy, want 1", len(ents))
	}
	b, _ := os.ReadFile(filepath.Join(md.Root, "ours.test", "bob", "new", ents[0].Name()))
	if !strings.HasSuffix(string(b), string(body)) || !strings.HasPrefix(string(b), "Return-Path: <a@b.test>\r\nDelivered-To: bob@ours.test\r\n") {
		t.Errorf("delivered file: %q", b)
	}
	// Another queue id is another message.
	if err := md.DeliverOnce("bob@ours.test", "Q2", "a@b.test", body, true); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d files, want 2", n)
	}
}
