package queue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"testing"
)

// encodeRecordV1 frames a record the way releases before version 2 did, to
// check that their segments still replay.
func encodeRecordV1(typ byte, data, body []byte) []byte {
	n := len(data) + len(body)
	if typ == recAdd {
		n += 4
	}
	buf := make([]byte, headerLenV1, headerLenV1+n)
	buf[0] = recMagicV1
	buf[1] = typ
	binary.LittleEndian.PutUint32(buf[2:6], uint32(n))
	if typ == recAdd {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(data)))
	}
	buf = append(buf, data...)
	buf = append(buf, body...)
	crc := crc32.Update(0, crcTable, buf[1:2])
	crc = crc32.Update(crc, crcTable, buf[headerLenV1:])
	binary.LittleEndian.PutUint32(buf[6:10], crc)
	return buf
}

// wantRec is a record a test segment holds.
type wantRec struct {
	off, size int64
	typ       byte
	id        string
	data      string
}

// testSegment builds a segment of adds, updates and removes of n messages,
// in version 1 or 2 framing, and lists its records.
func testSegment(n int, v1 bool) ([]byte, []wantRec) {
	var seg []byte
	var recs []wantRec
	add := func(typ byte, id string, data, body []byte) {
		var r []byte
		if v1 {
			r = encodeRecordV1(typ, data, body)
		} else {
			r = encodeRecord(typ, id, data, body)
			stampRecord(r, int64(len(seg)))
		}
		recs = append(recs, wantRec{off: int64(len(seg)), size: int64(len(r)), typ: typ, id: id, data: string(data)})
		seg = append(seg, r...)
	}
	for i := range n {
		id := fmt.Sprintf("0123456789ab%04d", i)
		meta, _ := json.Marshal(Meta{ID: id, From: "a@b.test", Rcpts: []Rcpt{{Addr: "c@d.test"}}, State: StateActive})
		add(recAdd, id, meta, bodyFor(i, 40+i*29))
		switch i % 3 {
		case 1:
			upd, _ := json.Marshal(Meta{ID: id, From: "a@b.test", Rcpts: []Rcpt{{Addr: "c@d.test"}}, State: StateHeld, Rule: "r"})
			add(recUpdate, id, upd, nil)
		case 2:
			add(recRemove, id, []byte(id), nil)
		}
	}
	return seg, recs
}

func scanAll(t testing.TB, seg []byte) ([]record, scanResult) {
	t.Helper()
	var got []record
	res, err := scanSegment(bytes.NewReader(seg), int64(len(seg)), func(r record) {
		if r.off < 0 || r.off+r.size > int64(len(seg)) || (r.typ == recAdd && r.bodyOff+r.bodyLen > int64(len(seg))) {
			t.Fatalf("record %+v outside the %d segment bytes", r, len(seg))
		}
		r.data = bytes.Clone(r.data)
		got = append(got, r)
	}, nil)
	if err != nil {
		t.Fatalf("scan of an in-memory segment: %v", err)
	}
	if res.end < 0 || res.end > int64(len(seg)) {
		t.Fatalf("end %d outside [0,%d]", res.end, len(seg))
	}
	for _, d := range res.damaged {
		if d.off < 0 || d.end > int64(len(seg)) || d.off >= d.end {
			t.Fatalf("damaged range [%d,%d) of a %d byte segment", d.off, d.end, len(seg))
		}
	}
	return got, res
}

func TestRecordRoundTrip(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v1=%v", v1), func(t *testing.T) {
			seg, want := testSegment(7, v1)
			got, res := scanAll(t, seg)
			if len(res.damaged) > 0 || res.end != int64(len(seg)) {
				t.Fatalf("clean segment: end %d of %d, damage %+v", res.end, len(seg), res.damaged)
			}
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i, r := range got {
				w := want[i]
				if r.off != w.off || r.size != w.size || r.typ != w.typ || string(r.data) != w.data {
					t.Errorf("record %d = %+v, want %+v", i, r, w)
				}
				if !v1 && r.id != w.id {
					t.Errorf("record %d names %q, want %q", i, r.id, w.id)
				}
				if r.typ == recAdd {
					m, b, err := decodeAdd(seg[r.off:r.off+r.size], r.off)
					if err != nil || string(m) != w.data || !bytes.Equal(b, seg[r.bodyOff:r.bodyOff+r.bodyLen]) {
						t.Errorf("decodeAdd of record %d: %v", i, err)
					}
				}
			}
			bad := bytes.Clone(seg[:want[0].size])
			bad[len(bad)-1] ^= 1
			if _, _, err := decodeAdd(bad, 0); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeAdd of a flipped body byte: %v", err)
			}
		})
	}
}

// TestHeaderBindsOffset: a version 2 record verifies only where it was
// written, so a copy of one inside a message body is never taken for a
// record by a resync scan.
func TestHeaderBindsOffset(t *testing.T) {
	meta, _ := json.Marshal(Meta{ID: "forgedforgedforg", From: "x@evil.test", Rcpts: []Rcpt{{Addr: "victim@far.test"}}})
	forged := encodeRecord(recAdd, "forgedforgedforg", meta, []byte("spam"))
	// The attacker's body: padding, then a record stamped for offset 0.
	body := append(bytes.Repeat([]byte("x"), 100), forged...)
	realMeta, _ := json.Marshal(Meta{ID: "0123456789abcdef", From: "a@b.test"})
	seg := encodeRecord(recAdd, "0123456789abcdef", realMeta, body)
	seg[hdrLength] ^= 0x01 // damage the real record's length: the scan has to resync
	got, res := scanAll(t, seg)
	if len(got) != 0 {
		t.Fatalf("a record inside a damaged body was accepted: %+v", got)
	}
	if len(res.damaged) != 1 || !res.tail {
		t.Fatalf("damage %+v", res.damaged)
	}
}

// TestHugeLength: a length field pointing past the end is damage, not a
// huge read. In a version 2 segment the scan resyncs past it; a version 1
// segment whose first record is damaged is not trusted to be one (see
// segmentScanner.legacy), so it is all damage.
func TestHugeLength(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		seg, _ := testSegment(3, v1)
		at, wantRecs := hdrLength, true
		if v1 {
			at, wantRecs = 2, false
		}
		seg[at], seg[at+1], seg[at+2], seg[at+3] = 0xff, 0xff, 0xff, 0x0f
		got, res := scanAll(t, seg)
		if len(res.damaged) != 1 || res.damaged[0].off != 0 || (len(got) > 0) != wantRecs {
			t.Fatalf("v1=%v: records %d, damage %+v", v1, len(got), res.damaged)
		}
	}
}

// FuzzReplay feeds arbitrary bytes to replay as a segment. It must not
// panic, and must report records and damaged ranges inside the input.
func FuzzReplay(f *testing.F) {
	seg, _ := testSegment(4, false)
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	segV1, _ := testSegment(4, true)
	f.Add(segV1)
	f.Add([]byte{})
	f.Add([]byte{recMagicV1, recAdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(encodeRecord(recAdd, "zz", []byte("not json"), nil))
	f.Add(encodeRecordV1(recUpdate, []byte(`{"id":"zz"}`), nil))

	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newReplayer("fuzz", log)
		r.seg = &segment{path: "fuzz"}
		res, err := scanSegment(bytes.NewReader(data), int64(len(data)), func(rec record) {
			if rec.off+rec.size > int64(len(data)) || (rec.typ == recAdd && rec.bodyOff+rec.bodyLen > int64(len(data))) {
				t.Fatalf("record %+v outside the %d input bytes", rec, len(data))
			}
			r.apply(rec)
		}, func(d damage) { r.damage(d, d.torn) })
		if err != nil {
			t.Fatalf("I/O error from an in-memory reader: %v", err)
		}
		if res.end < 0 || res.end > int64(len(data)) {
			t.Fatalf("end %d outside [0,%d]", res.end, len(data))
		}
		r.finish()
	})
}

// FuzzDamage overwrites bytes of a valid segment (version 1 or 2) or cuts
// it, and checks that replay never panics and finds every record the
// mutation did not touch, at its place and with its content.
func FuzzDamage(f *testing.F) {
	f.Add(false, uint32(0), []byte{0x40}, false)
	f.Add(false, uint32(5), []byte{0xff}, false)
	f.Add(false, uint32(40), []byte("garbage in the meta"), false)
	f.Add(false, uint32(300), []byte{0, 0, 0, 0}, false)
	f.Add(false, uint32(700), []byte{}, true)
	f.Add(true, uint32(3), []byte{0x01}, false)
	f.Add(true, uint32(200), []byte{0xA1, 'A', 0, 0, 0, 0}, false)
	f.Add(false, uint32(123), recMagicV2[:], false)

	segV2, recsV2 := testSegment(8, false)
	segV1, recsV1 := testSegment(8, true)
	f.Fuzz(func(t *testing.T, v1 bool, off uint32, val []byte, cut bool) {
		orig, want := segV2, recsV2
		if v1 {
			orig, want = segV1, recsV1
		}
		seg := bytes.Clone(orig)
		at := int64(off) % int64(len(seg)+1)
		lo, hi := at, at+int64(len(val)) // the touched bytes
		if cut {
			seg = seg[:at]
			hi = int64(len(orig))
		} else {
			for i, b := range val {
				if at+int64(i) < int64(len(seg)) {
					seg[at+int64(i)] = b
				}
			}
		}
		got, _ := scanAll(t, seg)
		byOff := map[int64]record{}
		for _, r := range got {
			byOff[r.off] = r
		}
		// A version 1 segment whose first record was touched may be lost
		// as a whole: without it, the segment is not trusted to be version
		// 1 (segmentScanner.legacy).
		firstTouched := v1 && lo < want[0].off+want[0].size
		for _, w := range want {
			if w.off+w.size <= lo || w.off >= hi {
				r, ok := byOff[w.off]
				if !ok && firstTouched {
					continue
				}
				if !ok {
					t.Fatalf("untouched record at %d (type %c) lost after writing %d bytes at %d (cut %v)", w.off, w.typ, len(val), at, cut)
				}
				if r.size != w.size || r.typ != w.typ || string(r.data) != w.data {
					t.Fatalf("untouched record at %d changed: %+v", w.off, r)
				}
			}
		}
	})
}
