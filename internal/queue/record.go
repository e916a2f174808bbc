package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// On-disk record framing. Every record is
//
//	magic (1) | type (1) | payload length (4, LE) | CRC32C(type+payload) (4, LE) | payload
//
// Payloads:
//
//	Add:    meta length (4, LE) | Meta JSON | body
//	Update: Meta JSON (the full, current Meta of the message)
//	Remove: message ID
const (
	recMagic byte = 0xA1 // format version 1

	recAdd    byte = 'A'
	recUpdate byte = 'U'
	recRemove byte = 'R'

	headerLen = 10

	// maxMetaLen bounds what replay allocates for one record; a Meta with
	// thousands of recipients is still far below it.
	maxMetaLen = 4 << 20

	// MaxBodySize is the largest body Enqueue accepts. Bodies are never
	// loaded whole during replay (they are streamed through the checksum),
	// so this only bounds what a corrupt length field can make replay skip.
	MaxBodySize = 256 << 20

	maxPayloadLen = 4 + maxMetaLen + MaxBodySize
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a torn or corrupt record: replay of the segment stops
// there.
var errCorrupt = errors.New("corrupt or torn record")

func corruptf(off int64, format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", errCorrupt, off, fmt.Sprintf(format, args...))
}

// encodeRecord frames one record. For recAdd, data is the Meta JSON and body
// the message; for recUpdate data is the Meta JSON; for recRemove data is
// the ID.
func encodeRecord(typ byte, data, body []byte) []byte {
	n := len(data) + len(body)
	if typ == recAdd {
		n += 4
	}
	buf := make([]byte, headerLen, headerLen+n)
	buf[0] = recMagic
	buf[1] = typ
	binary.LittleEndian.PutUint32(buf[2:6], uint32(n))
	if typ == recAdd {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(data)))
	}
	buf = append(buf, data...)
	buf = append(buf, body...)
	crc := crc32.Update(0, crcTable, buf[1:2])
	crc = crc32.Update(crc, crcTable, buf[headerLen:])
	binary.LittleEndian.PutUint32(buf[6:10], crc)
	return buf
}

// decodeAdd checks a whole Add record held in memory and returns its meta
// JSON and body (sub-slices of rec).
func decodeAdd(rec []byte) (meta, body []byte, err error) {
	if len(rec) < headerLen+4 || rec[0] != recMagic || rec[1] != recAdd {
		return nil, nil, corruptf(0, "not an add record")
	}
	n := binary.LittleEndian.Uint32(rec[2:6])
	if int64(n) != int64(len(rec)-headerLen) {
		return nil, nil, corruptf(0, "length %d does not match record size %d", n, len(rec))
	}
	crc := crc32.Update(0, crcTable, rec[1:2])
	crc = crc32.Update(crc, crcTable, rec[headerLen:])
	if crc != binary.LittleEndian.Uint32(rec[6:10]) {
		return nil, nil, corruptf(0, "checksum mismatch")
	}
	ml := binary.LittleEndian.Uint32(rec[headerLen : headerLen+4])
	if int64(ml) > int64(n)-4 {
		return nil, nil, corruptf(0, "meta length %d exceeds payload", ml)
	}
	start := headerLen + 4
	return rec[start : start+int(ml)], rec[start+int(ml):], nil
}

// record is one valid record found by scanSegment.
type record struct {
	typ  byte
	off  int64 // where the record starts in the segment
	size int64 // header + payload
	// data is the Meta JSON (Add, Update) or the ID (Remove). It is only
	// valid during the callback.
	data []byte
	// bodyOff and bodyLen locate an Add record's body in the segment.
	bodyOff, bodyLen int64
}

// segmentScanner reads records sequentially, reusing its buffers so replay
// of a large log allocates little.
type segmentScanner struct {
	r       io.Reader
	size    int64
	scratch []byte
	copyBuf []byte
}

// scanSegment calls fn for every valid record in the size bytes of r, in
// order. It returns the offset just past the last valid record. The error is
// nil when the segment ended cleanly, wraps errCorrupt when a torn or
// corrupt record stopped the scan, and is anything else for an I/O error.
func scanSegment(r io.Reader, size int64, fn func(record)) (int64, error) {
	s := &segmentScanner{r: r, size: size}
	var pos int64
	for pos < size {
		rec, err := s.next(pos)
		if err != nil {
			return pos, err
		}
		fn(rec)
		pos += rec.size
	}
	return pos, nil
}

func (s *segmentScanner) read(off int64, p []byte) error {
	if _, err := io.ReadFull(s.r, p); err != nil {
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

func (s *segmentScanner) next(pos int64) (record, error) {
	if s.size-pos < headerLen {
		return record{}, corruptf(pos, "torn header (%d bytes left)", s.size-pos)
	}
	var hdr [headerLen]byte
	if err := s.read(pos, hdr[:]); err != nil {
		return record{}, err
	}
	if hdr[0] != recMagic {
		return record{}, corruptf(pos, "bad magic byte %#x", hdr[0])
	}
	typ := hdr[1]
	n := int64(binary.LittleEndian.Uint32(hdr[2:6]))
	want := binary.LittleEndian.Uint32(hdr[6:10])
	if n > maxPayloadLen {
		return record{}, corruptf(pos, "payload length %d over limit", n)
	}
	if n > s.size-pos-headerLen {
		return record{}, corruptf(pos, "payload length %d runs past the end of the segment", n)
	}
	rec := record{typ: typ, off: pos, size: headerLen + n}
	crc := crc32.Update(0, crcTable, hdr[1:2])
	switch typ {
	case recAdd:
		if n < 4 {
			return record{}, corruptf(pos, "add record too short")
		}
		var lb [4]byte
		if err := s.read(pos, lb[:]); err != nil {
			return record{}, err
		}
		crc = crc32.Update(crc, crcTable, lb[:])
		ml := int64(binary.LittleEndian.Uint32(lb[:]))
		if ml > maxMetaLen || ml > n-4 {
			return record{}, corruptf(pos, "meta length %d invalid", ml)
		}
		meta := s.buf(int(ml))
		if err := s.read(pos, meta); err != nil {
			return record{}, err
		}
		crc = crc32.Update(crc, crcTable, meta)
		rec.data = meta
		rec.bodyOff = pos + headerLen + 4 + ml
		rec.bodyLen = n - 4 - ml
		var err error
		if crc, err = s.skip(pos, rec.bodyLen, crc); err != nil {
			return record{}, err
		}
	case recUpdate, recRemove:
		if n > maxMetaLen {
			return record{}, corruptf(pos, "record length %d over limit", n)
		}
		data := s.buf(int(n))
		if err := s.read(pos, data); err != nil {
			return record{}, err
		}
		crc = crc32.Update(crc, crcTable, data)
		rec.data = data
	default:
		return record{}, corruptf(pos, "unknown record type %#x", typ)
	}
	if crc != want {
		return record{}, corruptf(pos, "checksum mismatch")
	}
	return rec, nil
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
