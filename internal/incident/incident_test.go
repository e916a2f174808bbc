package incident

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/queue"
)

type fixture struct {
	q   *queue.Queue
	j   *journal.Journal
	now time.Time
	ids map[string]string // name -> queue ID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	j, err := journal.Open(t.TempDir(), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	f := &fixture{q: q, j: j, now: time.Now().UTC(), ids: map[string]string{}}

	msgs := []struct {
		name, from, ip, user string
		state                queue.State
		age                  time.Duration
	}{
		{"A", "worm@example.org", "192.0.2.10", "worm@example.org", queue.StateHeld, time.Hour},
		{"B", "Worm@Example.org", "192.0.2.11", "", queue.StateHeld, 30 * time.Minute},
		{"C", "other@example.net", "198.51.100.5", "", queue.StateHeld, 10 * time.Minute},
		{"D", "worm@example.org", "192.0.2.10", "", queue.StateActive, 20 * time.Minute},
		{"E", "worm@example.org", "192.0.2.10", "", queue.StateHeld, 5 * time.Hour},
		{"F", "bot@example.com", "192.0.2.200", "", queue.StateHeld, 40 * time.Minute},
	}
	for i, m := range msgs {
		body := "From: " + m.from + "\r\nSubject: msg " + m.name + "\r\n\r\n" + strings.Repeat("line of body "+m.name+"\r\n", 10*(i+1))
		meta, err := q.Enqueue(queue.Meta{
			From: m.from, Rcpts: []queue.Rcpt{{Addr: "victim@example.com"}}, ClientIP: m.ip, User: m.user,
			Origin: queue.OriginSubmitted, Subject: "msg " + m.name, State: m.state, Rule: "worm",
			Received: f.now.Add(-m.age),
		}, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		f.ids[m.name] = meta.ID
	}
	return f
}

// events records the journal used by the tests; each Summary names the event.
func (f *fixture) events() {
	at := func(ago time.Duration) time.Time { return f.now.Add(-ago) }
	for _, e := range []journal.Event{
		{Time: at(6 * time.Hour), Kind: journal.KindSession, IP: "192.0.2.10", Summary: "too-old"},
		{Time: at(150 * time.Minute), Kind: journal.KindGuard, Sender: "worm@example.org", Summary: "old-isolation"},
		{Time: at(61 * time.Minute), Kind: journal.KindSession, IP: "192.0.2.10", QueueIDs: []string{f.ids["A"]}, Summary: "session-A"},
		{Time: at(59 * time.Minute), Kind: journal.KindGuard, Sender: "x@example.net, worm@example.org", Rule: "worm", Summary: "isolation"},
		{Time: at(58 * time.Minute), Kind: journal.KindGuard, IP: "192.0.2.0/24", Rule: "ban", Summary: "ban-cidr"},
		{Time: at(50 * time.Minute), Kind: journal.KindSession, IP: "198.51.100.5", Sender: "other@example.net", QueueIDs: []string{f.ids["C"]}, Summary: "session-C"},
		{Time: at(45 * time.Minute), Kind: journal.KindGuard, User: "WORM@example.org", Rule: "auth", Summary: "suspension"},
		{Time: at(40 * time.Minute), Kind: journal.KindQueue, QueueIDs: []string{f.ids["B"]}, Rule: "admin", Summary: "hold-B"},
		{Time: at(30 * time.Minute), Kind: journal.KindGuard, IP: "203.0.113.9", Rule: "alert", Summary: "unrelated-alert"},
		{Time: at(20 * time.Minute), Kind: journal.KindSession, IP: "192.0.2.200", Sender: "bot@example.com", Summary: "session-F"},
	} {
		f.j.Record(e)
	}
}

// archiveFile is one member of an exported archive.
type archiveFile struct {
	name string
	data []byte
}

func readArchive(t *testing.T, b []byte) []archiveFile {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []archiveFile
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, archiveFile{hd.Name, data})
	}
	return out
}

func summaries(t *testing.T, timeline []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(timeline))
	for sc.Scan() {
		var e journal.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("timeline line %q: %v", sc.Text(), err)
		}
		out = append(out, e.Summary)
	}
	return out
}

func TestExportBySender(t *testing.T) {
	f := newFixture(t)
	f.events()
	filter := Filter{Since: f.now.Add(-2 * time.Hour), Sender: "worm@example.org"}
	var buf bytes.Buffer
	m, err := Export(&buf, f.q, f.j, filter, f.now)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())

	// The manifest is the last member and matches what Export returned.
	last := files[len(files)-1]
	if last.name != ManifestName {
		t.Fatalf("last member is %s, want %s", last.name, ManifestName)
	}
	var onDisk Manifest
	if err := json.Unmarshal(last.data, &onDisk); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(onDisk.Files, m.Files) || onDisk.Messages != 2 || onDisk.Events != m.Events ||
		!onDisk.Filter.Since.Equal(filter.Since) || onDisk.Filter.Sender != filter.Sender || !onDisk.Created.Equal(f.now) {
		t.Fatalf("manifest on disk %+v\nreturned %+v", onDisk, m)
	}

	// Every other member is listed once with its real size and SHA-256.
	if len(m.Files) != len(files)-1 {
		t.Fatalf("manifest lists %d files, archive has %d besides it", len(m.Files), len(files)-1)
	}
	byName := map[string][]byte{}
	for i, af := range files[:len(files)-1] {
		sum := sha256.Sum256(af.data)
		want := File{Name: af.name, Size: int64(len(af.data)), SHA256: hex.EncodeToString(sum[:])}
		if m.Files[i] != want {
			t.Errorf("manifest entry %+v, archive member %+v", m.Files[i], want)
		}
		byName[af.name] = af.data
	}

	// Exactly the held, recent messages of the sender (case-insensitive), bytes as queued.
	var emls []string
	for name := range byName {
		if strings.HasPrefix(name, MessagesDir) {
			emls = append(emls, name)
		}
	}
	slices.Sort(emls)
	want := []string{MessagesDir + f.ids["A"] + ".eml", MessagesDir + f.ids["B"] + ".eml"}
	slices.Sort(want)
	if !reflect.DeepEqual(emls, want) {
		t.Fatalf("messages %v, want %v (A and B)", emls, want)
	}
	for _, name := range []string{"A", "B"} {
		body, err := f.q.Body(f.ids[name])
		if err != nil {
			t.Fatal(err)
		}
		if got := byName[MessagesDir+f.ids[name]+".eml"]; !bytes.Equal(got, body) {
			t.Errorf("message %s: archive bytes differ from the queued body", name)
		}
	}

	// The metadata names the same messages with their envelope.
	var metaIDs []string
	dec := json.NewDecoder(bytes.NewReader(byName[MetaName]))
	for dec.More() {
		var qm queue.Meta
		if err := dec.Decode(&qm); err != nil {
			t.Fatal(err)
		}
		if qm.ClientIP == "" || len(qm.Rcpts) != 1 || qm.State != queue.StateHeld {
			t.Errorf("metadata incomplete: %+v", qm)
		}
		metaIDs = append(metaIDs, qm.ID)
	}
	if !reflect.DeepEqual(metaIDs, []string{f.ids["A"], f.ids["B"]}) {
		t.Errorf("metadata IDs %v, want A then B", metaIDs)
	}

	// Related events, oldest first; not those of other senders/IPs nor older ones.
	got := summaries(t, byName[TimelineName])
	wantEv := []string{"session-A", "isolation", "ban-cidr", "suspension", "hold-B"}
	if !reflect.DeepEqual(got, wantEv) {
		t.Fatalf("timeline %v\nwant %v", got, wantEv)
	}
	if m.Events != len(wantEv) {
		t.Errorf("manifest events = %d, want %d", m.Events, len(wantEv))
	}

	vm, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !reflect.DeepEqual(vm.Files, m.Files) {
		t.Fatalf("Verify returned a different manifest")
	}
}

func TestExportFilters(t *testing.T) {
	f := newFixture(t)
	f.events()
	tests := []struct {
		name   string
		filter Filter
		msgs   []string
		events []string
	}{
		{
			name:   "client CIDR",
			filter: Filter{Since: f.now.Add(-2 * time.Hour), ClientIP: "192.0.2.0/25"},
			msgs:   []string{"A", "B"},
			// The /24 ban overlaps the /25; session-F's IP is outside it.
			events: []string{"session-A", "isolation", "ban-cidr", "suspension", "hold-B"},
		},
		{
			name:   "single IP",
			filter: Filter{Since: f.now.Add(-2 * time.Hour), ClientIP: "192.0.2.200"},
			msgs:   []string{"F"},
			events: []string{"ban-cidr", "session-F"},
		},
		{
			name:   "domain and ip",
			filter: Filter{Since: f.now.Add(-2 * time.Hour), Sender: "@example.net", ClientIP: "198.51.100.5"},
			msgs:   []string{"C"},
			events: []string{"isolation", "session-C"},
		},
		{
			name:   "glob sender, since long ago",
			filter: Filter{Since: f.now.Add(-24 * time.Hour), Sender: "w*m@*.org"},
			msgs:   []string{"E", "A", "B"},
			events: []string{"too-old", "old-isolation", "session-A", "isolation", "ban-cidr", "suspension", "hold-B"},
		},
		{
			name:   "no sender nor IP: everything since",
			filter: Filter{Since: f.now.Add(-55 * time.Minute)},
			msgs:   []string{"F", "B", "C"},
			events: []string{"session-C", "suspension", "hold-B", "unrelated-alert", "session-F"},
		},
		{
			name:   "nothing matches",
			filter: Filter{Since: f.now.Add(-2 * time.Hour), Sender: "nobody@example.org"},
			msgs:   nil,
			events: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			m, err := Export(&buf, f.q, f.j, tc.filter, f.now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var gotMsgs []string
			var timeline []byte
			for _, af := range readArchive(t, buf.Bytes()) {
				if id, ok := strings.CutPrefix(af.name, MessagesDir); ok {
					gotMsgs = append(gotMsgs, strings.TrimSuffix(id, ".eml"))
				}
				if af.name == TimelineName {
					timeline = af.data
				}
			}
			var wantMsgs []string
			for _, n := range tc.msgs {
				wantMsgs = append(wantMsgs, f.ids[n])
			}
			if !reflect.DeepEqual(gotMsgs, wantMsgs) {
				t.Errorf("messages %v, want %v", gotMsgs, wantMsgs)
			}
			if got := summaries(t, timeline); !reflect.DeepEqual(got, tc.events) {
				t.Errorf("timeline %v\nwant %v", got, tc.events)
			}
			if m.Messages != len(tc.msgs) || m.Events != len(tc.events) {
				t.Errorf("manifest counts %d/%d, want %d/%d", m.Messages, m.Events, len(tc.msgs), len(tc.events))
			}
		})
	}
}

func TestExportWithoutJournalAndBadFilter(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	m, err := Export(&buf, f.q, nil, Filter{ClientIP: "192.0.2.10"}, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if m.Messages != 2 || m.Events != 0 { // A and E (D is not held)
		t.Fatalf("counts %d/%d, want 2/0", m.Messages, m.Events)
	}
	if _, err := Verify(&buf); err != nil {
		t.Fatal(err)
	}

	buf.Reset()
	if _, err := Export(&buf, f.q, nil, Filter{ClientIP: "not-an-ip"}, f.now); err == nil {
		t.Fatal("bad client IP accepted")
	}
	if buf.Len() != 0 {
		t.Fatalf("a rejected filter still wrote %d bytes", buf.Len())
	}
}

// rewrite copies an archive, passing each member through edit.
func rewrite(t *testing.T, b []byte, edit func(name string, data []byte) []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	tw := tar.NewWriter(gz)
	for _, af := range readArchive(t, b) {
		data := edit(af.name, af.data)
		if data == nil {
			continue
		}
		tw.WriteHeader(&tar.Header{Name: af.name, Size: int64(len(data)), Mode: 0o600, Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.Close()
	gz.Close()
	return out.Bytes()
}

func TestVerifyDetectsTampering(t *testing.T) {
	f := newFixture(t)
	f.events()
	var buf bytes.Buffer
	if _, err := Export(&buf, f.q, f.j, Filter{Sender: "worm@example.org"}, f.now); err != nil {
		t.Fatal(err)
	}
	orig := buf.Bytes()
	tests := []struct {
		name string
		edit func(string, []byte) []byte
	}{
		{"message changed", func(n string, d []byte) []byte {
			if strings.HasPrefix(n, MessagesDir) {
				d = bytes.Clone(d)
				d[0] ^= 1
			}
			return d
		}},
		{"timeline dropped", func(n string, d []byte) []byte {
			if n == TimelineName {
				return nil
			}
			return d
		}},
		{"manifest dropped", func(n string, d []byte) []byte {
			if n == ManifestName {
				return nil
			}
			return d
		}},
		{"metadata changed", func(n string, d []byte) []byte {
			if n == MetaName {
				return append(bytes.Clone(d), '\n')
			}
			return d
		}},
	}
	if _, err := Verify(bytes.NewReader(rewrite(t, orig, func(_ string, d []byte) []byte { return d }))); err != nil {
		t.Fatalf("unchanged copy fails Verify: %v", err)
	}
	for _, tc := range tests {
		if _, err := Verify(bytes.NewReader(rewrite(t, orig, tc.edit))); err == nil {
			t.Errorf("%s: Verify passed", tc.name)
		}
	}
	if _, err := Verify(bytes.NewReader(orig[:len(orig)/2])); err == nil {
		t.Error("truncated archive: Verify passed")
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true},
		{"a*@*.org", "abc@example.org", true},
		{"a*@*.org", "abc@example.org.uk", false},
		{"?@x", "a@x", true},
		{"?@x", "ab@x", false},
		{"*a*a*a", "aaaaaaaaaaaaaaaaaaaab", false},
	}
	for _, tc := range tests {
		if got := glob(tc.pat, tc.s); got != tc.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tc.pat, tc.s, got, tc.want)
		}
	}
}
