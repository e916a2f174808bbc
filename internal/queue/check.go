package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Damage handling.
//
// A damaged byte in a segment costs at most the records it is in: replay
// resynchronises at the next record that verifies (record.go). What was
// lost is named: the damaged records' headers carry their message ID, and a
// message whose Updates survive but whose Add does not is lost too. Damage
// at the very end of the last segment, with no valid record after it, that
// looks like a write cut short (looksTorn), is a torn write of a batch that
// was never fsynced, so never acknowledged: it is cut off. Anything else is acknowledged data: it is logged at ERROR, the
// segment is copied to dir/damaged/ (which compaction never touches), and
// the server starts with every intact message. A message whose Update or
// Remove record was damaged is still there but its state is uncertain (a
// hold, a delivery may be what was lost), so it is held with RuleDamaged
// for an administrator to release or delete. `mamori queue check` (Check,
// Repair) reports the same offline and rewrites a clean log.

// RuleDamaged is the rule of messages held because a damaged log record was
// about them.
const RuleDamaged = "queue.damaged"

// DamagedDir is the folder, inside the queue directory, where copies of
// damaged segments are kept.
const DamagedDir = "damaged"

// Damage is one damaged byte range of a log segment.
type Damage struct {
	Segment string `json:"segment"` // file name in the queue directory
	Offset  int64  `json:"offset"`
	Length  int64  `json:"length"`
	// TornTail: the range ends the last segment, nothing valid follows,
	// and it looks like a write cut short (the segment ends inside the
	// record, or pages of it were never written): a write that was never
	// fsynced, so never acknowledged.
	TornTail bool `json:"torn_tail"`
	// Recovered: only a record header was damaged; the record verified
	// with what was left of it and nothing was lost.
	Recovered bool `json:"recovered,omitempty"`
	// IDs are the messages the damaged records' headers name.
	IDs []string `json:"ids,omitempty"`
}

// Report is what a replay of the log found.
type Report struct {
	Dir      string   `json:"dir"`
	Segments int      `json:"segments"`
	Records  int      `json:"records"`  // intact records
	Messages int      `json:"messages"` // intact messages
	Damage   []Damage `json:"damage,omitempty"`
	// Lost are the acknowledged messages that are gone: their Add record is
	// damaged and no intact copy of it exists.
	Lost []string `json:"lost,omitempty"`
	// Unidentified counts the damaged ranges (not torn tails) that name no
	// message: they may have held more lost messages.
	Unidentified int `json:"unidentified_ranges,omitempty"`
	// Held are intact messages that a damaged record was about; they are
	// held with RuleDamaged.
	Held []string `json:"held,omitempty"`
	// Saved are the copies of damaged segments under damaged/.
	Saved []string `json:"saved,omitempty"`
}

// Clean reports whether the log has no damage at all, torn tail included.
func (r *Report) Clean() bool { return len(r.Damage) == 0 }

// AckLoss reports whether acknowledged data was lost (damage other than a
// torn tail or a recovered header).
func (r *Report) AckLoss() bool {
	for _, d := range r.Damage {
		if !d.TornTail && !d.Recovered {
			return true
		}
	}
	return false
}

// replayer rebuilds the index from records. It is separate from Queue so
// that Check and the fuzz test can drive it.
type replayer struct {
	index map[string]*entry
	seg   *segment
	log   *slog.Logger

	// orphans are messages with an Update but (so far) no Add: at the end,
	// when the log is damaged, their Add is what was lost.
	orphans    map[string]bool
	lostAdds   map[string]bool
	held       map[string]bool
	segDamaged bool // seg has damage other than a torn tail
	report     Report
}

func newReplayer(dir string, log *slog.Logger) *replayer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &replayer{
		index:    make(map[string]*entry),
		log:      log,
		orphans:  make(map[string]bool),
		lostAdds: make(map[string]bool),
		held:     make(map[string]bool),
		report:   Report{Dir: dir},
	}
}

func (r *replayer) apply(rec record) {
	switch rec.typ {
	case recAdd:
		var m Meta
		if err := json.Unmarshal(rec.data, &m); err != nil || m.ID == "" {
			r.log.Error("queue: unreadable add record skipped", "segment", r.seg.path, "offset", rec.off, "err", err)
			return
		}
		m.Size = rec.bodyLen
		r.index[m.ID] = &entry{meta: m, seg: r.seg, recOff: rec.off, recLen: rec.size, heapIdx: -1}
		delete(r.orphans, m.ID)
	case recUpdate:
		var m Meta
		if err := json.Unmarshal(rec.data, &m); err != nil || m.ID == "" {
			r.log.Error("queue: unreadable update record skipped", "segment", r.seg.path, "offset", rec.off, "err", err)
			return
		}
		e := r.index[m.ID]
		if e == nil {
			// Its Add was in a segment that is gone (the message is too,
			// or a later Add brings it back), or in a damaged range.
			r.orphans[m.ID] = true
			return
		}
		m.Size = e.meta.Size
		e.meta = m
	case recRemove:
		delete(r.index, string(rec.data))
		delete(r.orphans, string(rec.data))
	}
}

// scan replays one segment.
func (r *replayer) scan(seg *segment, last bool) (scanResult, error) {
	r.seg, r.segDamaged = seg, false
	res, err := scanSegment(seg.f, seg.size, r.apply, func(d damage) { r.damage(d, last && d.torn) })
	r.report.Segments++
	r.report.Records += res.records
	return res, err
}

func (r *replayer) damage(d damage, torn bool) {
	dm := Damage{Segment: filepath.Base(r.seg.path), Offset: d.off, Length: d.end - d.off, TornTail: torn, Recovered: d.recovered}
	for _, x := range d.ids {
		if !slices.Contains(dm.IDs, x.id) {
			dm.IDs = append(dm.IDs, x.id)
		}
	}
	r.report.Damage = append(r.report.Damage, dm)
	if d.recovered {
		r.segDamaged = true
		r.log.Error("queue: DAMAGED RECORD HEADER in the log; the record itself verified and was kept (the disk may be failing)",
			"segment", r.seg.path, "offset", d.off, "ids", dm.IDs)
		return
	}
	if torn {
		r.log.Warn("queue: dropping torn tail of the last log segment (a write that was never acknowledged)",
			"segment", r.seg.path, "offset", d.off, "dropped_bytes", d.end-d.off, "ids", dm.IDs)
		return
	}
	r.segDamaged = true
	if len(d.ids) == 0 {
		r.report.Unidentified++
	}
	var held []string
	for _, x := range d.ids {
		if x.typ != recAdd {
			// An Update or Remove (or a record of unknown type) about a
			// message that is still here: what it said is lost, so do not
			// act on a stale state.
			if e := r.index[x.id]; e != nil {
				e.meta.State, e.meta.Rule = StateHeld, RuleDamaged
				r.held[x.id] = true
				held = append(held, x.id)
			}
		}
		if x.typ == recAdd || x.typ == 0 {
			r.lostAdds[x.id] = true
		}
	}
	r.log.Error("queue: DAMAGED RECORDS in the log; acknowledged data in this range is lost, replay resumes at the next intact record",
		"segment", r.seg.path, "offset", d.off, "damaged_bytes", d.end-d.off, "ids", dm.IDs, "held", held)
}

// finish completes the report once every segment is replayed.
func (r *replayer) finish() *Report {
	rep := &r.report
	rep.Messages = len(r.index)
	if rep.AckLoss() {
		lost := map[string]bool{}
		for id := range r.lostAdds {
			if r.index[id] == nil {
				lost[id] = true
			}
		}
		for id := range r.orphans {
			lost[id] = true
		}
		for id := range lost {
			rep.Lost = append(rep.Lost, id)
		}
		slices.Sort(rep.Lost)
	}
	for id := range r.held {
		if e := r.index[id]; e != nil && e.meta.State == StateHeld && e.meta.Rule == RuleDamaged {
			rep.Held = append(rep.Held, id)
		}
	}
	slices.Sort(rep.Held)
	return rep
}

// logSummary logs, at ERROR, what the damage cost.
func (rep *Report) logSummary(log *slog.Logger) {
	if !rep.AckLoss() {
		return
	}
	count := fmt.Sprint(len(rep.Lost))
	if rep.Unidentified > 0 {
		count = fmt.Sprintf("at least %d", len(rep.Lost))
	}
	log.Error("queue: ACKNOWLEDGED MAIL LOST to log damage; damaged segments are kept in "+filepath.Join(rep.Dir, DamagedDir)+"; run mamori queue check",
		"lost_count", count, "lost_ids", rep.Lost, "unidentified_ranges", rep.Unidentified,
		"held_for_review", rep.Held, "held_rule", RuleDamaged, "saved", rep.Saved)
}

// saveDamaged copies a damaged segment to dir/damaged/TIMESTAMP-NAME and
// returns the copy's path. When an earlier copy of it is still a prefix of
// the segment (the same damage found at an earlier start), that copy is
// enough.
func saveDamaged(dir, path string, now time.Time, noSync bool) (string, error) {
	ddir := filepath.Join(dir, DamagedDir)
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return "", fmt.Errorf("save damaged segment: %w", err)
	}
	name := filepath.Base(path)
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("save damaged segment: %w", err)
	}
	ents, err := os.ReadDir(ddir)
	if err != nil {
		return "", fmt.Errorf("save damaged segment: %w", err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), "-"+name) {
			continue
		}
		p := filepath.Join(ddir, e.Name())
		if old, err := os.ReadFile(p); err == nil && len(old) > 0 && bytes.HasPrefix(src, old) {
			return p, nil
		}
	}
	dst := filepath.Join(ddir, now.UTC().Format("20060102T150405.000Z")+"-"+name)
	tmp := dst + ".tmp"
	if err := writeFileSync(tmp, src, noSync); err != nil {
		return "", fmt.Errorf("save damaged segment: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("save damaged segment: %w", err)
	}
	if !noSync {
		if err := syncDir(ddir); err != nil {
			return "", fmt.Errorf("save damaged segment: %w", err)
		}
	}
	return dst, nil
}

func writeFileSync(path string, data []byte, noSync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if !noSync {
		if err := fdatasync(f); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
	}
	return f.Close()
}

// ErrLocked is returned by Check and Repair while another process (the
// server) has the queue open.
var ErrLocked = errors.New("queue: the queue is open in another process (is the server running?)")

// checked is one segment as Check read it.
type checked struct {
	seg *segment
	res scanResult
	bad bool // damage other than a torn tail
}

// readLog replays the log in dir without changing it. The caller holds the
// lock and closes the segments.
func readLog(dir string) (*replayer, []checked, error) {
	seqs, err := listSegments(dir)
	if err != nil {
		return nil, nil, err
	}
	r := newReplayer(dir, nil)
	var segs []checked
	for i, seq := range seqs {
		path := filepath.Join(dir, segName(seq))
		f, err := os.Open(path)
		if err != nil {
			closeChecked(segs)
			return nil, nil, fmt.Errorf("open segment: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			closeChecked(segs)
			return nil, nil, fmt.Errorf("stat segment: %w", err)
		}
		seg := &segment{seq: seq, path: path, f: f, size: st.Size()}
		res, err := r.scan(seg, i == len(seqs)-1)
		segs = append(segs, checked{seg: seg, res: res, bad: r.segDamaged})
		if err != nil {
			closeChecked(segs)
			return nil, nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return r, segs, nil
}

func closeChecked(segs []checked) {
	for _, c := range segs {
		c.seg.f.Close()
	}
}

func lockForCheck(dir string) (*os.File, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("queue check: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("queue check: %s is not a directory", dir)
	}
	lock, err := lockDir(dir)
	if err != nil {
		if strings.Contains(err.Error(), "in use") {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, err
	}
	return lock, nil
}

// Check reads the queue log in dir as Open would replay it and reports what
// is damaged, changing nothing. It refuses (ErrLocked) while the queue is
// open elsewhere.
func Check(dir string) (*Report, error) {
	lock, err := lockForCheck(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	r, segs, err := readLog(dir)
	if err != nil {
		return nil, err
	}
	closeChecked(segs)
	return r.finish(), nil
}

// Repair checks the log in dir and, if it is damaged, rewrites it clean:
// each damaged segment is copied to damaged/ and replaced by one holding
// exactly its intact records, a torn tail is cut off, the messages a
// damaged record was about are held (RuleDamaged) by an Update record, so
// that the hold outlives the damaged record, and the lost messages get a
// Remove record. It returns the report of the
// log as it was. It refuses (ErrLocked) while the queue is open elsewhere.
func Repair(dir string, now time.Time) (*Report, error) {
	lock, err := lockForCheck(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	r, segs, err := readLog(dir)
	if err != nil {
		return nil, err
	}
	defer closeChecked(segs)
	rep := r.finish()
	if rep.Clean() {
		return rep, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, DamagedDir), 0o700); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	sameOwner(filepath.Join(dir, DamagedDir), dir)
	// Keep the evidence first, as it is. Then the order keeps every
	// intermediate state one that replays to the same messages: cut the
	// torn tail (never acknowledged), make the holds and removals durable
	// while the damaged records are still there, and only then rewrite the
	// damaged segments.
	for _, c := range segs {
		if !c.bad {
			continue
		}
		saved, err := saveDamaged(dir, c.seg.path, now, false)
		if err != nil {
			return rep, err
		}
		rep.Saved = append(rep.Saved, saved)
		sameOwner(saved, dir)
	}
	if n := len(segs); n > 0 {
		c := segs[n-1]
		if c.res.tail && c.res.damaged[len(c.res.damaged)-1].torn {
			if err := os.Truncate(c.seg.path, c.res.end); err != nil {
				return rep, fmt.Errorf("cut torn tail of %s: %w", c.seg.path, err)
			}
		}
		if len(rep.Held) > 0 || len(rep.Lost) > 0 {
			if err := appendRepairRecords(c.seg.path, r, rep.Held, rep.Lost); err != nil {
				return rep, err
			}
		}
	}
	for _, c := range segs {
		if !c.bad {
			continue
		}
		if err := rewriteSegment(dir, c.seg); err != nil {
			return rep, err
		}
	}
	if err := syncDir(dir); err != nil {
		return rep, err
	}
	// The log must now read back clean.
	r2, segs2, err := readLog(dir)
	if err != nil {
		return rep, fmt.Errorf("verify repaired log: %w", err)
	}
	closeChecked(segs2)
	if after := r2.finish(); !after.Clean() {
		return rep, fmt.Errorf("repaired log still has %d damaged ranges", len(after.Damage))
	}
	return rep, nil
}

// rewriteSegment replaces a segment by one holding only its intact records,
// in their order (re-stamped for their new offsets). The new file is
// complete and durable before it takes the old one's name.
func rewriteSegment(dir string, seg *segment) error {
	st, err := seg.f.Stat() // records may have been appended since the check
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", seg.path, err)
	}
	seg.size = st.Size()
	tmp := seg.path + ".repair"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", seg.path, err)
	}
	fail := func(err error) error {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("rewrite %s: %w", seg.path, err)
	}
	var off int64
	var werr error
	var buf []byte
	_, err = scanSegment(seg.f, seg.size, func(rec record) {
		if werr != nil {
			return
		}
		if int64(cap(buf)) < rec.size {
			buf = make([]byte, rec.size)
		}
		b := buf[:rec.size]
		if _, err := seg.f.ReadAt(b, rec.off); err != nil && !(errors.Is(err, io.EOF) && len(b) == 0) {
			werr = err
			return
		}
		if rec.recovered {
			// Its header was damaged: write a new one.
			body := b[rec.size-rec.bodyLen:]
			b = encodeRecord(rec.typ, rec.id, rec.data, body)
		}
		stampRecord(b, off)
		if _, err := out.Write(b); err != nil {
			werr = err
			return
		}
		off += rec.size
	}, nil)
	if err == nil {
		err = werr
	}
	if err != nil {
		return fail(err)
	}
	if err := fdatasync(out); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rewrite %s: %w", seg.path, err)
	}
	sameOwner(tmp, seg.path)
	if err := os.Rename(tmp, seg.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rewrite %s: %w", seg.path, err)
	}
	return syncDir(dir)
}

// sameOwner gives path the owner of ref, so that a repair run as root
// leaves files the server (which may run as its own user) can open. It is
// best effort: without the right to chown, the owner is already the caller.
func sameOwner(path, ref string) {
	st, err := os.Stat(ref)
	if err != nil {
		return
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		os.Chown(path, int(sys.Uid), int(sys.Gid))
	}
}

// appendRepairRecords appends to the segment at path an Update holding each
// of held (with its replayed Meta), and a Remove for each of lost, which
// closes the story of a lost message whose Updates survive: a later check
// does not count it again.
func appendRepairRecords(path string, r *replayer, held, lost []string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("hold damaged messages: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("hold damaged messages: %w", err)
	}
	off := st.Size()
	var recs []byte
	for _, id := range lost {
		rec := encodeRecord(recRemove, id, []byte(id), nil)
		stampRecord(rec, off+int64(len(recs)))
		recs = append(recs, rec...)
	}
	for _, id := range held {
		e := r.index[id]
		if e == nil {
			continue
		}
		m := cloneMeta(e.meta)
		m.State, m.Rule = StateHeld, RuleDamaged
		data, err := encodeMeta(&m)
		if err != nil {
			return fmt.Errorf("hold damaged messages: %w", err)
		}
		rec := encodeRecord(recUpdate, id, data, nil)
		stampRecord(rec, off+int64(len(recs)))
		recs = append(recs, rec...)
	}
	if _, err := f.WriteAt(recs, off); err != nil {
		return fmt.Errorf("hold damaged messages: %w", err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("hold damaged messages: %w", err)
	}
	return nil
}
