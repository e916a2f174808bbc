package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	meta := []byte(`{"id":"x"}`)
	body := []byte("hello body")
	var seg []byte
	seg = append(seg, encodeRecord(recAdd, meta, body)...)
	seg = append(seg, encodeRecord(recUpdate, []byte(`{"id":"x","state":"held"}`), nil)...)
	seg = append(seg, encodeRecord(recRemove, []byte("x"), nil)...)
	seg = append(seg, encodeRecord(recAdd, meta, nil)...)

	var got []record
	end, err := scanSegment(bytes.NewReader(seg), int64(len(seg)), func(r record) {
		r.data = bytes.Clone(r.data)
		got = append(got, r)
	})
	if err != nil || end != int64(len(seg)) {
		t.Fatalf("scan: end %d of %d, %v", end, len(seg), err)
	}
	wantTypes := []byte{recAdd, recUpdate, recRemove, recAdd}
	if len(got) != len(wantTypes) {
		t.Fatalf("%d records, want %d", len(got), len(wantTypes))
	}
	for i, r := range got {
		if r.typ != wantTypes[i] {
			t.Errorf("record %d type %c, want %c", i, r.typ, wantTypes[i])
		}
	}
	if !bytes.Equal(got[0].data, meta) || got[0].bodyLen != int64(len(body)) ||
		!bytes.Equal(seg[got[0].bodyOff:got[0].bodyOff+got[0].bodyLen], body) {
		t.Errorf("add record: %+v", got[0])
	}
	if string(got[2].data) != "x" {
		t.Errorf("remove record ID %q", got[2].data)
	}
	m, b, err := decodeAdd(seg[:got[0].size])
	if err != nil || !bytes.Equal(m, meta) || !bytes.Equal(b, body) {
		t.Errorf("decodeAdd = %q, %q, %v", m, b, err)
	}
	bad := bytes.Clone(seg[:got[0].size])
	bad[len(bad)-1] ^= 1
	if _, _, err := decodeAdd(bad); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeAdd of a flipped body byte: %v", err)
	}
	// A length field pointing past the end is a torn record, not a huge read.
	huge := bytes.Clone(seg)
	huge[2], huge[3], huge[4], huge[5] = 0xff, 0xff, 0xff, 0x0f
	if end, err := scanSegment(bytes.NewReader(huge), int64(len(huge)), func(record) {}); end != 0 || !errors.Is(err, errCorrupt) {
		t.Errorf("huge length: end %d, %v", end, err)
	}
}

// FuzzReplay feeds arbitrary bytes to replay as a segment. It must not
// panic, must stop at a record boundary, and what it accepted must replay
// identically and cleanly on its own.
func FuzzReplay(f *testing.F) {
	meta, _ := json.Marshal(Meta{ID: "0123456789abcdef", From: "a@b", Rcpts: []Rcpt{{Addr: "c@d"}}, State: StateActive})
	upd, _ := json.Marshal(Meta{ID: "0123456789abcdef", State: StateHeld, Rule: "r"})
	valid := encodeRecord(recAdd, meta, []byte("body"))
	valid = append(valid, encodeRecord(recUpdate, upd, nil)...)
	f.Add(valid)
	f.Add(append(bytes.Clone(valid), encodeRecord(recRemove, []byte("0123456789abcdef"), nil)...))
	f.Add(valid[:len(valid)-3])
	f.Add([]byte{})
	f.Add([]byte{recMagic, recAdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(encodeRecord(recAdd, []byte("not json"), nil))
	f.Add(encodeRecord(recUpdate, []byte(`{"id":"zz"}`), nil))

	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		replayInto := func(b []byte) (map[string]*entry, int64, int, error) {
			r := &replayer{index: map[string]*entry{}, seg: &segment{path: "fuzz"}, log: log}
			n := 0
			end, err := scanSegment(bytes.NewReader(b), int64(len(b)), func(rec record) {
				n++
				if rec.off+rec.size > int64(len(b)) || (rec.typ == recAdd && rec.bodyOff+rec.bodyLen > int64(len(b))) {
					t.Fatalf("record %+v outside the %d input bytes", rec, len(b))
				}
				r.apply(rec)
			})
			return r.index, end, n, err
		}
		idx, end, n, err := replayInto(data)
		if end < 0 || end > int64(len(data)) {
			t.Fatalf("end %d outside [0,%d]", end, len(data))
		}
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("non-corruption error from an in-memory reader: %v", err)
		}
		if err == nil && end != int64(len(data)) {
			t.Fatalf("clean end at %d of %d", end, len(data))
		}
		idx2, end2, n2, err2 := replayInto(data[:end])
		if err2 != nil || end2 != end || n2 != n || len(idx2) != len(idx) {
			t.Fatalf("prefix replay differs: end %d/%d, records %d/%d, index %d/%d, err %v",
				end2, end, n2, n, len(idx2), len(idx), err2)
		}
	})
}
