package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func scanAll(t *testing.T, j *Journal, since time.Time) []Event {
	t.Helper()
	var out []Event
	if err := j.Scan(since, func(e Event) bool { out = append(out, e); return true }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

func files(t *testing.T, dir string) []fileInfo {
	t.Helper()
	fs, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	want := []Event{
		{Time: t0, Kind: KindSession, IP: "192.0.2.7", User: "a@example.org", Sender: "a@example.org",
			QueueIDs: []string{"q1", "q2"}, Summary: "2 messages", Data: map[string]any{"rcpts": 3.0, "tls": true}},
		{Time: t0.Add(time.Second), Kind: KindGuard, IP: "192.0.2.0/24", Rule: "ban", Summary: "banned"},
		{Time: t0.Add(2 * time.Second), Kind: KindQueue, QueueIDs: []string{"q1"}, Rule: "admin", Summary: "hold"},
	}
	for _, e := range want {
		j.Record(e)
	}
	// Scan before Close sees what was recorded (it flushes the writer).
	if got := scanAll(t, j, time.Time{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("scan before close:\n got %+v\nwant %+v", got, want)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, j, time.Time{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("scan after close:\n got %+v\nwant %+v", got, want)
	}
	j.Record(Event{Kind: KindGuard})
	if j.Dropped() != 1 {
		t.Fatalf("Dropped after Record on a closed journal = %d, want 1", j.Dropped())
	}

	// Reopening starts a new file and keeps the old events.
	j2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	j2.Record(Event{Kind: KindGuard, Summary: "after restart"})
	got := scanAll(t, j2, time.Time{})
	if len(got) != 4 || got[3].Summary != "after restart" || got[3].Time.IsZero() {
		t.Fatalf("after reopen: %+v", got)
	}
	if n := len(files(t, dir)); n != 2 {
		t.Fatalf("files after reopen = %d, want 2", n)
	}
}

func TestRotationBySizeAndDay(t *testing.T) {
	dir := t.TempDir()
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	clk := &clock{t: day1}
	j, err := Open(dir, Options{FileBytes: 1000, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		j.Record(Event{Kind: KindSession, Summary: fmt.Sprintf("event %03d", i), IP: "198.51.100.1"})
	}
	j.flush()
	bySize := files(t, dir)
	if len(bySize) < 3 {
		t.Fatalf("want several files rotated by size, got %d", len(bySize))
	}
	for _, fi := range bySize {
		st, err := os.Stat(filepath.Join(dir, fi.name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over FileBytes", fi.name, st.Size())
		}
	}
	for i := 1; i < len(bySize); i++ {
		if !bySize[i].start.After(bySize[i-1].start) {
			t.Errorf("file names not increasing: %s then %s", bySize[i-1].name, bySize[i].name)
		}
	}

	day2 := time.Date(2026, 3, 2, 0, 0, 5, 0, time.UTC)
	clk.Set(day2)
	j.Record(Event{Kind: KindGuard, Summary: "next day"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	all := files(t, dir)
	last := all[len(all)-1]
	if len(all) != len(bySize)+1 || last.name != "events-20260302T000005.jsonl" {
		t.Fatalf("day rotation: files %v", all)
	}
	got := scanAll(t, j, time.Time{})
	if len(got) != n+1 {
		t.Fatalf("scan got %d events, want %d", len(got), n+1)
	}
	for i := range n {
		if want := fmt.Sprintf("event %03d", i); got[i].Summary != want {
			t.Fatalf("event %d = %q, want %q (order across files)", i, got[i].Summary, want)
		}
	}
}

func TestScanSince(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: base}
	j, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// One file per day for five days, two events a day.
	for d := range 5 {
		clk.Set(base.Add(time.Duration(d) * 24 * time.Hour))
		j.Record(Event{Kind: KindGuard, Summary: fmt.Sprintf("d%d-a", d)})
		clk.Set(base.Add(time.Duration(d)*24*time.Hour + 12*time.Hour))
		j.Record(Event{Kind: KindGuard, Summary: fmt.Sprintf("d%d-b", d)})
	}
	tests := []struct {
		since time.Time
		first string
		n     int
	}{
		{time.Time{}, "d0-a", 10},
		{base.Add(36 * time.Hour), "d1-b", 7},
		{base.Add(36*time.Hour + time.Nanosecond), "d2-a", 6},
		{base.Add(4*24*time.Hour + 12*time.Hour), "d4-b", 1},
		{base.Add(10 * 24 * time.Hour), "", 0},
	}
	for _, tc := range tests {
		got := scanAll(t, j, tc.since)
		if len(got) != tc.n {
			t.Errorf("since %v: %d events, want %d", tc.since, len(got), tc.n)
			continue
		}
		if tc.n > 0 && got[0].Summary != tc.first {
			t.Errorf("since %v: first %q, want %q", tc.since, got[0].Summary, tc.first)
		}
	}
	// fn returning false stops the scan.
	n := 0
	j.Scan(time.Time{}, func(Event) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("scan did not stop when fn returned false: %d calls", n)
	}
}

func TestScanSkipsOldFilesAndTornLines(t *testing.T) {
	dir := t.TempDir()
	// An old file holding an event Scan would return if it read the file
	// (its time breaks the naming invariant on purpose), and a current file
	// with a torn last line.
	os.WriteFile(filepath.Join(dir, "events-20260101T000000.jsonl"),
		[]byte(`{"time":"2026-02-05T00:00:00Z","kind":"guard","summary":"in a skipped file"}`+"\n"), 0o600)
	good := `{"time":"2026-02-01T10:00:00Z","kind":"guard","summary":"ok"}` + "\n" + `{"time":"2026-02-01T10:00:01Z","kind":"gu`
	os.WriteFile(filepath.Join(dir, "events-20260201T000000.jsonl"), []byte(good), 0o600)
	j, err := Open(dir, Options{MaxAge: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := scanAll(t, j, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	if len(got) != 1 || got[0].Summary != "ok" {
		t.Fatalf("got %+v, want the one good event", got)
	}
	if all := scanAll(t, j, time.Time{}); len(all) != 2 {
		t.Fatalf("a scan from the start reads every file: got %+v", all)
	}
}

func TestRetentionBySize(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{FileBytes: 1000, MaxBytes: 3000})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		j.Record(Event{Kind: KindSession, Summary: fmt.Sprintf("event %04d", i)})
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, fi := range files(t, dir) {
		st, _ := os.Stat(filepath.Join(dir, fi.name))
		total += st.Size()
	}
	if total > 3000+1000 {
		t.Fatalf("journal holds %d bytes, over MaxBytes+FileBytes", total)
	}
	got := scanAll(t, j, time.Time{})
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("retention kept %d of %d events", len(got), n)
	}
	if got[len(got)-1].Summary != fmt.Sprintf("event %04d", n-1) {
		t.Fatalf("newest event lost: last is %q", got[len(got)-1].Summary)
	}
	if got[0].Summary == "event 0000" {
		t.Fatalf("oldest event still there")
	}
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	day1 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	clk := &clock{t: day1}
	j, err := Open(dir, Options{MaxAge: 3 * 24 * time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	j.Record(Event{Kind: KindGuard, Summary: "old"})
	j.flush()
	clk.Set(day1.Add(2 * 24 * time.Hour))
	j.Record(Event{Kind: KindGuard, Summary: "recent"})
	j.flush()
	if n := len(files(t, dir)); n != 2 {
		t.Fatalf("files = %d, want 2", n)
	}
	clk.Set(day1.Add(10 * 24 * time.Hour))
	j.Record(Event{Kind: KindGuard, Summary: "now"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range scanAll(t, j, time.Time{}) {
		got = append(got, e.Summary)
	}
	if !reflect.DeepEqual(got, []string{"now"}) {
		t.Fatalf("after 10 days with MaxAge 3d: %v, want [now]", got)
	}

	// Age survives a restart: the closed file's mtime is its last write.
	clk.Set(day1.Add(20 * 24 * time.Hour))
	j2, err := Open(dir, Options{MaxAge: 3 * 24 * time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if n := len(files(t, dir)); n != 0 {
		t.Fatalf("Open did not delete files older than MaxAge: %d left", n)
	}
}

func TestConcurrentRecord(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{FileBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				j.Record(Event{Kind: KindSession, User: fmt.Sprint(w), Summary: fmt.Sprint(i)})
			}
		})
	}
	// Scans while recording must not race with the writer.
	for range 5 {
		j.Scan(time.Time{}, func(Event) bool { return true })
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if j.Dropped() != 0 {
		t.Fatalf("dropped %d events with a buffer larger than the load", j.Dropped())
	}
	seen := map[string]int{}
	last := map[string]int{}
	for _, e := range scanAll(t, j, time.Time{}) {
		seen[e.User+"/"+e.Summary]++
		var i int
		fmt.Sscan(e.Summary, &i)
		if p, ok := last[e.User]; ok && i <= p {
			t.Fatalf("worker %s: event %d after %d", e.User, i, p)
		}
		last[e.User] = i
	}
	if len(seen) != workers*each {
		t.Fatalf("got %d distinct events, want %d", len(seen), workers*each)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s written %d times", k, c)
		}
	}
}

func TestBoundedWhenWriterIsSlow(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	j, err := Open(dir, Options{Buffer: 10, beforeWrite: func() { <-release }})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	doneRecording := make(chan struct{})
	go func() {
		for i := range n {
			j.Record(Event{Kind: KindSession, Summary: fmt.Sprint(i)})
		}
		close(doneRecording)
	}()
	select {
	case <-doneRecording:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked while the writer was stuck")
	}
	// The writer holds at most one event, the channel ten.
	d := j.Dropped()
	if d < n-11 || d > n-10 {
		t.Fatalf("dropped %d, want %d or %d", d, n-11, n-10)
	}
	close(release)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(scanAll(t, j, time.Time{})); uint64(got) != n-d {
		t.Fatalf("wrote %d events, want %d (recorded minus dropped)", got, n-d)
	}
}

func TestUnencodableEventIsDropped(t *testing.T) {
	j, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	j.Record(Event{Kind: KindGuard, Data: map[string]any{"bad": make(chan int)}})
	j.Record(Event{Kind: KindGuard, Summary: "fine"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	got := scanAll(t, j, time.Time{})
	if len(got) != 1 || got[0].Summary != "fine" || j.Dropped() != 1 {
		t.Fatalf("got %+v, dropped %d", got, j.Dropped())
	}
}
