// Package journal is mamori's event journal: an append-only record, in JSON
// Lines files, of what happened to mail and senders — SMTP session
// summaries, guard decisions (isolation, suspension, ban, release, alert)
// and administrator queue operations. It exists for evidence (DESIGN.md
// S10): held messages alone do not say which session produced them or why
// the guard acted, and `mamori incident export` needs that timeline before
// an administrator purges anything.
//
// Why JSON Lines files and not the embedded store: the journal is written
// on every SMTP session and read rarely, in time order, by people and by
// tools (jq, grep) as well as by the export. Plain append-only files are
// the cheapest thing to write, to rotate and to delete by age, and they
// stay readable when mamori is not running.
//
// Recording never blocks the SMTP hot path for long: Record hands the event
// to a buffered channel and a single writer goroutine encodes and appends
// it. When the channel is full (the disk is slow or failing) the event is
// dropped and counted (Dropped), because refusing or slowing mail to keep a
// log line would turn the evidence log into a denial of service.
//
// Durability: writes are buffered and flushed to the operating system at
// least every second; files are fsynced when rotated and on Close. This is
// evidence, not the queue: a crash of the process may lose the events of
// the last second or so, and a crash of the machine whatever the kernel had
// not yet written. A torn last line is skipped by Scan.
//
// On disk, dir holds events-YYYYMMDDTHHMMSS.jsonl files (UTC), named by the
// time they were started. A new file is started when the current one
// reaches Options.FileBytes, when the UTC day changes, and at every Open.
// Names are strictly increasing and a new file's start is later than every
// event time in the previous files, so Scan can skip whole files that end
// before the time asked for. The oldest files are deleted when the total
// exceeds Options.MaxBytes or when their last write is older than
// Options.MaxAge; each closed file's modification time is set to its last
// write so that age survives restarts.
//
// Dependencies: only the standard library.
package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Event kinds.
const (
	KindSession = "session" // summary of one SMTP session
	KindGuard   = "guard"   // isolation, suspension, ban, release, alert
	KindQueue   = "queue"   // admin hold/release/delete/expire
)

// Event is one journal entry. Sender may name several envelope senders,
// separated by commas.
type Event struct {
	Time     time.Time      `json:"time"`
	Kind     string         `json:"kind"`
	IP       string         `json:"ip,omitempty"` // an IP, or a CIDR for bans
	User     string         `json:"user,omitempty"`
	Sender   string         `json:"sender,omitempty"`
	QueueIDs []string       `json:"queue_ids,omitempty"`
	Rule     string         `json:"rule,omitempty"`
	Summary  string         `json:"summary,omitempty"`
	Data     map[string]any `json:"data,omitempty"`
}

// Defaults for Options.
const (
	DefaultMaxBytes  = 1 << 30
	DefaultMaxAge    = 90 * 24 * time.Hour
	DefaultFileBytes = 64 << 20
	DefaultBuffer    = 10000
)

// MaxLine bounds one encoded event; larger events are dropped and counted.
const MaxLine = 1 << 20

// flushEvery is the longest an event waits in the write buffer.
const flushEvery = time.Second

// retentionEvery is how often retention runs when no rotation triggers it.
const retentionEvery = time.Hour

// Options tune a Journal. Zero fields take the defaults.
type Options struct {
	MaxBytes  int64         // total on disk, default 1 GiB
	MaxAge    time.Duration // default 90 days
	FileBytes int64         // rotate size, default 64 MiB (at most MaxBytes)
	Buffer    int           // events waiting for the writer, default 10000

	Logger *slog.Logger     // nil = discard
	Now    func() time.Time // nil = time.Now (tests inject a clock)

	// beforeWrite, when set (tests only), runs in the writer before each
	// event is written, so a test can make the writer slow.
	beforeWrite func()
}

// Journal appends events to files in one directory. Record, Scan, Dropped
// and Close are safe for concurrent use.
type Journal struct {
	dir string
	opt Options
	log *slog.Logger
	now func() time.Time

	// mu guards closed so that Record never sends on a closed channel.
	mu       sync.RWMutex
	closed   bool
	ch       chan Event
	flushReq chan chan error
	done     chan struct{}
	closeErr error // set by the writer before done is closed

	dropped atomic.Uint64

	// Writer goroutine state.
	f         *os.File
	bw        *bufio.Writer
	start     time.Time // current file's name time
	size      int64     // current file's bytes, buffered ones included
	lastWrite time.Time // journal clock at the current file's last write
	maxTime   time.Time // latest event time written by this process
	lastStart time.Time // newest file name time seen
	failing   bool      // a write failed; logged once until it works again
}

var fileRe = "events-20060102T150405.jsonl"

// fileName returns the file name for a start time.
func fileName(t time.Time) string { return t.UTC().Format(fileRe) }

type fileInfo struct {
	name  string
	start time.Time
}

// listFiles returns the journal files in dir, oldest first.
func listFiles(dir string) ([]fileInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: list %s: %w", dir, err)
	}
	var out []fileInfo
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		t, err := time.Parse(fileRe, e.Name())
		if err != nil {
			continue
		}
		out = append(out, fileInfo{name: e.Name(), start: t})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].start.Before(out[k].start) })
	return out, nil
}

// Open opens (creating if needed) the journal in dir, applies retention to
// the files already there and starts the writer.
func Open(dir string, opt Options) (*Journal, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = DefaultMaxAge
	}
	if opt.FileBytes <= 0 {
		opt.FileBytes = DefaultFileBytes
	}
	opt.FileBytes = min(opt.FileBytes, opt.MaxBytes)
	if opt.Buffer <= 0 {
		opt.Buffer = DefaultBuffer
	}
	j := &Journal{
		dir:      dir,
		opt:      opt,
		log:      opt.Logger,
		now:      opt.Now,
		ch:       make(chan Event, opt.Buffer),
		flushReq: make(chan chan error),
		done:     make(chan struct{}),
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	if j.now == nil {
		j.now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) > 0 {
		j.lastStart = files[len(files)-1].start
	}
	j.retain()
	go j.run()
	return j, nil
}

// Record queues an event for writing. It never blocks on the disk: when the
// writer is behind by Options.Buffer events, or the journal is closed, the
// event is dropped and counted. A zero Time means now. The caller must not
// modify e.Data or e.QueueIDs afterwards.
func (j *Journal) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = j.now()
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		j.dropped.Add(1)
		return
	}
	select {
	case j.ch <- e:
	default:
		j.dropped.Add(1)
	}
}

// Dropped returns how many events were not written (writer behind, event
// too large or not encodable, write errors, or recorded after Close).
func (j *Journal) Dropped() uint64 { return j.dropped.Load() }

// Close writes the events already recorded, fsyncs and closes the current
// file. Later Records are dropped; Scan keeps working.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		<-j.done
		return nil
	}
	j.closed = true
	close(j.ch)
	j.mu.Unlock()
	<-j.done
	return j.closeErr
}

// flush asks the writer to write everything recorded so far to the files.
func (j *Journal) flush() error {
	reply := make(chan error, 1)
	select {
	case j.flushReq <- reply:
		return <-reply
	case <-j.done:
		return nil
	}
}

func (j *Journal) run() {
	defer close(j.done)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	lastRetain := time.Now()
	for {
		select {
		case e, ok := <-j.ch:
			if !ok {
				j.closeErr = j.closeFile()
				return
			}
			j.write(e)
		case reply := <-j.flushReq:
			for n := len(j.ch); n > 0; n-- {
				e, ok := <-j.ch
				if !ok {
					break
				}
				j.write(e)
			}
			reply <- j.flushBuf()
		case <-tick.C:
			if err := j.flushBuf(); err != nil {
				j.writeFailed(err)
			}
			if time.Since(lastRetain) >= retentionEvery {
				lastRetain = time.Now()
				j.retain()
			}
		}
	}
}

func (j *Journal) flushBuf() error {
	if j.bw == nil {
		return nil
	}
	if err := j.bw.Flush(); err != nil {
		return fmt.Errorf("journal: write %s: %w", j.f.Name(), err)
	}
	return nil
}

// write appends one event, rotating first when needed.
func (j *Journal) write(e Event) {
	if j.opt.beforeWrite != nil {
		j.opt.beforeWrite()
	}
	line, err := json.Marshal(e)
	if err != nil {
		j.dropped.Add(1)
		j.log.Warn("journal: event not encodable, dropped", "kind", e.Kind, "err", err)
		return
	}
	if len(line)+1 > MaxLine {
		j.dropped.Add(1)
		j.log.Warn("journal: event too large, dropped", "kind", e.Kind, "bytes", len(line))
		return
	}
	line = append(line, '\n')
	now := j.now()
	if j.f != nil && (j.size > 0 && j.size+int64(len(line)) > j.opt.FileBytes || dayOf(now) > dayOf(j.start)) {
		if err := j.closeFile(); err != nil {
			j.log.Warn("journal: rotate", "err", err)
		}
		j.retain()
	}
	if j.f == nil {
		if err := j.newFile(now); err != nil {
			j.dropped.Add(1)
			j.writeFailed(err)
			return
		}
	}
	if _, err := j.bw.Write(line); err != nil {
		j.dropped.Add(1)
		j.writeFailed(fmt.Errorf("journal: write %s: %w", j.f.Name(), err))
		return
	}
	if j.failing {
		j.failing = false
		j.log.Info("journal: writing again", "file", j.f.Name())
	}
	j.size += int64(len(line))
	j.lastWrite = now
	if e.Time.After(j.maxTime) {
		j.maxTime = e.Time
	}
}

// writeFailed logs a write error once per failure episode and abandons the
// current file, so that the next event starts a fresh one.
func (j *Journal) writeFailed(err error) {
	if !j.failing {
		j.failing = true
		j.log.Error("journal: events are being dropped", "err", err)
	}
	if j.f != nil {
		j.f.Close()
		j.f, j.bw = nil, nil
	}
}

func dayOf(t time.Time) int64 { return t.UTC().Unix() / 86400 }

// newFile starts a file named after now, later than every earlier file and
// every event time already written.
func (j *Journal) newFile(now time.Time) error {
	t := now.UTC().Truncate(time.Second)
	if !j.maxTime.IsZero() && !t.After(j.maxTime) {
		t = j.maxTime.UTC().Truncate(time.Second).Add(time.Second)
	}
	if !j.lastStart.IsZero() && !t.After(j.lastStart) {
		t = j.lastStart.Add(time.Second)
	}
	for range 100 {
		path := filepath.Join(j.dir, fileName(t))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if errors.Is(err, os.ErrExist) {
			t = t.Add(time.Second)
			continue
		}
		if err != nil {
			return fmt.Errorf("journal: create %s: %w", path, err)
		}
		syncDir(j.dir)
		j.f, j.bw = f, bufio.NewWriterSize(f, 64<<10)
		j.start, j.lastStart, j.size, j.lastWrite = t, t, 0, now
		return nil
	}
	return fmt.Errorf("journal: no free file name after %s", fileName(t))
}

// closeFile flushes, fsyncs and closes the current file and sets its
// modification time to its last write, which retention reads as its age.
func (j *Journal) closeFile() error {
	if j.f == nil {
		return nil
	}
	f, last := j.f, j.lastWrite
	if j.maxTime.After(last) && j.maxTime.Before(last.Add(24*time.Hour)) {
		last = j.maxTime
	}
	err := j.flushBuf()
	if serr := f.Sync(); serr != nil && err == nil {
		err = fmt.Errorf("journal: fsync %s: %w", f.Name(), serr)
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("journal: close %s: %w", f.Name(), cerr)
	}
	if terr := os.Chtimes(f.Name(), last, last); terr != nil && err == nil {
		err = fmt.Errorf("journal: %w", terr)
	}
	j.f, j.bw = nil, nil
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// retain deletes the oldest files while the journal is over MaxBytes or
// they were last written more than MaxAge ago. The current file is kept.
func (j *Journal) retain() {
	files, err := listFiles(j.dir)
	if err != nil {
		j.log.Warn("journal: retention", "err", err)
		return
	}
	type sized struct {
		fileInfo
		size  int64
		mtime time.Time
	}
	var all []sized
	var total int64
	for _, fi := range files {
		s := sized{fileInfo: fi}
		if j.f != nil && fi.start.Equal(j.start) {
			s.size, s.mtime = j.size, j.lastWrite
		} else if st, err := os.Stat(filepath.Join(j.dir, fi.name)); err == nil {
			s.size, s.mtime = st.Size(), st.ModTime()
		} else {
			continue
		}
		total += s.size
		all = append(all, s)
	}
	cutoff := j.now().Add(-j.opt.MaxAge)
	for _, s := range all {
		if j.f != nil && s.start.Equal(j.start) {
			break
		}
		if total <= j.opt.MaxBytes && !s.mtime.Before(cutoff) {
			break
		}
		if err := os.Remove(filepath.Join(j.dir, s.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.log.Warn("journal: retention", "err", err)
			return
		}
		total -= s.size
		j.log.Info("journal: deleted old events file", "file", s.name, "bytes", s.size)
	}
}

// Scan calls fn for every event whose Time is not before since, oldest
// file first and in recording order within a file, until fn returns false.
// Events recorded before Scan was called are included. Files that end
// before since are not read; lines that do not decode (a torn write after
// a crash) are skipped.
func (j *Journal) Scan(since time.Time, fn func(Event) bool) error {
	if err := j.flush(); err != nil {
		j.log.Warn("journal: flush before scan", "err", err)
	}
	files, err := listFiles(j.dir)
	if err != nil {
		return err
	}
	first := 0
	for i, fi := range files {
		if !fi.start.After(since) {
			first = i
		}
	}
	for _, fi := range files[first:] {
		more, err := j.scanFile(filepath.Join(j.dir, fi.name), since, fn)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

func (j *Journal) scanFile(path string, since time.Time, fn func(Event) bool) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil // deleted by retention meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("journal: scan: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine+1)
	bad := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			bad++
			continue
		}
		if e.Time.Before(since) {
			continue
		}
		if !fn(e) {
			return false, nil
		}
	}
	if bad > 0 {
		j.log.Warn("journal: skipped undecodable lines", "file", path, "lines", bad)
	}
	if err := sc.Err(); err != nil {
		j.log.Warn("journal: scan stopped early in file", "file", path, "err", err)
	}
	return true, nil
}
