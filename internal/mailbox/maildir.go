package mailbox

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Maildir delivers messages into per-user Maildirs under Root
// (data_dir/mail): Root/DOMAIN/LOCALPART/{tmp,new,cur}.
type Maildir struct {
	Root string
	// Perm is how files and directories are created ([mailbox] group and
	// mode); the zero value keeps them private to the owner.
	Perm Perm
	// PerFileSync makes each delivery fsync its own file and new/ instead
	// of sharing a syncfs(2) with concurrent deliveries (groupsync.go).
	PerFileSync bool
	// SyncBatch, when set, is told how many deliveries each shared
	// syncfs covers (for metrics).
	SyncBatch func(n int)

	syncOnce sync.Once
	group    *groupSync // nil: per-file fsync
}

// grouped returns the shared syncer, or nil when deliveries fsync alone.
func (m *Maildir) grouped() *groupSync {
	m.syncOnce.Do(func() {
		if m.PerFileSync {
			return
		}
		if err := m.Perm.resolve().mkdirAll(m.Root); err != nil {
			return
		}
		if fn, err := syncfsFunc(m.Root); err == nil {
			m.group = newGroupSync(fn, m.SyncBatch)
		}
	})
	return m.group
}

// mailboxDir returns Root/DOMAIN/LOCALPART for addr, refusing anything that
// could escape Root. It is defence in depth: callers only pass addresses that
// Directory.Lookup returned.
func (m *Maildir) mailboxDir(addr string) (string, error) {
	if m.Root == "" {
		return "", errors.New("maildir root not set")
	}
	local, domain, err := splitAddress(addr)
	if err != nil {
		return "", err
	}
	dom, err := CanonicalDomain(domain)
	if err != nil {
		return "", err
	}
	local = strings.ToLower(local)
	if local == "" || local == "." || local == ".." || len(local) > maxLocalLen ||
		strings.ContainsAny(local, `/\`) || hasControl(local) {
		return "", fmt.Errorf("local part %q cannot name a mailbox: %w", local, errInvalidAddress)
	}
	if !filepath.IsLocal(filepath.Join(dom, local)) {
		return "", fmt.Errorf("mailbox %q escapes the mail root: %w", addr, errInvalidAddress)
	}
	return filepath.Join(m.Root, dom, local), nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// checkUniq refuses unique parts that would break the file name's structure
// or the ".<uniq>." search of Delivered.
func checkUniq(uniq string) error {
	if uniq == "" || len(uniq) > 128 || strings.ContainsAny(uniq, `/\.:`) || hasControl(uniq) {
		return fmt.Errorf("bad maildir unique part %q", uniq)
	}
	return nil
}

// maildirHost returns the host name for Maildir file names, with '/' and ':'
// encoded as the Maildir convention asks.
func maildirHost() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
}

// syncDir makes a directory's entries (new files, renames) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", dir, serr)
	}
	return cerr
}

// mkdirDurable creates dir (mode 0700) if missing and, when it did, fsyncs
// the parent so that the new entry survives a crash.
func mkdirDurable(p perm, dir string) error {
	err := p.mkdir(dir)
	switch {
	case err == nil:
		return syncDir(filepath.Dir(dir))
	case errors.Is(err, fs.ErrExist):
		fi, serr := os.Stat(dir)
		if serr != nil {
			return serr
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	default:
		return err
	}
}

// ensureMaildir creates base and its tmp, new and cur subdirectories.
func (m *Maildir) ensureMaildir(base string) error {
	ready := true
	for _, sub := range []string{"tmp", "new", "cur"} {
		if fi, err := os.Stat(filepath.Join(base, sub)); err != nil || !fi.IsDir() {
			ready = false
			break
		}
	}
	if ready {
		return nil
	}
	p := m.Perm.resolve()
	if err := p.mkdirAll(m.Root); err != nil {
		return err
	}
	for _, dir := range []string{
		filepath.Dir(base), base,
		filepath.Join(base, "tmp"), filepath.Join(base, "new"), filepath.Join(base, "cur"),
	} {
		if err := mkdirDurable(p, dir); err != nil {
			return err
		}
	}
	return nil
}

// Deliver stores header followed by body as a new message for addr and
// returns the message's path in new/. It follows the Maildir protocol: write
// tmp/NAME, fsync it, rename it into new/, fsync new/. NAME is
// "<unix seconds>.<uniq>.<hostname>,S=<size>"; uniq is chosen by the caller (for
// example "M<queueid>R<n>") and must not contain '.', ':', '/' or '\'. When
// Deliver returns an error the message may or may not be in new/ (only when
// the final fsync failed); use Delivered before retrying after a crash.
func (m *Maildir) Deliver(addr string, uniq string, header, body []byte) (path string, err error) {
	if err := checkUniq(uniq); err != nil {
		return "", fmt.Errorf("maildir deliver to %s: %w", addr, err)
	}
	base, err := m.mailboxDir(addr)
	if err != nil {
		return "", fmt.Errorf("maildir deliver: %w", err)
	}
	if err := m.ensureMaildir(base); err != nil {
		return "", fmt.Errorf("maildir deliver to %s: create maildir: %w", addr, err)
	}

	// ",S=<size>" (Dovecot's) lets readers learn the size without a stat.
	name := fmt.Sprintf("%d.%s.%s,S=%d", time.Now().Unix(), uniq, hostOnce(), len(header)+len(body))
	tmpPath := filepath.Join(base, "tmp", name)
	newPath := filepath.Join(base, "new", name)
	group := m.grouped()
	perFile := group == nil
	err = writeFile(m.Perm.resolve(), tmpPath, perFile, header, body)
	if errors.Is(err, fs.ErrExist) {
		// uniq is unique per message and recipient and the caller delivers
		// each at most once at a time, so a same-named tmp/ file is the
		// half-written leftover of a crash: replace it.
		if rmErr := os.Remove(tmpPath); rmErr == nil {
			err = writeFile(m.Perm.resolve(), tmpPath, perFile, header, body)
		}
	}
	if err != nil {
		return "", fmt.Errorf("maildir deliver to %s: %w", addr, err)
	}
	// rename(2) would silently replace an existing message; NAME embeds the
	// caller's unique id, so an existing one means a caller bug.
	if _, err := os.Lstat(newPath); err == nil {
		_ = os.Remove(tmpPath)
		return "", fmt.Errorf("maildir deliver to %s: %s already exists", addr, newPath)
	}
	if err := os.Rename(tmpPath, newPath); err != nil {
		_ = os.Remove(tmpPath)
		return "", fmt.Errorf("maildir deliver to %s: %w", addr, err)
	}
	if perFile {
		err = syncDir(filepath.Join(base, "new"))
	} else {
		// One syncfs makes the file's data, its inode and its new/ entry
		// durable, together with every other delivery that got this far.
		err = group.wait()
	}
	if err != nil {
		return "", fmt.Errorf("maildir deliver to %s: %w", addr, err)
	}
	return newPath, nil
}

// writeFile creates path exclusively (mode 0600), writes the parts and,
// with sync, fsyncs it. On error the file is removed.
func writeFile(p perm, path string, sync bool, parts ...[]byte) (err error) {
	f, err := p.create(path)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	for _, p := range parts {
		if _, err := f.Write(p); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// Delivered reports whether addr's new/ or cur/ already holds a message whose
// name contains ".<uniq>." and, when size >= 0, whose length is size. A
// match of another length is what a crash before the sync can leave: it is
// removed and Delivered reports false, so the message is delivered again
// in full. It reads whole directories: use it only for messages recovered
// after a crash.
func (m *Maildir) Delivered(addr, uniq string, size int64) bool {
	if checkUniq(uniq) != nil {
		return false
	}
	base, err := m.mailboxDir(addr)
	if err != nil {
		return false
	}
	needle := "." + uniq + "."
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(base, sub)
		name, ok := dirFind(dir, needle)
		if !ok {
			continue
		}
		if size < 0 {
			return true
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			return true
		}
		_ = os.Remove(p) // torn by a crash before it was synced
		return false
	}
	return false
}

// dirFind returns the first name in dir that contains needle.
func dirFind(dir, needle string) (string, bool) {
	d, err := os.Open(dir)
	if err != nil {
		return "", false
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if strings.Contains(n, needle) {
				return n, true
			}
		}
		if err != nil { // io.EOF at the end, or an unreadable directory
			return "", false
		}
	}
}

// DeliverOnce delivers a queued message to addr exactly once, even across
// a crash between the Maildir write and the queue recording it. The file's
// unique part is derived from the queue id and the recipient, so a second
// attempt can recognise the first. Only a message that may have been
// delivered before a restart (maybeDone) pays for the directory scan;
// within one run the queue's per-recipient status already prevents a
// second delivery. The header gets Return-Path and Delivered-To.
func (m *Maildir) DeliverOnce(addr, queueID, returnPath string, body []byte, maybeDone bool) error {
	uniq, hdr := deliveryParts(addr, queueID, returnPath)
	if maybeDone && m.Delivered(addr, uniq, int64(len(hdr)+len(body))) {
		return nil
	}
	if _, err := m.Deliver(addr, uniq, []byte(hdr), body); err != nil {
		return fmt.Errorf("maildir %s: %w", addr, err)
	}
	return nil
}

// deliveryParts returns the unique part of a queued message's file name
// for addr (derived from the queue id and the recipient, so that a second
// attempt recognises the first) and the header delivery prepends.
func deliveryParts(addr, queueID, returnPath string) (uniq, hdr string) {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(addr)))
	uniq = fmt.Sprintf("M%sR%08x", queueID, h.Sum32())
	hdr = fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", returnPath, addr)
	return uniq, hdr
}
