package mailbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Folder is an open folder (see User.Open). Every Folder of one folder in
// a process shares one index.
type Folder struct {
	ix     *folderIndex
	closed atomic.Bool
}

var errFolderClosed = errors.New("mailbox: folder closed")

// errGone: a message's file disappeared (expunged by another process).
var errGone = errors.New("message file gone")

// indexSeq orders folder locks when an operation holds two.
var indexSeq atomic.Uint64

// entry is one message of the index. Entries are replaced, never changed,
// once published: a snapshot holds copies of their msg.
type entry struct {
	uid   uint32
	key   string
	name  string // file name in cur/ (new/ when inNew)
	inNew bool
	sys   uint8
	kw    uint32 // keyword letters in the name, a = bit 0 (defined or not)
	size  int64
	date  time.Time
	msg   Message
}

// folderIndex is the in-memory index of one folder, shared in a process.
type folderIndex struct {
	u       *userState
	seq     uint64
	refs    int // under u.mu
	watched atomic.Bool

	mu          sync.Mutex
	name, dir   string
	loaded      bool
	deleted     bool
	uidValidity uint32
	uidNext     uint32
	ents        []*entry // ascending UID
	byKey       map[string]*entry
	gone        map[string]bool // keys removed since the uidlist was last written
	kw          keywordTable
	kwStamp     stamp
	listStamp   stamp
	// listData is the uidlist file's content as last read or written:
	// under the lock, the cached list is used only if the file still
	// holds exactly these bytes (a stamp can repeat: inode numbers are
	// reused and mtimes are coarse).
	listData   []byte
	listByKey  map[string]uint32 // the uidlist as last read or written
	list       *uidlist          // same, parsed (nil: unknown)
	newM, curM time.Time         // mtimes of new/ and cur/ at the last scan
	recheck    time.Time         // non-zero: rescan fully once past it (racy mtimes)
	version    uint64
	snap       *Snapshot
	changed    chan struct{}
}

func newFolderIndex(u *userState, name, dir string) *folderIndex {
	return &folderIndex{
		u: u, seq: indexSeq.Add(1), name: name, dir: dir,
		byKey: make(map[string]*entry), gone: make(map[string]bool),
		changed: make(chan struct{}),
	}
}

func (fd *Folder) index() (*folderIndex, error) {
	if fd == nil || fd.closed.Load() {
		return nil, errFolderClosed
	}
	return fd.ix, nil
}

// lockReady locks the index and makes sure it has been loaded.
func (f *folderIndex) lockReady() error {
	f.mu.Lock()
	if f.deleted {
		f.mu.Unlock()
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, ErrNoFolder)
	}
	if !f.loaded {
		if err := f.syncLocked(false); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	return nil
}

func (f *folderIndex) markDeletedLocked() {
	if !f.deleted {
		f.deleted = true
		close(f.changed)
	}
}

// publishLocked makes a new snapshot of the index and wakes the watchers.
func (f *folderIndex) publishLocked() {
	msgs := make([]Message, len(f.ents))
	for i, e := range f.ents {
		msgs[i] = e.msg
	}
	f.version++
	f.snap = &Snapshot{
		UIDValidity: f.uidValidity,
		UIDNext:     f.uidNext,
		Version:     f.version,
		Messages:    msgs,
		Keywords:    f.kw.names(),
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// setMsg fills e.msg from e's fields and the keyword table.
func (f *folderIndex) setMsg(e *entry) {
	var fl []string
	for i := range sysNames {
		if e.sys&(1<<i) != 0 {
			fl = append(fl, sysNames[i])
		}
	}
	for i := 0; i < maxKeywords; i++ {
		if e.kw&(1<<i) != 0 && f.kw[i] != "" {
			fl = append(fl, f.kw[i])
		}
	}
	slices.Sort(fl)
	e.msg = Message{UID: e.uid, Key: e.key, Flags: fl, Size: e.size, InternalDate: e.date}
}

func (f *folderIndex) rebuildMsgsLocked() {
	for i, e := range f.ents {
		c := *e
		f.setMsg(&c)
		f.ents[i] = &c
		f.byKey[c.key] = &c
	}
}

func (f *folderIndex) pathOf(e *entry) string {
	sub := "cur"
	if e.inNew {
		sub = "new"
	}
	return filepath.Join(f.dir, sub, e.name)
}

// byUID finds a message by UID.
func (f *folderIndex) byUID(uid uint32) *entry {
	i, ok := slices.BinarySearchFunc(f.ents, uid, func(e *entry, u uint32) int { return cmpUID(e.uid, u) })
	if !ok {
		return nil
	}
	return f.ents[i]
}

func cmpUID(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// entriesLocked returns the entries of uids that exist, in ascending UID
// order, each once.
func (f *folderIndex) entriesLocked(uids []uint32) []*entry {
	s := slices.Clone(uids)
	slices.Sort(s)
	s = slices.Compact(s)
	out := make([]*entry, 0, len(s))
	for _, uid := range s {
		if e := f.byUID(uid); e != nil {
			out = append(out, e)
		}
	}
	return out
}

// replaceLocked puts ne in the place of the entry with the same UID.
func (f *folderIndex) replaceLocked(ne *entry) {
	if i, ok := slices.BinarySearchFunc(f.ents, ne.uid, func(e *entry, u uint32) int { return cmpUID(e.uid, u) }); ok {
		f.ents[i] = ne
	}
	f.byKey[ne.key] = ne
}

// removeKeysLocked drops the entries of keys.
func (f *folderIndex) removeKeysLocked(keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	f.ents = slices.DeleteFunc(f.ents, func(e *entry) bool { return keys[e.key] })
	for k := range keys {
		delete(f.byKey, k)
		f.gone[k] = true
	}
}

// withFile runs fn on e's file. When the file is not there (renamed or
// removed by another process) it rescans and retries once by key; errGone
// when the message no longer exists. It returns the entry used.
func (f *folderIndex) withFile(e *entry, fn func(e *entry, path string) error) (*entry, error) {
	err := fn(e, f.pathOf(e))
	if !errors.Is(err, fs.ErrNotExist) {
		return e, err
	}
	if err := f.syncLocked(true); err != nil {
		return nil, err
	}
	e2 := f.byKey[e.key]
	if e2 == nil {
		return nil, errGone
	}
	if err := fn(e2, f.pathOf(e2)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errGone
		}
		return nil, err
	}
	return e2, nil
}

// trackOwnCur is called before this process changes cur/; the function it
// returns, called after, moves the recorded mtime of cur/ along when nobody
// else had changed cur/ since the last scan, so that our own change does
// not cost the next Snapshot a full rescan. A change by another process in
// between is caught by the racy-mtime recheck.
func (f *folderIndex) trackOwnCur() func() {
	cur := filepath.Join(f.dir, "cur")
	fi, err := os.Stat(cur)
	if err != nil || !fi.ModTime().Equal(f.curM) {
		return func() {}
	}
	return func() {
		if fi, err := os.Stat(cur); err == nil {
			f.curM = fi.ModTime()
			f.noteRacy(time.Now())
		}
	}
}

func (f *folderIndex) noteRacy(now time.Time) {
	if now.Sub(f.curM) < racyWindow || now.Sub(f.newM) < racyWindow {
		if t := now.Add(racyWindow); t.After(f.recheck) {
			f.recheck = t
		}
	}
}

// ---- syncing with the disk ------------------------------------------------

type loc struct {
	name  string
	inNew bool
}

// syncLocked brings the index up to date with the disk: nothing when the
// mtimes of new/ and cur/ are unchanged (two stats), new/ alone when only
// it changed, else a full scan. force always scans fully.
func (f *folderIndex) syncLocked(force bool) error {
	if f.deleted {
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, ErrNoFolder)
	}
	now := time.Now()
	newDir, curDir := filepath.Join(f.dir, "new"), filepath.Join(f.dir, "cur")
	newFi, err1 := os.Stat(newDir)
	curFi, err2 := os.Stat(curDir)
	if err1 != nil || err2 != nil {
		if fi, err := os.Stat(f.dir); err != nil || !fi.IsDir() {
			f.markDeletedLocked()
			return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, ErrNoFolder)
		}
		if err := ensureSubdirs(f.u.perm(), f.dir); err != nil {
			return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
		}
		if newFi, err1 = os.Stat(newDir); err1 != nil {
			return err1
		}
		if curFi, err2 = os.Stat(curDir); err2 != nil {
			return err2
		}
	}
	full := force || !f.loaded || !curFi.ModTime().Equal(f.curM) ||
		(!f.recheck.IsZero() && !now.Before(f.recheck))
	if !full && newFi.ModTime().Equal(f.newM) {
		return nil
	}
	dirty := !f.loaded
	if full {
		reset, err := f.refreshListLocked()
		if err != nil {
			return err
		}
		dirty = dirty || reset
		if f.loadKeywordsLocked() {
			dirty = true
		}
		f.recheck = time.Time{}
	}
	f.newM = newFi.ModTime()

	found := make(map[string]loc)
	names, err := readNames(newDir)
	if err != nil {
		return err
	}
	moved := false
	for _, n := range names {
		key, sys, kw, ok := parseFileName(n)
		if !ok {
			continue
		}
		target := fileName(key, sys, kw)
		if err := os.Rename(filepath.Join(newDir, n), filepath.Join(curDir, target)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				full = true // moved by someone else: find it in cur/
				continue
			}
			f.u.s.log.Warn("cannot move a message to cur/", "file", n, "dir", f.dir, "err", err)
			found[key] = loc{name: n, inNew: true}
			continue
		}
		moved = true
		found[key] = loc{name: target}
	}
	curFi2, err := os.Stat(curDir)
	if err != nil {
		return err
	}
	if full {
		f.curM = curFi2.ModTime()
		names, err := readNames(curDir)
		if err != nil {
			return err
		}
		for _, n := range names {
			if key, _, _, ok := parseFileName(n); ok {
				found[key] = loc{name: n}
			}
		}
	} else if moved && curFi.ModTime().Equal(f.curM) {
		f.curM = curFi2.ModTime()
	}
	f.noteRacy(now)

	if full {
		gone := make(map[string]bool)
		for key := range f.byKey {
			if _, ok := found[key]; !ok {
				gone[key] = true
			}
		}
		if len(gone) > 0 {
			f.removeKeysLocked(gone)
			dirty = true
		}
		for key := range f.listByKey {
			if _, ok := found[key]; !ok {
				f.gone[key] = true
			}
		}
	}
	var cands []*entry
	for key, l := range found {
		if e := f.byKey[key]; e != nil {
			if e.name != l.name || e.inNew != l.inNew {
				_, sys, kw, _ := parseFileName(l.name)
				c := *e
				c.name, c.inNew, c.sys, c.kw = l.name, l.inNew, sys, kw
				f.setMsg(&c)
				f.replaceLocked(&c)
				dirty = true
			}
			continue
		}
		sub := curDir
		if l.inNew {
			sub = newDir
		}
		fi, err := os.Stat(filepath.Join(sub, l.name))
		if err != nil {
			continue // gone meanwhile
		}
		_, sys, kw, _ := parseFileName(l.name)
		size, ok := sizeFromKey(key)
		if !ok {
			size = fi.Size()
		}
		cands = append(cands, &entry{key: key, name: l.name, inNew: l.inNew, sys: sys, kw: kw, size: size, date: fi.ModTime()})
	}
	if len(cands) > 0 {
		// UIDs in delivery order: by mtime, then name.
		slices.SortFunc(cands, func(a, b *entry) int {
			if c := a.date.Compare(b.date); c != 0 {
				return c
			}
			return strings.Compare(a.key, b.key)
		})
		if err := f.assignLocked(cands, false, nil); err != nil {
			return err
		}
		dirty = true
	}
	f.loaded = true
	if dirty {
		f.publishLocked()
	}
	return nil
}

// refreshListLocked rereads dovecot-uidlist when it changed. reset is true
// when its UIDVALIDITY changed (someone recreated the folder's UIDs): then
// the index is emptied and every message gets its UID anew.
func (f *folderIndex) refreshListLocked() (reset bool, err error) {
	p := filepath.Join(f.dir, "dovecot-uidlist")
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		if f.uidValidity != 0 {
			return false, nil // rewritten at the next assignment
		}
		if err := f.u.ensureUidlist(f.dir); err != nil {
			return false, fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
		}
		fi, err = os.Stat(p)
	}
	if err != nil {
		return false, fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	st := stampOf(fi)
	if st == f.listStamp && f.listByKey != nil {
		return false, nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	f.list, f.listData = nil, nil
	l, err := parseUidlist(data)
	if err != nil {
		// A broken uidlist: keep what we have; the next assignment
		// rewrites it.
		f.u.s.log.Warn("ignoring a broken dovecot-uidlist", "path", p, "err", err)
		if f.uidValidity == 0 {
			uv, err := f.u.nextUIDValidity()
			if err != nil {
				return false, err
			}
			f.uidValidity, f.uidNext = uv, 1
		}
		f.listStamp = st
		f.listByKey = map[string]uint32{}
		return false, nil
	}
	f.listStamp, f.listData = st, data
	f.setListLocked(l)
	if f.uidValidity != 0 && l.uidValidity != f.uidValidity {
		f.ents = nil
		f.byKey = make(map[string]*entry)
		f.gone = make(map[string]bool)
		reset = true
		f.uidNext = l.nextUID
	}
	f.uidValidity = l.uidValidity
	if l.nextUID > f.uidNext {
		f.uidNext = l.nextUID
	}
	return reset, nil
}

func (f *folderIndex) setListLocked(l *uidlist) {
	f.list = l
	f.listByKey = make(map[string]uint32, len(l.recs))
	for _, r := range l.recs {
		f.listByKey[r.key] = r.uid
	}
}

// assignLocked gives cands UIDs, in order, and adds them to the index. A
// file the uidlist already knows keeps its UID unless fresh: messages this
// process put there while holding the uidlist lock (held), so any line of
// their key is stale and they get new UIDs. New UIDs are taken under
// dovecot-uidlist.lock from the file's next UID, and the file is
// rewritten. held, if not nil, is used (and released) instead of taking
// the lock.
func (f *folderIndex) assignLocked(cands []*entry, fresh bool, held *dotlock) error {
	if held != nil {
		defer held.release()
	}
	used := make(map[uint32]bool, len(f.ents)+len(cands))
	for _, e := range f.ents {
		used[e.uid] = true
	}
	var rest []*entry
	for _, c := range cands {
		if uid, ok := f.listByKey[c.key]; ok && !fresh && !f.gone[c.key] && !used[uid] {
			c.uid = uid
			used[uid] = true
			continue
		}
		rest = append(rest, c)
	}
	if len(rest) > 0 {
		if err := f.writeUIDsLocked(rest, used, fresh, held); err != nil {
			return err
		}
	}
	for _, c := range cands {
		f.setMsg(c)
		f.ents = append(f.ents, c)
		f.byKey[c.key] = c
	}
	slices.SortFunc(f.ents, func(a, b *entry) int { return cmpUID(a.uid, b.uid) })
	return nil
}

func (f *folderIndex) writeUIDsLocked(rest []*entry, used map[uint32]bool, fresh bool, held *dotlock) error {
	p := filepath.Join(f.dir, "dovecot-uidlist")
	lk := held
	if lk == nil {
		var err error
		if lk, err = lockFile(f.u.perm(), p); err != nil {
			return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
		}
		defer lk.release()
	}
	var err error
	var l *uidlist
	data, rerr := os.ReadFile(p)
	switch {
	case rerr == nil && f.list != nil && bytes.Equal(data, f.listData):
		// Exactly as we last read or wrote it: no need to parse.
		c := *f.list
		l = &c
		if done, err := f.appendUIDsLocked(lk, l, rest, used); done || err != nil {
			return err
		}
	case rerr == nil:
		if l, err = parseUidlist(data); err != nil {
			f.u.s.log.Warn("rewriting a broken dovecot-uidlist", "path", p, "err", err)
			l = nil
		}
	case !errors.Is(rerr, fs.ErrNotExist):
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, rerr)
	}
	if l == nil {
		if f.uidValidity == 0 {
			if f.uidValidity, err = f.u.nextUIDValidity(); err != nil {
				return err
			}
			f.uidNext = 1
		}
		l = &uidlist{uidValidity: f.uidValidity, nextUID: f.uidNext, guid: randHex(16)}
	}
	if l.uidValidity != f.uidValidity {
		// Recreated under us: start over at the next sync.
		f.loaded = false
		f.listByKey = nil
		return fmt.Errorf("mailbox %s: %q: UIDVALIDITY changed on disk", f.u.addr, f.name)
	}
	if l.nextUID < f.uidNext {
		l.nextUID = f.uidNext
	}
	inList := make(map[string]uint32, len(l.recs))
	for _, r := range l.recs {
		inList[r.key] = r.uid
	}
	for _, c := range rest {
		if uid, ok := inList[c.key]; ok && !fresh && !f.gone[c.key] && !used[uid] {
			c.uid = uid // assigned by another process meanwhile
		} else {
			for used[l.nextUID] { // never a UID the index already gave out
				l.nextUID++
			}
			if l.nextUID == 0 || l.nextUID == ^uint32(0) {
				return fmt.Errorf("mailbox %s: %q: UIDs exhausted", f.u.addr, f.name)
			}
			c.uid = l.nextUID
			l.nextUID++
		}
		used[c.uid] = true
	}
	// The new list: what the file had, minus messages known to be gone,
	// plus every message of the index and the new ones.
	recs := make([]uidRec, 0, len(l.recs)+len(rest))
	keep := make(map[string]bool, len(l.recs)+len(rest))
	for _, e := range f.ents {
		keep[e.key] = true
	}
	for _, c := range rest {
		keep[c.key] = true
	}
	restUID := make(map[string]uint32, len(rest))
	for _, c := range rest {
		restUID[c.key] = c.uid
	}
	uidOf := func(key string) uint32 {
		if e := f.byKey[key]; e != nil {
			return e.uid
		}
		return restUID[key]
	}
	have := make(map[uint32]bool, len(l.recs))
	for _, r := range l.recs {
		if (f.gone[r.key] && !keep[r.key]) || (keep[r.key] && uidOf(r.key) != r.uid) {
			continue
		}
		recs = append(recs, r)
		have[r.uid] = true
	}
	for _, e := range f.ents {
		if !have[e.uid] {
			recs = append(recs, uidRec{uid: e.uid, key: e.key})
			have[e.uid] = true
		}
	}
	for _, c := range rest {
		if !have[c.uid] {
			recs = append(recs, uidRec{uid: c.uid, key: c.key})
			have[c.uid] = true
		}
	}
	slices.SortFunc(recs, func(a, b uidRec) int { return cmpUID(a.uid, b.uid) })
	l.recs = recs
	out := l.marshal()
	if err := lk.commit(out); err != nil {
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	clear(f.gone)
	f.uidNext = l.nextUID
	f.setListLocked(l)
	f.listData = out
	if fi, err := os.Stat(p); err == nil {
		f.listStamp = stampOf(fi)
	}
	return nil
}

// appendUIDsLocked is the fast path of writeUIDsLocked when the file is
// as we last saw it and nothing is to be dropped: the new messages get the
// next UIDs and their lines are added at the end. It reports false (having
// changed nothing) when the general path is needed.
func (f *folderIndex) appendUIDsLocked(lk *dotlock, l *uidlist, rest []*entry, used map[uint32]bool) (bool, error) {
	if len(f.gone) > 0 || l.uidValidity != f.uidValidity {
		return false, nil
	}
	next := max(l.nextUID, f.uidNext)
	if uint64(next)+uint64(len(rest)) >= 1<<32-1 {
		return false, nil
	}
	for _, c := range rest {
		if _, ok := f.listByKey[c.key]; ok {
			return false, nil // a line of this key exists: the general path
		}
	}
	recs := make([]uidRec, len(l.recs), len(l.recs)+len(rest))
	copy(recs, l.recs)
	for _, c := range rest {
		c.uid = next
		next++
		used[c.uid] = true
		recs = append(recs, uidRec{uid: c.uid, key: c.key})
	}
	l.recs, l.nextUID = recs, next
	out := l.marshal()
	if err := lk.commit(out); err != nil {
		return false, fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	f.uidNext = next
	f.list, f.listData = l, out
	for _, c := range rest {
		f.listByKey[c.key] = c.uid
	}
	if fi, err := os.Stat(filepath.Join(f.dir, "dovecot-uidlist")); err == nil {
		f.listStamp = stampOf(fi)
	}
	return true, nil
}

// ---- keywords ------------------------------------------------------------

// loadKeywordsLocked rereads dovecot-keywords when it changed and reports
// whether the table changed.
func (f *folderIndex) loadKeywordsLocked() bool {
	p := filepath.Join(f.dir, "dovecot-keywords")
	fi, err := os.Stat(p)
	if err != nil {
		return false
	}
	st := stampOf(fi)
	if st == f.kwStamp {
		return false
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	f.kwStamp = st
	t := parseKeywords(data)
	if t == f.kw {
		return false
	}
	f.kw = t
	f.rebuildMsgsLocked()
	return true
}

// resolveFlagsLocked turns IMAP flag names into bits. With create, unknown
// keywords get letters (ErrTooManyFlags when none is left); without, they
// are left out.
func (f *folderIndex) resolveFlagsLocked(flags []string, create bool) (sys uint8, kw uint32, err error) {
	var add []string
	for _, fl := range flags {
		if b := sysFlag(fl); b != 0 {
			sys |= b
			continue
		}
		if strings.HasPrefix(fl, `\`) {
			if strings.EqualFold(fl, `\Recent`) {
				continue // not storable
			}
			return 0, 0, fmt.Errorf("%w: %q", ErrBadFlag, fl)
		}
		if !validKeyword(fl) {
			return 0, 0, fmt.Errorf("%w: %q", ErrBadFlag, fl)
		}
		if i := f.kw.index(fl); i >= 0 {
			kw |= 1 << i
		} else if create && !slices.ContainsFunc(add, func(s string) bool { return strings.EqualFold(s, fl) }) {
			add = append(add, fl)
		}
	}
	if len(add) > 0 {
		if err := f.addKeywordsLocked(add); err != nil {
			return 0, 0, err
		}
		for _, k := range add {
			kw |= 1 << f.kw.index(k)
		}
	}
	return sys, kw, nil
}

// addKeywordsLocked gives kws letters in dovecot-keywords (under its
// dot-lock, as Dovecot writes it).
func (f *folderIndex) addKeywordsLocked(kws []string) error {
	p := filepath.Join(f.dir, "dovecot-keywords")
	lk, err := lockFile(f.u.perm(), p)
	if err != nil {
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	defer lk.release()
	var t keywordTable
	if data, err := os.ReadFile(p); err == nil {
		t = parseKeywords(data)
	}
	// A letter still in a file name is not free, even if the keywords
	// file (lost, damaged, truncated) no longer names it: reusing it would
	// give the new keyword to every message carrying the old letter.
	var inNames uint32
	for _, e := range f.ents {
		inNames |= e.kw
	}
	for _, k := range kws {
		if t.index(k) >= 0 {
			continue
		}
		free := -1
		for i, name := range t {
			if name == "" && inNames&(1<<i) == 0 {
				free = i
				break
			}
		}
		if free < 0 {
			return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, ErrTooManyFlags)
		}
		t[free] = k
	}
	if err := lk.commit(t.marshal()); err != nil {
		return fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
	}
	if fi, err := os.Stat(p); err == nil {
		f.kwStamp = stampOf(fi)
	}
	f.kw = t
	f.rebuildMsgsLocked()
	return nil
}

// ---- Folder methods ----------------------------------------------------

// Name returns the folder's current name (it follows renames).
func (fd *Folder) Name() string {
	f := fd.ix
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name
}

// Close releases the folder; the index lives while any Folder of it is
// open. Closing twice is harmless.
func (fd *Folder) Close() error {
	if fd == nil || fd.closed.Swap(true) {
		return nil
	}
	fd.ix.u.closeIndex(fd.ix)
	return nil
}

// Snapshot returns the folder as it is now; see store.go. When the disk did
// not change it costs two stats.
func (fd *Folder) Snapshot() (*Snapshot, error) {
	f, err := fd.index()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.syncLocked(false); err != nil {
		return nil, err
	}
	return f.snap, nil
}

// Changed returns a channel closed at the next change of the folder.
func (fd *Folder) Changed() <-chan struct{} {
	f := fd.ix
	f.watched.Store(true)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Open opens a message's file for reading.
func (fd *Folder) Open(uid uint32) (io.ReadSeekCloser, error) {
	f, err := fd.index()
	if err != nil {
		return nil, err
	}
	if err := f.lockReady(); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	e := f.byUID(uid)
	if e == nil {
		return nil, fmt.Errorf("mailbox %s: %q: UID %d: %w", f.u.addr, f.name, uid, ErrNoMessage)
	}
	var file *os.File
	_, err = f.withFile(e, func(_ *entry, p string) error {
		var err error
		file, err = os.Open(p)
		return err
	})
	if errors.Is(err, errGone) {
		return nil, fmt.Errorf("mailbox %s: %q: UID %d: %w", f.u.addr, f.name, uid, ErrNoMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %q: UID %d: %w", f.u.addr, f.name, uid, err)
	}
	return file, nil
}

func applyFlags(sys uint8, kw uint32, op FlagOp, s uint8, k uint32) (uint8, uint32) {
	switch op {
	case FlagsAdd:
		return sys | s, kw | k
	case FlagsRemove:
		return sys &^ s, kw &^ k
	default:
		return s, k
	}
}

// StoreFlags changes the flags of the messages uids (those that exist) by
// renaming their files.
func (fd *Folder) StoreFlags(uids []uint32, op FlagOp, flags []string) error {
	f, err := fd.index()
	if err != nil {
		return err
	}
	if err := f.lockReady(); err != nil {
		return err
	}
	defer f.mu.Unlock()
	sys, kw, err := f.resolveFlagsLocked(flags, op != FlagsRemove)
	if err != nil {
		return err
	}
	targets := f.entriesLocked(uids)
	done := f.trackOwnCur()
	changed := false
	var firstErr error
	for _, t := range targets {
		cur := f.byKey[t.key]
		if cur == nil || cur.uid != t.uid {
			continue // removed by a rescan meanwhile
		}
		var ne *entry
		_, err := f.withFile(cur, func(e *entry, p string) error {
			ns, nk := applyFlags(e.sys, e.kw, op, sys, kw)
			if ns == e.sys && nk == e.kw && !e.inNew {
				ne = nil
				return nil
			}
			name := fileName(e.key, ns, nk)
			if err := os.Rename(p, filepath.Join(f.dir, "cur", name)); err != nil {
				return err
			}
			c := *e
			c.name, c.inNew, c.sys, c.kw = name, false, ns, nk
			ne = &c
			return nil
		})
		if errors.Is(err, errGone) {
			changed = true
			continue
		}
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		if ne != nil {
			f.setMsg(ne)
			f.replaceLocked(ne)
			changed = true
		}
	}
	done()
	if changed {
		f.publishLocked()
	}
	if firstErr != nil {
		return fmt.Errorf("mailbox %s: %q: store flags: %w", f.u.addr, f.name, firstErr)
	}
	return nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// Expunge removes the messages uids and returns those no longer there.
func (fd *Folder) Expunge(uids []uint32) ([]uint32, error) {
	f, err := fd.index()
	if err != nil {
		return nil, err
	}
	if err := f.lockReady(); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	targets := f.entriesLocked(uids)
	if len(targets) == 0 {
		return nil, nil
	}
	done := f.trackOwnCur()
	removed := make(map[string]bool)
	var freed, n int64
	var firstErr error
	for _, t := range targets {
		cur := f.byKey[t.key]
		if cur == nil {
			continue
		}
		_, err := f.withFile(cur, func(_ *entry, p string) error { return os.Remove(p) })
		switch {
		case err == nil:
			removed[t.key] = true
			freed += cur.size
			n++
		case errors.Is(err, errGone):
		default:
			firstErr = cmpErr(firstErr, err)
		}
	}
	f.removeKeysLocked(removed)
	done()
	var out []uint32
	for _, t := range targets {
		if e := f.byKey[t.key]; e == nil || e.uid != t.uid {
			out = append(out, t.uid)
		}
	}
	f.publishLocked()
	f.u.addUsage(f.dir, -freed, -n)
	if firstErr != nil {
		return out, fmt.Errorf("mailbox %s: %q: expunge: %w", f.u.addr, f.name, firstErr)
	}
	return out, nil
}

// CopyTo copies messages into dst (hard links when possible).
func (fd *Folder) CopyTo(uids []uint32, dst *Folder) (src, dstUIDs []uint32, uidValidity uint32, err error) {
	return fd.transfer(uids, dst, false)
}

// MoveTo moves messages into dst: the files are renamed (their keys stay),
// the source UIDs are expunged and the destination gives new UIDs.
func (fd *Folder) MoveTo(uids []uint32, dst *Folder) (src, dstUIDs []uint32, uidValidity uint32, err error) {
	return fd.transfer(uids, dst, true)
}

func (fd *Folder) transfer(uids []uint32, dst *Folder, move bool) (srcUIDs, dstUIDs []uint32, uidValidity uint32, err error) {
	f, err := fd.index()
	if err != nil {
		return nil, nil, 0, err
	}
	d, err := dst.index()
	if err != nil {
		return nil, nil, 0, err
	}
	if f == d && move {
		// MOVE into the same folder: new UIDs, as a copy and an expunge.
		srcUIDs, dstUIDs, uidValidity, err = fd.transfer(uids, dst, false)
		if err != nil {
			return nil, nil, 0, err
		}
		if _, err := fd.Expunge(srcUIDs); err != nil {
			return nil, nil, 0, err
		}
		return srcUIDs, dstUIDs, uidValidity, nil
	}
	first, second := f, d
	if second.seq < first.seq {
		first, second = second, first
	}
	if err := first.lockReady(); err != nil {
		return nil, nil, 0, err
	}
	defer first.mu.Unlock()
	if second != first {
		if err := second.lockReady(); err != nil {
			return nil, nil, 0, err
		}
		defer second.mu.Unlock()
	}
	return f.transferLocked(uids, d, move)
}

func (f *folderIndex) transferLocked(uids []uint32, d *folderIndex, move bool) (srcUIDs, dstUIDs []uint32, uidValidity uint32, err error) {
	targets := f.entriesLocked(uids)
	if len(targets) == 0 {
		return nil, nil, d.uidValidity, nil
	}
	usageMoves := !move || f.u != d.u
	if usageMoves {
		var total int64
		for _, t := range targets {
			total += t.size
		}
		if err := d.u.checkQuota(total); err != nil {
			return nil, nil, 0, err
		}
	}
	// The destination's letters for the keywords in use.
	var names []string
	var used uint32
	for _, t := range targets {
		used |= t.kw
	}
	for i := 0; i < maxKeywords; i++ {
		if used&(1<<i) != 0 && f.kw[i] != "" {
			names = append(names, f.kw[i])
		}
	}
	if _, _, err := d.resolveFlagsLocked(names, true); err != nil {
		return nil, nil, 0, err
	}
	mapKw := func(kw uint32) uint32 {
		var out uint32
		for i := 0; i < maxKeywords; i++ {
			if kw&(1<<i) != 0 && f.kw[i] != "" {
				out |= 1 << d.kw.index(f.kw[i])
			}
		}
		return out
	}
	// Hold the destination's uidlist lock while placing the files, so that
	// no other process gives them UIDs before we do. (Not for a copy into
	// the same folder: a rescan of the source would need the lock.)
	var held *dotlock
	if f != d {
		lk, err := lockFile(d.u.perm(), filepath.Join(d.dir, "dovecot-uidlist"))
		if err != nil {
			return nil, nil, 0, fmt.Errorf("mailbox %s: %q: %w", d.u.addr, d.name, err)
		}
		held = lk
		defer lk.release()
	}
	doneSrc := f.trackOwnCur()
	doneDst := d.trackOwnCur()
	var cands []*entry
	movedOut := make(map[string]bool)
	var bytes, n int64
	var firstErr error
	for _, t := range targets {
		cur := f.byKey[t.key]
		if cur == nil {
			continue
		}
		var ne *entry
		got, err := f.withFile(cur, func(e *entry, p string) error {
			nkw := mapKw(e.kw)
			key := e.key
			if !move || d.byKey[key] != nil {
				key = newBase(e.size)
			}
			name := fileName(key, e.sys, nkw)
			np := filepath.Join(d.dir, "cur", name)
			if move {
				err := renameNoReplace(p, np)
				if errors.Is(err, fs.ErrExist) {
					// Another message of that key is there: the
					// moved one gets a new key.
					key = newBase(e.size)
					name = fileName(key, e.sys, nkw)
					np = filepath.Join(d.dir, "cur", name)
					err = renameNoReplace(p, np)
				}
				if err != nil {
					return err
				}
			} else if err := os.Link(p, np); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return err
				}
				if err := copyMessage(d.u.perm(), p, filepath.Join(d.dir, "tmp", name), np); err != nil {
					return err
				}
			}
			ne = &entry{key: key, name: name, sys: e.sys, kw: nkw, size: e.size, date: e.date}
			return nil
		})
		if errors.Is(err, errGone) {
			continue
		}
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			break
		}
		cands = append(cands, ne)
		srcUIDs = append(srcUIDs, got.uid)
		bytes += got.size
		n++
		if move {
			movedOut[got.key] = true
		}
	}
	if move {
		f.removeKeysLocked(movedOut)
		doneSrc()
		f.publishLocked()
	}
	// A COPY or MOVE answered OK is durable: the new names are synced
	// (a rename's two entries are one journal transaction on the
	// filesystems we run on, but both directories are synced anyway).
	if len(cands) > 0 {
		if err := syncDir(filepath.Join(d.dir, "cur")); err != nil {
			return nil, nil, 0, fmt.Errorf("mailbox %s: %q: %w", d.u.addr, d.name, err)
		}
	}
	if move {
		if err := syncDir(filepath.Join(f.dir, "cur")); err != nil {
			return nil, nil, 0, fmt.Errorf("mailbox %s: %q: %w", f.u.addr, f.name, err)
		}
	}
	if len(cands) > 0 {
		if err := d.assignLocked(cands, true, held); err != nil {
			// The files are in place: the next sync gives them UIDs.
			return nil, nil, 0, err
		}
		doneDst()
		d.publishLocked()
	}
	for _, c := range cands {
		dstUIDs = append(dstUIDs, c.uid)
	}
	if usageMoves {
		d.u.addUsage(d.dir, bytes, n)
		if move {
			f.u.addUsage(f.dir, -bytes, -n)
		}
	}
	if firstErr != nil {
		return srcUIDs, dstUIDs, d.uidValidity, fmt.Errorf("mailbox %s: %q: transfer: %w", f.u.addr, f.name, firstErr)
	}
	return srcUIDs, dstUIDs, d.uidValidity, nil
}

// copyMessage copies src to dst through tmp (write, fsync, rename).
func copyMessage(pm perm, src, tmp, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := pm.create(tmp)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if fi, serr := in.Stat(); serr == nil {
			_ = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
		}
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// appendMsg stores r (LF or CRLF lines, stored CRLF) with flags and date.
func (f *folderIndex) appendMsg(r io.Reader, flags []string, date time.Time) (uint32, uint32, error) {
	if err := f.lockReady(); err != nil {
		return 0, 0, err
	}
	defer f.mu.Unlock()
	sys, kw, err := f.resolveFlagsLocked(flags, true)
	if err != nil {
		return 0, 0, err
	}
	limit := int64(-1)
	if q := f.u.s.quota(f.u.addr); q > 0 {
		f.u.umu.Lock()
		us, err := f.u.usageLocked()
		f.u.umu.Unlock()
		if err != nil {
			return 0, 0, err
		}
		limit = q - us.Bytes
		if limit < 0 {
			limit = 0
		}
	}
	tmp := filepath.Join(f.dir, "tmp", newBase(0))
	size, err := writeCRLF(f.u.perm(), tmp, r, limit)
	if err != nil {
		if errors.Is(err, ErrOverQuota) {
			return 0, 0, fmt.Errorf("mailbox %s: append to %q: %w", f.u.addr, f.name, ErrOverQuota)
		}
		return 0, 0, fmt.Errorf("mailbox %s: append to %q: %w", f.u.addr, f.name, err)
	}
	if date.IsZero() {
		date = time.Now()
	}
	_ = os.Chtimes(tmp, date, date)
	key := newBase(size)
	name := fileName(key, sys, kw)
	held, err := lockFile(f.u.perm(), filepath.Join(f.dir, "dovecot-uidlist"))
	if err != nil {
		_ = os.Remove(tmp)
		return 0, 0, fmt.Errorf("mailbox %s: append to %q: %w", f.u.addr, f.name, err)
	}
	defer held.release()
	done := f.trackOwnCur()
	if err := os.Rename(tmp, filepath.Join(f.dir, "cur", name)); err != nil {
		_ = os.Remove(tmp)
		return 0, 0, fmt.Errorf("mailbox %s: append to %q: %w", f.u.addr, f.name, err)
	}
	if err := syncDir(filepath.Join(f.dir, "cur")); err != nil {
		return 0, 0, fmt.Errorf("mailbox %s: append to %q: %w", f.u.addr, f.name, err)
	}
	done()
	fi, err := os.Stat(filepath.Join(f.dir, "cur", name))
	if err == nil {
		date = fi.ModTime()
	}
	e := &entry{key: key, name: name, sys: sys, kw: kw, size: size, date: date}
	if err := f.assignLocked([]*entry{e}, true, held); err != nil {
		return 0, 0, err
	}
	f.publishLocked()
	f.u.addUsage(f.dir, size, 1)
	return f.uidValidity, e.uid, nil
}

// writeCRLF copies r into a new file at path with bare LFs turned into
// CRLF, fsyncs it and returns its size. More than limit octets (limit >=
// 0) is ErrOverQuota. On error the file is removed.
func writeCRLF(pm perm, path string, r io.Reader, limit int64) (size int64, err error) {
	out, err := pm.create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = out.Close()
			_ = os.Remove(path)
		}
	}()
	w := bufio.NewWriterSize(out, 64<<10)
	br := bufio.NewReaderSize(r, 64<<10)
	var prev byte
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if c == '\n' && prev != '\r' {
			_ = w.WriteByte('\r')
			size++
		}
		_ = w.WriteByte(c)
		size++
		prev = c
		if limit >= 0 && size > limit {
			return 0, ErrOverQuota
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	if err := out.Close(); err != nil {
		return 0, err
	}
	return size, nil
}
