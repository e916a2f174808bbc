package mailbox

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPermGroupAndMode: with [mailbox] group and mode set, every file and
// directory the store creates — by delivery, APPEND, folder creation,
// subscriptions, uidlist and keyword writes — has that group and mode,
// whatever the process umask, and directories carry setgid.
func TestPermGroupAndMode(t *testing.T) {
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 54321 // root may give any group
	} else if gs, _ := os.Getgroups(); len(gs) > 0 {
		gid = gs[len(gs)-1]
	}
	old := syscall.Umask(0o077) // as under systemd's UMask=0077
	defer syscall.Umask(old)

	s, root := newTestStore(t, StoreOptions{Perm: Perm{Mode: 0o640, GID: gid, SetGroup: true}})
	if err := s.DeliverOnce("alice@example.test", "Q1", "bob@example.test", []byte("Subject: hi\r\n\r\nbody\r\n"), false); err != nil {
		t.Fatal(err)
	}
	u, err := s.User("alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Create("Work.Reports"); err != nil {
		t.Fatal(err)
	}
	if err := u.Subscribe("Work", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.Append("Work", strings.NewReader("Subject: a\r\n\r\nx\r\n"), []string{"$Label1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	f, err := u.Open("INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	files, dirs := 0, 0
	err = filepath.WalkDir(filepath.Join(root, "example.test"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Gid) != gid {
			t.Errorf("%s: group %d, want %d", p, st.Gid, gid)
		}
		want := fs.FileMode(0o640)
		got := fi.Mode() & (fs.ModePerm | fs.ModeSetgid)
		if d.IsDir() {
			want = 0o750 | fs.ModeSetgid
			dirs++
		} else {
			files++
		}
		if got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4 || dirs < 8 {
		t.Errorf("walked %d files and %d directories; the test created more", files, dirs)
	}
}

// TestPermDefaultPrivate: without options everything stays 0600/0700.
func TestPermDefaultPrivate(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	if err := s.DeliverOnce("alice@example.test", "Q1", "bob@example.test", []byte("Subject: hi\r\n\r\nbody\r\n"), false); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(filepath.Join(root, "example.test"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := os.Lstat(p)
		want := fileMode
		if d.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want || fi.Mode()&fs.ModeSetgid != 0 {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
		return nil
	})
}

// TestEnsurePerm: an existing private tree is opened up to the group once
// (the stamp keeps later starts from walking it), and made private again
// when the option is removed.
func TestEnsurePerm(t *testing.T) {
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 54321
	}
	s, root := newTestStore(t, StoreOptions{})
	if err := s.DeliverOnce("alice@example.test", "Q1", "bob@example.test", []byte("Subject: hi\r\n\r\nbody\r\n"), false); err != nil {
		t.Fatal(err)
	}
	msg := func() string {
		m, _ := filepath.Glob(filepath.Join(root, "example.test", "alice", "new", "*"))
		if len(m) != 1 {
			t.Fatalf("messages: %v", m)
		}
		return m[0]
	}
	check := func(path string, want fs.FileMode, wantGID int) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeSetgid); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
		if g := int(fi.Sys().(*syscall.Stat_t).Gid); wantGID >= 0 && g != wantGID {
			t.Errorf("%s: group %d, want %d", path, g, wantGID)
		}
	}
	open := Perm{Mode: 0o640, GID: gid, SetGroup: true}
	if err := EnsurePerm(root, open); err != nil {
		t.Fatal(err)
	}
	check(msg(), 0o640, gid)
	check(filepath.Join(root, "example.test", "alice", "new"), 0o750|fs.ModeSetgid, gid)
	// Unchanged options: the stamp matches and nothing is walked.
	os.Chmod(msg(), 0o600)
	if err := EnsurePerm(root, open); err != nil {
		t.Fatal(err)
	}
	check(msg(), 0o600, -1)
	// Options removed: private again.
	if err := EnsurePerm(root, Perm{}); err != nil {
		t.Fatal(err)
	}
	check(msg(), 0o600, -1)
	check(filepath.Join(root, "example.test", "alice", "new"), 0o700, -1)
}
