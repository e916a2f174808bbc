package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestEnqueueGetBodyList(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, t.TempDir(), Options{Now: clock.Now})

	var stored []Meta
	for i := range 5 {
		m := msg(fmt.Sprintf("s%d@example.org", i), "a@example.com", "b@example.net")
		m.Subject = fmt.Sprintf("hello %d", i)
		m.ID = "caller-supplied" // must be replaced
		m.Size = 12345           // must be replaced
		got := mustEnqueue(t, q, m, bodyFor(i, 100+i))
		if len(got.ID) != 16 || got.ID == m.ID {
			t.Fatalf("ID %q: want a fresh 16-char ID", got.ID)
		}
		if got.State != StateActive {
			t.Errorf("State = %q, want active", got.State)
		}
		if !got.Received.Equal(clock.Now()) {
			t.Errorf("Received = %v, want %v", got.Received, clock.Now())
		}
		if got.Size != int64(100+i) {
			t.Errorf("Size = %d, want %d", got.Size, 100+i)
		}
		stored = append(stored, got)
		clock.Advance(time.Second)
	}
	for i, want := range stored {
		got, ok := q.Get(want.ID)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%s) = %+v, %v; want %+v", want.ID, got, ok, want)
		}
		b, err := q.Body(want.ID)
		if err != nil || !bytes.Equal(b, bodyFor(i, 100+i)) {
			t.Errorf("Body(%s) = %q, %v", want.ID, b, err)
		}
		if i > 0 && want.ID <= stored[i-1].ID {
			t.Errorf("IDs not increasing: %s after %s", want.ID, stored[i-1].ID)
		}
	}
	if got := q.List(Filter{}); !reflect.DeepEqual(got, stored) {
		t.Errorf("List = %v, want %v (oldest first)", ids(got), ids(stored))
	}
	if _, ok := q.Get("nope"); ok {
		t.Error("Get of unknown ID succeeded")
	}
	if _, err := q.Body("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body of unknown ID: %v, want ErrNotFound", err)
	}
	// Returned Meta must not alias the index.
	got, _ := q.Get(stored[0].ID)
	got.Rcpts[0].Addr = "mutated@example.com"
	if again, _ := q.Get(stored[0].ID); again.Rcpts[0].Addr != "a@example.com" {
		t.Error("Get returned a Meta sharing recipients with the index")
	}
	if st := q.Stats(); st[StateActive] != 5 || st[StateHeld] != 0 || st[StateDeferred] != 0 {
		t.Errorf("Stats = %v", st)
	}
}

func TestEnqueueValidation(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{NoSync: true, MaxMessages: 2})
	tests := []struct {
		name string
		m    Meta
		body []byte
		want error // nil: any error
		ok   bool
	}{
		{name: "no recipients", m: Meta{From: "a@b"}},
		{name: "all recipients done", m: Meta{From: "a@b", Rcpts: []Rcpt{{Addr: "x@y", Status: RcptDelivered}}}},
		{name: "bad state", m: Meta{From: "a@b", Rcpts: []Rcpt{{Addr: "x@y"}}, State: "bogus"}},
		{name: "held ok", m: Meta{Rcpts: []Rcpt{{Addr: "x@y"}}, State: StateHeld, Rule: "r"}, ok: true},
		{name: "second ok", m: msg("", "x@y"), ok: true},
		{name: "full", m: msg("", "x@y"), want: ErrFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := q.Enqueue(tt.m, []byte("body"))
			switch {
			case tt.ok && err != nil:
				t.Fatalf("Enqueue: %v", err)
			case !tt.ok && err == nil:
				t.Fatal("Enqueue succeeded, want error")
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Enqueue: %v, want %v", err, tt.want)
			}
		})
	}
	if n, err := q.Delete(Filter{State: StateHeld}); n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	if _, err := q.Enqueue(msg("", "x@y"), nil); err != nil {
		t.Fatalf("Enqueue after making room: %v", err)
	}
}

func TestFilters(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, t.TempDir(), Options{NoSync: true, Now: clock.Now})
	type spec struct {
		name, from string
		to         []string
		ip, user   string
		subject    string
		state      State
		rule       string
		age        time.Duration
	}
	specs := []spec{
		{name: "alice", from: "Alice@Example.COM", to: []string{"x@dest.test"}, ip: "10.0.0.5", user: "alice@example.com", subject: "Quarterly REPORT", age: 3 * time.Hour},
		{name: "bob", from: "bob@example.com", to: []string{"y@other.test", "z@dest.test"}, ip: "10.0.1.9", subject: "lunch?", age: 30 * time.Minute},
		{name: "null", from: "", to: []string{"alice@example.com"}, ip: "2001:db8::7", subject: "Delivery Status Notification", age: 2 * time.Hour},
		{name: "worm", from: "random123@evil.test", to: []string{"a@victim.test"}, ip: "::ffff:198.51.100.3", user: "carol@example.com", subject: "Invoice attached", state: StateHeld, rule: "rate", age: time.Minute},
		{name: "sub", from: "news@mail.example.com", to: []string{"x@dest.test"}, ip: "192.0.2.200", subject: "weekly news", age: 10 * time.Minute},
	}
	// Enqueue oldest first with the right Received.
	byName := map[string]string{}
	for _, s := range specs {
		m := Meta{From: s.from, ClientIP: s.ip, User: s.user, Subject: s.subject, State: s.state, Rule: s.rule,
			Received: clock.Now().Add(-s.age)}
		for _, a := range s.to {
			m.Rcpts = append(m.Rcpts, Rcpt{Addr: a})
		}
		byName[s.name] = mustEnqueue(t, q, m, []byte(s.name)).ID
	}
	tests := []struct {
		name string
		f    Filter
		want []string // names, oldest first
	}{
		{"empty matches all", Filter{}, []string{"alice", "null", "bob", "sub", "worm"}},
		{"from exact case-insensitive", Filter{From: "alice@example.com"}, []string{"alice"}},
		{"from exact in brackets", Filter{From: "<BOB@example.com>"}, []string{"bob"}},
		{"from domain", Filter{From: "@example.com"}, []string{"alice", "bob"}},
		{"from domain is not subdomain", Filter{From: "@mail.example.com"}, []string{"sub"}},
		{"from glob", Filter{From: "*@*example.com"}, []string{"alice", "bob", "sub"}},
		{"from glob ?", Filter{From: "b?b@*"}, []string{"bob"}},
		{"from glob no match", Filter{From: "*@nowhere.test"}, nil},
		{"null sender", Filter{From: "<>"}, []string{"null"}},
		{"to any rcpt", Filter{To: "z@dest.test"}, []string{"bob"}},
		{"to domain", Filter{To: "@DEST.test"}, []string{"alice", "bob", "sub"}},
		{"to glob", Filter{To: "a*"}, []string{"null", "worm"}},
		{"ip exact", Filter{ClientIP: "10.0.0.5"}, []string{"alice"}},
		{"ip cidr", Filter{ClientIP: "10.0.0.0/16"}, []string{"alice", "bob"}},
		{"ip v6 cidr", Filter{ClientIP: "2001:db8::/32"}, []string{"null"}},
		{"ip mapped v4 matches v4 cidr", Filter{ClientIP: "198.51.100.0/24"}, []string{"worm"}},
		{"user", Filter{User: "CAROL@example.com"}, []string{"worm"}},
		{"older than", Filter{OlderThan: time.Hour}, []string{"alice", "null"}},
		{"state held", Filter{State: StateHeld}, []string{"worm"}},
		{"state active", Filter{State: StateActive}, []string{"alice", "null", "bob", "sub"}},
		{"subject substring", Filter{Subject: "report"}, []string{"alice"}},
		{"subject case", Filter{Subject: "DELIVERY status"}, []string{"null"}},
		{"rule", Filter{Rule: "rate"}, []string{"worm"}},
		{"ids", Filter{IDs: []string{byName["bob"], byName["alice"], "unknown", byName["bob"]}}, []string{"alice", "bob"}},
		{"ids and field", Filter{IDs: []string{byName["bob"], byName["alice"]}, From: "@example.com", Subject: "lunch"}, []string{"bob"}},
		{"combined", Filter{From: "@example.com", ClientIP: "10.0.0.0/8", OlderThan: time.Hour}, []string{"alice"}},
		// Bodies are the names: alice 5 bytes, null and worm 4, bob and sub 3.
		{"larger than", Filter{MinSize: 4}, []string{"alice", "null", "worm"}},
		{"smaller than", Filter{MaxSize: 3}, []string{"bob", "sub"}},
		{"size range", Filter{MinSize: 4, MaxSize: 4}, []string{"null", "worm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for _, n := range tt.want {
				want = append(want, byName[n])
			}
			got := ids(q.List(tt.f))
			if len(got) == 0 {
				got = nil
			}
			if !slices.Equal(got, want) {
				t.Errorf("List = %v, want %v (%v)", got, want, tt.want)
			}
			if n := q.Count(tt.f); n != len(want) {
				t.Errorf("Count = %d, want %d", n, len(want))
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	tests := []struct {
		f  Filter
		ok bool
	}{
		{Filter{}, true},
		{Filter{ClientIP: "192.0.2.0/24"}, true},
		{Filter{ClientIP: "2001:db8::1"}, true},
		{Filter{ClientIP: "not-an-ip"}, false},
		{Filter{ClientIP: "10.0.0.0/33"}, false},
		{Filter{OlderThan: -time.Second}, false},
		{Filter{State: "bogus"}, false},
		{Filter{State: StateDeferred}, true},
	}
	q := openQueue(t, t.TempDir(), Options{NoSync: true})
	mustEnqueue(t, q, msg("a@b.test", "c@d.test"), nil)
	for _, tt := range tests {
		err := tt.f.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tt.f, err, tt.ok)
		}
		if !tt.ok {
			if n := q.Count(tt.f); n != 0 {
				t.Errorf("Count(invalid %+v) = %d, want 0", tt.f, n)
			}
			if _, err := q.Hold(tt.f, "x"); err == nil {
				t.Errorf("Hold(invalid %+v) succeeded", tt.f)
			}
		}
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pat, name string
		want      bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"a*c", "abc", true},
		{"a*c", "ac", true},
		{"a*c", "abd", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*@example.com", "Bob@EXAMPLE.com", true},
		{"*b*b*", "abcb", true},
		{"*b*b*", "abc", false},
		{"ü*", "Über", true},
		{"?ber", "über", true},
		{"a**", "a", true},
		{"", "", true},
		{"", "a", false},
		{"*x", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxy", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pat, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pat, tt.name, got, tt.want)
		}
	}
}

func TestIDs(t *testing.T) {
	var g idGen
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := ""
	for i := range 1000 {
		// The clock stands still and then goes back: IDs still increase.
		tm := now
		if i > 500 {
			tm = now.Add(-time.Hour)
		}
		id := g.next(tm)
		if len(id) != 16 || id <= prev {
			t.Fatalf("id %d = %q after %q", i, id, prev)
		}
		for _, c := range id {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
				t.Fatalf("id %q has unsafe character %q", id, c)
			}
		}
		prev = id
	}
	var g2 idGen
	g2.observe(prev)
	if id := g2.next(now.Add(-24 * time.Hour)); id <= prev {
		t.Errorf("after observe(%s), next = %s", prev, id)
	}
}

// TestReopen: the index after Close and Open is exactly the one before,
// including states changed by Hold, Finish and Delete.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	q, err := Open(dir, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var all []Meta
	for i := range 10 {
		all = append(all, mustEnqueue(t, q, msg(fmt.Sprintf("u%d@example.com", i), "r1@x.test", "r2@y.test"), bodyFor(i, 200)))
		clock.Advance(time.Minute)
	}
	if n, err := q.Hold(Filter{IDs: []string{all[1].ID, all[2].ID}}, "manual"); n != 2 || err != nil {
		t.Fatalf("Hold = %d, %v", n, err)
	}
	if n, err := q.Delete(Filter{IDs: []string{all[3].ID}}); n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	l, err := q.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rc := slices.Clone(l.Meta.Rcpts)
	rc[0].Status, rc[0].Diag = RcptDelivered, "250 ok"
	if err := q.Finish(l, Attempt{Rcpts: rc, NextAttempt: clock.Now().Add(time.Hour), LastError: "451 later"}); err != nil {
		t.Fatal(err)
	}
	before := q.List(Filter{})
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := q.Enqueue(msg("", "x@y"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v, want ErrClosed", err)
	}

	q2 := openQueue(t, dir, Options{Now: clock.Now})
	after := q2.List(Filter{})
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("after reopen:\n%+v\nwant\n%+v", after, before)
	}
	if len(after) != 9 {
		t.Fatalf("%d messages after reopen, want 9", len(after))
	}
	for _, m := range after {
		i := slices.IndexFunc(all, func(x Meta) bool { return x.ID == m.ID })
		b, err := q2.Body(m.ID)
		if err != nil || !bytes.Equal(b, bodyFor(i, 200)) {
			t.Errorf("Body(%s) after reopen: %v", m.ID, err)
		}
	}
	if st := q2.Stats(); st[StateHeld] != 2 || st[StateDeferred] != 1 || st[StateActive] != 6 {
		t.Errorf("Stats after reopen = %v", st)
	}
	// New IDs sort after the recovered ones even if the clock went back.
	clock.Advance(-24 * time.Hour)
	if m := mustEnqueue(t, q2, msg("", "x@y.test"), nil); m.ID <= all[9].ID {
		t.Errorf("new ID %s not after recovered %s", m.ID, all[9].ID)
	}
}

func TestOpenLocksDir(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{NoSync: true})
	if q2, err := Open(dir, Options{NoSync: true}); err == nil {
		q2.Close()
		t.Fatal("second Open of the same dir succeeded")
	}
	q.Close()
	q3 := openQueue(t, dir, Options{NoSync: true})
	q3.Close()
}

// recordEnds lists the end offset of every record in a segment file.
func recordEnds(t *testing.T, path string) []int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int64
	res, err := scanSegment(bytes.NewReader(data), int64(len(data)), func(r record) { ends = append(ends, r.off+r.size) }, nil)
	if err != nil || res.end != int64(len(data)) || len(res.damaged) > 0 {
		t.Fatalf("scan %s: end %d of %d, damage %v: %v", path, res.end, len(data), res.damaged, err)
	}
	return ends
}

// TestTornTail cuts the last segment at many offsets, as a crash during a
// write would: every complete record survives, the partial one is dropped,
// and the queue keeps working on the truncated segment.
func TestTornTail(t *testing.T) {
	src := t.TempDir()
	q, err := Open(src, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var metas []Meta
	for i := range 20 {
		metas = append(metas, mustEnqueue(t, q, msg("a@b.test", "c@d.test"), bodyFor(i, 50+i*37)))
	}
	q.Close()
	segs := segFiles(t, src)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	ends := recordEnds(t, segs[0])
	total := ends[len(ends)-1]
	offsets := []int64{0, 1, headerLen - 1, headerLen, ends[0] - 1, ends[0], ends[0] + 1, ends[9], total - 1, total}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		offsets = append(offsets, rng.Int64N(total+1))
	}
	for _, cut := range offsets {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, src, dir)
			seg := filepath.Join(dir, filepath.Base(segs[0]))
			if err := os.Truncate(seg, cut); err != nil {
				t.Fatal(err)
			}
			q := openQueue(t, dir, Options{})
			want := 0
			for _, e := range ends {
				if e <= cut {
					want++
				}
			}
			got := q.List(Filter{})
			if !slices.Equal(ids(got), ids(metas[:want])) {
				t.Fatalf("after cut at %d: %d messages, want the first %d", cut, len(got), want)
			}
			for i, m := range got {
				b, err := q.Body(m.ID)
				if err != nil || !bytes.Equal(b, bodyFor(i, 50+i*37)) {
					t.Fatalf("Body %d: %v", i, err)
				}
			}
			if st, _ := os.Stat(seg); st.Size() != ends0(ends, want) {
				t.Errorf("segment is %d bytes after open, want truncated to %d", st.Size(), ends0(ends, want))
			}
			extra := mustEnqueue(t, q, msg("x@y.test", "z@w.test"), []byte("after the crash"))
			q.Close()
			q2 := openQueue(t, dir, Options{})
			if n := q2.Count(Filter{}); n != want+1 {
				t.Fatalf("after second reopen: %d messages, want %d", n, want+1)
			}
			if b, err := q2.Body(extra.ID); err != nil || string(b) != "after the crash" {
				t.Fatalf("message appended after truncation: %q, %v", b, err)
			}
		})
	}
}

func ends0(ends []int64, n int) int64 {
	if n == 0 {
		return 0
	}
	return ends[n-1]
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentEnqueue: many sessions at once, fsync on; every one
// succeeds, and all are there after a reopen.
func TestConcurrentEnqueue(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, Options{SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	var mu sync.Mutex
	seen := map[string][]byte{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b := bodyFor(w*1000+i, 300+i)
				m, err := q.Enqueue(msg(fmt.Sprintf("w%d@example.com", w), "r@x.test"), b)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if _, dup := seen[m.ID]; dup {
					errs <- fmt.Errorf("duplicate ID %s", m.ID)
				}
				seen[m.ID] = b
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := q.Count(Filter{}); n != workers*each {
		t.Fatalf("Count = %d, want %d", n, workers*each)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2 := openQueue(t, dir, Options{SegmentSize: 64 << 10})
	if n := q2.Count(Filter{}); n != workers*each {
		t.Fatalf("after reopen Count = %d, want %d", n, workers*each)
	}
	for id, want := range seen {
		if b, err := q2.Body(id); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("Body(%s): %v", id, err)
		}
	}
}

// Invalid UTF-8 (8-bit headers) is stored as JSON will read it back, so the
// index before and after a restart agree.
func TestInvalidUTF8RoundTrip(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{NoSync: true})
	m := msg("a\xffb@example.com", "c@d.test")
	m.Subject = "caf\xe9 \xc3"
	got := mustEnqueue(t, q, m, nil)
	if got.Subject != "caf\uFFFD \uFFFD" {
		t.Errorf("Subject = %q", got.Subject)
	}
	q.Close()
	q2 := openQueue(t, dir, Options{NoSync: true})
	again, ok := q2.Get(got.ID)
	if !ok || !reflect.DeepEqual(again, got) {
		t.Errorf("after reopen %+v, want %+v", again, got)
	}
	if n := q2.Count(Filter{Subject: "CAF\uFFFD"}); n != 1 {
		t.Errorf("Count by subject = %d", n)
	}
}

func TestBytesTracksLiveRecords(t *testing.T) {
	q, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Bytes() != 0 {
		t.Fatalf("empty queue has %d bytes", q.Bytes())
	}
	body := make([]byte, 10000)
	var ids []string
	for i := 0; i < 3; i++ {
		m, err := q.Enqueue(Meta{From: "a@x.test", Rcpts: []Rcpt{{Addr: "b@y.test"}}}, body)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	three := q.Bytes()
	if three < 30000 || three > 33000 {
		t.Fatalf("three 10 kB messages: %d bytes", three)
	}
	if n, err := q.Delete(Filter{IDs: ids[:2]}); err != nil || n != 2 {
		t.Fatalf("delete: %d %v", n, err)
	}
	if got := q.Bytes(); got > three/3+100 || got < three/3-100 {
		t.Errorf("after deleting two of three: %d bytes, want about %d", got, three/3)
	}
}

// TestEnqueueParts: a message given as parts (trace headers, then the
// received message) is stored as their concatenation, with its checksum,
// and replays intact after a restart — including parts large enough to be
// written from the caller's buffers rather than through the write chunk.
func TestEnqueueParts(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{})
	big := bodyFor(7, 3*writeChunk+17)
	parts := [][]byte{[]byte("Received: x\r\n"), nil, []byte("DKIM-Signature: y\r\n"), big}
	m, err := q.Enqueue(msg("a@example.org", "b@example.net"), parts...)
	if err != nil {
		t.Fatal(err)
	}
	small := mustEnqueue(t, q, msg("c@example.org", "d@example.net"), []byte("small"))
	want := bytes.Join(parts, nil)
	if m.Size != int64(len(want)) {
		t.Errorf("Size %d, want %d", m.Size, len(want))
	}
	check := func(q *Queue) {
		t.Helper()
		got, err := q.Body(m.ID)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("body of the parts message: err %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, want))
		}
		if got, err := q.Body(small.ID); err != nil || string(got) != "small" {
			t.Fatalf("body after the parts message: %q %v", got, err)
		}
	}
	check(q)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	check(openQueue(t, dir, Options{}))
}

// TestExpireHeld: held mail older than the retention is deleted and
// counted; younger held mail and other states stay.
func TestExpireHeld(t *testing.T) {
	clock := newFakeClock()
	q := openQueue(t, t.TempDir(), Options{Now: clock.Now})
	old := msg("a@example.org", "b@example.net")
	old.State = StateHeld
	mustEnqueue(t, q, old, []byte("old"))
	mustEnqueue(t, q, msg("c@example.org", "d@example.net"), []byte("active"))
	clock.Advance(31 * 24 * time.Hour)
	young := msg("e@example.org", "f@example.net")
	young.State = StateHeld
	mustEnqueue(t, q, young, []byte("young"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one pass
	got := 0
	q.ExpireHeld(ctx, 30*24*time.Hour, func(n int) { got += n }, slog.New(slog.DiscardHandler))
	if got != 1 {
		t.Errorf("recorded %d expired, want 1", got)
	}
	if n := q.Count(Filter{State: StateHeld}); n != 1 {
		t.Errorf("%d held left, want 1", n)
	}
	if n := q.Count(Filter{}); n != 2 {
		t.Errorf("%d messages left, want 2", n)
	}
}
