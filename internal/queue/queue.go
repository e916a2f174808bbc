package queue

import (
	"cmp"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// DefaultSegmentSize is the log segment size used when Options.SegmentSize
// is zero.
const DefaultSegmentSize = 64 << 20

// Options configures Open.
type Options struct {
	SegmentSize int64            // default 64 MiB
	MaxMessages int              // 0 = unlimited; Enqueue returns ErrFull when reached
	NoSync      bool             // tests/benchmarks only: skip fsync
	Logger      *slog.Logger     // nil = discard
	Now         func() time.Time // nil = time.Now (tests inject a clock)
}

var (
	// ErrFull is returned by Enqueue when Options.MaxMessages is reached.
	ErrFull = errors.New("queue: full")
	// ErrNotFound means no message has that ID (any more).
	ErrNotFound = errors.New("queue: message not found")
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("queue: closed")
)

// entry is the index's view of one message.
type entry struct {
	meta Meta
	// Location of the message's Add record.
	seg    *segment
	recOff int64
	recLen int64

	ip           netip.Addr // parsed meta.ClientIP
	lowerSubject string
	recovered    bool // replayed at Open

	lease     *Lease        // non-nil while a worker holds it
	readyElem *list.Element // in Queue.ready (active, not leased)
	heapIdx   int           // in Queue.deferred (deferred, not leased), else -1
}

// Queue is the durable spool. All methods are safe for concurrent use.
type Queue struct {
	dir  string
	opt  Options
	log  *slog.Logger
	now  func() time.Time
	lock *os.File
	ids  idGen

	// gate lets Close wait for in-flight operations: they hold it shared.
	gate   sync.RWMutex
	closed bool // guarded by gate

	// mu guards the index and the delivery structures. Operations that
	// change an existing message hold it across the log append, so the log
	// and the index see changes in the same order.
	mu       sync.RWMutex
	index    map[string]*entry
	ready    list.List // of *entry, oldest first
	deferred deferHeap
	waiters  []chan struct{} // blocked Next calls, FIFO
	stats    map[State]int
	sizes    map[State]int64 // body bytes by state, kept with stats
	shut     bool            // Close was called; guarded by mu for Next
	// retryTurn: the next lease goes to a due retry if one waits.
	retryTurn bool

	count atomic.Int64 // messages in the index plus enqueues in flight

	// wmu guards the segment list, the head segment and written.
	wmu     sync.Mutex
	segs    []*segment // oldest first; the last one is head
	head    *segment
	written uint64 // sequence number of the last append

	// syncMu keeps a segment file open while the committer syncs it.
	syncMu sync.Mutex

	// cmu/ccond publish what is durable.
	cmu     sync.Mutex
	ccond   *sync.Cond
	synced  uint64
	failErr error // sticky: once a write or sync failed, the log is suspect

	kick        chan struct{} // wakes the committer
	compactKick chan struct{} // wakes the maintainer
	stop        chan struct{}
	bg          sync.WaitGroup
	damage      *Report    // what replay found
	maintMu     sync.Mutex // one maintenance pass at a time
	dropBroken  bool       // a segment could not be deleted; guarded by maintMu
}

// Open opens (creating if needed) the queue in dir and replays its log.
// Messages that were leased when the previous process died are simply
// active (or deferred) again.
func Open(dir string, opt Options) (*Queue, error) {
	if opt.SegmentSize <= 0 {
		opt.SegmentSize = DefaultSegmentSize
	}
	q := &Queue{
		dir:         dir,
		opt:         opt,
		log:         opt.Logger,
		now:         opt.Now,
		index:       make(map[string]*entry),
		stats:       make(map[State]int),
		sizes:       make(map[State]int64),
		kick:        make(chan struct{}, 1),
		compactKick: make(chan struct{}, 1),
		stop:        make(chan struct{}),
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	q.ccond = sync.NewCond(&q.cmu)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open queue: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open queue: %w", err)
	}
	q.lock = lock
	if err := q.replay(); err != nil {
		q.closeFiles()
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	if !opt.NoSync {
		q.bg.Add(1)
		go q.commitLoop()
	}
	q.bg.Add(1)
	go q.maintainLoop()
	q.kickMaintenance()
	return q, nil
}

func (q *Queue) replay() error {
	seqs, err := listSegments(q.dir)
	if err != nil {
		return err
	}
	r := newReplayer(q.dir, q.log)
	for i, seq := range seqs {
		path := filepath.Join(q.dir, segName(seq))
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("stat segment: %w", err)
		}
		seg := &segment{seq: seq, path: path, f: f, size: st.Size()}
		q.segs = append(q.segs, seg)
		last := i == len(seqs)-1
		res, err := r.scan(seg, last)
		if err != nil {
			return fmt.Errorf("replay %s: %w", path, err)
		}
		if r.segDamaged {
			// Acknowledged data is damaged: keep the evidence where
			// compaction never looks. The intact records stay in place.
			saved, err := saveDamaged(q.dir, path, q.now(), q.opt.NoSync)
			if err != nil {
				q.log.Error("queue: could not keep a copy of a damaged segment", "segment", path, "err", err)
			} else {
				r.report.Saved = append(r.report.Saved, saved)
			}
		}
		if last && res.tail && res.damaged[len(res.damaged)-1].torn {
			if err := f.Truncate(res.end); err != nil {
				return fmt.Errorf("truncate torn tail of %s: %w", path, err)
			}
			if !q.opt.NoSync {
				if err := fdatasync(f); err != nil {
					return err
				}
			}
			seg.size = res.end
		}
	}
	rep := r.finish()
	rep.logSummary(q.log)
	q.damage = rep

	ents := make([]*entry, 0, len(r.index))
	for _, e := range r.index {
		ents = append(ents, e)
	}
	slices.SortFunc(ents, func(a, b *entry) int { return strings.Compare(a.meta.ID, b.meta.ID) })
	for _, e := range ents {
		switch e.meta.State {
		case StateActive, StateDeferred, StateHeld:
		default:
			q.log.Warn("queue: unknown state in log, treating as active", "id", e.meta.ID, "state", e.meta.State)
			e.meta.State = StateActive
		}
		e.recovered = true
		e.derive()
		e.seg.live.Add(1)
		e.seg.liveBytes.Add(e.recLen)
		q.index[e.meta.ID] = e
		q.stats[e.meta.State]++
		q.sizes[e.meta.State] += e.meta.Size
		q.placeLocked(e)
		q.ids.observe(e.meta.ID)
	}
	q.count.Store(int64(len(q.index)))

	if n := len(q.segs); n > 0 && q.segs[n-1].size < q.opt.SegmentSize {
		q.head = q.segs[n-1]
	} else {
		var seq uint64 = 1
		if n > 0 {
			seq = q.segs[n-1].seq + 1
		}
		seg, err := createSegment(q.dir, seq)
		if err != nil {
			return err
		}
		q.segs = append(q.segs, seg)
		q.head = seg
		if !q.opt.NoSync {
			if err := syncDir(q.dir); err != nil {
				return err
			}
		}
	}
	q.log.Info("queue: opened", "dir", q.dir, "messages", len(q.index), "segments", len(q.segs))
	return nil
}

// ReplayReport returns what the replay at Open found in the log: damaged
// ranges, lost and held messages. It is clean for an undamaged log.
func (q *Queue) ReplayReport() Report {
	rep := *q.damage
	rep.Damage = slices.Clone(rep.Damage)
	rep.Lost = slices.Clone(rep.Lost)
	rep.Held = slices.Clone(rep.Held)
	rep.Saved = slices.Clone(rep.Saved)
	return rep
}

// derive fills the fields computed from meta.
func (e *entry) derive() {
	e.ip = parseClientIP(e.meta.ClientIP)
	e.lowerSubject = strings.ToLower(e.meta.Subject)
}

func (q *Queue) closeFiles() {
	for _, s := range q.segs {
		s.f.Close()
	}
	if q.lock != nil {
		q.lock.Close()
	}
}

// Close waits for in-flight operations and commits, stops the background
// work and closes the files. Blocked Next calls return ErrClosed.
func (q *Queue) Close() error {
	q.gate.Lock()
	if q.closed {
		q.gate.Unlock()
		return nil
	}
	q.closed = true
	q.gate.Unlock()

	q.mu.Lock()
	q.shut = true
	q.signalLocked(len(q.waiters))
	q.mu.Unlock()

	close(q.stop)
	q.bg.Wait()

	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.syncMu.Lock()
	defer q.syncMu.Unlock()
	var errs []error
	for _, s := range q.segs {
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", s.path, err))
		}
	}
	if err := q.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("release queue lock: %w", err))
	}
	q.cmu.Lock()
	if q.failErr != nil {
		errs = append(errs, q.failErr)
	}
	q.cmu.Unlock()
	return errors.Join(errs...)
}

// begin admits an operation unless the queue is closed; end must follow.
func (q *Queue) begin() error {
	q.gate.RLock()
	if q.closed {
		q.gate.RUnlock()
		return ErrClosed
	}
	return nil
}

func (q *Queue) end() { q.gate.RUnlock() }

func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

func cloneMeta(m Meta) Meta {
	m.Rcpts = slices.Clone(m.Rcpts)
	return m
}

const (
	// maxEnqueueMeta leaves room in maxMetaLen for what delivery adds later
	// (statuses, diagnostics), so an Update can always be written.
	maxEnqueueMeta = 1 << 20
	maxDiagLen     = 1 << 10
	maxLastError   = 4 << 10
)

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// validUTF8 replaces each invalid byte with U+FFFD, as encoding/json does,
// so that the index holds exactly what a replay will read back.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && w == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+w])
		}
		i += w
	}
	return b.String()
}

func sanitizeMeta(m *Meta) {
	for _, p := range []*string{&m.ID, &m.From, &m.ClientIP, &m.Helo, &m.User, &m.Subject, &m.Rule, &m.LastError} {
		*p = validUTF8(*p)
	}
	for i := range m.Rcpts {
		m.Rcpts[i].Addr = validUTF8(m.Rcpts[i].Addr)
		m.Rcpts[i].Diag = validUTF8(m.Rcpts[i].Diag)
	}
}

// encodeMeta marshals m for an Update or Add record. Should the result not
// fit in a record (only with tens of thousands of recipients), it drops the
// per-recipient diagnostics. It changes m (which must not share its Rcpts
// with the index) so that index and log agree.
func encodeMeta(m *Meta) ([]byte, error) {
	sanitizeMeta(m)
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode meta of %s: %w", m.ID, err)
	}
	if len(data) <= maxMetaLen {
		return data, nil
	}
	for i := range m.Rcpts {
		m.Rcpts[i].Diag = ""
	}
	if data, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode meta of %s: %w", m.ID, err)
	}
	if len(data) > maxMetaLen {
		return nil, fmt.Errorf("metadata of %s is %d bytes, over the %d byte limit", m.ID, len(data), maxMetaLen)
	}
	return data, nil
}

func hasPending(rcpts []Rcpt) bool {
	for _, r := range rcpts {
		if r.Status == RcptPending {
			return true
		}
	}
	return false
}

// Enqueue stores a message and returns once it is durable. It assigns the
// ID, Size, Received (if zero) and State (active if empty), and returns the
// stored Meta. The message is the concatenation of parts (e.g. trace
// headers, then the received message), written to the log from the
// caller's buffers without being joined in memory.
func (q *Queue) Enqueue(m Meta, parts ...[]byte) (Meta, error) {
	var size int64
	for _, p := range parts {
		size += int64(len(p))
	}
	if err := q.begin(); err != nil {
		return Meta{}, err
	}
	defer q.end()
	if size > MaxBodySize {
		return Meta{}, fmt.Errorf("queue: body of %d bytes exceeds the %d byte limit", size, MaxBodySize)
	}
	if !hasPending(m.Rcpts) {
		return Meta{}, errors.New("queue: message has no pending recipient")
	}
	switch m.State {
	case "":
		m.State = StateActive
	case StateActive, StateDeferred, StateHeld:
	default:
		return Meta{}, fmt.Errorf("queue: unknown state %q", m.State)
	}
	if limit := q.opt.MaxMessages; limit > 0 {
		if q.count.Add(1) > int64(limit) {
			q.count.Add(-1)
			return Meta{}, ErrFull
		}
	} else {
		q.count.Add(1)
	}
	now := q.now()
	m = cloneMeta(m)
	m.ID = q.ids.next(now)
	if m.Received.IsZero() {
		m.Received = now
	}
	m.Received = normTime(m.Received)
	m.NextAttempt = normTime(m.NextAttempt)
	m.Size = size
	data, err := encodeMeta(&m)
	if err != nil {
		q.count.Add(-1)
		return Meta{}, fmt.Errorf("queue: enqueue: %w", err)
	}
	if len(data) > maxEnqueueMeta {
		q.count.Add(-1)
		return Meta{}, fmt.Errorf("queue: metadata of %d bytes exceeds the %d byte limit", len(data), maxEnqueueMeta)
	}
	rec := encodeAdd(m.ID, data, parts)
	recLen := int64(len(rec[0])) + size

	q.wmu.Lock()
	locs, seq, err := q.appendPiecesLocked([][][]byte{rec})
	q.wmu.Unlock()
	if err != nil {
		q.count.Add(-1)
		return Meta{}, fmt.Errorf("queue: enqueue: %w", err)
	}
	if err := q.waitDurable(seq); err != nil {
		q.count.Add(-1)
		return Meta{}, fmt.Errorf("queue: enqueue: %w", err)
	}

	// Only now, durable, does the message become visible: nothing can be
	// delivered that a crash could still take back. Nobody else knows the ID
	// yet, so no other record about it can precede this insertion.
	e := &entry{meta: m, seg: locs[0].seg, recOff: locs[0].off, recLen: recLen, heapIdx: -1}
	e.derive()
	q.mu.Lock()
	q.index[m.ID] = e
	q.stats[m.State]++
	q.sizes[m.State] += m.Size
	q.placeLocked(e)
	q.mu.Unlock()
	return cloneMeta(m), nil
}

// Get returns a message's Meta.
func (q *Queue) Get(id string) (Meta, bool) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	e := q.index[id]
	if e == nil {
		return Meta{}, false
	}
	return cloneMeta(e.meta), true
}

// Body reads a message's body from the log and checks its checksum.
func (q *Queue) Body(id string) ([]byte, error) {
	if err := q.begin(); err != nil {
		return nil, err
	}
	defer q.end()
	for attempt := 0; ; attempt++ {
		q.mu.RLock()
		e := q.index[id]
		if e == nil {
			q.mu.RUnlock()
			return nil, ErrNotFound
		}
		seg, off, n := e.seg, e.recOff, e.recLen
		q.mu.RUnlock()
		body, err := readBody(seg, off, n)
		if errors.Is(err, os.ErrClosed) && attempt < 3 {
			continue // compaction moved it and deleted the old segment: look again
		}
		if err != nil {
			return nil, fmt.Errorf("queue: body of %s: %w", id, err)
		}
		return body, nil
	}
}

func readBody(seg *segment, off, n int64) ([]byte, error) {
	buf := make([]byte, n)
	if _, err := seg.f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read %s at %d: %w", seg.path, off, err)
	}
	_, body, err := decodeAdd(buf, off)
	if err != nil {
		return nil, fmt.Errorf("%s at %d: %w", seg.path, off, err)
	}
	return body, nil
}

// forEachMatchLocked calls fn for every message the matcher selects.
func (q *Queue) forEachMatchLocked(m *matcher, fn func(*entry)) {
	if m.ids != nil {
		for _, id := range m.ids {
			if e := q.index[id]; e != nil && m.match(e) {
				fn(e)
			}
		}
		return
	}
	for _, e := range q.index {
		if m.match(e) {
			fn(e)
		}
	}
}

// List returns the matching messages, oldest first.
func (q *Queue) List(f Filter) []Meta {
	m, err := compileFilter(f, q.now())
	if err != nil {
		return nil
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	var hits []*entry
	q.forEachMatchLocked(m, func(e *entry) { hits = append(hits, e) })
	slices.SortFunc(hits, func(a, b *entry) int {
		if c := a.meta.Received.Compare(b.meta.Received); c != 0 {
			return c
		}
		return cmp.Compare(a.meta.ID, b.meta.ID)
	})
	out := make([]Meta, len(hits))
	for i, e := range hits {
		out[i] = cloneMeta(e.meta)
	}
	return out
}

// Count returns how many messages match.
func (q *Queue) Count(f Filter) int {
	m, err := compileFilter(f, q.now())
	if err != nil {
		return 0
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	n := 0
	q.forEachMatchLocked(m, func(*entry) { n++ })
	return n
}

// Stats returns the number of messages in each state (every state is
// present, possibly with 0).
func (q *Queue) Stats() map[State]int {
	q.mu.RLock()
	defer q.mu.RUnlock()
	out := map[State]int{StateActive: 0, StateDeferred: 0, StateHeld: 0}
	for s, n := range q.stats {
		out[s] = n
	}
	return out
}

// StateBytes returns the body bytes of the messages in each state (every
// state is present, possibly with 0): with Stats, the queue by state at
// the cost of a lock and three map reads.
func (q *Queue) StateBytes() map[State]int64 {
	q.mu.RLock()
	defer q.mu.RUnlock()
	out := map[State]int64{StateActive: 0, StateDeferred: 0, StateHeld: 0}
	for s, n := range q.sizes {
		out[s] = n
	}
	return out
}

// setMetaLocked replaces a message's Meta, keeping the counters right. The
// caller then calls placeLocked.
func (q *Queue) setMetaLocked(e *entry, m Meta) {
	q.stats[e.meta.State]--
	q.stats[m.State]++
	q.sizes[e.meta.State] -= e.meta.Size
	q.sizes[m.State] += m.Size
	e.meta = m
}

// removeLocked drops a message from the index (its Remove record is already
// appended).
func (q *Queue) removeLocked(e *entry) {
	delete(q.index, e.meta.ID)
	q.stats[e.meta.State]--
	q.sizes[e.meta.State] -= e.meta.Size
	q.count.Add(-1)
	e.seg.live.Add(-1)
	e.seg.liveBytes.Add(-e.recLen)
	if e.lease != nil {
		e.lease.revoked.Store(true)
		e.lease = nil
	}
	q.unplaceLocked(e)
	q.kickMaintenance()
}

// ---- the log ----

type loc struct {
	seg *segment
	off int64
}

const writeChunk = 1 << 20

// appendLocked writes complete records to the head segment, rotating when
// it is full, and returns where each landed and the sequence number to pass
// to waitDurable. The caller holds wmu.
func (q *Queue) appendLocked(recs [][]byte) ([]loc, uint64, error) {
	pieces := make([][][]byte, len(recs))
	for i, r := range recs {
		pieces[i] = [][]byte{r}
	}
	return q.appendPiecesLocked(pieces)
}

// appendPiecesLocked appends records given as pieces (a head, then body
// parts written as they are, without joining them into one buffer).
func (q *Queue) appendPiecesLocked(recs [][][]byte) ([]loc, uint64, error) {
	if err := q.failed(); err != nil {
		return nil, 0, err
	}
	locs := make([]loc, len(recs))
	sizes := make([]int64, len(recs))
	wrote := false // whether part of this batch is already in the log
	var chunk []byte
	chunkOff := q.head.size
	write := func(p []byte) error {
		if _, err := q.head.f.WriteAt(p, chunkOff); err != nil {
			return q.writeFailed(fmt.Errorf("write %s: %w", q.head.path, err), chunkOff, wrote)
		}
		wrote = true
		chunkOff += int64(len(p))
		q.head.size = chunkOff
		return nil
	}
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := write(chunk)
		chunk = chunk[:0]
		return err
	}
	for i, r := range recs {
		for _, p := range r {
			sizes[i] += int64(len(p))
		}
		used := chunkOff + int64(len(chunk))
		if used > 0 && used+sizes[i] > q.opt.SegmentSize {
			if err := flush(); err != nil {
				return nil, 0, err
			}
			if err := q.rotateLocked(); err != nil {
				if wrote {
					return nil, 0, q.fail(err)
				}
				return nil, 0, err
			}
			chunkOff = 0
		}
		locs[i] = loc{seg: q.head, off: chunkOff + int64(len(chunk))}
		stampRecord(r[0], locs[i].off) // the header checksum covers where it lands
		if sizes[i] >= writeChunk || (len(chunk) == 0 && i == len(recs)-1 && len(r) == 1) {
			// Large records go out from their own buffers (a big message
			// is never copied for the log); small ones are batched.
			if err := flush(); err != nil {
				return nil, 0, err
			}
			for _, p := range r {
				if len(p) == 0 {
					continue
				}
				if err := write(p); err != nil {
					return nil, 0, err
				}
			}
			continue
		}
		for _, p := range r {
			chunk = append(chunk, p...)
		}
		if len(chunk) >= writeChunk {
			if err := flush(); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, 0, err
	}
	for i, r := range recs {
		if r[0][hdrType] == recAdd { // encodeRecord writes version 2
			locs[i].seg.live.Add(1)
			locs[i].seg.liveBytes.Add(sizes[i])
		}
	}
	q.written++
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return locs, q.written, nil
}

// writeFailed handles a failed write at off. If nothing of the batch made it
// to the log yet, cutting the file back to off keeps the log clean and the
// queue usable (disk full, say). Otherwise the log holds half a batch the
// index does not know about, and the queue stops taking writes.
func (q *Queue) writeFailed(err error, off int64, wrote bool) error {
	if wrote {
		return q.fail(err)
	}
	if terr := q.head.f.Truncate(off); terr != nil {
		return q.fail(errors.Join(err, fmt.Errorf("truncate after failed write: %w", terr)))
	}
	q.head.size = off
	return err
}

// rotateLocked makes the old head durable and starts a new segment.
func (q *Queue) rotateLocked() error {
	old := q.head
	if !q.opt.NoSync {
		if err := fdatasync(old.f); err != nil {
			return q.fail(err)
		}
	}
	seg, err := createSegment(q.dir, old.seq+1)
	if err != nil {
		return err
	}
	if !q.opt.NoSync {
		if err := syncDir(q.dir); err != nil {
			seg.f.Close()
			os.Remove(seg.path)
			return err
		}
	}
	q.segs = append(q.segs, seg)
	q.head = seg
	q.log.Debug("queue: new log segment", "segment", seg.path)
	q.kickMaintenance()
	return nil
}

func (q *Queue) failed() error {
	q.cmu.Lock()
	defer q.cmu.Unlock()
	return q.failErr
}

// fail puts the queue in the failed state: every later write returns err.
func (q *Queue) fail(err error) error {
	q.cmu.Lock()
	if q.failErr == nil {
		q.failErr = fmt.Errorf("queue log failed, restart needed: %w", err)
		q.log.Error("queue: log write failed; refusing further writes", "err", err)
	}
	q.ccond.Broadcast()
	q.cmu.Unlock()
	return err
}

// waitDurable blocks until the append with sequence number seq is on disk.
func (q *Queue) waitDurable(seq uint64) error {
	if q.opt.NoSync {
		return nil
	}
	q.cmu.Lock()
	defer q.cmu.Unlock()
	for q.synced < seq && q.failErr == nil {
		q.ccond.Wait()
	}
	if q.synced >= seq {
		return nil
	}
	return q.failErr
}

// commitLoop is the group committer: one fdatasync covers every append made
// before it started, however many callers are waiting.
func (q *Queue) commitLoop() {
	defer q.bg.Done()
	for {
		select {
		case <-q.kick:
			q.commit()
		case <-q.stop:
			q.commit()
			return
		}
	}
}

func (q *Queue) commit() {
	for {
		q.wmu.Lock()
		target, f := q.written, q.head.f
		q.cmu.Lock()
		done := q.synced >= target || q.failErr != nil
		q.cmu.Unlock()
		if done {
			q.wmu.Unlock()
			return
		}
		// Older segments were synced when rotated; syncMu keeps f open.
		q.syncMu.Lock()
		q.wmu.Unlock()
		err := fdatasync(f)
		q.syncMu.Unlock()
		if err != nil {
			q.fail(err)
			return
		}
		q.cmu.Lock()
		q.synced = target
		q.ccond.Broadcast()
		q.cmu.Unlock()
	}
}

// Bytes is the size of the live records (metadata and bodies) in the log:
// what the queue holds, without the dead records compaction will reclaim.
func (q *Queue) Bytes() int64 {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	var n int64
	for _, s := range q.segs {
		n += s.liveBytes.Load()
	}
	return n
}
