package imapd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/admit"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// session is one IMAP connection. imapserver calls its methods from
// one goroutine at a time (IDLE runs in its own goroutine while the
// connection goroutine only waits for DONE).
type session struct {
	srv  *Server
	conn *imapserver.Conn
	ip   netip.Addr
	log  *slog.Logger

	addr string        // the login; "" before
	user *mailbox.User // nil before login
	sel  *selection    // nil unless a folder is selected

	forget func() // removes the session from cfg.Sessions; nil before login
}

// revokedBye ends a session whose credentials were revoked.
const revokedBye = "Credentials changed or revoked, log in again"

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
	_ imapserver.SessionID          = (*session)(nil)
)

func (s *session) Close() error {
	if s.forget != nil {
		s.forget()
	}
	s.closeSelection()
	if s.user != nil {
		s.log.Info("imap logout")
	}
	s.srv.sessions.Done()
	return nil
}

func (s *session) Login(username, password string) error {
	gen := s.srv.cfg.Sessions.Gen(login.Key(username), "imap")
	user, err := s.srv.cfg.Login.Check(s.ip, "imap", username, password)
	if err != nil {
		le, ok := login.AsError(err)
		if !ok {
			s.log.Error("imap login check", "error", err)
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Temporary authentication failure, try again later"}
		}
		text := le.Text
		if text == "" {
			text = "Authentication failed"
		}
		if le.Drop {
			// The guard banned the address: reply, then close.
			conn := s.conn
			time.AfterFunc(dropDelay, func() { _ = conn.Bye(text) })
		}
		code := imap.ResponseCodeAuthenticationFailed
		if le.Temporary {
			code = imap.ResponseCodeUnavailable
		}
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	u, err := s.srv.cfg.Store.User(user)
	if err != nil {
		s.log.Error("imap open mailbox", "user", user, "error", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Mailbox unavailable, try again later"}
	}
	s.addr, s.user = user, u
	admit.MarkAuthenticated(s.conn.NetConn())
	conn, log := s.conn, s.log
	s.forget = s.srv.cfg.Sessions.Add(user, "imap", gen, func() {
		log.Info("imap session ended: credentials revoked", "user", user)
		_ = conn.Bye(revokedBye)
	})
	s.log = s.log.With("user", user)
	s.log.Info("imap login")
	return nil
}

func (s *session) ID(client *imap.IDData) *imap.IDData {
	if client != nil {
		s.log.Debug("imap client id", "name", limit(client.Name, 64), "version", limit(client.Version, 64))
	}
	return &imap.IDData{Name: "mamori"}
}

// binaryOverhead is what re-encoding a message with NUL octets may hold
// on top of it, in message sizes (decoded parts, base64 text and the
// re-assembled message; measured about 12x in allocations for a 20 MB
// literal8, most of it garbage at once).
const binaryOverhead = 10

// appendWait is how long an APPEND waits for room in the APPEND memory
// budget (a variable for tests).
var appendWait = 30 * time.Second

// readWait is how long a FETCH or SEARCH waits for room in the read
// memory budget (a variable for tests).
var readWait = 30 * time.Second

// readOverhead is what taking a message apart holds, in message sizes:
// the extracted section and the parser's buffers (BINARY decodes too).
const readOverhead = 3

// readHold is a session's share of the server's read budget. It grows
// (waiting up to readWait) before a message is taken apart and shrinks
// to what stays in memory once it is — in particular while the result is
// written to a client that may read slowly — so a slow reader holds only
// the bytes it is being sent.
type readHold struct {
	s    *session
	what string // "FETCH", "SEARCH": for the NO [LIMIT] text
	n    int64
}

// to makes the hold n bytes (at most the whole budget: a message larger
// than the budget is taken apart alone).
func (h *readHold) to(n int64) error {
	n = min(max(n, 0), h.s.srv.cfg.ReadMemory)
	switch {
	case n < h.n:
		h.s.srv.readMem.Release(h.n - n)
	case n > h.n:
		ctx, cancel := context.WithTimeout(context.Background(), readWait)
		err := h.s.srv.readMem.Acquire(ctx, n-h.n)
		cancel()
		if err != nil {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
				Text: "Server busy, try the " + h.what + " again later"}
		}
	}
	h.n = n
	return nil
}

// release gives the whole hold back.
func (h *readHold) release() { _ = h.to(0) }

// apartCost is what taking a message of size bytes apart may hold.
func apartCost(size int64) int64 { return readOverhead * max(size, 1) }

func (s *session) AppendLimit() uint32 { return uint32(s.srv.appendLimit.Load()) }

func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{
		Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: mailbox.Delimiter}},
	}, nil
}

func (s *session) Create(name string, options *imap.CreateOptions) error {
	if len(options.SpecialUse) > 0 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Special-use attributes cannot be set"}
	}
	// "foo." asks for a folder that will hold others: Maildir++ folders
	// hold both, so it is "foo".
	name = strings.TrimSuffix(name, string(mailbox.Delimiter))
	if strings.EqualFold(name, "INBOX") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	}
	return s.storeErr("create", s.user.Create(name))
}

func (s *session) Delete(name string) error {
	return s.storeErr("delete", s.user.Delete(name))
}

func (s *session) Rename(oldName, newName string, _ *imap.RenameOptions) error {
	newName = strings.TrimSuffix(newName, string(mailbox.Delimiter))
	if strings.EqualFold(newName, "INBOX") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	}
	return s.storeErr("rename", s.user.Rename(oldName, newName))
}

func (s *session) Subscribe(name string) error {
	return s.storeErr("subscribe", s.user.Subscribe(name, true))
}

func (s *session) Unsubscribe(name string) error {
	return s.storeErr("unsubscribe", s.user.Subscribe(name, false))
}

func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	f, err := s.user.Open(name)
	if err != nil {
		return nil, s.storeErr("status", err)
	}
	defer f.Close()
	snap, err := f.Snapshot()
	if err != nil {
		return nil, s.storeErr("status", err)
	}
	return s.statusData(name, snap, options), nil
}

func (s *session) statusData(name string, snap *mailbox.Snapshot, options *imap.StatusOptions) *imap.StatusData {
	data := &imap.StatusData{
		Mailbox:     name,
		UIDNext:     imap.UID(snap.UIDNext),
		UIDValidity: snap.UIDValidity,
	}
	var unseen, deleted, recent uint32
	var size int64
	last := s.srv.recent.peek(recentKey(s.addr, name, snap.UIDValidity))
	for i := range snap.Messages {
		m := &snap.Messages[i]
		if !hasFlag(m.Flags, mailbox.FlagSeen) {
			unseen++
		}
		if hasFlag(m.Flags, mailbox.FlagDeleted) {
			deleted++
		}
		if m.UID > last {
			recent++
		}
		size += m.Size
	}
	n := uint32(len(snap.Messages))
	if options.NumMessages {
		data.NumMessages = &n
	}
	if options.NumUnseen {
		data.NumUnseen = &unseen
	}
	if options.NumDeleted {
		data.NumDeleted = &deleted
	}
	if options.NumRecent {
		data.NumRecent = &recent
	}
	if options.Size {
		data.Size = &size
	}
	if options.AppendLimit {
		l := s.AppendLimit()
		data.AppendLimit = &l
	}
	if options.DeletedStorage {
		var ds int64
		for i := range snap.Messages {
			if hasFlag(snap.Messages[i].Flags, mailbox.FlagDeleted) {
				ds += snap.Messages[i].Size
			}
		}
		data.DeletedStorage = &ds
	}
	return data
}

func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	flags := storeFlagNames(options.Flags, nil)
	date := options.Time
	if date.IsZero() {
		date = time.Now()
	}
	// The message is read whole (it is at most AppendLimit, which
	// imapserver checked) to give NUL octets a transfer encoding: twice
	// its size is reserved from the server's APPEND budget first, so
	// many sessions appending at once cannot exhaust memory.
	need := 2 * max(r.Size(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), appendWait)
	err := s.srv.appendMem.Acquire(ctx, need)
	cancel()
	if err != nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Server busy, try the APPEND again later"}
	}
	defer s.srv.appendMem.Release(need)
	// The literal's size is known (and at most AppendLimit): read it into
	// one buffer of that size, not a doubling one.
	msg := make([]byte, r.Size())
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("imapd: append: %w", err)
	}
	if bytes.IndexByte(msg, 0) >= 0 {
		// Re-encoding NUL octets decodes and encodes parts again:
		// reserve for those copies too, or refuse what never fits.
		extra := binaryOverhead * int64(len(msg))
		if need+extra > s.srv.cfg.AppendMemory {
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig,
				Text: "Message with NUL octets too large to re-encode; send it with a transfer encoding"}
		}
		ctx, cancel := context.WithTimeout(context.Background(), appendWait)
		err := s.srv.appendMem.Acquire(ctx, extra)
		cancel()
		if err != nil {
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Server busy, try the APPEND again later"}
		}
		defer s.srv.appendMem.Release(extra)
	}
	msg, err = encodeBinary(msg)
	if err != nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeParse, Text: "Cannot parse the message"}
	}
	uidValidity, uid, err := s.user.Append(name, bytes.NewReader(msg), flags, date)
	if errors.Is(err, mailbox.ErrNoFolder) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	if err != nil {
		return nil, s.storeErr("append", err)
	}
	return &imap.AppendData{UID: imap.UID(uid), UIDValidity: uidValidity}, nil
}

// storeErr turns a store error into the reply the client gets; details
// of unexpected errors go only to the log.
func (s *session) storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie // already a reply (a busy budget, say)
	}
	no := func(code imap.ResponseCode, text string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	switch {
	case errors.Is(err, mailbox.ErrNoFolder):
		return no(imap.ResponseCodeNonExistent, "No such mailbox")
	case errors.Is(err, mailbox.ErrFolderExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case errors.Is(err, mailbox.ErrBadFolderName):
		return no(imap.ResponseCodeCannot, "Invalid mailbox name")
	case errors.Is(err, mailbox.ErrInboxSpecial):
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	case errors.Is(err, mailbox.ErrOverQuota):
		return no(imap.ResponseCodeOverQuota, "Quota exceeded")
	case errors.Is(err, mailbox.ErrTooManyFlags):
		return no(imap.ResponseCodeLimit, "Too many keywords in this mailbox")
	case errors.Is(err, mailbox.ErrHasChildren):
		return no(imap.ResponseCodeHasChildren, "Mailbox has children")
	case errors.Is(err, mailbox.ErrTooManyFolders):
		return no(imap.ResponseCodeLimit, "Too many mailboxes")
	case errors.Is(err, mailbox.ErrBadFlag):
		return no(imap.ResponseCodeCannot, "Invalid flag")
	case errors.Is(err, mailbox.ErrNoMessage):
		return no(codeExpungeIssued, "Some messages were expunged")
	}
	s.log.Error("imap "+op, "error", err)
	return no(imap.ResponseCodeServerBug, "Internal error, try again later")
}

// closeSelection ends the selected state, if any.
func (s *session) closeSelection() {
	if s.sel == nil {
		return
	}
	if err := s.sel.folder.Close(); err != nil {
		s.log.Warn("imap close folder", "folder", s.sel.name, "error", err)
	}
	s.sel = nil
}

func limit(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
