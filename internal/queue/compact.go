package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

const (
	maintainInterval = time.Minute
	// One compaction batch moves at most this much while holding the index
	// lock, so deliveries and enqueues are never stalled for long.
	compactBatchMsgs  = 256
	compactBatchBytes = 4 << 20
)

func (q *Queue) kickMaintenance() {
	select {
	case q.compactKick <- struct{}{}:
	default:
	}
}

// maintainLoop deletes dead segments and compacts the oldest one, when
// kicked (rotation, removals) and once a minute.
func (q *Queue) maintainLoop() {
	defer q.bg.Done()
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-q.compactKick:
		case <-t.C:
		}
		if err := q.maintain(); err != nil {
			q.log.Error("queue: log maintenance failed", "err", err)
		}
	}
}

func (q *Queue) stopping() bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

// maintain deletes the oldest segments while no live message has its body
// in them, and compacts the oldest segment when little of it is alive.
// Deleting only oldest-first keeps the log a suffix of what was written
// (plus re-appended Adds, which carry a message's complete state), so an
// Update or Remove whose Add is gone is harmlessly ignored on replay, and a
// Remove is never lost while the Add it cancels survives.
//
// A pass is bounded: it visits each segment present at its start at most
// once.
func (q *Queue) maintain() error {
	q.maintMu.Lock()
	defer q.maintMu.Unlock()
	q.wmu.Lock()
	budget := len(q.segs)
	q.wmu.Unlock()
	for ; budget > 0 && !q.stopping(); budget-- {
		old, compact := q.oldestSegment()
		if old == nil {
			return nil
		}
		for old.live.Load() > 0 {
			if !compact || q.stopping() {
				return nil
			}
			moved, err := q.compactBatch(old)
			if err != nil {
				return err
			}
			if moved == 0 {
				return nil // only enqueues in flight left: try later
			}
		}
		if err := q.dropSegment(old); err != nil {
			return err
		}
	}
	return nil
}

// oldestSegment returns the oldest segment unless it is the head, and
// whether it is worth compacting: at most a quarter of it is still alive (so
// copying is cheap next to what it frees), or the whole log holds more than
// twice the live bytes plus two segments of slack (which bounds disk use
// when the oldest segment stays mostly alive for a long time).
func (q *Queue) oldestSegment() (*segment, bool) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if len(q.segs) < 2 {
		return nil, false
	}
	old := q.segs[0]
	var total, live int64
	for _, s := range q.segs {
		total += s.size
		live += s.liveBytes.Load()
	}
	compact := old.liveBytes.Load()*4 <= old.size || total > 2*live+2*q.opt.SegmentSize
	return old, compact
}

// compactBatch re-appends up to one batch of the live messages of old (an
// Add with their current Meta and body) to the head, and waits until that is
// durable. It returns how many messages it looked at.
func (q *Queue) compactBatch(old *segment) (int, error) {
	if err := q.begin(); err != nil {
		return 0, err
	}
	defer q.end()

	type pick struct {
		e        *entry
		off, len int64
	}
	var picks []pick
	var bytes int64
	q.mu.RLock()
	for _, e := range q.index {
		if e.seg != old {
			continue
		}
		picks = append(picks, pick{e, e.recOff, e.recLen})
		bytes += e.recLen
		if len(picks) >= compactBatchMsgs || bytes >= compactBatchBytes {
			break
		}
	}
	q.mu.RUnlock()
	if len(picks) == 0 {
		return 0, nil
	}

	// Read bodies without the index lock. Only maintenance moves bodies or
	// closes non-head segments, and it is serialized by maintMu, so these
	// locations stay valid.
	bodies := make([][]byte, len(picks))
	unreadable := make([]bool, len(picks))
	var broken []*entry
	for i, p := range picks {
		b, err := readBody(old, p.off, p.len)
		if errors.Is(err, errCorrupt) {
			unreadable[i] = true
			broken = append(broken, p.e)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("compact: %w", err)
		}
		bodies[i] = b
	}
	if len(broken) > 0 {
		if err := q.dropUnreadable(old, broken); err != nil {
			return 0, err
		}
	}

	q.mu.Lock()
	var recs [][]byte
	var moved []*entry
	for i, p := range picks {
		e := p.e
		if unreadable[i] || q.index[e.meta.ID] != e || e.seg != old {
			continue // removed meanwhile
		}
		data, err := json.Marshal(e.meta) // fitted in an Update already
		if err != nil || len(data) > maxMetaLen {
			q.mu.Unlock()
			return 0, fmt.Errorf("compact: encode meta of %s (%d bytes): %v", e.meta.ID, len(data), err)
		}
		recs = append(recs, encodeRecord(recAdd, e.meta.ID, data, bodies[i]))
		moved = append(moved, e)
	}
	if len(recs) == 0 {
		q.mu.Unlock()
		return len(picks), nil
	}
	q.wmu.Lock()
	locs, seq, err := q.appendLocked(recs)
	q.wmu.Unlock()
	if err != nil {
		q.mu.Unlock()
		return 0, fmt.Errorf("compact: %w", err)
	}
	for i, e := range moved {
		old.live.Add(-1)
		old.liveBytes.Add(-e.recLen)
		e.seg, e.recOff, e.recLen = locs[i].seg, locs[i].off, int64(len(recs[i]))
	}
	q.mu.Unlock()
	// old is deleted only after the copies are durable.
	if err := q.waitDurable(seq); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	q.log.Debug("queue: compacted", "segment", old.path, "messages", len(moved))
	return len(picks), nil
}

// dropSegment deletes old if it is still the oldest, non-head segment and no
// live message has its body in it.
func (q *Queue) dropSegment(old *segment) error {
	if q.dropBroken {
		return nil
	}
	q.wmu.Lock()
	if len(q.segs) < 2 || q.segs[0] != old || old.live.Load() != 0 {
		q.wmu.Unlock()
		return nil
	}
	q.segs = q.segs[1:]
	q.wmu.Unlock()

	q.syncMu.Lock()
	cerr := old.f.Close()
	q.syncMu.Unlock()
	if cerr != nil {
		q.log.Warn("queue: close dead segment", "segment", old.path, "err", cerr)
	}
	if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		// Deleting a newer segment now could drop the Remove records that
		// cancel Adds in this one: stop deleting until a restart.
		q.dropBroken = true
		return fmt.Errorf("delete dead segment (segment deletion disabled until restart): %w", err)
	}
	if !q.opt.NoSync {
		if err := syncDir(q.dir); err != nil {
			return err
		}
	}
	q.log.Debug("queue: deleted dead segment", "segment", old.path)
	return nil
}

// dropUnreadable handles messages whose record in old stopped verifying
// after replay (the disk damaged it since): the body is gone, so they are
// removed from the queue, loudly, and a copy of the segment is kept in
// damaged/ first. Keeping them would pin the segment forever.
func (q *Queue) dropUnreadable(old *segment, ents []*entry) error {
	saved, err := saveDamaged(q.dir, old.path, q.now(), q.opt.NoSync)
	if err != nil {
		// Without the evidence kept, leave everything as it is.
		return fmt.Errorf("compact: damaged record in %s: %w", old.path, err)
	}
	q.mu.Lock()
	var recs [][]byte
	var gone []*entry
	var ids []string
	for _, e := range ents {
		if q.index[e.meta.ID] != e || e.seg != old {
			continue
		}
		recs = append(recs, encodeRecord(recRemove, e.meta.ID, []byte(e.meta.ID), nil))
		gone = append(gone, e)
		ids = append(ids, e.meta.ID)
	}
	if len(recs) == 0 {
		q.mu.Unlock()
		return nil
	}
	q.wmu.Lock()
	_, seq, err := q.appendLocked(recs)
	q.wmu.Unlock()
	if err != nil {
		q.mu.Unlock()
		return fmt.Errorf("compact: %w", err)
	}
	for _, e := range gone {
		q.removeLocked(e)
	}
	q.mu.Unlock()
	q.log.Error("queue: ACKNOWLEDGED MAIL LOST: queued messages no longer verify on disk (the disk may be failing); removed from the queue",
		"segment", old.path, "lost_count", fmt.Sprint(len(ids)), "lost_ids", ids, "saved", saved)
	return q.waitDurable(seq)
}
