package mailbox

import (
	"errors"
	"time"
)

// This file is the API of the mailbox store: the one owner of the Maildir
// tree, used by local delivery, IMAP (internal/imapd) and POP3
// (internal/pop3d). Nothing else reads or writes data_dir/mail.
//
// On disk (so that Dovecot, backup tools and a migration read the same
// tree):
//
//	ROOT/DOMAIN/LOCALPART/{cur,new,tmp}            INBOX
//	ROOT/DOMAIN/LOCALPART/.Sent/{cur,new,tmp}      folder "Sent" (Maildir++)
//	ROOT/DOMAIN/LOCALPART/.Lists.Go/{cur,new,tmp}  folder "Lists.Go"
//	.../dovecot-uidlist                            UIDs, Dovecot's version 3 format
//	.../dovecot-keywords                           keyword letters, Dovecot's format
//	ROOT/DOMAIN/LOCALPART/subscriptions            one folder name per line
//
// Folder names on the API are UTF-8 with '.' as the hierarchy delimiter
// (Dovecot's Maildir++ default); on disk they are in modified UTF-7
// (RFC 3501 5.1.3), as Dovecot writes them. A message file is
// "BASE:2,FLAGS" in cur/ (BASE alone in new/); BASE never changes, so it
// is the message's key in dovecot-uidlist. Files the store writes have
// CRLF line ends and ",S=<size>" in BASE.

// Delimiter is the folder hierarchy delimiter of the API.
const Delimiter = '.'

// System flags as IMAP names them. On disk: \Seen S, \Answered R,
// \Flagged F, \Deleted T, \Draft D, and $Forwarded P (Maildir "passed").
// Other keywords get the letters a–z through dovecot-keywords.
const (
	FlagSeen      = `\Seen`
	FlagAnswered  = `\Answered`
	FlagFlagged   = `\Flagged`
	FlagDeleted   = `\Deleted`
	FlagDraft     = `\Draft`
	FlagForwarded = "$Forwarded"
)

// SpecialUse attributes (RFC 6154) of the folders every user has.
const (
	UseSent    = `\Sent`
	UseDrafts  = `\Drafts`
	UseTrash   = `\Trash`
	UseJunk    = `\Junk`
	UseArchive = `\Archive`
)

// Errors callers turn into protocol replies.
var (
	ErrNoFolder      = errors.New("mailbox: no such folder")
	ErrFolderExists  = errors.New("mailbox: folder already exists")
	ErrBadFolderName = errors.New("mailbox: invalid folder name")
	ErrNoMessage     = errors.New("mailbox: no such message")
	ErrOverQuota     = errors.New("mailbox: quota exceeded")
	ErrTooManyFlags  = errors.New("mailbox: too many keywords (26 at most per folder)")
	ErrInboxSpecial  = errors.New("mailbox: INBOX cannot be deleted")

	// Additions of the implementation.
	ErrHasChildren    = errors.New("mailbox: folder has children")
	ErrTooManyFolders = errors.New("mailbox: too many folders")
	ErrBadFlag        = errors.New("mailbox: invalid flag")
)

// StoreOptions configure a Store.
type StoreOptions struct {
	// PerFileSync makes each write fsync its own file and directory
	// instead of sharing a syncfs(2) with concurrent writes.
	PerFileSync bool
	// Quota returns addr's quota in bytes; 0 or a nil func means none.
	Quota func(addr string) int64
	// SyncBatch, when set, is told how many writes each shared syncfs
	// covers (for metrics).
	SyncBatch func(n int)
	// Perm is how files and directories are created ([mailbox] group
	// and mode).
	Perm Perm
}

// FolderInfo describes one folder of a user.
type FolderInfo struct {
	Name        string // UTF-8, Delimiter-separated; "INBOX" for the inbox
	SpecialUse  string // one of the Use* constants, or ""
	Subscribed  bool
	HasChildren bool
}

// Message is one message of a folder snapshot. Snapshots share Message
// values: never modify one.
type Message struct {
	UID          uint32
	Key          string    // BASE of the file name: stable across flag changes
	Flags        []string  // sorted; IMAP names (see Flag*)
	Size         int64     // octets of the file (CRLF), as RFC822.SIZE
	InternalDate time.Time // IMAP INTERNALDATE (the file's mtime, set on Append)
}

// Snapshot is an immutable view of a folder at one moment.
type Snapshot struct {
	UIDValidity uint32
	UIDNext     uint32
	// Version increases with every change to the folder, by this process
	// or found on disk.
	Version  uint64
	Messages []Message // ascending UID
	Keywords []string  // keywords in use in this folder, sorted
}

// FlagOp says how StoreFlags applies its flags.
type FlagOp int

const (
	FlagsSet FlagOp = iota
	FlagsAdd
	FlagsRemove
)

// Usage is what a user's mail occupies, over all folders.
type Usage struct {
	Bytes    int64
	Messages int64
}

// Mailbox-store methods (implemented in the store_*.go files):
//
//	func NewStore(root string, opts StoreOptions) *Store
//	func (s *Store) Close() error
//
//	// User returns addr's mailbox, creating INBOX and the special-use
//	// folders Sent, Drafts, Trash, Junk and Archive on first use.
//	func (s *Store) User(addr string) (*User, error)
//	// Usage is addr's usage (cached; cheap). A user never seen is 0.
//	func (s *Store) Usage(addr string) (Usage, error)
//	// OverQuota reports whether addr is at or beyond its quota.
//	func (s *Store) OverQuota(addr string) bool
//	// DeliverOnce stores a queued message in addr's INBOX exactly once
//	// (see Maildir.DeliverOnce) and wakes the folder's watchers.
//	// Over quota: ErrOverQuota (delivery turns it into a 4.2.2 deferral).
//	func (s *Store) DeliverOnce(addr, queueID, returnPath string, body []byte, maybeDone bool) error
//
//	func (u *User) Folders() ([]FolderInfo, error)
//	func (u *User) Create(name string) error
//	func (u *User) Delete(name string) error          // INBOX: ErrInboxSpecial
//	func (u *User) Rename(oldName, newName string) error // children move too; INBOX: its messages move, INBOX stays
//	func (u *User) Subscribe(name string, on bool) error
//	func (u *User) Subscriptions() ([]string, error) // names subscribed, folders or not
//	func (u *User) Open(name string) (*Folder, error) // shared per process; Close when done
//	// Append adds a message (LF or CRLF in, CRLF stored) with flags and
//	// internal date; it returns the folder's UIDVALIDITY and the new UID.
//	func (u *User) Append(name string, r io.Reader, flags []string, date time.Time) (uidValidity, uid uint32, err error)
//
//	// Snapshot returns the folder as it is now, first syncing with the
//	// disk if the disk changed (new deliveries by other processes, files
//	// removed) — moving new/ to cur/ and giving new files UIDs.
//	func (f *Folder) Snapshot() (*Snapshot, error)
//	// Changed returns a channel closed at the next change of the folder
//	// (like context.Done); call again for the one after.
//	func (f *Folder) Changed() <-chan struct{}
//	func (f *Folder) Open(uid uint32) (io.ReadSeekCloser, error)
//	func (f *Folder) StoreFlags(uids []uint32, op FlagOp, flags []string) error
//	// Expunge removes the given messages (whatever their flags: the
//	// caller chooses) and returns the UIDs actually removed.
//	func (f *Folder) Expunge(uids []uint32) ([]uint32, error)
//	// CopyTo and MoveTo return, in the order of srcUIDs found, the source
//	// UIDs and the destination UIDs (for UIDPLUS COPYUID).
//	func (f *Folder) CopyTo(uids []uint32, dst *Folder) (src, dstUIDs []uint32, uidValidity uint32, err error)
//	func (f *Folder) MoveTo(uids []uint32, dst *Folder) (src, dstUIDs []uint32, uidValidity uint32, err error)
//	func (f *Folder) Name() string
//	func (f *Folder) Close() error
