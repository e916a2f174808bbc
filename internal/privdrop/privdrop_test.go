package privdrop

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwnStaysInside: Own chowns what is under dir, never what a symlink
// in it points to outside.
func TestOwnStaysInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := t.TempDir()
	dir, outside := filepath.Join(base, "data"), filepath.Join(base, "etc")
	for _, d := range []string{filepath.Join(dir, "sub"), outside} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(outside, "shadow"), []byte("x"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "link"))
	os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(dir, "sub", "shadowlink"))
	id := Identity{Name: "test", UID: 4242, GID: 4242}
	if err := Own(dir, id, nil); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) int {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return int(fi.Sys().(*syscall.Stat_t).Uid)
	}
	for _, p := range []string{dir, filepath.Join(dir, "sub"), filepath.Join(dir, "sub", "f"), filepath.Join(dir, "link")} {
		if owner(p) != 4242 {
			t.Errorf("%s not given to the service user", p)
		}
	}
	for _, p := range []string{outside, filepath.Join(outside, "shadow")} {
		if owner(p) != 0 {
			t.Errorf("%s outside data_dir was chowned", p)
		}
	}
}

func TestLookupRefusesRootGroup(t *testing.T) {
	if _, err := Lookup("nobody", "root"); err == nil {
		t.Error("group root accepted")
	}
	if _, err := Lookup("nobody", "", "root"); err == nil {
		t.Error("extra group root accepted")
	}
}
