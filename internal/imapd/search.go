package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // SEARCH in bodies of any charset
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// maxSearchContent bounds the criteria of one SEARCH that read message
// content (BODY, TEXT, HEADER), each of which reads every message tested:
// clients send a few; thousands would cost minutes of CPU per command.
const maxSearchContent = 32

// maxSearchNodes bounds all criteria of one SEARCH, nested NOT and OR
// included.
const maxSearchNodes = 512

// countCriteria counts the criteria of c: all of them, and those that
// read message content.
func countCriteria(c *imap.SearchCriteria) (nodes, content int) {
	nodes = len(c.SeqNum) + len(c.UID) + len(c.Header) + len(c.Body) + len(c.Text) + len(c.Flag) + len(c.NotFlag) + 1
	content = len(c.Header) + len(c.Body) + len(c.Text)
	for i := range c.Not {
		n, k := countCriteria(&c.Not[i])
		nodes, content = nodes+n, content+k
	}
	for i := range c.Or {
		for j := range c.Or[i] {
			n, k := countCriteria(&c.Or[i][j])
			nodes, content = nodes+n, content+k
		}
	}
	return nodes, content
}

func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	sel := s.sel
	if sel == nil {
		return nil, errNotSelected
	}
	if nodes, content := countCriteria(criteria); nodes > maxSearchNodes || content > maxSearchContent {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
			Text: fmt.Sprintf("Too many search criteria (at most %d, %d of them on message content)", maxSearchNodes, maxSearchContent)}
	}
	snap, err := sel.folder.Snapshot()
	if err != nil {
		return nil, s.storeErr("search", err)
	}
	ctx := &searchCtx{maxSeq: uint32(len(sel.msgs)), saved: sel.saved}
	if n := len(sel.msgs); n > 0 {
		ctx.maxUID = sel.uid(n - 1)
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	var matched []uint32 // UIDs, for SAVE
	for i, vm := range sel.msgs {
		if vm.gone {
			continue
		}
		m := findMessage(snap, vm.m.UID)
		if m == nil {
			continue // expunged meanwhile
		}
		sm := &searchMsg{sess: s, seq: uint32(i + 1), m: m, recent: vm.recent}
		ok, err := sm.match(ctx, criteria)
		sm.close()
		if err != nil {
			return nil, s.storeErr("search", err)
		}
		if !ok {
			continue
		}
		num := sm.seq
		if kind == imapserver.NumKindUID {
			num = m.UID
		}
		if data.Min == 0 {
			data.Min = num
		}
		data.Max = num
		data.Count++
		seqs.AddNum(num)
		uids.AddNum(imap.UID(num))
		matched = append(matched, m.UID)
	}
	if options.ReturnSave {
		// RFC 5182 2.1: with MIN or MAX (and not ALL or COUNT) only
		// those are saved.
		save := matched
		if (options.ReturnMin || options.ReturnMax) && !options.ReturnAll && !options.ReturnCount && len(matched) > 0 {
			save = nil
			if options.ReturnMin {
				save = append(save, matched[0])
			}
			if options.ReturnMax {
				save = append(save, matched[len(matched)-1])
			}
		}
		sel.saved = make(map[uint32]bool, len(save))
		for _, uid := range save {
			sel.saved[uid] = true
		}
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	return data, nil
}

type searchCtx struct {
	maxSeq uint32
	maxUID uint32
	saved  map[uint32]bool // "$" (SEARCHRES)
	// The criteria's number sets as spans, built on first use (keyed by
	// the set's first range, which is unique to the set).
	seqs map[*imap.SeqRange]spans
	uids map[*imap.UIDRange]spans
}

func (ctx *searchCtx) seqHas(set imap.SeqSet, seq uint32) bool {
	return len(set) > 0 && cachedSpans(&ctx.seqs, &set[0], func() spans { return seqSpans(set, ctx.maxSeq) }).has(seq)
}

func (ctx *searchCtx) uidHas(set imap.UIDSet, uid uint32) bool {
	return len(set) > 0 && cachedSpans(&ctx.uids, &set[0], func() spans { return uidSpans(set, ctx.maxUID) }).has(uid)
}

// cachedSpans returns (*m)[k], building and keeping it on first use.
func cachedSpans[K comparable](m *map[K]spans, k K, build func() spans) spans {
	sp, ok := (*m)[k]
	if !ok {
		if *m == nil {
			*m = map[K]spans{}
		}
		sp = build()
		(*m)[k] = sp
	}
	return sp
}

// searchMsg is one message under test; its file is opened and its
// header parsed only when a criterion needs them, and at most one
// message's content is in memory at a time.
type searchMsg struct {
	sess   *session
	seq    uint32
	m      *mailbox.Message
	recent bool

	file   io.ReadSeekCloser
	header *textproto.Header
	// hold is the read budget the parsed header holds (a header may be
	// as large as the message) until the message is done with.
	hold *readHold
}

func (sm *searchMsg) close() {
	if sm.file != nil {
		sm.file.Close()
		sm.file = nil
	}
	if sm.hold != nil {
		sm.hold.release()
		sm.hold = nil
	}
}

func (sm *searchMsg) open() (io.ReadSeeker, error) {
	if sm.file == nil {
		f, err := sm.sess.sel.folder.Open(sm.m.UID)
		if err != nil {
			return nil, err
		}
		sm.file = f
	}
	if _, err := sm.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return sm.file, nil
}

func (sm *searchMsg) getHeader() (*textproto.Header, error) {
	if sm.header != nil {
		return sm.header, nil
	}
	sm.hold = &readHold{s: sm.sess, what: "SEARCH"}
	if err := sm.hold.to(sm.m.Size); err != nil {
		return nil, err
	}
	r, err := sm.open()
	if err != nil {
		return nil, err
	}
	h, err := textproto.ReadHeader(bufio.NewReader(r))
	if err != nil {
		h = textproto.Header{}
	}
	sm.header = &h
	return sm.header, nil
}

func (sm *searchMsg) match(ctx *searchCtx, c *imap.SearchCriteria) (bool, error) {
	// Cheap criteria first.
	for _, set := range c.SeqNum {
		if !ctx.seqHas(set, sm.seq) {
			return false, nil
		}
	}
	for _, set := range c.UID {
		if imap.IsSearchRes(set) {
			if !ctx.saved[sm.m.UID] {
				return false, nil
			}
			continue
		}
		if !ctx.uidHas(set, sm.m.UID) {
			return false, nil
		}
	}
	for _, f := range c.Flag {
		if !sm.hasFlag(string(f)) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if sm.hasFlag(string(f)) {
			return false, nil
		}
	}
	if c.Larger > 0 && sm.m.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && sm.m.Size >= c.Smaller {
		return false, nil
	}
	if !matchDate(sm.m.InternalDate, c.Since, c.Before) {
		return false, nil
	}
	if c.ModSeq != nil {
		return false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "MODSEQ is not supported"}
	}

	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		h, err := sm.getHeader()
		if err != nil {
			return false, err
		}
		for _, hc := range c.Header {
			if !matchHeader(h, hc.Key, hc.Value) {
				return false, nil
			}
		}
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			mh := mail.Header{Header: gomessage.Header{Header: *h}}
			date, err := mh.Date()
			if err != nil || date.IsZero() {
				date = sm.m.InternalDate
			}
			if !matchDate(date, c.SentSince, c.SentBefore) {
				return false, nil
			}
		}
	}
	for _, text := range c.Body {
		ok, err := sm.matchText(text, false)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, text := range c.Text {
		ok, err := sm.matchText(text, true)
		if err != nil || !ok {
			return false, err
		}
	}

	for i := range c.Not {
		ok, err := sm.match(ctx, &c.Not[i])
		if err != nil || ok {
			return false, err
		}
	}
	for i := range c.Or {
		ok, err := sm.match(ctx, &c.Or[i][0])
		if err != nil {
			return false, err
		}
		if !ok {
			ok, err = sm.match(ctx, &c.Or[i][1])
			if err != nil || !ok {
				return false, err
			}
		}
	}
	return true, nil
}

func (sm *searchMsg) hasFlag(f string) bool {
	if strings.EqualFold(f, flagRecent) {
		return sm.recent
	}
	return hasFlag(sm.m.Flags, f)
}

// matchDate compares dates only, each in its own time zone (RFC 3501
// 6.4.4: "disregarding time and timezone").
func matchDate(t, since, before time.Time) bool {
	if since.IsZero() && before.IsZero() {
		return true
	}
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && d.Before(day(since)) {
		return false
	}
	if !before.IsZero() && !d.Before(day(before)) {
		return false
	}
	return true
}

func day(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// addressFields are matched against their parsed addresses too, so that
// comments and angle brackets do not hide an address.
var addressFields = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "sender": true, "reply-to": true,
}

// matchHeader reports whether a field key holds value (case-insensitive
// substring of the decoded value); an empty value asks whether the
// field exists.
func matchHeader(h *textproto.Header, key, value string) bool {
	if value == "" {
		return h.Has(key)
	}
	needle := strings.ToLower(value)
	gh := gomessage.Header{Header: *h}
	for f := gh.FieldsByKey(key); f.Next(); {
		v, err := f.Text()
		if err != nil {
			v = f.Value()
		}
		if strings.Contains(strings.ToLower(v), needle) {
			return true
		}
	}
	if addressFields[strings.ToLower(key)] {
		for f := gh.FieldsByKey(key); f.Next(); {
			for _, a := range addressList(f.Value()) {
				s := strings.ToLower(a.Name + " <" + a.Mailbox + "@" + a.Host + ">")
				if a.Host == "" {
					s = strings.ToLower(a.Mailbox) // a group's name
				}
				if strings.Contains(s, needle) {
					return true
				}
			}
		}
	}
	return false
}

// matchText searches the message's text parts (decoded from their
// transfer encoding and charset) and, for TEXT, its header fields.
func (sm *searchMsg) matchText(text string, withHeader bool) (bool, error) {
	if text == "" {
		return true, nil
	}
	needle := []byte(strings.ToLower(text))
	hold := &readHold{s: sm.sess, what: "SEARCH"}
	if err := hold.to(apartCost(sm.m.Size)); err != nil {
		return false, err
	}
	defer hold.release()
	r, err := sm.open()
	if err != nil {
		return false, err
	}
	// Read returns an entity along with an unknown charset or transfer
	// encoding error; the raw text is searched then.
	e, _ := gomessage.Read(bufio.NewReader(r))
	if e == nil {
		return false, nil
	}
	return matchEntity(e, needle, withHeader, 0), nil
}

// maxMIMEDepth bounds the recursion into nested multiparts.
const maxMIMEDepth = 20

func matchEntity(e *gomessage.Entity, needle []byte, withHeader bool, depth int) bool {
	if withHeader {
		for f := e.Header.Fields(); f.Next(); {
			v, err := f.Text()
			if err != nil {
				v = f.Value()
			}
			if bytes.Contains(bytes.ToLower([]byte(v)), needle) {
				return true
			}
		}
	}
	if depth > maxMIMEDepth {
		return false
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) || (err != nil && part == nil) {
				return false
			}
			if matchEntity(part, needle, withHeader, depth+1) {
				return true
			}
		}
	}
	t, _, _ := e.Header.ContentType()
	if t != "" && !strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "message/") {
		return false
	}
	buf, _ := io.ReadAll(e.Body)
	return bytes.Contains(bytes.ToLower(buf), needle)
}
