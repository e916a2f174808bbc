package imapd

import (
	"errors"
	"sort"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// maxKeywords is how many keywords a folder can hold (dovecot-keywords
// letters a–z); PERMANENTFLAGS offers \* only while there is room.
const maxKeywords = 26

// selection is the selected state: the client's view of a folder.
//
// The view maps sequence numbers to UIDs (msgs[seq-1]) and remembers the
// flags the client was told. Poll compares it with the folder's latest
// snapshot when the snapshot's Version changed and tells the client the
// difference: EXPUNGE for messages gone (only where the command allows
// it; until then they keep their sequence numbers, RFC 3501 7.4.1),
// FETCH FLAGS for flag changes and EXISTS for new messages.
type selection struct {
	name        string
	folder      *mailbox.Folder
	readOnly    bool
	uidValidity uint32
	version     uint64 // snapshot version the view reflects
	msgs        []*viewMsg
	keywords    []string // keywords the client was told in FLAGS
	recentKey   string
	gone        int             // messages in msgs gone from the folder, not yet reported
	saved       map[uint32]bool // SEARCHRES: UIDs of SEARCH RETURN (SAVE), "$"
}

type viewMsg struct {
	m      *mailbox.Message // as the client knows it; shared, never modified
	gone   bool
	recent bool
}

func (sel *selection) uid(i int) uint32 { return sel.msgs[i].m.UID }

// updateWriter is what a selection reports changes through;
// *imapserver.UpdateWriter is one.
type updateWriter interface {
	WriteExpunge(seqNum uint32) error
	WriteNumMessages(n uint32) error
	WriteNumRecent(n uint32) error
	WriteMailboxFlags(flags []imap.Flag) error
	WriteMessageFlags(seqNum uint32, uid imap.UID, flags []imap.Flag) error
}

func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.closeSelection()
	f, err := s.user.Open(name)
	if err != nil {
		return nil, s.storeErr("select", err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		f.Close()
		return nil, s.storeErr("select", err)
	}
	sel := &selection{
		name:        name,
		folder:      f,
		readOnly:    options.ReadOnly,
		uidValidity: snap.UIDValidity,
		version:     snap.Version,
		keywords:    snap.Keywords,
		recentKey:   recentKey(s.addr, name, snap.UIDValidity),
	}
	var maxUID uint32
	if n := len(snap.Messages); n > 0 {
		maxUID = snap.Messages[n-1].UID
	}
	var last uint32
	if sel.readOnly {
		last = s.srv.recent.peek(sel.recentKey)
	} else {
		last = s.srv.recent.claim(sel.recentKey, maxUID)
	}
	data := &imap.SelectData{
		UIDNext:     imap.UID(snap.UIDNext),
		UIDValidity: snap.UIDValidity,
		Flags:       folderFlags(snap.Keywords),
	}
	sel.msgs = make([]*viewMsg, len(snap.Messages))
	for i := range snap.Messages {
		m := &snap.Messages[i]
		vm := &viewMsg{m: m, recent: m.UID > last}
		sel.msgs[i] = vm
		if vm.recent {
			data.NumRecent++
		}
		if data.FirstUnseenSeqNum == 0 && !hasFlag(m.Flags, mailbox.FlagSeen) {
			data.FirstUnseenSeqNum = uint32(i + 1)
		}
	}
	data.NumMessages = uint32(len(sel.msgs))
	if !sel.readOnly {
		data.PermanentFlags = folderFlags(snap.Keywords)
		if len(snap.Keywords) < maxKeywords {
			data.PermanentFlags = append(data.PermanentFlags, imap.FlagWildcard)
		}
	} else {
		data.PermanentFlags = []imap.Flag{}
	}
	if s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		data.List = &imap.ListData{Mailbox: name, Delim: mailbox.Delimiter}
	}
	s.sel = sel
	return data, nil
}

func (s *session) Unselect() error {
	s.closeSelection()
	return nil
}

func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	return s.sync(w, allowExpunge)
}

// sync brings the client's view up to date with the folder.
func (s *session) sync(w updateWriter, allowExpunge bool) error {
	sel := s.sel
	if sel == nil {
		return nil
	}
	snap, err := sel.folder.Snapshot()
	if err != nil {
		if errors.Is(err, mailbox.ErrNoFolder) {
			// Deleted or renamed under us: nothing more to tell.
			return nil
		}
		return s.storeErr("poll", err)
	}
	if snap.UIDValidity != sel.uidValidity {
		s.log.Warn("imap uidvalidity changed", "folder", sel.name)
		_ = s.conn.Bye("Mailbox UIDVALIDITY changed")
		return nil
	}
	if snap.Version == sel.version && (sel.gone == 0 || !allowExpunge) {
		return nil
	}

	// Walk the view and the snapshot (both in ascending UID order).
	type flagUpdate struct {
		vm *viewMsg
		m  *mailbox.Message
	}
	var changed []flagUpdate
	j := 0
	for _, vm := range sel.msgs {
		if vm.gone {
			continue
		}
		for j < len(snap.Messages) && snap.Messages[j].UID < vm.m.UID {
			j++
		}
		if j < len(snap.Messages) && snap.Messages[j].UID == vm.m.UID {
			if m := &snap.Messages[j]; !sameFlags(m.Flags, vm.m.Flags) {
				changed = append(changed, flagUpdate{vm, m})
			} else {
				vm.m = m
			}
			continue
		}
		vm.gone = true
		sel.gone++
	}

	if allowExpunge {
		if err := s.writeExpunges(w.WriteExpunge); err != nil {
			return err
		}
	}
	if newKeywords(sel.keywords, snap.Keywords) {
		sel.keywords = snap.Keywords
		if err := w.WriteMailboxFlags(folderFlags(snap.Keywords)); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		seqs := sel.seqIndex()
		for _, c := range changed {
			c.vm.m = c.m
			if err := w.WriteMessageFlags(seqs[c.vm], 0, imapFlags(c.m.Flags, c.vm.recent)); err != nil {
				return err
			}
		}
	}

	var maxUID uint32
	if n := len(sel.msgs); n > 0 {
		maxUID = sel.uid(n - 1)
	}
	first := sort.Search(len(snap.Messages), func(i int) bool { return snap.Messages[i].UID > maxUID })
	if first < len(snap.Messages) {
		last := snap.Messages[len(snap.Messages)-1].UID
		var claimed uint32
		if sel.readOnly {
			claimed = s.srv.recent.peek(sel.recentKey)
		} else {
			claimed = s.srv.recent.claim(sel.recentKey, last)
		}
		for i := first; i < len(snap.Messages); i++ {
			m := &snap.Messages[i]
			sel.msgs = append(sel.msgs, &viewMsg{m: m, recent: m.UID > claimed})
		}
		if err := w.WriteNumMessages(uint32(len(sel.msgs))); err != nil {
			return err
		}
		var recent uint32
		for _, vm := range sel.msgs {
			if vm.recent {
				recent++
			}
		}
		if err := w.WriteNumRecent(recent); err != nil {
			return err
		}
	}
	sel.version = snap.Version
	return nil
}

// writeExpunges reports the messages gone from the folder and drops them
// from the view, in ascending order with each number as the client knows
// it at that point (as Dovecot does).
func (s *session) writeExpunges(write func(seqNum uint32) error) error {
	sel := s.sel
	if sel.gone == 0 {
		return nil
	}
	kept := sel.msgs[:0]
	var err error
	for _, vm := range sel.msgs {
		if !vm.gone {
			kept = append(kept, vm)
			continue
		}
		if err == nil {
			err = write(uint32(len(kept) + 1))
		}
	}
	for i := len(kept); i < len(sel.msgs); i++ {
		sel.msgs[i] = nil
	}
	sel.msgs = kept
	sel.gone = 0
	return err
}

// announceKeywords tells the client, in the middle of a FETCH or STORE,
// of keywords in snap it has not been told of (another session may have
// just added one), before flags naming them are sent (RFC 3501 7.2.6).
func (s *session) announceKeywords(w *imapserver.FetchWriter, snap *mailbox.Snapshot) error {
	if !newKeywords(s.sel.keywords, snap.Keywords) {
		return nil
	}
	s.sel.keywords = snap.Keywords
	return w.WriteMailboxFlags(folderFlags(snap.Keywords))
}

// newKeywords reports whether now has a keyword told did not.
func newKeywords(told, now []string) bool {
	for _, kw := range now {
		if !hasFlag(told, kw) {
			return true
		}
	}
	return false
}

// seqIndex maps view entries to their sequence numbers.
func (sel *selection) seqIndex() map[*viewMsg]uint32 {
	idx := make(map[*viewMsg]uint32, len(sel.msgs))
	for i, vm := range sel.msgs {
		idx[vm] = uint32(i + 1)
	}
	return idx
}

// markGone marks the messages with the given UIDs as gone.
func (sel *selection) markGone(uids []uint32) {
	for _, uid := range uids {
		if i, ok := sel.find(uid); ok && !sel.msgs[i].gone {
			sel.msgs[i].gone = true
			sel.gone++
		}
	}
}

// find returns the view index of uid.
func (sel *selection) find(uid uint32) (int, bool) {
	i := sort.Search(len(sel.msgs), func(i int) bool { return sel.uid(i) >= uid })
	return i, i < len(sel.msgs) && sel.uid(i) == uid
}

func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		<-stop
		return nil
	}
	ticker := time.NewTicker(idleRescan)
	defer ticker.Stop()
	for {
		changed := s.sel.folder.Changed()
		if err := s.sync(w, true); err != nil {
			return err
		}
		if s.sel == nil {
			<-stop
			return nil
		}
		select {
		case <-stop:
			return nil
		case <-changed:
		case <-ticker.C:
		}
	}
}

// target is a message a command names.
type target struct {
	seq uint32
	vm  *viewMsg
}

// resolve turns a command's number set into view messages in ascending
// order. A sequence number beyond the view is a client error (BAD); UIDs
// that do not exist are ignored. "*" is the last message.
func (sel *selection) resolve(numSet imap.NumSet) ([]target, error) {
	n := uint32(len(sel.msgs))
	if imap.IsSearchRes(numSet) {
		var out []target
		for i, vm := range sel.msgs {
			if sel.saved[vm.m.UID] {
				out = append(out, target{uint32(i + 1), vm})
			}
		}
		return out, nil
	}
	var out []target
	switch set := numSet.(type) {
	case imap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = n
			}
			if stop == 0 {
				stop = n
			}
			if min(start, stop) == 0 || max(start, stop) > n {
				return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Invalid message sequence number"}
			}
		}
		sp := seqSpans(set, n)
		for q := uint32(1); q <= n; q++ {
			if sp.has(q) {
				out = append(out, target{q, sel.msgs[q-1]})
			}
		}
	case imap.UIDSet:
		if n == 0 {
			return nil, nil
		}
		sp := uidSpans(set, sel.uid(int(n)-1))
		for i, vm := range sel.msgs {
			if sp.has(vm.m.UID) {
				out = append(out, target{uint32(i + 1), vm})
			}
		}
	}
	return out, nil
}

func liveUIDs(targets []target) []uint32 {
	uids := make([]uint32, 0, len(targets))
	for _, t := range targets {
		if !t.vm.gone {
			uids = append(uids, t.vm.m.UID)
		}
	}
	return uids
}

var errNotSelected = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only"}

func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if s.sel == nil {
		return errNotSelected
	}
	sel := s.sel
	// imapserver calls Expunge with a zero ExpungeWriter for CLOSE,
	// which expunges silently (and not at all when read-only).
	closing := *w == imapserver.ExpungeWriter{}
	if sel.readOnly {
		if closing {
			return nil
		}
		return errReadOnly
	}
	snap, err := sel.folder.Snapshot()
	if err != nil {
		return s.storeErr("expunge", err)
	}
	var maxUID uint32
	if n := len(sel.msgs); n > 0 {
		maxUID = sel.uid(n - 1)
	}
	// UID EXPUNGE's set ("$": the saved SEARCH result), built once.
	inSet := func(uint32) bool { return true }
	switch {
	case uids != nil && imap.IsSearchRes(*uids):
		inSet = func(uid uint32) bool { return sel.saved[uid] }
	case uids != nil:
		inSet = uidSpans(*uids, maxUID).has
	}
	var del []uint32
	j := 0
	for _, vm := range sel.msgs {
		if vm.gone {
			continue
		}
		uid := vm.m.UID
		for j < len(snap.Messages) && snap.Messages[j].UID < uid {
			j++
		}
		if j == len(snap.Messages) || snap.Messages[j].UID != uid || !hasFlag(snap.Messages[j].Flags, mailbox.FlagDeleted) {
			continue
		}
		if uids != nil && !inSet(uid) {
			continue
		}
		del = append(del, uid)
	}
	if len(del) > 0 {
		removed, err := sel.folder.Expunge(del)
		if err != nil {
			return s.storeErr("expunge", err)
		}
		sel.markGone(removed)
	}
	if closing {
		return nil
	}
	return s.writeExpunges(w.WriteExpunge)
}

func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	if s.sel == nil {
		return errNotSelected
	}
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	targets, err := sel.resolve(numSet)
	if err != nil {
		return err
	}
	uids := liveUIDs(targets)
	if len(uids) == 0 {
		return nil
	}
	op := mailbox.FlagsSet
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = mailbox.FlagsAdd
	case imap.StoreFlagsDel:
		op = mailbox.FlagsRemove
	}
	names := storeFlagNames(flags.Flags, sel.keywords)
	if len(names) == 0 && op != mailbox.FlagsSet {
		// Only \Recent or nothing: no change, but FETCH replies as usual.
		return s.writeFlags(w, numSet, targets, flags.Silent)
	}
	if err := sel.folder.StoreFlags(uids, op, names); err != nil {
		return s.storeErr("store", err)
	}
	return s.writeFlags(w, numSet, targets, flags.Silent)
}

// writeFlags updates the view of targets from a fresh snapshot and,
// unless silent, sends their FLAGS.
func (s *session) writeFlags(w *imapserver.FetchWriter, numSet imap.NumSet, targets []target, silent bool) error {
	sel := s.sel
	snap, err := sel.folder.Snapshot()
	if err != nil {
		return s.storeErr("store", err)
	}
	if !silent {
		if err := s.announceKeywords(w, snap); err != nil {
			return err
		}
	}
	_, byUID := numSet.(imap.UIDSet)
	for _, t := range targets {
		if t.vm.gone {
			continue
		}
		m := findMessage(snap, t.vm.m.UID)
		if m == nil {
			continue // expunged meanwhile: the next poll tells
		}
		t.vm.m = m
		if silent {
			continue
		}
		resp := w.CreateMessage(t.seq)
		if byUID {
			resp.WriteUID(imap.UID(m.UID))
		}
		resp.WriteFlags(imapFlags(m.Flags, t.vm.recent))
		if err := resp.Close(); err != nil {
			return err
		}
	}
	return nil
}

// findMessage returns the message of snap with uid, or nil.
func findMessage(snap *mailbox.Snapshot, uid uint32) *mailbox.Message {
	i := sort.Search(len(snap.Messages), func(i int) bool { return snap.Messages[i].UID >= uid })
	if i < len(snap.Messages) && snap.Messages[i].UID == uid {
		return &snap.Messages[i]
	}
	return nil
}

func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	if s.sel == nil {
		return nil, errNotSelected
	}
	data, _, err := s.copyOrMove(numSet, dest, false)
	return data, err
}

func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.sel == nil {
		return errNotSelected
	}
	if s.sel.readOnly {
		return errReadOnly
	}
	data, moved, err := s.copyOrMove(numSet, dest, true)
	if err != nil {
		return err
	}
	if data != nil {
		if err := w.WriteCopyData(data); err != nil {
			return err
		}
	}
	s.sel.markGone(moved)
	return s.writeExpunges(w.WriteExpunge)
}

func (s *session) copyOrMove(numSet imap.NumSet, dest string, move bool) (*imap.CopyData, []uint32, error) {
	sel := s.sel
	op := "copy"
	if move {
		op = "move"
	}
	targets, err := sel.resolve(numSet)
	if err != nil {
		return nil, nil, err
	}
	dst, err := s.user.Open(dest)
	if errors.Is(err, mailbox.ErrNoFolder) {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	if err != nil {
		return nil, nil, s.storeErr(op, err)
	}
	defer dst.Close()
	uids := liveUIDs(targets)
	if len(uids) == 0 {
		return nil, nil, nil
	}
	var src, dstUIDs []uint32
	var uidValidity uint32
	if move {
		src, dstUIDs, uidValidity, err = sel.folder.MoveTo(uids, dst)
	} else {
		src, dstUIDs, uidValidity, err = sel.folder.CopyTo(uids, dst)
	}
	if err != nil {
		return nil, nil, s.storeErr(op, err)
	}
	if len(src) == 0 {
		return nil, nil, nil
	}
	data := &imap.CopyData{UIDValidity: uidValidity}
	for i := range src {
		data.SourceUIDs.AddNum(imap.UID(src[i]))
		data.DestUIDs.AddNum(imap.UID(dstUIDs[i]))
	}
	return data, src, nil
}
