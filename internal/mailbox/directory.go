package mailbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/store"
)

// Errors returned by Directory. Callers test them with errors.Is; the
// returned errors carry the address or domain as context.
var (
	ErrAuthFailed    = errors.New("authentication failed")
	ErrDisabled      = errors.New("account disabled")
	ErrNotFound      = errors.New("not found")
	ErrExists        = errors.New("already exists")
	ErrUnknownDomain = errors.New("domain is not local")
	ErrWeakPassword  = errors.New("password too short")
	ErrInUse         = errors.New("domain still has users or aliases")
	ErrStatic        = errors.New("domain comes from the configuration file")
)

// MinPasswordLen is the minimum password length, in characters.
const MinPasswordLen = 8

// maxAliasDepth bounds alias nesting: an alias counts as level 1, an alias
// among its targets as level 2, and so on.
const maxAliasDepth = 10

// LoginPersistInterval is how often PersistLogins writes the last-login
// times RecordLogin kept in memory: one store transaction for all of them,
// never on a login's path.
const LoginPersistInterval = time.Minute

// Store buckets.
const (
	bucketUsers   = "mailbox.users"
	bucketAliases = "mailbox.aliases"
	bucketDomains = "mailbox.domains"
	// bucketMeta holds the dataset marker (key "dataset", see
	// directory_copy.go).
	bucketMeta = "mailbox.meta"
)

// User is a mailbox account as listed by Directory.Users.
type User struct {
	Address   string
	Created   time.Time
	Disabled  bool
	LastLogin time.Time
	// Quota is the user's own quota: 0 follows [mailbox] quota,
	// QuotaNone means none, otherwise bytes.
	Quota int64
	// QuotaBytes (the quota in force, 0 = none) and Usage are filled in
	// by the admin layer, which knows the default and the mail store.
	QuotaBytes int64
	Usage      Usage

	// mb is set by Store.User: the folder methods (store_user.go) work
	// only on such a User.
	mb *userState
}

// QuotaNone as a user's quota means no quota at all.
const QuotaNone = -1

// Alias maps an address ("x@domain") or a whole domain's catch-all
// ("@domain") to target addresses.
type Alias struct {
	Alias   string
	Targets []string
}

// userRecord is the stored form of a user.
type userRecord struct {
	Hash      string    `json:"hash"`
	Created   time.Time `json:"created"`
	Disabled  bool      `json:"disabled,omitempty"`
	LastLogin time.Time `json:"last_login,omitzero"`
	Quota     int64     `json:"quota,omitempty"` // see User.Quota
}

type domainRecord struct {
	Created time.Time `json:"created"`
}

type userEntry struct {
	rec            userRecord
	persistedLogin time.Time // LastLogin as last written to the store
}

// Directory holds users, local domains and aliases. Reads are served from
// memory; changes are written to the store first and then applied in memory.
// Changes to a user or an alias read the stored record inside the write
// transaction, so that, with a store shared by several nodes, a change made
// elsewhere is never overwritten by this node's older copy; Follow keeps the
// memory in step with changes made by other nodes. It is safe for
// concurrent use.
type Directory struct {
	st store.KV

	// writeMu serialises changes, so that the store write of one change can
	// run without blocking readers; only holders of writeMu modify the maps,
	// and they take mu for the modification itself.
	writeMu sync.Mutex
	mu      sync.RWMutex

	static    []string // config order, canonical, deduplicated
	staticSet map[string]bool
	runtime   map[string]domainRecord
	users     map[string]*userEntry
	aliases   map[string][]string // "x@dom" or "@dom" → canonical targets

	// offline is set while the shared store is unreachable (by Follow,
	// or by a failed last-login write; Follow clears it): last logins then
	// stay in memory (Flush writes them) instead of costing each login a
	// store timeout.
	offline atomic.Bool

	// onRevoke is told of every user whose credentials stopped being
	// valid (see SetRevokeHook).
	onRevoke atomic.Pointer[func(addr string)]

	// fromCopy is set while the directory holds a local copy it started
	// from, older than the store, and has not yet reloaded from the store
	// (directory_copy.go).
	fromCopy atomic.Bool
	// dataset is the store's dataset marker as last seen (guarded by mu).
	dataset string

	// copyTo, when set, holds the node's local copy of a shared
	// directory (directory_copy.go); copyRows is the copy last written
	// (bucket → key → stored value).
	copyMu   sync.Mutex
	copyTo   store.KV
	copyRows map[string]map[string][]byte
}

// SetRevokeHook makes the directory call fn with the canonical address of
// every user whose credentials stop being valid — password changed,
// account disabled or deleted — whether the change was made here or, with
// a shared store, on another node (Follow). The server ends that user's
// logged-in sessions with it. fn is called after the change is in force,
// with no lock held, and must not block.
func (d *Directory) SetRevokeHook(fn func(addr string)) { d.onRevoke.Store(&fn) }

// revokes reports whether replacing old by nu (nil: deleted) revokes the
// credentials sessions were opened with.
func revokes(old, nu *userEntry) bool {
	if old == nil {
		return false
	}
	return nu == nil || nu.rec.Hash != old.rec.Hash || (nu.rec.Disabled && !old.rec.Disabled)
}

// revoked tells the hook of addrs (called with no lock held).
func (d *Directory) revoked(addrs ...string) {
	fn := d.onRevoke.Load()
	if fn == nil {
		return
	}
	for _, a := range addrs {
		(*fn)(a)
	}
}

// OpenDirectory loads the directory from st. staticDomains are the config
// file's `domains`; they are always local and cannot be deleted at run time.
func OpenDirectory(st store.KV, staticDomains []string) (*Directory, error) {
	if st == nil {
		return nil, errors.New("open directory: nil store")
	}
	d := &Directory{
		st:        st,
		staticSet: make(map[string]bool),
	}
	for _, s := range staticDomains {
		c, err := CanonicalDomain(s)
		if err != nil {
			return nil, fmt.Errorf("open directory: configured domain: %w", err)
		}
		if !d.staticSet[c] {
			d.staticSet[c] = true
			d.static = append(d.static, c)
		}
	}
	var err error
	if d.runtime, d.users, d.aliases, err = load(st); err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	if _, isCopy := st.(copyKV); !isCopy {
		// A store that cannot take a marker now still opens (its copy
		// then records none, which never allows a catch-up).
		if d.dataset, err = ensureDataset(st); err != nil {
			slog.Warn("mailbox: cannot write the directory's dataset marker", "err", err.Error())
		}
	}
	for addr := range d.users {
		if !d.isLocalLocked(domainOf(addr)) {
			slog.Warn("mailbox: user in a domain that is no longer local; mail to it is refused",
				"user", addr)
		}
	}
	return d, nil
}

// load reads the whole directory from st.
func load(st store.KV) (map[string]domainRecord, map[string]*userEntry, map[string][]string, error) {
	runtime := make(map[string]domainRecord)
	users := make(map[string]*userEntry)
	aliases := make(map[string][]string)
	err := st.ForEach(bucketDomains, func(k string, v []byte) error {
		var r domainRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("domain %q: %w", k, err)
		}
		runtime[k] = r
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load domains: %w", err)
	}
	err = st.ForEach(bucketUsers, func(k string, v []byte) error {
		var r userRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("user %q: %w", k, err)
		}
		users[k] = &userEntry{rec: r, persistedLogin: r.LastLogin}
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load users: %w", err)
	}
	err = st.ForEach(bucketAliases, func(k string, v []byte) error {
		var t []string
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("alias %q: %w", k, err)
		}
		aliases[k] = t
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load aliases: %w", err)
	}
	return runtime, users, aliases, nil
}

// isLocalLocked reports whether canonical domain dom is local. The caller
// holds mu or writeMu.
func (d *Directory) isLocalLocked(dom string) bool {
	if d.staticSet[dom] {
		return true
	}
	_, ok := d.runtime[dom]
	return ok
}

// IsLocalDomain reports whether mail for domain is delivered here. It is
// case-insensitive and ignores one trailing dot.
func (d *Directory) IsLocalDomain(domain string) bool {
	c, err := CanonicalDomain(domain)
	if err != nil {
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.isLocalLocked(c)
}

// Lookup resolves a recipient address in a local domain to the final
// targets: canonical local user addresses and foreign addresses (forwards).
// ok is false when addr is not in a local domain, is malformed, or resolves to
// nothing. Resolution order: exact user; exact alias (recursively expanded,
// at most maxAliasDepth levels, loops and duplicates removed, local targets
// that resolve to nothing dropped; catch-alls are not applied to targets);
// the domain's catch-all alias "@domain"; for postmaster@ of any local domain,
// the first postmaster@ alias and then the first postmaster@ user, domains
// taken in configuration order and then runtime domains sorted.
//
// Local parts outside the restricted character set (quoted strings, '%', '!',
// '/', ...) never resolve, not even through a catch-all.
func (d *Directory) Lookup(addr string) (targets []string, ok bool) {
	key, err := canonicalAddress(addr)
	if err != nil {
		return nil, false
	}
	dom := domainOf(key)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if !d.isLocalLocked(dom) {
		return nil, false
	}
	if _, ok := d.users[key]; ok {
		return []string{key}, true
	}
	for _, a := range []string{key, "@" + dom} {
		if _, ok := d.aliases[a]; ok {
			if t := d.expandLocked(a); len(t) > 0 {
				return t, true
			}
		}
	}
	if localOf(key) == "postmaster" {
		r := newResolver(d)
		r.postmaster(1)
		if len(r.out) > 0 {
			return r.out, true
		}
	}
	return nil, false
}

// expandLocked returns the expansion of alias a. The caller holds mu.
func (d *Directory) expandLocked(a string) []string {
	r := newResolver(d)
	r.alias(a, 1)
	return r.out
}

// resolver accumulates one alias expansion.
type resolver struct {
	d     *Directory
	seen  map[string]int // alias → shallowest level it was expanded at (loop guard)
	have  map[string]bool
	out   []string
	pmRan bool
}

func newResolver(d *Directory) *resolver {
	return &resolver{d: d, seen: make(map[string]int), have: make(map[string]bool)}
}

func (r *resolver) add(addr string) {
	if !r.have[addr] {
		r.have[addr] = true
		r.out = append(r.out, addr)
	}
}

// alias expands alias a at nesting level depth. An alias met again at the
// same or a deeper level (a loop, or a diamond) adds nothing new and is
// skipped; met at a shallower level it is expanded again, because targets
// cut off by the depth limit the first time may now be in reach. So each
// alias is expanded at most maxAliasDepth times.
func (r *resolver) alias(a string, depth int) {
	if depth > maxAliasDepth {
		return
	}
	if prev, ok := r.seen[a]; ok && prev <= depth {
		return
	}
	r.seen[a] = depth
	for _, t := range r.d.aliases[a] {
		r.target(t, depth)
	}
}

// target resolves one target of an alias at level depth.
func (r *resolver) target(t string, depth int) {
	if !r.d.isLocalLocked(domainOf(t)) {
		r.add(t) // foreign: forwarded as is
		return
	}
	if _, ok := r.d.users[t]; ok {
		r.add(t)
		return
	}
	if _, ok := r.d.aliases[t]; ok {
		r.alias(t, depth+1)
		return
	}
	if localOf(t) == "postmaster" {
		r.postmaster(depth + 1)
	}
	// Anything else is a local address that does not exist: dropped.
}

// domainOrderLocked returns the local domains in postmaster fallback order.
func (d *Directory) domainOrderLocked() []string {
	rt := make([]string, 0, len(d.runtime))
	for dom := range d.runtime {
		if !d.staticSet[dom] {
			rt = append(rt, dom)
		}
	}
	slices.Sort(rt)
	return append(slices.Clone(d.static), rt...)
}

// postmaster resolves the fallback postmaster: the first domain with a
// postmaster alias that expands to something, else the first domain with a
// postmaster user.
func (r *resolver) postmaster(depth int) {
	if r.pmRan {
		return
	}
	r.pmRan = true
	order := r.d.domainOrderLocked()
	for _, dom := range order {
		a := "postmaster@" + dom
		if _, ok := r.d.aliases[a]; ok {
			n := len(r.out)
			r.alias(a, depth)
			if len(r.out) > n {
				return
			}
		}
	}
	for _, dom := range order {
		u := "postmaster@" + dom
		if _, ok := r.d.users[u]; ok {
			r.add(u)
			return
		}
	}
}

// Authenticate checks a login. username is the full address. It returns
// ErrAuthFailed for an unknown user or a wrong password (an unknown user
// costs the same hash computation), and ErrDisabled only when the password is
// right but the account is disabled, so that a guesser learns nothing.
func (d *Directory) Authenticate(username, password string) error {
	key, err := canonicalAddress(username)
	var hash string
	var disabled bool
	if err == nil {
		d.mu.RLock()
		if u, ok := d.users[key]; ok {
			hash, disabled = u.rec.Hash, u.rec.Disabled
		}
		d.mu.RUnlock()
	}
	if hash == "" {
		dummyVerify(password)
		return ErrAuthFailed
	}
	ok, err := verifyPassword(hash, password)
	if err != nil {
		// Still pay the cost of a hash, so that the time taken shows
		// nothing about this account.
		dummyVerify(password)
		slog.Error("mailbox: stored password hash is unusable", "user", key, "err", err)
		return ErrAuthFailed
	}
	if !ok {
		return ErrAuthFailed
	}
	if disabled {
		return ErrDisabled
	}
	return nil
}

// Owns reports whether user may use addr as an envelope or header sender:
// addr is user itself, or an exact alias (not a catch-all) whose expansion
// contains user. user must exist.
func (d *Directory) Owns(user, addr string) bool {
	u, err := canonicalAddress(user)
	if err != nil {
		return false
	}
	a, err := canonicalAddress(addr)
	if err != nil {
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if _, ok := d.users[u]; !ok {
		return false
	}
	if a == u {
		return true
	}
	if _, ok := d.aliases[a]; !ok || !d.isLocalLocked(domainOf(a)) {
		return false
	}
	return slices.Contains(d.expandLocked(a), u)
}

// getUser reads a user's stored record in tx; nil when there is none.
func getUser(tx store.Tx, key string) (*userRecord, error) {
	v, err := tx.Get(bucketUsers, key)
	if err != nil || v == nil {
		return nil, err
	}
	var r userRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("stored user %s: %w", key, err)
	}
	return &r, nil
}

// mergeLogin returns r with the later of its last login and when.
func mergeLogin(r userRecord, when time.Time) userRecord {
	if when.After(r.LastLogin) {
		r.LastLogin = when
	}
	return r
}

// putLogin records a last login in the stored record of key, which keeps
// every other field as stored (another node may have changed them). A
// user deleted meanwhile is left deleted.
func putLogin(tx store.Tx, key string, when time.Time) error {
	r, err := getUser(tx, key)
	if err != nil || r == nil {
		return err
	}
	if !when.After(r.LastLogin) {
		return nil
	}
	b, err := json.Marshal(mergeLogin(*r, when))
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return tx.Put(bucketUsers, key, b)
}

func checkPassword(password string) error {
	if utf8.RuneCountInString(password) < MinPasswordLen {
		return fmt.Errorf("at least %d characters needed: %w", MinPasswordLen, ErrWeakPassword)
	}
	return nil
}

func putJSON(st store.KV, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return st.Put(bucket, key, b)
}

// AddUser creates a mailbox account. The address's domain must be local.
func (d *Directory) AddUser(addr, password string) error {
	key, err := canonicalAddress(addr)
	if err != nil {
		return fmt.Errorf("add user: %w", err)
	}
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("add user %s: %w", key, err)
	}
	if err := d.checkNewUser(key); err != nil { // cheap refusal before hashing
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return fmt.Errorf("add user %s: %w", key, err)
	}

	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if err := d.checkNewUser(key); err != nil {
		return err
	}
	rec := userRecord{Hash: hash, Created: time.Now().UTC().Truncate(time.Second)}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("add user %s: %w", key, err)
	}
	var refused error
	err = d.st.Update(func(tx store.Tx) error {
		refused = nil
		// Another node may have added it since our cache last heard.
		for _, bucket := range []string{bucketUsers, bucketAliases} {
			v, err := tx.Get(bucket, key)
			if err != nil {
				return err
			}
			if v != nil {
				refused = fmt.Errorf("add user %s: %w", key, ErrExists)
				return refused
			}
		}
		return tx.Put(bucketUsers, key, b)
	})
	if refused != nil {
		return refused
	}
	if err != nil {
		return fmt.Errorf("add user %s: %w", key, err)
	}
	d.mu.Lock()
	d.users[key] = &userEntry{rec: rec}
	d.mu.Unlock()
	slog.Info("mailbox: user added", "user", key)
	return nil
}

func (d *Directory) checkNewUser(key string) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if !d.isLocalLocked(domainOf(key)) {
		return fmt.Errorf("add user %s: %w", key, ErrUnknownDomain)
	}
	if _, ok := d.users[key]; ok {
		return fmt.Errorf("add user %s: %w", key, ErrExists)
	}
	if _, ok := d.aliases[key]; ok {
		return fmt.Errorf("add user %s: an alias of that name: %w", key, ErrExists)
	}
	return nil
}

// DelUser removes an account. Its Maildir is left on disk.
func (d *Directory) DelUser(addr string) error {
	key, err := canonicalAddress(addr)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	var revoked []string
	defer func() { d.revoked(revoked...) }() // runs last, with no lock held
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if _, ok := d.users[key]; !ok {
		return fmt.Errorf("delete user %s: %w", key, ErrNotFound)
	}
	if err := d.st.Delete(bucketUsers, key); err != nil {
		return fmt.Errorf("delete user %s: %w", key, err)
	}
	d.mu.Lock()
	delete(d.users, key)
	d.mu.Unlock()
	slog.Info("mailbox: user deleted", "user", key)
	revoked = append(revoked, key)
	return nil
}

// updateUser applies change to a copy of addr's record, stores it and then
// publishes it. The caller must not hold writeMu.
func (d *Directory) updateUser(op, addr string, change func(*userEntry)) error {
	key, err := canonicalAddress(addr)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	var revoked []string
	defer func() { d.revoked(revoked...) }() // runs last, with no lock held
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	u, ok := d.users[key]
	if !ok {
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	}
	var nu userEntry
	var gone bool
	err = d.st.Update(func(tx store.Tx) error {
		nu, gone = userEntry{rec: u.rec}, false
		cur, err := getUser(tx, key)
		if err != nil {
			return err
		}
		if cur == nil { // deleted by another node meanwhile
			gone = true
			return ErrNotFound
		}
		nu.rec = mergeLogin(*cur, u.rec.LastLogin)
		change(&nu)
		b, err := json.Marshal(nu.rec)
		if err != nil {
			return err
		}
		return tx.Put(bucketUsers, key, b)
	})
	if gone {
		d.mu.Lock()
		delete(d.users, key)
		d.mu.Unlock()
		revoked = append(revoked, key)
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	nu.persistedLogin = nu.rec.LastLogin
	d.mu.Lock()
	d.users[key] = &nu
	d.mu.Unlock()
	if revokes(u, &nu) {
		revoked = append(revoked, key)
	}
	return nil
}

// SetPassword replaces a user's password.
func (d *Directory) SetPassword(addr, password string) error {
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("set password %s: %w", addr, err)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return fmt.Errorf("set password %s: %w", addr, err)
	}
	if err := d.updateUser("set password", addr, func(u *userEntry) { u.rec.Hash = hash }); err != nil {
		return err
	}
	slog.Info("mailbox: password changed", "user", addr)
	return nil
}

// SetDisabled disables or re-enables logins for a user. Mail to a disabled
// user is still delivered.
func (d *Directory) SetDisabled(addr string, disabled bool) error {
	if err := d.updateUser("set disabled", addr, func(u *userEntry) { u.rec.Disabled = disabled }); err != nil {
		return err
	}
	slog.Info("mailbox: user disabled state changed", "user", addr, "disabled", disabled)
	return nil
}

// SetQuota sets a user's own quota: bytes > 0, 0 to follow the
// configured default, or QuotaNone.
func (d *Directory) SetQuota(addr string, quota int64) error {
	if quota < QuotaNone {
		return fmt.Errorf("set quota %s: %d is not a quota", addr, quota)
	}
	if err := d.updateUser("set quota", addr, func(u *userEntry) { u.rec.Quota = quota }); err != nil {
		return err
	}
	slog.Info("mailbox: quota changed", "user", addr, "quota", quota)
	return nil
}

// QuotaOf returns addr's quota in bytes given the configured default
// (0 = none). Unknown addresses get the default.
func (d *Directory) QuotaOf(addr string, def int64) int64 {
	key, err := canonicalAddress(addr)
	if err != nil {
		return def
	}
	d.mu.RLock()
	u, ok := d.users[key]
	d.mu.RUnlock()
	switch {
	case !ok || u.rec.Quota == 0:
		return def
	case u.rec.Quota == QuotaNone:
		return 0
	}
	return u.rec.Quota
}

// RecordLogin notes a successful login. It is best effort: the time is kept
// in memory at once but written to the store at most once per minute per
// user (Flush writes the rest); failures are logged, not returned.
func (d *Directory) RecordLogin(addr string, when time.Time) {
	key, err := canonicalAddress(addr)
	if err != nil {
		return
	}
	when = when.UTC()
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	u, ok := d.users[key]
	if !ok || !when.After(u.rec.LastLogin) {
		return
	}
	d.mu.Lock()
	u.rec.LastLogin = when
	d.mu.Unlock()
}

// PersistLogins writes the last-login times RecordLogin kept in memory
// every interval, in one transaction, until ctx ends (then once more).
// Logins never wait for the store; a crash loses at most an interval of
// last-login times, which only the stale-account check reads.
func (d *Directory) PersistLogins(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if d.offline.Load() {
			continue // Follow marks the store reachable again
		}
		if err := d.Flush(); err != nil {
			if errors.Is(err, store.ErrUnavailable) {
				d.offline.Store(true)
			}
			slog.Warn("mailbox: cannot record last logins", "err", err)
		}
	}
}

// Flush writes last-login times that RecordLogin has kept only in memory.
// Call it on shutdown.
func (d *Directory) Flush() error {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	changed := false
	d.mu.RLock()
	for _, u := range d.users {
		if !u.rec.LastLogin.Equal(u.persistedLogin) {
			changed = true
			break
		}
	}
	d.mu.RUnlock()
	if !changed {
		return nil
	}
	err := d.st.Update(func(tx store.Tx) error {
		d.mu.RLock()
		defer d.mu.RUnlock()
		for key, u := range d.users {
			if u.rec.LastLogin.Equal(u.persistedLogin) {
				continue
			}
			if err := putLogin(tx, key, u.rec.LastLogin); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("flush last logins: %w", err)
	}
	for _, u := range d.users {
		u.persistedLogin = u.rec.LastLogin
	}
	return nil
}

// Users lists all accounts sorted by address.
func (d *Directory) Users() []User {
	d.mu.RLock()
	out := make([]User, 0, len(d.users))
	for addr, u := range d.users {
		out = append(out, User{Address: addr, Created: u.rec.Created,
			Disabled: u.rec.Disabled, LastLogin: u.rec.LastLogin, Quota: u.rec.Quota})
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b User) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// AddDomain makes a domain local at run time. It is stored canonical
// (lower-case, no trailing dot).
func (d *Directory) AddDomain(domain string) error {
	c, err := CanonicalDomain(domain)
	if err != nil {
		return fmt.Errorf("add domain: %w", err)
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if d.isLocalLocked(c) {
		return fmt.Errorf("add domain %s: %w", c, ErrExists)
	}
	rec := domainRecord{Created: time.Now().UTC().Truncate(time.Second)}
	if err := putJSON(d.st, bucketDomains, c, rec); err != nil {
		return fmt.Errorf("add domain %s: %w", c, err)
	}
	d.mu.Lock()
	d.runtime[c] = rec
	d.mu.Unlock()
	slog.Info("mailbox: domain added", "domain", c)
	return nil
}

// DelDomain removes a runtime domain. It refuses a configured domain
// (ErrStatic), and a domain that still has users, aliases or a catch-all, or
// that alias targets still point into (ErrInUse): once removed, such targets
// would be forwarded to the outside world.
func (d *Directory) DelDomain(domain string) error {
	c, err := CanonicalDomain(domain)
	if err != nil {
		return fmt.Errorf("delete domain: %w", err)
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if d.staticSet[c] {
		return fmt.Errorf("delete domain %s: %w", c, ErrStatic)
	}
	if _, ok := d.runtime[c]; !ok {
		return fmt.Errorf("delete domain %s: %w", c, ErrNotFound)
	}
	for addr := range d.users {
		if domainOf(addr) == c {
			return fmt.Errorf("delete domain %s: user %s: %w", c, addr, ErrInUse)
		}
	}
	for a, targets := range d.aliases {
		if domainOf(a) == c {
			return fmt.Errorf("delete domain %s: alias %s: %w", c, a, ErrInUse)
		}
		for _, t := range targets {
			if domainOf(t) == c {
				return fmt.Errorf("delete domain %s: target of alias %s: %w", c, a, ErrInUse)
			}
		}
	}
	if err := d.st.Delete(bucketDomains, c); err != nil {
		return fmt.Errorf("delete domain %s: %w", c, err)
	}
	d.mu.Lock()
	delete(d.runtime, c)
	d.mu.Unlock()
	slog.Info("mailbox: domain deleted", "domain", c)
	return nil
}

// Domains lists the local domains, configured and runtime, sorted.
func (d *Directory) Domains() []string {
	d.mu.RLock()
	out := d.domainOrderLocked()
	d.mu.RUnlock()
	slices.Sort(out)
	return out
}

// canonicalAlias parses "x@dom" or the catch-all "@dom".
func canonicalAlias(alias string) (string, error) {
	if rest, ok := strings.CutPrefix(alias, "@"); ok {
		c, err := CanonicalDomain(rest)
		if err != nil {
			return "", err
		}
		return "@" + c, nil
	}
	return canonicalAddress(alias)
}

// canonicalTarget validates an alias target. Targets in local domains follow
// the rules of local addresses; foreign ones may use any dot-atom local part,
// whose case is kept.
func (d *Directory) canonicalTarget(t string) (string, error) {
	local, domain, err := splitAddress(t)
	if err != nil {
		return "", err
	}
	dom, err := CanonicalDomain(domain)
	if err != nil {
		return "", fmt.Errorf("%q: %w", t, err)
	}
	if d.isLocalLocked(dom) {
		return canonicalAddress(t)
	}
	if !validLocal(local, atextSpecials) {
		return "", fmt.Errorf("%q: local part not allowed: %w", t, errInvalidAddress)
	}
	return local + "@" + dom, nil
}

// AddAlias adds targets to alias, creating it if needed. alias is "x@dom" or
// the catch-all "@dom"; dom must be local and x must not be a user.
func (d *Directory) AddAlias(alias string, targets []string) error {
	a, err := canonicalAlias(alias)
	if err != nil {
		return fmt.Errorf("add alias: %w", err)
	}
	if len(targets) == 0 {
		return fmt.Errorf("add alias %s: no targets: %w", a, errInvalidAddress)
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if !d.isLocalLocked(domainOf(a)) {
		return fmt.Errorf("add alias %s: %w", a, ErrUnknownDomain)
	}
	if _, ok := d.users[a]; ok {
		return fmt.Errorf("add alias %s: a user of that name: %w", a, ErrExists)
	}
	merged := slices.Clone(d.aliases[a])
	for _, t := range targets {
		c, err := d.canonicalTarget(t)
		if err != nil {
			return fmt.Errorf("add alias %s: target: %w", a, err)
		}
		if c == a {
			return fmt.Errorf("add alias %s: alias cannot target itself: %w", a, errInvalidAddress)
		}
		if !slices.Contains(merged, c) {
			merged = append(merged, c)
		}
	}
	err = d.st.Update(func(tx store.Tx) error {
		// Targets another node added meanwhile are kept.
		v, err := tx.Get(bucketAliases, a)
		if err != nil {
			return err
		}
		var stored []string
		if v != nil {
			if err := json.Unmarshal(v, &stored); err != nil {
				return fmt.Errorf("stored alias: %w", err)
			}
		}
		all := slices.Clone(stored)
		for _, t := range merged {
			if !slices.Contains(all, t) {
				all = append(all, t)
			}
		}
		b, err := json.Marshal(all)
		if err != nil {
			return err
		}
		merged = all
		return tx.Put(bucketAliases, a, b)
	})
	if err != nil {
		return fmt.Errorf("add alias %s: %w", a, err)
	}
	d.mu.Lock()
	d.aliases[a] = merged
	d.mu.Unlock()
	slog.Info("mailbox: alias set", "alias", a, "targets", len(merged))
	return nil
}

// DelAlias removes an alias and all its targets.
func (d *Directory) DelAlias(alias string) error {
	a, err := canonicalAlias(alias)
	if err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if _, ok := d.aliases[a]; !ok {
		return fmt.Errorf("delete alias %s: %w", a, ErrNotFound)
	}
	if err := d.st.Delete(bucketAliases, a); err != nil {
		return fmt.Errorf("delete alias %s: %w", a, err)
	}
	d.mu.Lock()
	delete(d.aliases, a)
	d.mu.Unlock()
	slog.Info("mailbox: alias deleted", "alias", a)
	return nil
}

// Aliases lists all aliases sorted by name; targets keep the order in which
// they were added.
func (d *Directory) Aliases() []Alias {
	d.mu.RLock()
	out := make([]Alias, 0, len(d.aliases))
	for a, t := range d.aliases {
		out = append(out, Alias{Alias: a, Targets: slices.Clone(t)})
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(x, y Alias) int { return strings.Compare(x.Alias, y.Alias) })
	return out
}
