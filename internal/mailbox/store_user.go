package mailbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Store is the one owner of the Maildir tree (see store.go and doc.go).
type Store struct {
	md   *Maildir
	opts StoreOptions
	log  *slog.Logger

	mu    sync.Mutex
	users map[string]*userState // by mailbox directory

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Timing of the disk checks. Variables so tests can shorten them.
var (
	// pollInterval is how often folders someone waits on (Changed) are
	// checked for changes made by other processes.
	pollInterval = time.Second
	// racyWindow: a directory modified less than this before a scan may
	// change again without its mtime changing, so it is scanned once more
	// after the window.
	racyWindow = time.Second
	// usageTTL is how long a user's cached usage is trusted before the
	// folder directories are checked again.
	usageTTL = time.Second
)

// NewStore returns a store of the Maildirs under root (data_dir/mail).
func NewStore(root string, opts StoreOptions) *Store {
	s := &Store{
		md:    &Maildir{Root: root, Perm: opts.Perm, PerFileSync: opts.PerFileSync, SyncBatch: opts.SyncBatch},
		opts:  opts,
		log:   slog.Default().With("stage", "mailbox"),
		users: make(map[string]*userState),
		done:  make(chan struct{}),
	}
	s.wg.Add(1)
	go s.poll()
	return s
}

// Close stops the store's background work. Folders stay usable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	s.wg.Wait()
	return nil
}

// poll syncs, every pollInterval, the open folders someone waits on, so
// that changes by other processes (a Dovecot on the same tree) wake them.
func (s *Store) poll() {
	defer s.wg.Done()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		var watched []*folderIndex
		s.mu.Lock()
		users := make([]*userState, 0, len(s.users))
		for _, u := range s.users {
			users = append(users, u)
		}
		s.mu.Unlock()
		for _, u := range users {
			u.mu.Lock()
			for _, f := range u.open {
				if f.watched.Load() {
					watched = append(watched, f)
				}
			}
			u.mu.Unlock()
		}
		for _, f := range watched {
			f.mu.Lock()
			if err := f.syncLocked(false); err != nil && !errors.Is(err, ErrNoFolder) {
				s.log.Warn("folder sync failed", "dir", f.dir, "err", err)
			}
			f.mu.Unlock()
		}
	}
}

// userState is the per-process state of one user's mailbox, shared by
// every User value of that address.
type userState struct {
	s    *Store
	addr string
	dir  string

	// mu guards the folder tree (create, delete, rename), subscriptions,
	// open and ready. Lock order: mu, then a folderIndex's mu, then umu
	// or uvmu.
	mu     sync.Mutex
	ready  bool
	open   map[string]*folderIndex // by canonical folder name
	uvmu   sync.Mutex              // dovecot-uidvalidity
	umu    sync.Mutex              // usage cache
	usage  map[string]*folderUsage // by folder directory
	usedAt time.Time
}

// folderUsage is the cached size of one folder directory.
type folderUsage struct {
	newM, curM time.Time
	bytes      int64
	msgs       int64
	dirty      bool // changed by us since the scan: rescan after usageTTL
}

func (s *Store) state(addr string) (*userState, error) {
	dir, err := s.md.mailboxDir(addr)
	if err != nil {
		return nil, fmt.Errorf("mailbox store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[dir]
	if u == nil {
		u = &userState{s: s, addr: strings.ToLower(addr), dir: dir, open: make(map[string]*folderIndex)}
		s.users[dir] = u
	}
	return u, nil
}

// specialFolders are created for every user, subscribed.
var specialFolders = []struct{ name, use string }{
	{"Sent", UseSent}, {"Drafts", UseDrafts}, {"Trash", UseTrash}, {"Junk", UseJunk}, {"Archive", UseArchive},
}

func specialUse(name string) string {
	for _, sf := range specialFolders {
		if sf.name == name {
			return sf.use
		}
	}
	return ""
}

// User returns addr's mailbox, creating INBOX and the special-use folders
// on first use. The result is a User with only Address set and the
// folder methods usable.
func (s *Store) User(addr string) (*User, error) {
	u, err := s.state(addr)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.ready {
		if err := u.initLocked(); err != nil {
			return nil, fmt.Errorf("mailbox %s: %w", addr, err)
		}
		u.ready = true
	}
	return &User{Address: u.addr, mb: u}, nil
}

func (u *userState) initLocked() error {
	if err := u.s.md.ensureMaildir(u.dir); err != nil {
		return err
	}
	if err := u.ensureUidlist(u.dir); err != nil {
		return err
	}
	subs, err := u.readSubscriptions()
	if err != nil {
		return err
	}
	for _, sf := range specialFolders {
		created, err := u.createLocked(sf.name)
		if err != nil && !errors.Is(err, ErrFolderExists) {
			return err
		}
		if created && !slices.Contains(subs, sf.name) {
			subs = append(subs, sf.name)
		}
	}
	return u.writeSubscriptions(subs)
}

// ensureUidlist gives a Maildir without dovecot-uidlist an empty one with a
// fresh UIDVALIDITY.
func (u *userState) ensureUidlist(dir string) error {
	p := filepath.Join(dir, "dovecot-uidlist")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	uv, err := u.nextUIDValidity()
	if err != nil {
		return err
	}
	lk, err := lockFile(u.perm(), p)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		lk.release()
		return nil
	}
	l := &uidlist{uidValidity: uv, nextUID: 1, guid: randHex(16)}
	return lk.commit(l.marshal())
}

// nextUIDValidity returns a UIDVALIDITY never given before in this
// mailbox: max(now, last+1), the last one kept in dovecot-uidvalidity (hex,
// as Dovecot keeps it).
func (u *userState) nextUIDValidity() (uint32, error) {
	u.uvmu.Lock()
	defer u.uvmu.Unlock()
	p := filepath.Join(u.dir, "dovecot-uidvalidity")
	var last uint32
	if b, err := os.ReadFile(p); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32); err == nil {
			last = uint32(v)
		}
	}
	next := uint32(time.Now().Unix())
	if next <= last {
		next = last + 1
	}
	if next == 0 {
		next = 1
	}
	if err := u.perm().mkdirAll(u.dir); err != nil {
		return 0, err
	}
	if err := writeAtomic(u.perm(), p, []byte(strconv.FormatUint(uint64(next), 16)+"\n")); err != nil {
		return 0, fmt.Errorf("uidvalidity: %w", err)
	}
	return next, nil
}

// folderDir is the directory of a canonical folder name.
// perm is how the store creates files and directories.
func (u *userState) perm() perm { return u.s.md.Perm.resolve() }

func (u *userState) folderDir(name string) string {
	if name == inboxName {
		return u.dir
	}
	return filepath.Join(u.dir, diskFolder(name))
}

// folderNames lists the folders on disk (without INBOX), sorted.
func (u *userState) folderNames() ([]string, error) {
	ents, err := os.ReadDir(u.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if n, ok := folderFromDisk(e.Name()); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (u *userState) exists(name string) bool {
	fi, err := os.Stat(u.folderDir(name))
	return err == nil && fi.IsDir()
}

// createLocked creates name (and missing parents); created is false when
// it existed.
func (u *userState) createLocked(name string) (created bool, err error) {
	if name == inboxName || u.exists(name) {
		return false, ErrFolderExists
	}
	names, err := u.folderNames()
	if err != nil {
		return false, err
	}
	levels := strings.Split(name, string(Delimiter))
	for i := range levels {
		n := strings.Join(levels[:i+1], string(Delimiter))
		if n == inboxName || u.exists(n) {
			continue
		}
		if len(names) >= maxFolders {
			return false, ErrTooManyFolders
		}
		dir := u.folderDir(n)
		if err := u.perm().mkdir(dir); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return false, fmt.Errorf("create folder %q: %w", n, err)
		}
		if err := ensureSubdirs(u.perm(), dir); err != nil {
			return false, fmt.Errorf("create folder %q: %w", n, err)
		}
		// Dovecot marks Maildir++ subfolders with an empty maildirfolder.
		if err := writeFile(u.perm(), filepath.Join(dir, "maildirfolder"), false); err != nil && !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("create folder %q: %w", n, err)
		}
		if err := u.ensureUidlist(dir); err != nil {
			return false, fmt.Errorf("create folder %q: %w", n, err)
		}
		if err := syncDir(u.dir); err != nil {
			return false, err
		}
		names = append(names, n)
	}
	return true, nil
}

// ---- subscriptions ---------------------------------------------------

func (u *userState) readSubscriptions() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(u.dir, "subscriptions"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseSubscriptions(b), nil
}

// parseSubscriptions reads one folder name per line, skipping invalid and
// repeated names (at most maxFolders).
func parseSubscriptions(b []byte) []string {
	var out []string
	for _, ln := range strings.Split(string(b), "\n") {
		c, err := canonFolder(strings.TrimRight(ln, "\r"))
		if err != nil || slices.Contains(out, c) {
			continue
		}
		out = append(out, c)
		if len(out) >= maxFolders {
			break
		}
	}
	return out
}

func (u *userState) writeSubscriptions(names []string) error {
	var b bytes.Buffer
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	if err := writeAtomic(u.perm(), filepath.Join(u.dir, "subscriptions"), b.Bytes()); err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	return nil
}

// ---- User methods ------------------------------------------------------

var errNotStoreUser = errors.New("mailbox: User not obtained from Store.User")

func (usr *User) state() (*userState, error) {
	if usr == nil || usr.mb == nil {
		return nil, errNotStoreUser
	}
	return usr.mb, nil
}

// Folders lists the user's folders, INBOX first, then by name.
func (usr *User) Folders() ([]FolderInfo, error) {
	u, err := usr.state()
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	names, err := u.folderNames()
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: list folders: %w", u.addr, err)
	}
	subs, err := u.readSubscriptions()
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %w", u.addr, err)
	}
	all := append([]string{inboxName}, names...)
	out := make([]FolderInfo, 0, len(all))
	for _, n := range all {
		fi := FolderInfo{Name: n, SpecialUse: specialUse(n), Subscribed: slices.Contains(subs, n)}
		prefix := n + string(Delimiter)
		for _, m := range names {
			if strings.HasPrefix(m, prefix) {
				fi.HasChildren = true
				break
			}
		}
		out = append(out, fi)
	}
	return out, nil
}

// Create makes a new folder, with any missing parents.
func (usr *User) Create(name string) error {
	u, err := usr.state()
	if err != nil {
		return err
	}
	name, err = canonFolder(name)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, err := u.createLocked(name); err != nil {
		return fmt.Errorf("mailbox %s: create %q: %w", u.addr, name, err)
	}
	return nil
}

// Delete removes a folder and its messages. A folder with children is
// refused (ErrHasChildren): Maildir++ has no place for a \Noselect parent.
func (usr *User) Delete(name string) error {
	u, err := usr.state()
	if err != nil {
		return err
	}
	name, err = canonFolder(name)
	if err != nil {
		return err
	}
	if name == inboxName {
		return ErrInboxSpecial
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.exists(name) {
		return fmt.Errorf("mailbox %s: delete %q: %w", u.addr, name, ErrNoFolder)
	}
	names, err := u.folderNames()
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, name+string(Delimiter)) {
			return fmt.Errorf("mailbox %s: delete %q: %w", u.addr, name, ErrHasChildren)
		}
	}
	dir := u.folderDir(name)
	if f := u.open[name]; f != nil {
		f.mu.Lock()
		f.markDeletedLocked()
		f.mu.Unlock()
		delete(u.open, name)
	}
	// Rename first so that the folder disappears at once, then remove.
	trash := filepath.Join(u.dir, "tmp", "deleted."+randHex(8))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("mailbox %s: delete %q: %w", u.addr, name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		u.s.log.Warn("removing a deleted folder failed", "dir", trash, "err", err)
	}
	u.forgetUsage(dir)
	return nil
}

// Rename renames a folder and its children. Renaming INBOX moves its
// messages into a new folder newName and leaves INBOX empty (RFC 3501).
func (usr *User) Rename(oldName, newName string) error {
	u, err := usr.state()
	if err != nil {
		return err
	}
	if oldName, err = canonFolder(oldName); err != nil {
		return err
	}
	if newName, err = canonFolder(newName); err != nil {
		return err
	}
	if newName == inboxName {
		return fmt.Errorf("mailbox %s: rename to INBOX: %w", u.addr, ErrFolderExists)
	}
	if oldName == inboxName {
		return usr.renameInbox(newName)
	}
	if oldName == newName {
		return fmt.Errorf("mailbox %s: rename %q: %w", u.addr, oldName, ErrFolderExists)
	}
	if strings.HasPrefix(newName, oldName+string(Delimiter)) {
		return fmt.Errorf("%w: %q into its own child", ErrBadFolderName, oldName)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.exists(oldName) {
		return fmt.Errorf("mailbox %s: rename %q: %w", u.addr, oldName, ErrNoFolder)
	}
	names, err := u.folderNames()
	if err != nil {
		return err
	}
	moves := []string{oldName}
	for _, n := range names {
		if strings.HasPrefix(n, oldName+string(Delimiter)) {
			moves = append(moves, n)
		}
	}
	target := func(n string) string { return newName + n[len(oldName):] }
	for _, n := range moves {
		t := target(n)
		if _, err := canonFolder(t); err != nil {
			return err
		}
		if u.exists(t) {
			return fmt.Errorf("mailbox %s: rename %q to %q: %w", u.addr, n, t, ErrFolderExists)
		}
	}
	// Parents of the new name, so that it is listed under them.
	if i := strings.LastIndexByte(newName, Delimiter); i > 0 {
		if _, err := u.createLocked(newName[:i]); err != nil && !errors.Is(err, ErrFolderExists) {
			return err
		}
	}
	for _, n := range moves {
		t := target(n)
		f := u.open[n]
		if f != nil {
			f.mu.Lock()
		}
		err := os.Rename(u.folderDir(n), u.folderDir(t))
		if err == nil && f != nil {
			f.name, f.dir = t, u.folderDir(t)
			delete(u.open, n)
			u.open[t] = f
		}
		if f != nil {
			f.mu.Unlock()
		}
		if err != nil {
			return fmt.Errorf("mailbox %s: rename %q to %q: %w", u.addr, n, t, err)
		}
	}
	if err := syncDir(u.dir); err != nil {
		return err
	}
	u.umu.Lock()
	u.usage = nil
	u.umu.Unlock()
	return nil
}

func (usr *User) renameInbox(newName string) error {
	if err := usr.Create(newName); err != nil {
		return err
	}
	src, err := usr.Open(inboxName)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := usr.Open(newName)
	if err != nil {
		return err
	}
	defer dst.Close()
	snap, err := src.Snapshot()
	if err != nil {
		return err
	}
	uids := make([]uint32, len(snap.Messages))
	for i, m := range snap.Messages {
		uids[i] = m.UID
	}
	_, _, _, err = src.MoveTo(uids, dst)
	return err
}

// Subscribe adds name to (on) or removes it from the subscriptions. The
// folder need not exist.
func (usr *User) Subscribe(name string, on bool) error {
	u, err := usr.state()
	if err != nil {
		return err
	}
	if name, err = canonFolder(name); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	subs, err := u.readSubscriptions()
	if err != nil {
		return err
	}
	i := slices.Index(subs, name)
	switch {
	case on && i >= 0, !on && i < 0:
		return nil
	case on:
		if len(subs) >= maxFolders {
			return ErrTooManyFolders
		}
		subs = append(subs, name)
	default:
		subs = slices.Delete(subs, i, i+1)
	}
	return u.writeSubscriptions(subs)
}

// Subscriptions returns the subscribed folder names (UTF-8, as the API
// names folders) in the order they were subscribed. A name stays
// subscribed after its folder is deleted or renamed (RFC 3501 6.3.6),
// so some may name no folder.
func (usr *User) Subscriptions() ([]string, error) {
	u, err := usr.state()
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	subs, err := u.readSubscriptions()
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %w", u.addr, err)
	}
	return subs, nil
}

// Open returns the folder; every Open of one folder in this process shares
// one index. Close it when done.
func (usr *User) Open(name string) (*Folder, error) {
	u, err := usr.state()
	if err != nil {
		return nil, err
	}
	if name, err = canonFolder(name); err != nil {
		return nil, err
	}
	f, err := u.openIndex(name)
	if err != nil {
		return nil, err
	}
	return &Folder{ix: f}, nil
}

func (u *userState) openIndex(name string) (*folderIndex, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if f := u.open[name]; f != nil {
		f.refs++
		return f, nil
	}
	if !u.exists(name) {
		return nil, fmt.Errorf("mailbox %s: open %q: %w", u.addr, name, ErrNoFolder)
	}
	f := newFolderIndex(u, name, u.folderDir(name))
	f.refs = 1
	u.open[name] = f
	return f, nil
}

// closeIndex drops one reference; the last one forgets the index.
func (u *userState) closeIndex(f *folderIndex) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f.refs--
	if f.refs > 0 {
		return
	}
	f.mu.Lock()
	name := f.name
	f.mu.Unlock()
	if u.open[name] == f {
		delete(u.open, name)
	}
}

// Append adds a message to folder name; see store.go.
func (usr *User) Append(name string, r io.Reader, flags []string, date time.Time) (uidValidity, uid uint32, err error) {
	f, err := usr.Open(name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return f.ix.appendMsg(r, flags, date)
}

// ---- usage and quota ---------------------------------------------------

// Usage is addr's usage over all folders (cached; cheap). A user never
// seen is 0.
func (s *Store) Usage(addr string) (Usage, error) {
	u, err := s.state(addr)
	if err != nil {
		return Usage{}, err
	}
	u.umu.Lock()
	defer u.umu.Unlock()
	return u.usageLocked()
}

// OverQuota reports whether addr is at or beyond its quota.
func (s *Store) OverQuota(addr string) bool {
	q := s.quota(addr)
	if q <= 0 {
		return false
	}
	us, err := s.Usage(addr)
	if err != nil {
		return false
	}
	return us.Bytes >= q
}

func (s *Store) quota(addr string) int64 {
	if s.opts.Quota == nil {
		return 0
	}
	return s.opts.Quota(addr)
}

// checkQuota refuses adding size octets to u's mail when that would exceed
// its quota; size -1 asks only whether the mailbox is already full.
func (u *userState) checkQuota(size int64) error {
	q := u.s.quota(u.addr)
	if q <= 0 {
		return nil
	}
	u.umu.Lock()
	defer u.umu.Unlock()
	us, err := u.usageLocked()
	if err != nil {
		return err
	}
	if size < 0 && us.Bytes >= q || size >= 0 && us.Bytes+size > q {
		return fmt.Errorf("mailbox %s: %d + %d octets over the quota of %d: %w", u.addr, us.Bytes, size, q, ErrOverQuota)
	}
	return nil
}

// addUsage records a change made by this process in folder directory dir.
func (u *userState) addUsage(dir string, bytes, msgs int64) {
	u.umu.Lock()
	defer u.umu.Unlock()
	if fu := u.usage[dir]; fu != nil {
		fu.bytes += bytes
		fu.msgs += msgs
		fu.dirty = true
		return
	}
	u.usedAt = time.Time{} // a folder the cache does not know: rescan
}

func (u *userState) forgetUsage(dir string) {
	u.umu.Lock()
	defer u.umu.Unlock()
	delete(u.usage, dir)
}

// usageLocked sums the folders, rescanning those whose new/ or cur/
// changed, at most every usageTTL.
func (u *userState) usageLocked() (Usage, error) {
	now := time.Now()
	if u.usage == nil || now.Sub(u.usedAt) >= usageTTL {
		if err := u.refreshUsage(); err != nil {
			return Usage{}, err
		}
		u.usedAt = now
	}
	var us Usage
	for _, fu := range u.usage {
		us.Bytes += fu.bytes
		us.Messages += fu.msgs
	}
	return us, nil
}

func (u *userState) refreshUsage() error {
	if _, err := os.Stat(u.dir); errors.Is(err, fs.ErrNotExist) {
		u.usage = map[string]*folderUsage{}
		return nil
	}
	names, err := u.folderNames()
	if err != nil {
		return fmt.Errorf("mailbox %s: usage: %w", u.addr, err)
	}
	old := u.usage
	u.usage = make(map[string]*folderUsage, len(names)+1)
	for _, n := range append([]string{inboxName}, names...) {
		dir := u.folderDir(n)
		newFi, err1 := os.Stat(filepath.Join(dir, "new"))
		curFi, err2 := os.Stat(filepath.Join(dir, "cur"))
		if err1 != nil || err2 != nil {
			continue
		}
		if fu := old[dir]; fu != nil && !fu.dirty && fu.newM.Equal(newFi.ModTime()) && fu.curM.Equal(curFi.ModTime()) {
			u.usage[dir] = fu
			continue
		}
		fu := &folderUsage{newM: newFi.ModTime(), curM: curFi.ModTime()}
		for _, sub := range []string{"new", "cur"} {
			d := filepath.Join(dir, sub)
			ents, err := readNames(d)
			if err != nil {
				return fmt.Errorf("mailbox %s: usage: %w", u.addr, err)
			}
			for _, e := range ents {
				key, _, _, ok := parseFileName(e)
				if !ok {
					continue
				}
				size, ok := sizeFromKey(key)
				if !ok {
					fi, err := os.Stat(filepath.Join(d, e))
					if err != nil {
						continue
					}
					size = fi.Size()
				}
				fu.bytes += size
				fu.msgs++
			}
		}
		u.usage[dir] = fu
	}
	return nil
}

// DeliverOnce stores a queued message in addr's INBOX exactly once (see
// Maildir.DeliverOnce) and wakes the folder's watchers. Quota is decided
// at RCPT time (OverQuota): a message is delivered whenever the mailbox
// still has room, even if it then goes over its quota, so a mailbox with
// room never makes accepted mail wait. Only a mailbox already full (an
// alias member, a quota lowered meanwhile, or other deliveries accepted
// at the same time that filled it) gets ErrOverQuota: a deferral, retried
// until the owner makes room or the queue lifetime ends.
func (s *Store) DeliverOnce(addr, queueID, returnPath string, body []byte, maybeDone bool) error {
	u, err := s.state(addr)
	if err != nil {
		return err
	}
	uniq, hdr := deliveryParts(addr, queueID, returnPath)
	size := int64(len(hdr) + len(body))
	if maybeDone && s.md.Delivered(addr, uniq, size) {
		return nil
	}
	if err := u.checkQuota(-1); err != nil {
		return err
	}
	if _, err := s.md.Deliver(addr, uniq, []byte(hdr), body); err != nil {
		return fmt.Errorf("maildir %s: %w", addr, err)
	}
	u.addUsage(u.dir, size, 1)
	// Wake an open INBOX (an IMAP IDLE) now rather than at the next poll.
	u.mu.Lock()
	f := u.open[inboxName]
	u.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		err := f.syncLocked(false)
		f.mu.Unlock()
		if err != nil {
			s.log.Warn("INBOX sync after delivery failed", "addr", addr, "err", err)
		}
	}
	return nil
}
