package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Space answers "does one more message fit?" for the SMTP stage: the
// queue's own size cap and the free space of its filesystem (statfs,
// re-read at most once a second). Refusing at MAIL with 452 4.3.1 keeps a
// full disk from ever meeting a half-written queue record.
type Space struct {
	q        *Queue
	maxBytes int64
	minFree  int64

	mu   sync.Mutex
	at   time.Time
	free int64
}

// Space returns the fit check for a queue holding at most maxBytes and
// keeping minFree bytes free on its filesystem (0: no such limit).
func (q *Queue) Space(maxBytes, minFree int64) *Space {
	return &Space{q: q, maxBytes: maxBytes, minFree: minFree}
}

// Check reports why a message of size bytes does not fit, or nil.
func (s *Space) Check(size int64) error {
	if s.maxBytes > 0 {
		if used := s.q.Bytes(); used+size > s.maxBytes {
			return fmt.Errorf("queue holds %d bytes, cap %d", used, s.maxBytes)
		}
	}
	if s.minFree > 0 {
		free, err := s.freeBytes()
		if err == nil && free-size < s.minFree {
			return fmt.Errorf("%d bytes free on the queue filesystem, want %d more than the message", free, s.minFree)
		}
	}
	return nil
}

func (s *Space) freeBytes() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) < time.Second {
		return s.free, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.q.dir, &st); err != nil {
		return 0, err
	}
	s.free = int64(st.Bavail) * int64(st.Bsize)
	s.at = time.Now()
	return s.free, nil
}

// ExpireHeld deletes held mail older than retention, at once and then
// every ten minutes until ctx ends, logging how many went and telling
// record (the evidence journal). A retention of 0 keeps held mail.
func (q *Queue) ExpireHeld(ctx context.Context, retention time.Duration, record func(n int), log *slog.Logger) {
	if retention <= 0 {
		return
	}
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		n, err := q.Delete(Filter{State: StateHeld, OlderThan: retention})
		switch {
		case err != nil:
			log.Error("held mail expiry", "err", err.Error())
		case n > 0:
			log.Info("held mail expired", "count", n, "older_than", retention.String(), "by", "retention policy")
			record(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
