package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.SyncBuffer

// logLines parses JSON log output.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// lossLogged reports whether an ERROR line names lost_ids == ids.
func lossLogged(t *testing.T, out string, ids []string) bool {
	t.Helper()
	for _, l := range logLines(t, out) {
		if l["level"] != "ERROR" || l["lost_ids"] == nil {
			continue
		}
		var got []string
		for _, v := range l["lost_ids"].([]any) {
			got = append(got, v.(string))
		}
		if slices.Equal(got, ids) && l["lost_count"] == fmt.Sprint(len(ids)) {
			return true
		}
	}
	return false
}

// recordOf finds the record of type typ about id in the segments of dir,
// returning its segment file and the record (the last one if several).
func recordOf(t *testing.T, dir, id string, typ byte) (string, record) {
	t.Helper()
	var path string
	var found record
	for _, p := range segFiles(t, dir) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = scanSegment(bytes.NewReader(data), int64(len(data)), func(r record) {
			if r.typ == typ && r.id == id {
				path, found = p, r
				found.data = nil
			}
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	if path == "" {
		t.Fatalf("no %c record for %s", typ, id)
	}
	return path, found
}

// damagedCopies lists the files in dir/damaged.
func damagedCopies(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, DamagedDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const dmgSegSize = 2048

// damageFixture writes a log of 14 messages over several segments, with
// message 4 held (an Update) and message 7 deleted (a Remove) before the
// last two were added.
func damageFixture(t *testing.T) (string, []Meta) {
	t.Helper()
	src := t.TempDir()
	q, err := Open(src, Options{NoSync: true, SegmentSize: dmgSegSize})
	if err != nil {
		t.Fatal(err)
	}
	var metas []Meta
	for i := range 12 {
		metas = append(metas, mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(i, 400)))
	}
	if n, err := q.Hold(Filter{IDs: []string{metas[4].ID}}, "manual"); n != 1 || err != nil {
		t.Fatalf("Hold = %d, %v", n, err)
	}
	if n, err := q.Delete(Filter{IDs: []string{metas[7].ID}}); n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	for i := 12; i < 14; i++ {
		metas = append(metas, mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(i, 400)))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, src)); n < 4 {
		t.Fatalf("%d segments, want at least 4", n)
	}
	return src, metas
}

func openLogged(t *testing.T, dir string) (*Queue, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	q := openQueue(t, dir, Options{NoSync: true, SegmentSize: dmgSegSize, Logger: log})
	return q, &buf
}

// TestDamageCostsOneRecord flips one byte in many places of one message's
// Add record, in an older segment and in the middle of the last one: that
// message at most is lost, every other one replays with its body, the log
// names the lost ID and count, and the damaged segment is copied aside.
func TestDamageCostsOneRecord(t *testing.T) {
	src, metas := damageFixture(t)
	segs := segFiles(t, src)
	// A message whose Add is in the first segment, and one whose Add is in
	// the last segment with more records after it.
	var older, inLast int = -1, -1
	for i, m := range metas {
		if i == 4 || i == 7 {
			continue
		}
		p, _ := recordOf(t, src, m.ID, recAdd)
		if p == segs[0] && older < 0 {
			older = i
		}
		if p == segs[len(segs)-1] && inLast < 0 && i != len(metas)-1 {
			inLast = i
		}
	}
	if older < 0 || inLast < 0 {
		t.Fatalf("fixture: no message in the first (%d) or last (%d) segment", older, inLast)
	}
	type place struct {
		name      string
		off       func(r record) int64
		recovered bool // only header bytes the record does not need
	}
	places := []place{
		{"magic", func(r record) int64 { return r.off }, true},
		{"type", func(r record) int64 { return r.off + hdrType }, false},
		{"reserved", func(r record) int64 { return r.off + hdrType + 1 }, true},
		{"length", func(r record) int64 { return r.off + hdrLength + 1 }, false},
		{"id", func(r record) int64 { return r.off + hdrID + 3 }, true},
		{"payload checksum", func(r record) int64 { return r.off + hdrPayCRC }, false},
		{"header checksum", func(r record) int64 { return r.off + hdrHeaderCRC + 2 }, true},
		{"meta", func(r record) int64 { return r.off + headerLen + 4 + 10 }, false},
		{"body", func(r record) int64 { return r.bodyOff + r.bodyLen/2 }, false},
		{"last byte", func(r record) int64 { return r.off + r.size - 1 }, false},
	}
	for _, target := range []int{older, inLast} {
		for _, pl := range places {
			t.Run(fmt.Sprintf("msg%d/%s", target, pl.name), func(t *testing.T) {
				dir := t.TempDir()
				copyDir(t, src, dir)
				path, rec := recordOf(t, dir, metas[target].ID, recAdd)
				flipByte(t, path, pl.off(rec))
				damaged, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}

				q, logBuf := openLogged(t, dir)
				var want []string
				for i, m := range metas {
					if i != 7 && (i != target || pl.recovered) {
						want = append(want, m.ID)
					}
				}
				if got := ids(q.List(Filter{})); !slices.Equal(got, want) {
					t.Fatalf("messages after replay:\n%v\nwant\n%v", got, want)
				}
				for i, m := range metas {
					if !slices.Contains(want, m.ID) {
						continue
					}
					if b, err := q.Body(m.ID); err != nil || !bytes.Equal(b, bodyFor(i, 400)) {
						t.Fatalf("Body of message %d: %v", i, err)
					}
				}
				if m, _ := q.Get(metas[4].ID); m.State != StateHeld || m.Rule != "manual" {
					t.Errorf("held message 4 is %s/%s", m.State, m.Rule)
				}
				rep := q.ReplayReport()
				if len(rep.Damage) != 1 || rep.Damage[0].TornTail || rep.Damage[0].Recovered != pl.recovered {
					t.Fatalf("damage report %+v", rep.Damage)
				}
				if pl.recovered {
					if rep.AckLoss() || len(rep.Lost) != 0 {
						t.Fatalf("recovered header reported as a loss: %+v", rep)
					}
				} else {
					if !slices.Equal(rep.Lost, []string{metas[target].ID}) {
						t.Fatalf("lost %v, want [%s]", rep.Lost, metas[target].ID)
					}
					if !lossLogged(t, logBuf.String(), rep.Lost) {
						t.Fatalf("no ERROR line naming the lost message and count:\n%s", logBuf)
					}
				}
				copies := damagedCopies(t, dir)
				if len(copies) != 1 {
					t.Fatalf("copies of the damaged segment: %v", copies)
				}
				if b, err := os.ReadFile(copies[0]); err != nil || !bytes.Equal(b, damaged) {
					t.Fatalf("the copy in damaged/ is not the damaged segment: %v", err)
				}
				// New mail still goes in, and a second start finds the same
				// and does not copy the segment again.
				extra := mustEnqueue(t, q, msg("x@y.test", "z@w.test"), []byte("after the damage"))
				q.Close()
				q2, _ := openLogged(t, dir)
				if got := ids(q2.List(Filter{})); !slices.Equal(got, append(want, extra.ID)) {
					t.Fatalf("after a second start: %v", got)
				}
				if n := len(damagedCopies(t, dir)); n != 1 {
					t.Fatalf("%d copies after a second start, want 1", n)
				}
			})
		}
	}
}

// TestDamagedStateChange: when the damaged record is an Update or a Remove,
// the message is still there but its state is not known: it is held for
// review instead of being delivered on a stale state.
func TestDamagedStateChange(t *testing.T) {
	src, metas := damageFixture(t)
	for _, tc := range []struct {
		name string
		msg  int
		typ  byte
		left int
	}{
		{"update", 4, recUpdate, 13},
		{"remove", 7, recRemove, 14}, // deleted, and back for review
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, src, dir)
			path, rec := recordOf(t, dir, metas[tc.msg].ID, tc.typ)
			flipByte(t, path, rec.off+rec.size-2)
			q, logBuf := openLogged(t, dir)
			m, ok := q.Get(metas[tc.msg].ID)
			if !ok || m.State != StateHeld || m.Rule != RuleDamaged {
				t.Fatalf("message %d after its %s record was damaged: %v %s/%s; report %+v", tc.msg, tc.name, ok, m.State, m.Rule, q.ReplayReport())
			}
			rep := q.ReplayReport()
			if len(rep.Lost) != 0 || !slices.Equal(rep.Held, []string{metas[tc.msg].ID}) {
				t.Fatalf("report %+v", rep)
			}
			if !strings.Contains(logBuf.String(), metas[tc.msg].ID) {
				t.Fatalf("log does not name %s:\n%s", metas[tc.msg].ID, logBuf)
			}
			if n := q.Count(Filter{}); n != tc.left {
				t.Fatalf("%d messages, want %d", n, tc.left)
			}
		})
	}
}

// TestDamageTail: damage at the end of the last segment with nothing valid
// after it is a torn write (cut, at WARN, nothing copied) only when it looks
// like one: the file ends inside the record, or pages of it were never
// written (zeros). A last record that is all there but does not verify was
// damaged after it was written: that is acknowledged mail, reported as lost
// and kept. Damage in the record before it never costs the last one.
func TestDamageTail(t *testing.T) {
	src, metas := damageFixture(t)
	segs := segFiles(t, src)
	last := segs[len(segs)-1]
	ends := recordEnds(t, last)
	if len(ends) < 3 {
		t.Fatalf("last segment has %d records", len(ends))
	}
	lastMsg := metas[len(metas)-1].ID
	if _, r := recordOf(t, src, lastMsg, recAdd); r.off+r.size != ends[len(ends)-1] {
		t.Fatal("fixture: the last record is not the last message's Add")
	}
	total := ends[len(ends)-1]
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		torn   bool
	}{
		{"cut inside the last record", func(b []byte) []byte { return b[:total-3] }, true},
		{"cut inside the last header", func(b []byte) []byte { return b[:ends[len(ends)-2]+20] }, true},
		{"last pages never written", func(b []byte) []byte {
			clear(b[total-200:])
			return b
		}, true},
		{"bit flip in the last record", func(b []byte) []byte {
			b[total-3] ^= 0x40
			return b
		}, false},
		{"bit flip in the last header", func(b []byte) []byte {
			b[ends[len(ends)-2]+hdrLength] ^= 0x01
			return b
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, src, dir)
			seg := filepath.Join(dir, filepath.Base(last))
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			b = tc.damage(b)
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			q, logBuf := openLogged(t, dir)
			rep := q.ReplayReport()
			if len(rep.Damage) != 1 || rep.Damage[0].TornTail != tc.torn {
				t.Fatalf("report %+v", rep)
			}
			if _, ok := q.Get(lastMsg); ok {
				t.Fatal("the damaged last message replayed")
			}
			if n := q.Count(Filter{}); n != len(metas)-2 {
				t.Fatalf("%d messages, want %d", n, len(metas)-2)
			}
			st, _ := os.Stat(seg)
			errors := 0
			for _, l := range logLines(t, logBuf.String()) {
				if l["level"] == "ERROR" {
					errors++
				}
			}
			if tc.torn {
				if rep.AckLoss() || st.Size() != ends[len(ends)-2] || errors != 0 || len(damagedCopies(t, dir)) != 0 {
					t.Fatalf("torn tail: ack loss %v, size %d (want %d), %d ERROR lines, copies %v",
						rep.AckLoss(), st.Size(), ends[len(ends)-2], errors, damagedCopies(t, dir))
				}
				return
			}
			if !slices.Equal(rep.Lost, []string{lastMsg}) || !lossLogged(t, logBuf.String(), rep.Lost) {
				t.Fatalf("acknowledged last record: lost %v\n%s", rep.Lost, logBuf)
			}
			if st.Size() != int64(len(b)) || len(damagedCopies(t, dir)) != 1 {
				t.Fatalf("acknowledged damage was cut (size %d of %d) or not copied", st.Size(), len(b))
			}
			// Mail appended after the damaged record survives the next start.
			extra := mustEnqueue(t, q, msg("x@y.test", "z@w.test"), []byte("after"))
			q.Close()
			q2, _ := openLogged(t, dir)
			if _, ok := q2.Get(extra.ID); !ok {
				t.Fatal("message appended after a damaged last record lost")
			}
		})
	}
	t.Run("before the tail", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, src, dir)
		seg := filepath.Join(dir, filepath.Base(last))
		flipByte(t, seg, ends[len(ends)-2]-3)
		q, _ := openLogged(t, dir)
		rep := q.ReplayReport()
		if len(rep.Damage) != 1 || rep.Damage[0].TornTail || !rep.AckLoss() {
			t.Fatalf("report %+v", rep)
		}
		if st, _ := os.Stat(seg); st.Size() != total {
			t.Fatalf("last segment cut to %d bytes", st.Size())
		}
		if _, ok := q.Get(lastMsg); !ok {
			t.Fatal("the intact last message was lost with the damaged record before it")
		}
	})
}

// TestDamagedSegmentOutlivesCompaction: once compaction has moved the live
// messages out of a damaged segment and deleted it from the log, its copy
// in damaged/ is still there.
func TestDamagedSegmentOutlivesCompaction(t *testing.T) {
	src, metas := damageFixture(t)
	dir := t.TempDir()
	copyDir(t, src, dir)
	segs := segFiles(t, dir)
	path, rec := recordOf(t, dir, metas[0].ID, recAdd)
	if path != segs[0] {
		t.Fatalf("message 0 is in %s, not the first segment", path)
	}
	flipByte(t, path, rec.bodyOff+5)
	damaged, _ := os.ReadFile(path)
	q, _ := openLogged(t, dir)
	if n := deliverAll(t, q); n != 11 { // 14 - deleted - held - lost
		t.Fatalf("delivered %d, want 11", n)
	}
	if err := q.maintain(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged segment still in the log after compaction: %v", err)
	}
	copies := damagedCopies(t, dir)
	if len(copies) != 1 {
		t.Fatalf("copies: %v", copies)
	}
	if b, _ := os.ReadFile(copies[0]); !bytes.Equal(b, damaged) {
		t.Fatal("copy differs from the damaged segment")
	}
	q.Close()
	q2, _ := openLogged(t, dir)
	if got := ids(q2.List(Filter{})); !slices.Equal(got, []string{metas[4].ID}) {
		t.Fatalf("after compaction and reopen: %v, want only the held message", got)
	}
	if rep := q2.ReplayReport(); !rep.Clean() {
		t.Fatalf("log still damaged after compaction: %+v", rep)
	}
}

// TestVersion1Segments: a log written by a release before record version 2
// replays, takes version 2 records after its old ones, and a damaged
// version 1 record costs only itself.
func TestVersion1Segments(t *testing.T) {
	dir := t.TempDir()
	var seg []byte
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("0000000000000%03d", i)
		meta, _ := json.Marshal(Meta{ID: id, From: "a@b.test", Rcpts: []Rcpt{{Addr: "c@d.test"}}, State: StateActive, Origin: OriginInbound})
		seg = append(seg, encodeRecordV1(recAdd, meta, bodyFor(i, 300))...)
		want = append(want, id)
	}
	upd, _ := json.Marshal(Meta{ID: want[1], From: "a@b.test", Rcpts: []Rcpt{{Addr: "c@d.test"}}, State: StateHeld, Rule: "old", Origin: OriginInbound})
	seg = append(seg, encodeRecordV1(recUpdate, upd, nil)...)
	path := filepath.Join(dir, segName(1))
	if err := os.WriteFile(path, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, dir, Options{NoSync: true})
	if got := ids(q.List(Filter{})); !slices.Equal(got, want) {
		t.Fatalf("version 1 replay: %v", got)
	}
	if m, _ := q.Get(want[1]); m.State != StateHeld || m.Rule != "old" {
		t.Fatalf("version 1 update not applied: %+v", m)
	}
	for i, id := range want {
		if b, err := q.Body(id); err != nil || !bytes.Equal(b, bodyFor(i, 300)) {
			t.Fatalf("version 1 body %d: %v", i, err)
		}
	}
	added := mustEnqueue(t, q, msg("n@b.test", "c@d.test"), []byte("version 2"))
	want = append(want, added.ID)
	q.Close()
	if len(segFiles(t, dir)) != 1 {
		t.Fatal("a new segment was started instead of appending to the old head")
	}
	// Damage the body of the third version 1 record.
	ends := recordEnds(t, path)
	flipByte(t, path, ends[2]-5)
	q2, _ := openLogged(t, dir)
	wantAfter := slices.Delete(slices.Clone(want), 2, 3)
	if got := ids(q2.List(Filter{})); !slices.Equal(got, wantAfter) {
		t.Fatalf("after damaging a version 1 record: %v, want %v", got, wantAfter)
	}
	if rep := q2.ReplayReport(); !rep.AckLoss() || rep.Unidentified != 1 {
		t.Fatalf("report %+v", rep)
	}
}

// TestCheckAndRepair: Check reports without changing anything and refuses
// while the queue is open; Repair keeps every intact record, copies the
// damaged segments aside, persists the holds, and leaves a log that
// replays clean.
func TestCheckAndRepair(t *testing.T) {
	src, metas := damageFixture(t)
	dir := t.TempDir()
	copyDir(t, src, dir)
	// A lost Add in the first segment, a damaged Update (message 4), and a
	// torn tail.
	p0, r0 := recordOf(t, dir, metas[0].ID, recAdd)
	flipByte(t, p0, r0.bodyOff+7)
	pu, ru := recordOf(t, dir, metas[4].ID, recUpdate)
	flipByte(t, pu, ru.off+headerLen+3)
	segs := segFiles(t, dir)
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	torn := encodeRecord(recAdd, "torntorntorntorn", []byte(`{"id":"torntorntorntorn"}`), []byte("never acked"))
	stampRecord(torn, st.Size())
	f.Write(torn[:50])
	f.Close()

	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		for _, p := range segFiles(t, dir) {
			b, _ := os.ReadFile(p)
			m[p] = b
		}
		return m
	}
	before := snapshot()

	q := openQueue(t, dir, Options{NoSync: true, SegmentSize: dmgSegSize})
	if _, err := Check(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("Check while open: %v, want ErrLocked", err)
	}
	if _, err := Repair(dir, newFakeClock().Now()); !errors.Is(err, ErrLocked) {
		t.Fatalf("Repair while open: %v, want ErrLocked", err)
	}
	q.Close()
	// Open saved a copy and cut the torn tail; start again from the
	// damaged files for Check.
	os.RemoveAll(filepath.Join(dir, DamagedDir))
	for p, b := range before {
		os.WriteFile(p, b, 0o600)
	}

	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Lost, []string{metas[0].ID}) || !slices.Equal(rep.Held, []string{metas[4].ID}) {
		t.Fatalf("Check: lost %v held %v", rep.Lost, rep.Held)
	}
	if len(rep.Damage) != 3 || !rep.Damage[2].TornTail || rep.Messages != 12 || rep.Segments != len(segs) {
		t.Fatalf("Check report %+v", rep)
	}
	if !slices.Contains(rep.Damage[0].IDs, metas[0].ID) {
		t.Fatalf("damage does not name %s: %+v", metas[0].ID, rep.Damage[0])
	}
	if !maps.EqualFunc(before, snapshot(), bytes.Equal) || len(damagedCopies(t, dir)) != 0 {
		t.Fatal("Check changed the queue directory")
	}

	rep2, err := Repair(dir, newFakeClock().Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep2.Lost, rep.Lost) || len(rep2.Saved) != 2 {
		t.Fatalf("Repair report %+v", rep2)
	}
	for _, s := range rep2.Saved {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(s)
		name = name[strings.LastIndex(name, "-")+1:]
		if !bytes.Equal(b, before[filepath.Join(dir, name)]) {
			t.Fatalf("saved copy %s is not the damaged segment", s)
		}
	}
	after, err := Check(dir)
	if err != nil || !after.Clean() {
		t.Fatalf("Check after Repair: %+v, %v", after, err)
	}
	if rep3, err := Repair(dir, newFakeClock().Now()); err != nil || !rep3.Clean() || len(rep3.Saved) != 0 {
		t.Fatalf("Repair of a clean log: %+v, %v", rep3, err)
	}

	q2, _ := openLogged(t, dir)
	if r := q2.ReplayReport(); !r.Clean() {
		t.Fatalf("replay after repair: %+v", r)
	}
	var want []string
	for i, m := range metas {
		if i != 0 && i != 7 {
			want = append(want, m.ID)
		}
	}
	if got := ids(q2.List(Filter{})); !slices.Equal(got, want) {
		t.Fatalf("after repair: %v, want %v", got, want)
	}
	if m, _ := q2.Get(metas[4].ID); m.State != StateHeld || m.Rule != RuleDamaged {
		t.Fatalf("message 4 after repair: %s/%s, want held/%s", m.State, m.Rule, RuleDamaged)
	}
	for i, m := range metas {
		if slices.Contains(want, m.ID) {
			if b, err := q2.Body(m.ID); err != nil || !bytes.Equal(b, bodyFor(i, 400)) {
				t.Fatalf("Body %d after repair: %v", i, err)
			}
		}
	}
}

// TestDamageFoundByCompaction: a record damaged after replay (the disk went
// bad while the server ran) is found when compaction reads it: the message
// is removed loudly, the segment is copied aside first, and compaction goes
// on instead of failing forever.
func TestDamageFoundByCompaction(t *testing.T) {
	dir := t.TempDir()
	var buf syncBuffer
	q := openQueue(t, dir, Options{NoSync: true, SegmentSize: dmgSegSize, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	var metas []Meta
	for i := range 9 {
		metas = append(metas, mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(i, 400)))
	}
	victim := metas[0]
	path, rec := recordOf(t, dir, victim.ID, recAdd)
	flipByte(t, path, rec.bodyOff+3)
	// Delete everything else, so the first segment is worth compacting
	// (the background pass may start now: maintain waits for it).
	if n, err := q.Delete(Filter{IDs: ids(metas[1:])}); n != 8 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	if err := q.maintain(); err != nil {
		t.Fatalf("maintain: %v", err)
	}
	if _, ok := q.Get(victim.ID); ok {
		t.Fatal("message with an unreadable record still queued")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged segment not compacted away: %v", err)
	}
	if c := damagedCopies(t, dir); len(c) != 1 {
		t.Fatalf("copies: %v", c)
	}
	if !lossLogged(t, buf.String(), []string{victim.ID}) {
		t.Fatalf("loss not logged:\n%s", buf.String())
	}
}

// TestLostNamedByLaterRecords: when a damaged Add's header names nothing
// (here it is wiped), the message is still named as lost if one of its
// Updates survives; and after a repair it is not counted again.
func TestLostNamedByLaterRecords(t *testing.T) {
	src, metas := damageFixture(t)
	dir := t.TempDir()
	copyDir(t, src, dir)
	path, rec := recordOf(t, dir, metas[4].ID, recAdd)
	b, _ := os.ReadFile(path)
	clear(b[rec.off : rec.off+headerLen])
	os.WriteFile(path, b, 0o600)

	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Lost, []string{metas[4].ID}) || rep.Unidentified != 1 {
		t.Fatalf("lost %v, unidentified %d; want [%s], 1", rep.Lost, rep.Unidentified, metas[4].ID)
	}
	if _, err := Repair(dir, newFakeClock().Now()); err != nil {
		t.Fatal(err)
	}
	// New damage elsewhere: only that message is reported.
	path, rec = recordOf(t, dir, metas[9].ID, recAdd)
	flipByte(t, path, rec.bodyOff+1)
	rep, err = Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Lost, []string{metas[9].ID}) {
		t.Fatalf("after a repair and new damage: lost %v, want [%s]", rep.Lost, metas[9].ID)
	}
}
