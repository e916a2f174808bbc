package queue

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"slices"
	"testing"
)

// forgedID is the ID of the message a sender tries to forge.
const forgedID = "0000000000000forg"

// craftedV1 is a version 1 Add record a sender could put in a message body:
// a deliverable message to an outside recipient. Version 1 records have no
// checksum bound to their offset, so only the segment's version keeps
// replay from taking it for a real record.
func craftedV1() []byte {
	meta := []byte(`{"id":"` + forgedID + `","from":"x@evil.test","rcpts":[{"addr":"victim@far.test"}],"origin":"submitted","user":"alice@ours.test","size":5,"received":"2025-03-01T12:00:00Z","state":"active"}`)
	body := []byte("hello")
	payload := binary.LittleEndian.AppendUint32(nil, uint32(len(meta)))
	payload = append(payload, meta...)
	payload = append(payload, body...)
	crc := crc32.Update(0, crcTable, []byte{recAdd})
	crc = crc32.Update(crc, crcTable, payload)
	rec := []byte{recMagicV1, recAdd}
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(payload)))
	rec = binary.LittleEndian.AppendUint32(rec, crc)
	return append(rec, payload...)
}

// forgedSegment queues one message whose body carries craftedV1, damages
// the segment's first header with damage, and returns the queue directory.
func forgedSegment(t *testing.T, damage func(b []byte) []byte) string {
	t.Helper()
	dir := t.TempDir()
	q := openQueue(t, dir, Options{})
	body := append([]byte("Subject: hi\r\n\r\n"), craftedV1()...)
	mustEnqueue(t, q, msg("x@evil.test", "bob@ours.test"), body)
	q.Close()
	seg := segFiles(t, dir)[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, damage(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

var firstHeaderDamage = []struct {
	name   string
	damage func(b []byte) []byte
}{
	{"length bit", func(b []byte) []byte { b[hdrLength] ^= 0x40; return b }},
	{"header checksum", func(b []byte) []byte { b[hdrHeaderCRC] ^= 1; return b }},
	{"magic", func(b []byte) []byte { b[1] ^= 1; return b }},
	{"first byte zeroed", func(b []byte) []byte { b[0] = 0; return b }},
	{"first page unwritten", func(b []byte) []byte {
		clear(b[:min(len(b), 4096)])
		return b
	}},
	{"first byte v1 magic", func(b []byte) []byte { b[0] = recMagicV1; return b }},
}

// TestForgedV1NotReplayed: damage to (or a torn write of) the first header
// of a segment written by a version 2 writer must never make replay accept
// a version 1 record a sender put in a message body.
func TestForgedV1NotReplayed(t *testing.T) {
	for _, tc := range firstHeaderDamage {
		t.Run(tc.name, func(t *testing.T) {
			dir := forgedSegment(t, tc.damage)
			q := openQueue(t, dir, Options{})
			defer q.Close()
			for _, m := range q.List(Filter{}) {
				if m.ID == forgedID || slices.ContainsFunc(m.Rcpts, func(r Rcpt) bool { return r.Addr == "victim@far.test" }) {
					t.Fatalf("replay accepted a forged record: %+v", m)
				}
			}
		})
	}
}

// TestForgedV1NotChecked: `mamori queue check` and repair follow the same
// rule: the forged record is neither counted nor written back.
func TestForgedV1NotChecked(t *testing.T) {
	for _, tc := range firstHeaderDamage {
		t.Run(tc.name, func(t *testing.T) {
			dir := forgedSegment(t, tc.damage)
			rep, err := Check(dir)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Clean() || slices.Contains(rep.Lost, forgedID) || slices.Contains(rep.Held, forgedID) {
				t.Fatalf("check report: %+v", rep)
			}
			if _, err := Repair(dir, newFakeClock().Now()); err != nil {
				t.Fatal(err)
			}
			q := openQueue(t, dir, Options{})
			defer q.Close()
			for _, m := range q.List(Filter{}) {
				if m.ID == forgedID {
					t.Fatalf("repair wrote back a forged record: %+v", m)
				}
			}
		})
	}
}

// TestScanV1OnlyInLegacySegment: version 1 records are read only from a
// segment whose first byte is the version 1 magic. A version 1 segment whose
// first byte is damaged is reported damaged, not resynced into.
func TestScanV1OnlyInLegacySegment(t *testing.T) {
	v1seg, want := testSegment(4, true)
	forged := craftedV1()
	tests := []struct {
		name    string
		seg     []byte
		records int
	}{
		{"v1 segment", v1seg, len(want)},
		{"v1 segment, damaged second record", func() []byte {
			b := bytes.Clone(v1seg)
			b[want[1].off] ^= 0xff
			return b
		}(), len(want) - 1},
		{"v1 segment, damaged first byte", func() []byte {
			b := bytes.Clone(v1seg)
			b[0] = 0
			return b
		}(), 0},
		{"v1 record after garbage", append([]byte{0, 0, 0, 0}, forged...), 0},
		{"v1 record after torn v2 header", append(bytes.Clone(recMagicV2[:]), forged...), 0},
		{"v1 record after v2 record", append(stamped(encodeRecord(recRemove, "0000000000000abcd", []byte("0000000000000abcd"), nil)), forged...), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			res, err := scanSegment(bytes.NewReader(tc.seg), int64(len(tc.seg)), func(r record) {
				ids = append(ids, r.id)
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.records != tc.records {
				t.Fatalf("records = %d, want %d (ids %q)", res.records, tc.records, ids)
			}
		})
	}
}

// stamped is a version 2 record stamped for offset 0.
func stamped(r []byte) []byte {
	stampRecord(r, 0)
	return r
}
