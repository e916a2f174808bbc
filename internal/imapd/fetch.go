package imapd

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if s.sel == nil {
		return errNotSelected
	}
	sel := s.sel
	targets, err := sel.resolve(numSet)
	if err != nil {
		return err
	}

	// BODY[...] and BINARY[...] without PEEK set \Seen, before the
	// replies so that they carry the new flags.
	seen := map[*viewMsg]bool{}
	if !sel.readOnly && setsSeen(options) {
		var uids []uint32
		for _, t := range targets {
			if !t.vm.gone && !hasFlag(t.vm.m.Flags, mailbox.FlagSeen) {
				uids = append(uids, t.vm.m.UID)
				seen[t.vm] = true
			}
		}
		if len(uids) > 0 {
			if err := sel.folder.StoreFlags(uids, mailbox.FlagsAdd, []string{mailbox.FlagSeen}); err != nil {
				return s.storeErr("fetch", err)
			}
			snap, err := sel.folder.Snapshot()
			if err != nil {
				return s.storeErr("fetch", err)
			}
			if err := s.announceKeywords(w, snap); err != nil {
				return err
			}
			for _, t := range targets {
				if seen[t.vm] {
					if m := findMessage(snap, t.vm.m.UID); m != nil {
						t.vm.m = m
					}
				}
			}
		}
	}

	// A message another session expunged (its file is gone) is left out
	// and the FETCH still succeeds; the client hears of the expunge at
	// the next command that allows it (RFC 2180 section 4.1).
	for _, t := range targets {
		if _, err := s.fetchOne(w, t, options, seen[t.vm]); err != nil {
			return err
		}
	}
	return nil
}

func setsSeen(options *imap.FetchOptions) bool {
	for _, bs := range options.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range options.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

func needsFile(options *imap.FetchOptions) bool {
	return options.Envelope || options.BodyStructure != nil || len(options.BodySection) > 0 ||
		len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0
}

// fetchOne writes the FETCH reply of one message; false if the message
// is gone and its content was asked for.
func (s *session) fetchOne(w *imapserver.FetchWriter, t target, options *imap.FetchOptions, flagsChanged bool) (bool, error) {
	m := t.vm.m
	hold := &readHold{s: s, what: "FETCH"}
	defer hold.release()
	var file io.ReadSeekCloser
	if needsFile(options) {
		if t.vm.gone {
			return false, nil
		}
		if takesApart(options) {
			// Reserved before the reply begins, so that a busy budget
			// is a clean NO [LIMIT]; fetchContent shrinks and grows it.
			if err := hold.to(apartCost(m.Size)); err != nil {
				return false, err
			}
		}
		f, err := s.sel.folder.Open(m.UID)
		if errors.Is(err, mailbox.ErrNoMessage) {
			return false, nil
		}
		if err != nil {
			return false, s.storeErr("fetch", err)
		}
		defer f.Close()
		file = f
	}

	resp := w.CreateMessage(t.seq)
	if options.UID {
		resp.WriteUID(imap.UID(m.UID))
	}
	if options.Flags || flagsChanged {
		resp.WriteFlags(imapFlags(m.Flags, t.vm.recent))
	}
	if options.InternalDate {
		resp.WriteInternalDate(m.InternalDate)
	}
	if options.RFC822Size {
		resp.WriteRFC822Size(m.Size)
	}
	if file != nil {
		if err := s.fetchContent(resp, file, m.Size, hold, options); err != nil {
			// The reply is half written: the connection cannot go on.
			resp.Close()
			return false, fmt.Errorf("imapd: fetch uid %d: %w", m.UID, err)
		}
	}
	return true, resp.Close()
}

// fetchContent writes what the FETCH asks of the message's content. Each
// part taken apart holds apartCost(size) of the read budget while it is
// extracted, only its result while that is written, and nothing after
// (nor while BODY[] streams from the file). The hold grows again for the
// next part; if the budget is exhausted then, the FETCH line of this
// message is ended short and the command answers NO [LIMIT].
func (s *session) fetchContent(resp *imapserver.FetchResponseWriter, file io.ReadSeeker, size int64, hold *readHold, options *imap.FetchOptions) error {
	rewind := func() (io.Reader, error) {
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return bufio.NewReader(file), nil
	}
	apart := func() (io.Reader, error) {
		if err := hold.to(apartCost(size)); err != nil {
			return nil, err
		}
		return rewind()
	}
	if options.Envelope {
		r, err := apart()
		if err != nil {
			return err
		}
		h, _ := textproto.ReadHeader(r.(*bufio.Reader))
		env := envelope(h)
		_ = hold.to(0)
		resp.WriteEnvelope(env)
	}
	if options.BodyStructure != nil {
		r, err := apart()
		if err != nil {
			return err
		}
		bs := imapserver.ExtractBodyStructure(r)
		_ = hold.to(0)
		resp.WriteBodyStructure(bs)
	}
	for _, bs := range options.BodySection {
		if isWholeMessage(bs) {
			_ = hold.to(0)
			if err := writeWhole(resp, file, bs); err != nil {
				return err
			}
			continue
		}
		r, err := apart()
		if err != nil {
			return err
		}
		b := imapserver.ExtractBodySection(r, bs)
		_ = hold.to(int64(len(b)))
		if err := writeLiteral(resp.WriteBodySection(bs, int64(len(b))), b); err != nil {
			return err
		}
		_ = hold.to(0)
	}
	for _, bs := range options.BinarySection {
		r, err := apart()
		if err != nil {
			return err
		}
		b := imapserver.ExtractBinarySection(r, bs)
		_ = hold.to(int64(len(b)))
		if err := writeLiteral(resp.WriteBinarySection(bs, int64(len(b))), b); err != nil {
			return err
		}
		_ = hold.to(0)
	}
	for _, bss := range options.BinarySectionSize {
		r, err := apart()
		if err != nil {
			return err
		}
		n := imapserver.ExtractBinarySectionSize(r, bss)
		_ = hold.to(0)
		resp.WriteBinarySectionSize(bss, n)
	}
	return nil
}

// takesApart reports whether a FETCH holds parts of the message in
// memory (everything that needs the file but BODY[], which is streamed).
func takesApart(options *imap.FetchOptions) bool {
	if options.Envelope || options.BodyStructure != nil || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		return true
	}
	for _, bs := range options.BodySection {
		if !isWholeMessage(bs) {
			return true
		}
	}
	return false
}

// isWholeMessage reports whether bs is BODY[] (perhaps partial), which
// is streamed from the file instead of being extracted in memory.
func isWholeMessage(bs *imap.FetchItemBodySection) bool {
	return len(bs.Part) == 0 && bs.Specifier == imap.PartSpecifierNone &&
		len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0
}

func writeWhole(resp *imapserver.FetchResponseWriter, file io.ReadSeeker, bs *imap.FetchItemBodySection) error {
	size, err := file.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	off, n := int64(0), size
	if p := bs.Partial; p != nil {
		off = min(p.Offset, size)
		n = min(p.Size, size-off)
	}
	if _, err := file.Seek(off, io.SeekStart); err != nil {
		return err
	}
	wc := resp.WriteBodySection(bs, n)
	if _, err := io.CopyN(wc, file, n); err != nil {
		wc.Close()
		return err
	}
	return wc.Close()
}

func writeLiteral(wc io.WriteCloser, b []byte) error {
	_, err := wc.Write(b)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}
