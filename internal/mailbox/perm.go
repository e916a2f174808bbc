package mailbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Perm says how the mailbox code creates the files and directories of the
// Maildir tree ([mailbox] group and mode), so that another reader — a
// Dovecot beside mamori, a backup agent — can be let in through a group
// instead of running as root. The zero value is private to the owner:
// files 0600, directories 0700, the creating process's group.
type Perm struct {
	// Mode of message and index files; 0 means 0600. Directories get the
	// same bits plus search (x) wherever read is allowed.
	Mode fs.FileMode
	// GID, when SetGroup is true, is the group of every file and
	// directory; directories then carry the setgid bit, so files other
	// programs create in them inherit the group too.
	GID      int
	SetGroup bool
}

// perm is Perm resolved into what the create calls need.
type perm struct {
	file, dir fs.FileMode
	gid       int  // -1: leave the group alone
	fix       bool // chmod/chown after creating (the umask may strip bits)
}

// The modes of everything the mailbox code creates under the mail root by
// default; tests compare against them.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

var defaultPerm = perm{file: fileMode, dir: dirMode, gid: -1}

// resolve turns p into a perm.
func (p Perm) resolve() perm {
	if p.Mode == 0 && !p.SetGroup {
		return defaultPerm
	}
	r := perm{file: fileMode, gid: -1, fix: true}
	if p.Mode != 0 {
		r.file = p.Mode.Perm()
	}
	r.dir = r.file | (r.file&0o444)>>2
	if p.SetGroup {
		r.gid = p.GID
		r.dir |= fs.ModeSetgid
	}
	return r
}

// create makes a new file at path exclusively (O_EXCL) with p's mode and
// group.
func (p perm) create(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, p.file)
	if err != nil || !p.fix {
		return f, err
	}
	if err := p.apply(f.Chmod, f.Chown, p.file); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("set mode of %s: %w", path, err)
	}
	return f, nil
}

// mkdir creates one directory with p's mode and group; like os.Mkdir it
// fails with fs.ErrExist when the directory is there.
func (p perm) mkdir(dir string) error {
	if err := os.Mkdir(dir, p.dir.Perm()); err != nil || !p.fix {
		return err
	}
	chmod := func(m fs.FileMode) error { return os.Chmod(dir, m) }
	chown := func(uid, gid int) error { return os.Lchown(dir, uid, gid) }
	if err := p.apply(chmod, chown, p.dir); err != nil {
		return fmt.Errorf("set mode of %s: %w", dir, err)
	}
	return nil
}

// apply sets the group (first: chown may clear setgid) and then the mode.
func (p perm) apply(chmod func(fs.FileMode) error, chown func(int, int) error, m fs.FileMode) error {
	if p.gid >= 0 {
		if err := chown(-1, p.gid); err != nil {
			return err
		}
	}
	return chmod(m)
}

// mkdirAll creates dir and any missing parents with p's mode and group.
func (p perm) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := p.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := p.mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// permStamp records, in the mail root, the group and mode the tree was
// last given, so a changed [mailbox] group or mode is applied to the
// existing tree once, not walked at every start.
const permStamp = ".mamori-perm"

// EnsurePerm gives root and everything under it p's group and mode when
// they differ from what the tree was last given (nothing is walked when
// they match). With the zero Perm, a tree once opened up is made private
// again.
func EnsurePerm(root string, p Perm) error {
	r := p.resolve()
	want := fmt.Sprintf("file=%#o dir=%#o gid=%d\n", uint32(r.file), uint32(r.dir), r.gid)
	stamp := filepath.Join(root, permStamp)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil
	}
	if err := r.mkdirAll(root); err != nil {
		return err
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a message expunged meanwhile
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 || path == stamp {
			return nil
		}
		m := r.file
		if d.IsDir() {
			m = r.dir
		}
		chmod := func(m fs.FileMode) error { return os.Chmod(path, m) }
		chown := func(uid, gid int) error { return os.Lchown(path, uid, gid) }
		if err := r.apply(chmod, chown, m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("set mode of %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeAtomic(defaultPerm, stamp, []byte(want))
}
