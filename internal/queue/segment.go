package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const segExt = ".wal"

// segment is one log file. Only the head segment is written to; the others
// are read-only and deleted oldest-first once no live message has its body
// in them.
type segment struct {
	seq  uint64
	path string
	f    *os.File
	// size is the number of valid bytes; guarded by Queue.wmu.
	size int64
	// live and liveBytes count the messages (and their Add record bytes)
	// whose body is in this segment, including Adds appended but not yet
	// in the index. A non-head segment only ever goes down.
	live      atomic.Int64
	liveBytes atomic.Int64
}

func segName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segExt) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// listSegments returns the sequence numbers of the segment files in dir,
// oldest first.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		if seq, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

func createSegment(dir string, seq uint64) (*segment, error) {
	path := filepath.Join(dir, segName(seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	return &segment{seq: seq, path: path, f: f}, nil
}

// fdatasync flushes a file's data (and the size needed to read it back).
// Going through SyscallConn keeps the descriptor referenced during the call.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), serr)
	}
	return nil
}

// syncDir makes a created or removed directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// lockDir takes an exclusive advisory lock so that two processes never
// append to the same log. The kernel drops it when the process dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock queue dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock queue dir %s: in use by another queue", dir)
		}
		return nil, fmt.Errorf("lock queue dir %s: %w", dir, err)
	}
	return f, nil
}
