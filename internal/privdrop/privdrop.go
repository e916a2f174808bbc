// Package privdrop lets `mamori serve` start as root only for what needs
// root — binding ports below 1024 and reading a root-only key — and run
// everything else as an unprivileged user ([server] user and group).
//
// The switch is done the way Postfix's and OpenSSH's privilege separation
// do it: supplementary groups first, then the group, then the user, then
// PR_SET_NO_NEW_PRIVS where the runtime allows it, and a check that root
// cannot be regained. Since Go 1.16 setuid(2)/setgid(2) apply to every
// thread of the process on Linux (with cgo, glibc does the same).
// golang.org/x/sys/unix is used for prctl, which package syscall lacks.
package privdrop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is the user, group and supplementary groups to run as.
type Identity struct {
	Name   string
	UID    int
	GID    int
	Groups []int // supplementary groups: the user's own, and any extra ones
}

// Lookup resolves a user name (and optionally a group name; empty means
// the user's primary group) from the system's user database. extra names
// groups the process must also be in (e.g. [mailbox] group, so it may
// give files that group).
func Lookup(userName, groupName string, extra ...string) (Identity, error) {
	u, err := user.Lookup(userName)
	if err != nil {
		return Identity{}, fmt.Errorf("user %q: %w", userName, err)
	}
	id := Identity{Name: u.Username}
	if id.UID, err = strconv.Atoi(u.Uid); err != nil {
		return Identity{}, fmt.Errorf("user %q: uid %q: %w", userName, u.Uid, err)
	}
	if id.GID, err = strconv.Atoi(u.Gid); err != nil {
		return Identity{}, fmt.Errorf("user %q: gid %q: %w", userName, u.Gid, err)
	}
	if groupName != "" {
		if id.GID, err = LookupGroup(groupName); err != nil {
			return Identity{}, err
		}
	}
	if id.UID == 0 {
		return Identity{}, fmt.Errorf("user %q is root: name an unprivileged user", userName)
	}
	if id.GID == 0 {
		return Identity{}, fmt.Errorf("group of %q is root (gid 0): name an unprivileged group", userName)
	}
	ids, err := u.GroupIds()
	if err != nil {
		ids = nil // no supplementary groups known: run with the primary one only
	}
	for _, s := range ids {
		if g, err := strconv.Atoi(s); err == nil && g != 0 {
			id.Groups = append(id.Groups, g)
		}
	}
	for _, name := range extra {
		g, err := LookupGroup(name)
		if err != nil {
			return Identity{}, err
		}
		if g == 0 {
			return Identity{}, fmt.Errorf("group %q is root (gid 0): name an unprivileged group", name)
		}
		id.Groups = append(id.Groups, g)
	}
	if !slices.Contains(id.Groups, id.GID) {
		id.Groups = append(id.Groups, id.GID)
	}
	slices.Sort(id.Groups)
	id.Groups = slices.Compact(id.Groups)
	return id, nil
}

// LookupGroup returns the id of a group name (or of a numeric id).
func LookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if n, nerr := strconv.Atoi(name); nerr == nil && n >= 0 {
			return n, nil
		}
		return 0, fmt.Errorf("group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q: gid %q: %w", name, g.Gid, err)
	}
	return gid, nil
}

// ErrNotRoot: the process is neither root nor already the wanted user.
var ErrNotRoot = errors.New("only root can switch to another user")

// Drop switches the whole process to id for good. Already running as
// id.UID (a service manager started us as that user) is fine: nothing
// changes. Another non-root user is ErrNotRoot.
func Drop(id Identity) error {
	if os.Geteuid() == id.UID && os.Getuid() == id.UID {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as %q: %w (running as uid %d)", id.Name, ErrNotRoot, os.Geteuid())
	}
	if err := syscall.Setgroups(id.Groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(id.GID, id.GID, id.GID); err != nil {
		return fmt.Errorf("setresgid %d: %w", id.GID, err)
	}
	if err := syscall.Setresuid(id.UID, id.UID, id.UID); err != nil {
		return fmt.Errorf("setresuid %d: %w", id.UID, err)
	}
	// no_new_privs is per thread: set on every thread where the runtime
	// can (a binary without cgo); with cgo the uid switch above is still
	// process-wide (glibc broadcasts it), and the systemd unit sets
	// NoNewPrivileges for the whole service.
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 && e != syscall.ENOTSUP {
		return fmt.Errorf("no_new_privs: %w", e)
	}
	// Prove it: root must be gone for good.
	if syscall.Setuid(0) == nil || os.Geteuid() != id.UID || os.Getegid() != id.GID {
		return errors.New("privileges could not be dropped for good")
	}
	return nil
}

// Own makes id the owner of dir and of everything under it that is not
// already its, so that data a root-run command or an older root-run
// server created stays usable after the switch. skip, when it returns
// true for a directory already owned by id, keeps the walk out of it (the
// mail tree is large and owned at creation).
//
// The walk runs as root over a tree the service user can write to, so it
// goes through an os.Root: no path — even a directory swapped for a
// symlink between listing and opening it — can lead it outside dir, and
// symlinks themselves are never followed.
func Own(dir string, id Identity, skip func(path string) bool) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := root.Lstat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if int(st.Uid) == id.UID {
			if fi.IsDir() && p != "." && skip != nil && skip(filepath.Join(dir, p)) {
				return fs.SkipDir
			}
			return nil
		}
		gid := int(st.Gid)
		if gid == 0 {
			gid = id.GID
		}
		if err := root.Lchown(p, id.UID, gid); err != nil {
			return fmt.Errorf("chown %s: %w", filepath.Join(dir, p), err)
		}
		return nil
	})
}
