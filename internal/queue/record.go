package queue

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// On-disk record framing, version 2 (every record written since the queue
// learnt to resynchronise):
//
//	magic (4) "\xA2mq\xE5" | type (1) | reserved (1) | payload length (4, LE) |
//	message ID (16, ASCII, zero-padded) | payload CRC32C(type+payload) (4, LE) |
//	header CRC32C(segment offset (8, LE) + the 30 bytes before it) (4, LE) | payload
//
// The header has its own checksum so that a damaged payload costs only its
// record: the length is trusted and the scan goes on right after it, and the
// message ID names what was lost. When a header itself is damaged, replay
// looks for the next magic whose header verifies. The header checksum covers
// the record's offset in its segment, so a record that verifies can only be
// one written at that very place: a message body that happens to contain
// (or was crafted to contain) bytes that look like a record never turns
// into one, even when a resync scan walks through it.
//
// Version 1 (segments written by older releases; still read):
//
//	magic (1) 0xA1 | type (1) | payload length (4, LE) | CRC32C(type+payload) (4, LE) | payload
//
// Payloads, in both versions:
//
//	Add:    meta length (4, LE) | Meta JSON | body
//	Update: Meta JSON (the full, current Meta of the message)
//	Remove: message ID
//
// Versions can be mixed in one segment (an upgrade appends version 2 records
// to a version 1 head segment); each record says which it is.
const (
	recMagicV1 byte = 0xA1

	recAdd    byte = 'A'
	recUpdate byte = 'U'
	recRemove byte = 'R'

	headerLenV1 = 10
	headerLen   = 34 // version 2
	idFieldLen  = 16

	// Offsets in a version 2 header.
	hdrType      = 4
	hdrLength    = 6
	hdrID        = 10
	hdrPayCRC    = 26
	hdrHeaderCRC = 30

	// maxMetaLen bounds what replay allocates for one record; a Meta with
	// thousands of recipients is still far below it.
	maxMetaLen = 4 << 20

	// MaxBodySize is the largest body Enqueue accepts. Bodies are never
	// loaded whole during replay (they are streamed through the checksum),
	// so this only bounds what a corrupt length field can make replay skip.
	MaxBodySize = 256 << 20

	maxPayloadLen = 4 + maxMetaLen + MaxBodySize
)

var recMagicV2 = [4]byte{0xA2, 'm', 'q', 0xE5}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a torn or corrupt record.
var errCorrupt = errors.New("corrupt or torn record")

func corruptf(off int64, format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", errCorrupt, off, fmt.Sprintf(format, args...))
}

// encodeRecord frames one version 2 record for the message id. For recAdd,
// data is the Meta JSON and body the message; for recUpdate data is the
// Meta JSON; for recRemove data is the ID. The header checksum is computed
// for offset 0: stampRecord must set it for where the record lands.
func encodeRecord(typ byte, id string, data, body []byte) []byte {
	if typ == recAdd {
		return joinParts(encodeAdd(id, data, [][]byte{body}))
	}
	return encodeSmall(typ, id, data)
}

// encodeAdd frames an Add record as pieces: the head (header, meta length,
// meta) and then the body parts as given, not copied, so a large message
// is written from the caller's buffers. The payload checksum covers the
// pieces in order.
func encodeAdd(id string, data []byte, body [][]byte) [][]byte {
	n := 4 + len(data)
	for _, b := range body {
		n += len(b)
	}
	head := make([]byte, headerLen, headerLen+4+len(data))
	copy(head, recMagicV2[:])
	head[hdrType] = recAdd
	binary.LittleEndian.PutUint32(head[hdrLength:], uint32(n))
	copy(head[hdrID:hdrID+idFieldLen], id)
	head = binary.LittleEndian.AppendUint32(head, uint32(len(data)))
	head = append(head, data...)
	crc := crc32.Update(0, crcTable, head[hdrType:hdrType+1])
	crc = crc32.Update(crc, crcTable, head[headerLen:])
	for _, b := range body {
		crc = crc32.Update(crc, crcTable, b)
	}
	binary.LittleEndian.PutUint32(head[hdrPayCRC:], crc)
	stampRecord(head, 0)
	return append([][]byte{head}, body...)
}

// joinParts concatenates a record's pieces.
func joinParts(parts [][]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// encodeSmall frames a record without a body (recUpdate, recRemove).
func encodeSmall(typ byte, id string, data []byte) []byte {
	buf := make([]byte, headerLen, headerLen+len(data))
	copy(buf, recMagicV2[:])
	buf[hdrType] = typ
	binary.LittleEndian.PutUint32(buf[hdrLength:], uint32(len(data)))
	copy(buf[hdrID:hdrID+idFieldLen], id)
	buf = append(buf, data...)
	crc := crc32.Update(0, crcTable, buf[hdrType:hdrType+1])
	crc = crc32.Update(crc, crcTable, buf[headerLen:])
	binary.LittleEndian.PutUint32(buf[hdrPayCRC:], crc)
	stampRecord(buf, 0)
	return buf
}

// headerCRC is the checksum of a version 2 header placed at off.
func headerCRC(hdr []byte, off int64) uint32 {
	var o [8]byte
	binary.LittleEndian.PutUint64(o[:], uint64(off))
	crc := crc32.Update(0, crcTable, o[:])
	return crc32.Update(crc, crcTable, hdr[:hdrHeaderCRC])
}

// stampRecord sets the header checksum of a version 2 record for offset off
// in its segment. Version 1 records do not depend on where they are.
func stampRecord(rec []byte, off int64) {
	if len(rec) >= headerLen && [4]byte(rec[:4]) == recMagicV2 {
		binary.LittleEndian.PutUint32(rec[hdrHeaderCRC:], headerCRC(rec, off))
	}
}

// headerOK reports whether hdr is a version 2 header that verifies at off.
func headerOK(hdr []byte, off int64) bool {
	return len(hdr) >= headerLen && [4]byte(hdr[:4]) == recMagicV2 &&
		binary.LittleEndian.Uint32(hdr[hdrHeaderCRC:]) == headerCRC(hdr, off)
}

// headerID is the message ID a version 2 header names.
func headerID(hdr []byte) string {
	return string(bytes.TrimRight(hdr[hdrID:hdrID+idFieldLen], "\x00"))
}

// decodeAdd checks a whole Add record held in memory, read from offset off
// of its segment (for error messages), and returns its meta JSON and body
// (sub-slices of rec).
func decodeAdd(rec []byte, off int64) (meta, body []byte, err error) {
	hl := headerLen
	var typ byte
	var n, want uint32
	switch {
	case len(rec) >= headerLenV1 && rec[0] == recMagicV1:
		hl = headerLenV1
		typ = rec[1]
		n = binary.LittleEndian.Uint32(rec[2:6])
		want = binary.LittleEndian.Uint32(rec[6:10])
	case len(rec) >= headerLen:
		// The index located this record, so its place is known: the
		// magic, ID and header checksum add nothing (and may be the
		// damaged bytes of a record replay recovered). Type, length and
		// the payload checksum decide.
		typ = rec[hdrType]
		n = binary.LittleEndian.Uint32(rec[hdrLength:])
		want = binary.LittleEndian.Uint32(rec[hdrPayCRC:])
	default:
		return nil, nil, corruptf(off, "record too short")
	}
	if typ != recAdd || len(rec) < hl+4 {
		return nil, nil, corruptf(off, "not an add record")
	}
	if int64(n) != int64(len(rec)-hl) {
		return nil, nil, corruptf(off, "length %d does not match record size %d", n, len(rec))
	}
	crc := crc32.Update(0, crcTable, []byte{typ})
	crc = crc32.Update(crc, crcTable, rec[hl:])
	if crc != want {
		return nil, nil, corruptf(off, "checksum mismatch")
	}
	ml := binary.LittleEndian.Uint32(rec[hl : hl+4])
	if int64(ml) > int64(n)-4 {
		return nil, nil, corruptf(off, "meta length %d exceeds payload", ml)
	}
	start := hl + 4
	return rec[start : start+int(ml)], rec[start+int(ml):], nil
}

// record is one valid record found by scanSegment.
type record struct {
	typ  byte
	off  int64 // where the record starts in the segment
	size int64 // header + payload
	id   string
	// data is the Meta JSON (Add, Update) or the ID (Remove). It is only
	// valid during the callback.
	data []byte
	// bodyOff and bodyLen locate an Add record's body in the segment.
	bodyOff, bodyLen int64
	// recovered: the header was damaged outside its type, length and
	// payload checksum, and the payload verified with those.
	recovered bool
}

// damage is a byte range of a segment in which no record verifies.
type damage struct {
	off, end int64
	// ids names the messages of records in the range whose header is
	// readable, with their record type (recAdd, recUpdate, recRemove, or 0
	// when the type is not known).
	ids []damagedRecord
	// recovered: only a header was damaged and its record was recovered
	// whole (the range is that header).
	recovered bool
	// tail: no record verifies after the range, to the end of the segment.
	tail bool
	// torn: a tail that looks like a write cut short (see looksTorn).
	torn bool
}

type damagedRecord struct {
	id  string
	typ byte
}

func (d *damage) note(id string, typ byte) {
	if !validID(id) {
		return
	}
	for _, r := range d.ids {
		if r.id == id && r.typ == typ {
			return
		}
	}
	d.ids = append(d.ids, damagedRecord{id, typ})
}

// validID reports whether s looks like a message ID (idGen's alphabet and
// length); it keeps noise out of what a damaged header is said to name.
func validID(s string) bool {
	if len(s) != idFieldLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'v') {
			return false
		}
	}
	return true
}

// scanResult is what scanSegment found.
type scanResult struct {
	records int
	// end is the offset just past the last valid record.
	end int64
	// damaged lists the damaged ranges in order. When the last one ends at
	// the end of the segment (no valid record after it), tail is true.
	damaged []damage
	tail    bool
}

// segmentScanner reads records sequentially through a buffer, and jumps
// when a damaged range is skipped. It reuses its buffers so replay of a
// large log allocates little.
type segmentScanner struct {
	ra      io.ReaderAt
	size    int64
	br      *bufio.Reader
	brPos   int64 // where br reads next; -1 before the first read
	scratch []byte
	copyBuf []byte
	// legacy is true when the segment starts with an intact version 1
	// record: it was created by a version 1 writer (a version 2 writer
	// always starts a segment with a version 2 header). Only such a segment
	// may hold version 1 records. Any other segment never yields one, even
	// when its first header is damaged or torn: version 1 records have no
	// checksum bound to their place, so one found there could be bytes a
	// sender put in a message body. The cost is that a version 1 segment
	// whose first record is damaged is reported lost as a whole rather
	// than resynced into.
	legacy bool
	// v1 allows version 1 candidates during a resync: only in a legacy
	// segment, and only until a version 2 record was seen in it.
	v1 bool
}

// scanSegment calls fn for every valid record in the size bytes of ra, in
// order, and onDamage (when not nil) for every damaged range, at its place
// in that order. A damaged record costs only itself: when its header
// verifies, the scan resumes right after it; otherwise it resumes at the
// next offset where a record verifies. The error is only ever an I/O error.
func scanSegment(ra io.ReaderAt, size int64, fn func(record), onDamage func(damage)) (scanResult, error) {
	s := &segmentScanner{ra: ra, size: size, brPos: -1}
	var first [1]byte
	if size >= 1 {
		if _, err := ra.ReadAt(first[:], 0); err != nil {
			return scanResult{}, fmt.Errorf("read segment: %w", err)
		}
	}
	if size >= 1 && first[0] == recMagicV1 {
		// A version 1 segment starts with a version 1 record. Asking it to
		// verify keeps damage to the first byte of a version 2 segment
		// (0xA2 -> 0xA1) from making it one.
		s.legacy, s.v1 = true, true
		if _, _, err := s.next(0, true); err != nil {
			if !errors.Is(err, errCorrupt) {
				return scanResult{}, err
			}
			s.legacy, s.v1 = false, false
		}
	}
	var res scanResult
	var pos int64
	for pos < size {
		rec, _, err := s.next(pos, false)
		if err == nil {
			fn(rec)
			res.records++
			pos += rec.size
			res.end = pos
			continue
		}
		if !errors.Is(err, errCorrupt) {
			return res, err
		}
		d := damage{off: pos}
		next, rec, found, err := s.resync(pos, &d)
		if err != nil {
			return res, err
		}
		d.end = next
		d.tail = !found
		if d.tail {
			if d.torn, err = s.looksTorn(d.off); err != nil {
				return res, err
			}
		}
		if d.recovered {
			d.end = next + headerLen
			d.note(rec.id, rec.typ)
		}
		res.damaged = append(res.damaged, d)
		if onDamage != nil {
			onDamage(d)
		}
		if !found {
			res.tail = true
			break
		}
		fn(rec)
		res.records++
		pos = next + rec.size
		res.end = pos
	}
	return res, nil
}

// seek makes br read from pos.
func (s *segmentScanner) seek(pos int64) {
	if s.brPos == pos {
		return
	}
	sr := io.NewSectionReader(s.ra, pos, s.size-pos)
	if s.br == nil {
		s.br = bufio.NewReaderSize(sr, s.bufSize())
	} else {
		s.br.Reset(sr)
	}
	s.brPos = pos
}

// bufSize is the read buffer: 1 MiB, or less for a small segment.
func (s *segmentScanner) bufSize() int {
	return int(max(min(s.size, 1<<20), 16))
}

func (s *segmentScanner) read(off int64, p []byte) error {
	n, err := io.ReadFull(s.br, p)
	s.brPos += int64(n)
	if err != nil {
		s.brPos = -1
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf(off, "unexpected end of segment")
		}
		return fmt.Errorf("read segment at offset %d: %w", off, err)
	}
	return nil
}

func (s *segmentScanner) buf(n int) []byte {
	if cap(s.scratch) < n {
		s.scratch = make([]byte, n)
	}
	return s.scratch[:n]
}

// headerInfo is what a record's header said, when it verified (version 2)
// even though the record as a whole did not.
type headerInfo struct {
	ok   bool
	typ  byte
	id   string
	size int64 // header + payload; may run past the end of the segment
}

// next reads and verifies the record at pos. strict (used while looking for
// a resync point) also asks a version 1 record to look like one mamori
// writes, since version 1 has no header checksum to rule out chance.
func (s *segmentScanner) next(pos int64, strict bool) (record, headerInfo, error) {
	if s.size-pos < headerLenV1 {
		return record{}, headerInfo{}, corruptf(pos, "torn header (%d bytes left)", s.size-pos)
	}
	s.seek(pos)
	var hb [headerLen]byte
	if err := s.read(pos, hb[:headerLenV1]); err != nil {
		return record{}, headerInfo{}, err
	}
	var typ byte
	var n int64
	var want uint32
	var hi headerInfo
	hl := int64(headerLen)
	switch {
	case hb[0] == recMagicV1:
		if !s.legacy || (strict && !s.v1) {
			return record{}, hi, corruptf(pos, "version 1 record in a version 2 segment")
		}
		hl = headerLenV1
		typ = hb[1]
		n = int64(binary.LittleEndian.Uint32(hb[2:6]))
		want = binary.LittleEndian.Uint32(hb[6:10])
	case [4]byte(hb[:4]) == recMagicV2:
		if s.size-pos < headerLen {
			return record{}, hi, corruptf(pos, "torn header (%d bytes left)", s.size-pos)
		}
		if err := s.read(pos, hb[headerLenV1:]); err != nil {
			return record{}, hi, err
		}
		if !headerOK(hb[:], pos) {
			return record{}, hi, corruptf(pos, "header checksum mismatch")
		}
		typ = hb[hdrType]
		n = int64(binary.LittleEndian.Uint32(hb[hdrLength:]))
		want = binary.LittleEndian.Uint32(hb[hdrPayCRC:])
		hi = headerInfo{ok: true, typ: typ, id: headerID(hb[:]), size: headerLen + n}
	default:
		return record{}, hi, corruptf(pos, "bad magic byte %#x", hb[0])
	}
	if n > maxPayloadLen {
		return record{}, hi, corruptf(pos, "payload length %d over limit", n)
	}
	if n > s.size-pos-hl {
		return record{}, hi, corruptf(pos, "payload length %d runs past the end of the segment", n)
	}
	rec := record{typ: typ, off: pos, size: hl + n, id: hi.id}
	crc := crc32.Update(0, crcTable, []byte{typ})
	switch typ {
	case recAdd:
		if n < 4 {
			return record{}, hi, corruptf(pos, "add record too short")
		}
		var lb [4]byte
		if err := s.read(pos, lb[:]); err != nil {
			return record{}, hi, err
		}
		crc = crc32.Update(crc, crcTable, lb[:])
		ml := int64(binary.LittleEndian.Uint32(lb[:]))
		if ml > maxMetaLen || ml > n-4 {
			return record{}, hi, corruptf(pos, "meta length %d invalid", ml)
		}
		meta := s.buf(int(ml))
		if err := s.read(pos, meta); err != nil {
			return record{}, hi, err
		}
		if strict && hl == headerLenV1 && (ml == 0 || meta[0] != '{') {
			return record{}, hi, corruptf(pos, "implausible version 1 add record")
		}
		crc = crc32.Update(crc, crcTable, meta)
		rec.data = meta
		rec.bodyOff = pos + hl + 4 + ml
		rec.bodyLen = n - 4 - ml
		var err error
		if crc, err = s.skip(pos, rec.bodyLen, crc); err != nil {
			return record{}, hi, err
		}
	case recUpdate, recRemove:
		if n > maxMetaLen {
			return record{}, hi, corruptf(pos, "record length %d over limit", n)
		}
		if strict && hl == headerLenV1 && typ == recRemove && n != idFieldLen {
			return record{}, hi, corruptf(pos, "implausible version 1 remove record")
		}
		data := s.buf(int(n))
		if err := s.read(pos, data); err != nil {
			return record{}, hi, err
		}
		if strict && hl == headerLenV1 && typ == recUpdate && (n == 0 || data[0] != '{') {
			return record{}, hi, corruptf(pos, "implausible version 1 update record")
		}
		crc = crc32.Update(crc, crcTable, data)
		rec.data = data
	default:
		return record{}, hi, corruptf(pos, "unknown record type %#x", typ)
	}
	if crc != want {
		return record{}, hi, corruptf(pos, "checksum mismatch")
	}
	if hl == headerLen {
		s.v1 = false
	}
	return rec, hi, nil
}

// skip streams n bytes through the checksum without keeping them.
func (s *segmentScanner) skip(pos, n int64, crc uint32) (uint32, error) {
	if s.copyBuf == nil {
		s.copyBuf = make([]byte, 64<<10)
	}
	for n > 0 {
		p := s.copyBuf
		if int64(len(p)) > n {
			p = p[:n]
		}
		if err := s.read(pos, p); err != nil {
			return 0, err
		}
		crc = crc32.Update(crc, crcTable, p)
		n -= int64(len(p))
	}
	return crc, nil
}

// resync is called when the record at from does not verify. It notes in d
// what the damaged records' headers name and returns the offset of the next
// record that verifies, and that record; found is false when none does
// before the end of the segment (next is then the segment size).
func (s *segmentScanner) resync(from int64, d *damage) (next int64, rec record, found bool, err error) {
	p := from + 1
	if hi := s.headerAt(from); hi.ok {
		d.note(hi.id, hi.typ)
		p = from + hi.size // the length is trustworthy: skip the whole record
	} else if rec, ok, err := s.recoverAt(from); err != nil {
		return 0, record{}, false, err
	} else if ok {
		d.recovered = true
		return from, rec, true, nil
	} else {
		s.noteLenient(from, d)
	}
	for p < s.size {
		c, err := s.candidate(p)
		if err != nil {
			return 0, record{}, false, err
		}
		if c >= s.size {
			break
		}
		rec, hi, err := s.next(c, true)
		if err == nil {
			return c, rec, true, nil
		}
		if !errors.Is(err, errCorrupt) {
			return 0, record{}, false, err
		}
		if hi.ok {
			// Another damaged record whose header verifies: it belongs to
			// the same damaged range, and its length can be trusted.
			d.note(hi.id, hi.typ)
			p = c + hi.size
			continue
		}
		p = c + 1
	}
	return s.size, record{}, false, nil
}

// recoverAt tries the record at off, whose version 2 header does not
// verify, with the type, length and payload checksum its header holds. If
// the payload verifies, only the other header bytes (magic, ID, header
// checksum) were damaged: the record is whole, and off is a record boundary
// the scan reached from intact records, so it is no chance match. Its ID
// comes from the payload.
func (s *segmentScanner) recoverAt(off int64) (record, bool, error) {
	if s.size-off < headerLen {
		return record{}, false, nil
	}
	var hb [headerLen]byte
	if _, err := s.ra.ReadAt(hb[:], off); err != nil {
		return record{}, false, fmt.Errorf("read segment at offset %d: %w", off, err)
	}
	if hb[0] == recMagicV1 {
		return record{}, false, nil
	}
	// Pretend the header is whole and let next verify the payload.
	fixed := hb
	copy(fixed[:4], recMagicV2[:])
	binary.LittleEndian.PutUint32(fixed[hdrHeaderCRC:], headerCRC(fixed[:], off))
	s.brPos = -1
	s.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(fixed[:]),
		io.NewSectionReader(s.ra, off+headerLen, s.size-off-headerLen)), s.bufSize())
	s.brPos = off
	rec, _, err := s.next(off, false)
	if err != nil {
		s.brPos = -1
		if errors.Is(err, errCorrupt) {
			return record{}, false, nil
		}
		return record{}, false, err
	}
	rec.recovered = true
	rec.id = payloadID(rec)
	return rec, true, nil
}

// payloadID is the message ID a verified record's payload names.
func payloadID(rec record) string {
	if rec.typ == recRemove {
		return string(rec.data)
	}
	var m struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(rec.data, &m) != nil {
		return ""
	}
	return m.ID
}

// headerAt reads a version 2 header at off and reports it if it verifies.
func (s *segmentScanner) headerAt(off int64) headerInfo {
	if s.size-off < headerLen {
		return headerInfo{}
	}
	var hb [headerLen]byte
	if _, err := s.ra.ReadAt(hb[:], off); err != nil || !headerOK(hb[:], off) {
		return headerInfo{}
	}
	return headerInfo{ok: true, typ: hb[hdrType], id: headerID(hb[:]),
		size: headerLen + int64(binary.LittleEndian.Uint32(hb[hdrLength:]))}
}

// noteLenient names the message of a damaged version 2 header whose magic
// and ID field still look right: the damage is elsewhere in the header.
func (s *segmentScanner) noteLenient(off int64, d *damage) {
	if s.size-off < hdrPayCRC {
		return
	}
	var hb [hdrPayCRC]byte
	if _, err := s.ra.ReadAt(hb[:], off); err != nil {
		return
	}
	match := 0
	for i := range recMagicV2 {
		if hb[i] == recMagicV2[i] {
			match++
		}
	}
	if match < 3 {
		return
	}
	typ := hb[hdrType]
	if typ != recAdd && typ != recUpdate && typ != recRemove {
		typ = 0
	}
	d.note(string(hb[hdrID:hdrID+idFieldLen]), typ)
}

// candidate returns the first offset at or after p where a record could
// start (a version 2 magic or, where allowed, a version 1 one), or the
// segment size when there is none.
func (s *segmentScanner) candidate(p int64) (int64, error) {
	const window = 64 << 10
	if s.copyBuf == nil || len(s.copyBuf) < window+4 {
		s.copyBuf = make([]byte, window+4)
	}
	for p < s.size {
		n := min(int64(window+4), s.size-p)
		b := s.copyBuf[:n]
		if _, err := s.ra.ReadAt(b, p); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read segment at offset %d: %w", p, err)
		}
		for i := 0; i < len(b); i++ {
			switch b[i] {
			case recMagicV2[0]:
				if i+4 <= len(b) && [4]byte(b[i:i+4]) == recMagicV2 {
					return p + int64(i), nil
				}
			case recMagicV1:
				if s.v1 && i+1 < len(b) && (b[i+1] == recAdd || b[i+1] == recUpdate || b[i+1] == recRemove) {
					return p + int64(i), nil
				}
			}
		}
		if n < window+4 {
			break
		}
		p += window
	}
	return s.size, nil
}

// zeroRun is how many zero bytes in a row mark pages that were never
// written. Records never hold that many: a header has at most 3 in a row,
// and meta JSON none.
const zeroRun = 16

// looksTorn reports whether the damaged tail from off looks like a write
// cut short by a crash: it stops before the end of the record its header
// announces, or it holds a run of zero bytes (space the file had but whose
// pages never reached the disk). A record that is all there and does not
// verify was damaged after it was written, so it may have been
// acknowledged.
func (s *segmentScanner) looksTorn(off int64) (bool, error) {
	rest := s.size - off
	if rest < headerLen {
		return true, nil
	}
	if hi := s.headerAt(off); hi.ok && hi.size > rest {
		return true, nil
	}
	var hb [headerLenV1]byte
	if _, err := s.ra.ReadAt(hb[:], off); err != nil {
		return false, fmt.Errorf("read segment at offset %d: %w", off, err)
	}
	if hb[0] == recMagicV1 && headerLenV1+int64(binary.LittleEndian.Uint32(hb[2:6])) > rest {
		return true, nil
	}
	buf := make([]byte, min(rest, 64<<10))
	zeros := 0
	for p := off; p < s.size; {
		b := buf[:min(int64(len(buf)), s.size-p)]
		if _, err := s.ra.ReadAt(b, p); err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read segment at offset %d: %w", p, err)
		}
		for _, c := range b {
			if c != 0 {
				zeros = 0
				continue
			}
			if zeros++; zeros >= zeroRun {
				return true, nil
			}
		}
		p += int64(len(b))
	}
	return false, nil
}
