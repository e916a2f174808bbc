package mailbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dot-lock timing, as Dovecot's maildir uidlist lock: a lock older than
// lockStale is a crashed holder's and is taken over; a live holder is
// waited for at most lockWait. Variables so tests can shorten them.
var (
	lockWait  = 10 * time.Second
	lockStale = 2 * time.Minute
)

// errLockTimeout is returned when another process holds a dot-lock for
// longer than lockWait.
var errLockTimeout = errors.New("lock held by another process")

// dotlock is a Dovecot-style lock: PATH.lock created with O_EXCL. The new
// contents of PATH are written into the lock file and renamed over PATH,
// which both publishes them atomically and releases the lock.
type dotlock struct {
	path string // the locked file, not the .lock
	f    *os.File
}

// lockFile takes PATH.lock, waiting for a live holder at most lockWait and
// removing a lock older than lockStale.
func lockFile(p perm, path string) (*dotlock, error) {
	lp := path + ".lock"
	deadline := time.Now().Add(lockWait)
	delay := time.Millisecond
	for {
		f, err := p.create(lp)
		if err == nil {
			return &dotlock{path: path, f: f}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if fi, serr := os.Stat(lp); serr == nil && time.Since(fi.ModTime()) > lockStale {
			// The holder died: take the lock over.
			_ = os.Remove(lp)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock %s: %w", path, errLockTimeout)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// commit writes data as the new contents of the locked file (write, fsync,
// rename over it) and releases the lock.
func (l *dotlock) commit(data []byte) error {
	lp := l.path + ".lock"
	_, err := l.f.Write(data)
	if err == nil {
		err = l.f.Sync()
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err == nil {
		err = os.Rename(lp, l.path)
	}
	if err != nil {
		_ = os.Remove(lp)
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	// The rename itself must survive a crash: an older uidlist coming
	// back would give its UIDs to other messages.
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// release drops the lock without changing the file. It is a no-op after
// commit.
func (l *dotlock) release() {
	if l.f == nil {
		return
	}
	_ = l.f.Close()
	l.f = nil
	_ = os.Remove(l.path + ".lock")
}

// writeAtomic replaces path with data through a temporary file in the same
// directory (write, fsync, rename).
func writeAtomic(p perm, path string, data []byte) error {
	tmp := fmt.Sprintf("%s.tmp.%s", path, randHex(6))
	if err := writeFile(p, tmp, true, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// stamp identifies one version of a file cheaply (rewritten by rename:
// inode; appended to: size and mtime).
type stamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func stampOf(fi fs.FileInfo) stamp {
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	hostOnce   = sync.OnceValue(maildirHost)
	uniqSerial atomic.Uint64
)

// newBase returns a fresh Maildir base name for a message of size octets:
// "<unix>.M<usec>P<pid>Q<serial>R<rand>.<host>,S=<size>", Dovecot's style.
func newBase(size int64) string {
	now := time.Now()
	return fmt.Sprintf("%d.M%dP%dQ%dR%s.%s,S=%d", now.Unix(), now.Nanosecond()/1000,
		os.Getpid(), uniqSerial.Add(1), randHex(4), hostOnce(), size)
}

// readNames returns the names in dir (nil, nil when dir is missing).
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	return names, nil
}

// ensureSubdirs creates dir's tmp, new and cur (dir must exist).
func ensureSubdirs(p perm, dir string) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := mkdirDurable(p, filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	return nil
}

// renameNoReplace renames oldpath to newpath unless newpath exists
// (fs.ErrExist). A missing oldpath is fs.ErrNotExist.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE on this file system: check, then rename.
		if _, err := os.Lstat(newpath); err == nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
		}
		return os.Rename(oldpath, newpath)
	}
	return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
}
