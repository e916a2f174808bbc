package mailbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const testAddr = "alice@example.test"

func newTestStore(t testing.TB, opts StoreOptions) (*Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "mail")
	s := NewStore(root, opts)
	t.Cleanup(func() { s.Close() })
	return s, root
}

func mustUser(t testing.TB, s *Store, addr string) *User {
	t.Helper()
	u, err := s.User(addr)
	if err != nil {
		t.Fatalf("User(%s): %v", addr, err)
	}
	return u
}

func mustOpen(t testing.TB, u *User, name string) *Folder {
	t.Helper()
	f, err := u.Open(name)
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func mustSnap(t testing.TB, f *Folder) *Snapshot {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return s
}

func uidsOf(s *Snapshot) []uint32 {
	var out []uint32
	for _, m := range s.Messages {
		out = append(out, m.UID)
	}
	return out
}

func readMsg(t *testing.T, f *Folder, uid uint32) string {
	t.Helper()
	r, err := f.Open(uid)
	if err != nil {
		t.Fatalf("Open(%d): %v", uid, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStoreUserFolders(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, "Alice@Example.TEST")
	base := filepath.Join(root, "example.test", "alice")
	for _, d := range []string{"cur", "new", "tmp", ".Sent/cur", ".Trash/new", ".Archive/tmp"} {
		fi, err := os.Stat(filepath.Join(base, d))
		if err != nil || fi.Mode().Perm() != dirMode {
			t.Fatalf("%s: %v %v", d, fi, err)
		}
	}
	if err := u.Create("Lists.Go.Nuts"); err != nil {
		t.Fatal(err)
	}
	if err := u.Create("Entwürfe"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, ".Entw&APw-rfe", "cur")); err != nil {
		t.Fatalf("mUTF-7 folder dir: %v", err)
	}
	if err := u.Subscribe("Lists.Go", true); err != nil {
		t.Fatal(err)
	}
	if err := u.Subscribe("Trash", false); err != nil {
		t.Fatal(err)
	}
	fis, err := u.Folders()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fi := range fis {
		got = append(got, fmt.Sprintf("%s|%s|%v|%v", fi.Name, fi.SpecialUse, fi.Subscribed, fi.HasChildren))
	}
	want := []string{
		"INBOX||false|false",
		`Archive|\Archive|true|false`,
		`Drafts|\Drafts|true|false`,
		"Entwürfe||false|false",
		`Junk|\Junk|true|false`,
		"Lists||false|true",
		"Lists.Go||true|true",
		"Lists.Go.Nuts||false|false",
		`Sent|\Sent|true|false`,
		`Trash|\Trash|false|false`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Folders =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	subs, _ := os.ReadFile(filepath.Join(base, "subscriptions"))
	if string(subs) != "Sent\nDrafts\nJunk\nArchive\nLists.Go\n" {
		t.Fatalf("subscriptions file = %q", subs)
	}

	errTests := []struct {
		name string
		err  error
		fn   func() error
	}{
		{"create existing", ErrFolderExists, func() error { return u.Create("Sent") }},
		{"create INBOX", ErrFolderExists, func() error { return u.Create("inbox") }},
		{"create bad", ErrBadFolderName, func() error { return u.Create("a..b") }},
		{"create traversal", ErrBadFolderName, func() error { return u.Create("../x") }},
		{"delete INBOX", ErrInboxSpecial, func() error { return u.Delete("INBOX") }},
		{"delete missing", ErrNoFolder, func() error { return u.Delete("Nope") }},
		{"delete parent", ErrHasChildren, func() error { return u.Delete("Lists.Go") }},
		{"open missing", ErrNoFolder, func() error { _, err := u.Open("Nope"); return err }},
		{"rename missing", ErrNoFolder, func() error { return u.Rename("Nope", "X") }},
		{"rename onto existing", ErrFolderExists, func() error { return u.Rename("Junk", "Sent") }},
		{"rename into child", ErrBadFolderName, func() error { return u.Rename("Lists", "Lists.X") }},
	}
	for _, tc := range errTests {
		if err := tc.fn(); !errors.Is(err, tc.err) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
		}
	}
	if err := u.Delete("Lists.Go.Nuts"); err != nil {
		t.Fatal(err)
	}
	if err := u.Delete("Lists.Go"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, ".Lists.Go")); !os.IsNotExist(err) {
		t.Fatalf("deleted folder still there: %v", err)
	}
	var zero User
	if _, err := zero.Folders(); err == nil {
		t.Fatalf("Folders on a directory User succeeded")
	}
}

func TestStoreTooManyFolders(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	// Five special folders exist already; make all but one more on disk
	// (Create's fsyncs would make this slow), then the last with Create.
	base := filepath.Join(root, "example.test", "alice")
	for i := 0; i < maxFolders-6; i++ {
		if err := os.Mkdir(filepath.Join(base, fmt.Sprintf(".F%d", i)), dirMode); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Create("Last"); err != nil {
		t.Fatalf("Create of the 1000th folder: %v", err)
	}
	if err := u.Create("OneMore"); !errors.Is(err, ErrTooManyFolders) {
		t.Fatalf("Create beyond the limit: %v", err)
	}
}

func TestStoreAppendFlagsRestart(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	uv, uid1, err := u.Append("INBOX", strings.NewReader("Subject: a\n\nbody\r\nline\n"), []string{`\Seen`, "$Label1", `\Recent`}, date)
	if err != nil {
		t.Fatal(err)
	}
	_, uid2, err := u.Append("inbox", strings.NewReader("Subject: b\r\n\r\nx\r\n"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if uid1 != 1 || uid2 != 2 || uv == 0 {
		t.Fatalf("Append UIDs %d %d, validity %d", uid1, uid2, uv)
	}
	if _, _, err := u.Append("INBOX", strings.NewReader("x"), []string{`\Bogus`}, date); !errors.Is(err, ErrBadFlag) {
		t.Fatalf("Append with \\Bogus: %v", err)
	}
	f := mustOpen(t, u, "INBOX")
	snap := mustSnap(t, f)
	if snap.UIDValidity != uv || snap.UIDNext != 3 || !slices.Equal(uidsOf(snap), []uint32{1, 2}) {
		t.Fatalf("snapshot %+v", snap)
	}
	m := snap.Messages[0]
	want := "Subject: a\r\n\r\nbody\r\nline\r\n"
	if m.Size != int64(len(want)) || !m.InternalDate.Equal(date) || !slices.Equal(m.Flags, []string{"$Label1", `\Seen`}) {
		t.Fatalf("message %+v", m)
	}
	if got := readMsg(t, f, 1); got != want {
		t.Fatalf("content %q, want %q", got, want)
	}
	if !slices.Equal(snap.Keywords, []string{"$Label1"}) {
		t.Fatalf("keywords %q", snap.Keywords)
	}
	if _, err := f.Open(99); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("Open(99): %v", err)
	}

	if err := f.StoreFlags([]uint32{1, 2, 99}, FlagsAdd, []string{`\flagged`, "Work"}); err != nil {
		t.Fatal(err)
	}
	if err := f.StoreFlags([]uint32{1}, FlagsRemove, []string{`\Seen`, "$label1", "Unknown"}); err != nil {
		t.Fatal(err)
	}
	if err := f.StoreFlags([]uint32{2}, FlagsSet, []string{`\Answered`, `\Deleted`, `\Draft`, "$Forwarded"}); err != nil {
		t.Fatal(err)
	}
	snap2 := mustSnap(t, f)
	if snap2.Version <= snap.Version {
		t.Fatalf("version did not grow: %d -> %d", snap.Version, snap2.Version)
	}
	if got := snap2.Messages[0].Flags; !slices.Equal(got, []string{"Work", `\Flagged`}) {
		t.Fatalf("flags of 1 = %q", got)
	}
	if got := snap2.Messages[1].Flags; !slices.Equal(got, []string{"$Forwarded", `\Answered`, `\Deleted`, `\Draft`}) {
		t.Fatalf("flags of 2 = %q", got)
	}
	// The snapshot taken before is unchanged.
	if !slices.Equal(snap.Messages[0].Flags, []string{"$Label1", `\Seen`}) {
		t.Fatalf("old snapshot changed: %q", snap.Messages[0].Flags)
	}
	// On disk: Dovecot's names and files.
	base := filepath.Join(root, "example.test", "alice")
	cur, _ := readNames(filepath.Join(base, "cur"))
	slices.Sort(cur)
	if len(cur) != 2 || !strings.HasSuffix(cur[0], ",S=26:2,Fb") && !strings.HasSuffix(cur[1], ",S=26:2,Fb") {
		t.Fatalf("cur/ = %q", cur)
	}
	for _, n := range cur {
		fi, _ := os.Stat(filepath.Join(base, "cur", n))
		if fi.Mode().Perm() != fileMode {
			t.Fatalf("%s mode %v", n, fi.Mode())
		}
	}
	kw, _ := os.ReadFile(filepath.Join(base, "dovecot-keywords"))
	if string(kw) != "0 $Label1\n1 Work\n" {
		t.Fatalf("dovecot-keywords = %q", kw)
	}
	ul, _ := os.ReadFile(filepath.Join(base, "dovecot-uidlist"))
	if !strings.HasPrefix(string(ul), fmt.Sprintf("3 V%d N3 G", uv)) || strings.Count(string(ul), "\n") != 3 {
		t.Fatalf("dovecot-uidlist = %q", ul)
	}

	// A restart keeps UIDs, UIDVALIDITY and flags.
	s2 := NewStore(root, StoreOptions{})
	defer s2.Close()
	f2 := mustOpen(t, mustUser(t, s2, testAddr), "INBOX")
	snap3 := mustSnap(t, f2)
	if snap3.UIDValidity != uv || snap3.UIDNext != 3 || !slices.Equal(uidsOf(snap3), []uint32{1, 2}) {
		t.Fatalf("after restart %+v", snap3)
	}
	for i := range snap3.Messages {
		if !slices.Equal(snap3.Messages[i].Flags, snap2.Messages[i].Flags) {
			t.Fatalf("flags changed by restart: %q vs %q", snap3.Messages[i].Flags, snap2.Messages[i].Flags)
		}
	}
	// Expunge, then a new message: UIDs are never reused.
	got, err := f2.Expunge([]uint32{2, 2, 7})
	if err != nil || !slices.Equal(got, []uint32{2}) {
		t.Fatalf("Expunge = %v, %v", got, err)
	}
	_, uid3, err := mustUser(t, s2, testAddr).Append("INBOX", strings.NewReader("x"), nil, time.Time{})
	if err != nil || uid3 != 3 {
		t.Fatalf("Append after expunge: uid %d, %v", uid3, err)
	}
}

func TestStoreTooManyKeywords(t *testing.T) {
	s, _ := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	_, uid, err := u.Append("INBOX", strings.NewReader("x"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, u, "INBOX")
	for i := 0; i < maxKeywords; i++ {
		if err := f.StoreFlags([]uint32{uid}, FlagsAdd, []string{fmt.Sprintf("k%d", i)}); err != nil {
			t.Fatalf("keyword %d: %v", i, err)
		}
	}
	if err := f.StoreFlags([]uint32{uid}, FlagsAdd, []string{"k26"}); !errors.Is(err, ErrTooManyFlags) {
		t.Fatalf("27th keyword: %v", err)
	}
	if err := f.StoreFlags([]uint32{uid}, FlagsAdd, []string{"bad(kw"}); !errors.Is(err, ErrBadFlag) {
		t.Fatalf("bad keyword: %v", err)
	}
	if n := len(mustSnap(t, f).Messages[0].Flags); n != maxKeywords {
		t.Fatalf("%d flags, want %d", n, maxKeywords)
	}
}

func TestStoreDeliverWakesWatchers(t *testing.T) {
	pollInterval = 50 * time.Millisecond
	t.Cleanup(func() { pollInterval = time.Second })
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	f := mustOpen(t, u, "INBOX")
	before := mustSnap(t, f)
	ch := f.Changed()
	body := []byte("Subject: hi\r\n\r\nhello\r\n")
	if err := s.DeliverOnce(testAddr, "Q1", "bob@example.test", body, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Changed not closed within a second of the delivery")
	}
	snap := mustSnap(t, f)
	if len(snap.Messages) != 1 || snap.Version <= before.Version {
		t.Fatalf("snapshot after delivery: %+v", snap)
	}
	m := snap.Messages[0]
	content := readMsg(t, f, m.UID)
	if !strings.HasPrefix(content, "Return-Path: <bob@example.test>\r\nDelivered-To: alice@example.test\r\n") || m.Size != int64(len(content)) {
		t.Fatalf("delivered %q (size %d)", content, m.Size)
	}
	base := filepath.Join(root, "example.test", "alice")
	if n, _ := readNames(filepath.Join(base, "new")); len(n) != 0 {
		t.Fatalf("new/ not emptied: %q", n)
	}
	cur, _ := readNames(filepath.Join(base, "cur"))
	if len(cur) != 1 || !strings.Contains(cur[0], ".MQ1R") || !strings.HasSuffix(cur[0], fmt.Sprintf(",S=%d:2,", m.Size)) {
		t.Fatalf("cur/ = %q", cur)
	}
	// A retry after a crash finds it, in cur/ now.
	if err := s.DeliverOnce(testAddr, "Q1", "bob@example.test", body, true); err != nil {
		t.Fatal(err)
	}
	if n := len(mustSnap(t, f).Messages); n != 1 {
		t.Fatalf("%d messages after the retry", n)
	}
	// A delivery by another process is found by the poller.
	other := &Maildir{Root: root}
	ch = f.Changed()
	if err := other.DeliverOnce(testAddr, "Q2", "bob@example.test", body, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(2 * time.Second): // 40 poll intervals: generous for a loaded CI machine
		t.Fatal("Changed not closed after an outside delivery")
	}
}

// Files delivered by older code (no ",S="), placed in new/ and cur/ by
// hand, get UIDs in mtime order and sizes from stat.
func TestStoreLegacyFiles(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	base := filepath.Join(root, "example.test", "alice")
	for _, d := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(base, d), dirMode)
	}
	now := time.Now()
	files := []struct {
		path string
		age  time.Duration
		body string
	}{
		{"new/1000.M3R1.host", 1 * time.Hour, "third"},
		{"cur/1000.M1R1.host:2,S", 3 * time.Hour, "first!"},
		{"new/1000.M2R1.host", 2 * time.Hour, "second"},
		{"cur/.hidden", 4 * time.Hour, "ignored"},
	}
	for _, fl := range files {
		p := filepath.Join(base, fl.path)
		os.WriteFile(p, []byte(fl.body), fileMode)
		os.Chtimes(p, now.Add(-fl.age), now.Add(-fl.age))
	}
	f := mustOpen(t, mustUser(t, s, testAddr), "INBOX")
	snap := mustSnap(t, f)
	var keys []string
	for _, m := range snap.Messages {
		keys = append(keys, fmt.Sprintf("%d %s %d %q", m.UID, m.Key, m.Size, m.Flags))
	}
	want := []string{
		`1 1000.M1R1.host 6 ["\\Seen"]`,
		`2 1000.M2R1.host 6 []`,
		`3 1000.M3R1.host 5 []`,
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("messages\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	us, err := s.Usage(testAddr)
	if err != nil || us.Bytes != 17 || us.Messages != 3 {
		t.Fatalf("Usage = %+v, %v", us, err)
	}
}

// A Dovecot-written uidlist (extension fields, GUID) is honoured, and the
// extension fields survive our rewrite.
func TestStoreReadsDovecotUidlist(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	base := filepath.Join(root, "example.test", "alice")
	for _, d := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(base, d), dirMode)
	}
	os.WriteFile(filepath.Join(base, "dovecot-uidlist"), []byte("3 V1234 N41 Gabcdef\n7 W30 :111.a.host,S=3\n40 :222.b.host,S=4\n"), fileMode)
	os.WriteFile(filepath.Join(base, "cur", "111.a.host,S=3:2,S"), []byte("abc"), fileMode)
	os.WriteFile(filepath.Join(base, "cur", "222.b.host,S=4:2,"), []byte("abcd"), fileMode)
	os.WriteFile(filepath.Join(base, "new", "333.c.host,S=5"), []byte("abcde"), fileMode)
	f := mustOpen(t, mustUser(t, s, testAddr), "INBOX")
	snap := mustSnap(t, f)
	if snap.UIDValidity != 1234 || !slices.Equal(uidsOf(snap), []uint32{7, 40, 41}) || snap.UIDNext != 42 {
		t.Fatalf("snapshot %d %v %d", snap.UIDValidity, uidsOf(snap), snap.UIDNext)
	}
	ul, _ := os.ReadFile(filepath.Join(base, "dovecot-uidlist"))
	if string(ul) != "3 V1234 N42 Gabcdef\n7 W30 :111.a.host,S=3\n40 :222.b.host,S=4\n41 :333.c.host,S=5\n" {
		t.Fatalf("rewritten uidlist %q", ul)
	}
}

// Another process renames or removes files under the index: flag changes,
// Open and Expunge find them again by key.
func TestStoreOutsideRenames(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	for i := 0; i < 3; i++ {
		if _, _, err := u.Append("INBOX", strings.NewReader(fmt.Sprintf("m%d", i)), nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	f := mustOpen(t, u, "INBOX")
	snap := mustSnap(t, f)
	cur := filepath.Join(root, "example.test", "alice", "cur")
	// Behind the store's back: message 1 gets \Seen, message 2 vanishes.
	k1, k2 := snap.Messages[0].Key, snap.Messages[1].Key
	if err := os.Rename(filepath.Join(cur, k1+":2,"), filepath.Join(cur, k1+":2,S")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cur, k2+":2,")); err != nil {
		t.Fatal(err)
	}
	if err := f.StoreFlags([]uint32{1}, FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open(2); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("Open of a vanished message: %v", err)
	}
	// The rescan of StoreFlags found 2 gone already.
	got, err := f.Expunge([]uint32{2, 3})
	if err != nil || !slices.Equal(got, []uint32{3}) {
		t.Fatalf("Expunge = %v, %v", got, err)
	}
	snap = mustSnap(t, f)
	if !slices.Equal(uidsOf(snap), []uint32{1}) || !slices.Equal(snap.Messages[0].Flags, []string{`\Flagged`, `\Seen`}) {
		t.Fatalf("snapshot %+v", snap.Messages)
	}
	if _, err := os.Stat(filepath.Join(cur, k1+":2,FS")); err != nil {
		t.Fatal(err)
	}
}

func TestStoreRename(t *testing.T) {
	s, _ := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	if err := u.Create("Work.Old"); err != nil {
		t.Fatal(err)
	}
	uv, uid, err := u.Append("Work", strings.NewReader("w"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.Append("Work.Old", strings.NewReader("wo"), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	open := mustOpen(t, u, "Work")
	if err := u.Rename("Work", "Jobs.Done"); err != nil {
		t.Fatal(err)
	}
	if open.Name() != "Jobs.Done" {
		t.Fatalf("open folder name %q", open.Name())
	}
	f := mustOpen(t, u, "Jobs.Done")
	snap := mustSnap(t, f)
	if snap.UIDValidity != uv || !slices.Equal(uidsOf(snap), []uint32{uid}) || mustSnap(t, open) != snap {
		t.Fatalf("renamed folder snapshot %+v", snap)
	}
	if n := len(mustSnap(t, mustOpen(t, u, "Jobs.Done.Old")).Messages); n != 1 {
		t.Fatalf("child has %d messages", n)
	}
	for _, gone := range []string{"Work", "Work.Old"} {
		if _, err := u.Open(gone); !errors.Is(err, ErrNoFolder) {
			t.Fatalf("old name %s: %v", gone, err)
		}
	}

	// INBOX: the messages move, INBOX stays (empty).
	if _, _, err := u.Append("INBOX", strings.NewReader("i"), []string{`\Seen`}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := u.Rename("INBOX", "Old-Inbox"); err != nil {
		t.Fatal(err)
	}
	if n := len(mustSnap(t, mustOpen(t, u, "INBOX")).Messages); n != 0 {
		t.Fatalf("INBOX has %d messages after its rename", n)
	}
	moved := mustSnap(t, mustOpen(t, u, "Old-Inbox"))
	if len(moved.Messages) != 1 || !slices.Equal(moved.Messages[0].Flags, []string{`\Seen`}) {
		t.Fatalf("Old-Inbox %+v", moved.Messages)
	}
}

func TestStoreRecreatedFolderNewValidity(t *testing.T) {
	s, _ := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	seen := map[uint32]bool{}
	for i := 0; i < 3; i++ {
		if err := u.Create("Tmp"); err != nil {
			t.Fatal(err)
		}
		f, err := u.Open("Tmp")
		if err != nil {
			t.Fatal(err)
		}
		uv := mustSnap(t, f).UIDValidity
		if seen[uv] {
			t.Fatalf("UIDVALIDITY %d given twice", uv)
		}
		seen[uv] = true
		if err := u.Delete("Tmp"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Snapshot(); !errors.Is(err, ErrNoFolder) {
			t.Fatalf("Snapshot of a deleted folder: %v", err)
		}
		f.Close()
	}
}

func TestStoreCopyMove(t *testing.T) {
	s, _ := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	for i := 0; i < 3; i++ {
		if _, _, err := u.Append("INBOX", strings.NewReader(fmt.Sprintf("msg %d", i)), []string{"Tag", `\Seen`}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	in := mustOpen(t, u, "INBOX")
	arch := mustOpen(t, u, "Archive")
	// Give Archive another keyword first so "Tag" gets another letter.
	if _, _, err := u.Append("Archive", strings.NewReader("a"), []string{"Other"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Usage(testAddr)
	src, dst, uv, err := in.CopyTo([]uint32{3, 1, 9}, arch)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src, []uint32{1, 3}) || !slices.Equal(dst, []uint32{2, 3}) || uv != mustSnap(t, arch).UIDValidity {
		t.Fatalf("CopyTo = %v %v %d", src, dst, uv)
	}
	if got := readMsg(t, arch, 3); got != "msg 2" {
		t.Fatalf("copied content %q", got)
	}
	if fl := mustSnap(t, arch).Messages[1].Flags; !slices.Equal(fl, []string{"Tag", `\Seen`}) {
		t.Fatalf("copied flags %q", fl)
	}
	after, _ := s.Usage(testAddr)
	if after.Bytes != before.Bytes+10 || after.Messages != before.Messages+2 {
		t.Fatalf("usage after copy %+v, before %+v", after, before)
	}
	src, dst, _, err = in.MoveTo([]uint32{2, 3}, arch)
	if err != nil || !slices.Equal(src, []uint32{2, 3}) || !slices.Equal(dst, []uint32{4, 5}) {
		t.Fatalf("MoveTo = %v %v %v", src, dst, err)
	}
	if !slices.Equal(uidsOf(mustSnap(t, in)), []uint32{1}) || !slices.Equal(uidsOf(mustSnap(t, arch)), []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("after move: %v / %v", uidsOf(mustSnap(t, in)), uidsOf(mustSnap(t, arch)))
	}
	if moved, _ := s.Usage(testAddr); moved != after {
		t.Fatalf("usage changed by a move: %+v -> %+v", after, moved)
	}
	// Move within one folder: new UIDs.
	src, dst, _, err = arch.MoveTo([]uint32{1}, arch)
	if err != nil || !slices.Equal(src, []uint32{1}) || !slices.Equal(dst, []uint32{6}) {
		t.Fatalf("MoveTo self = %v %v %v", src, dst, err)
	}
	// Moving back keeps UIDs increasing (no reuse of the old UID).
	_, dst, _, err = arch.MoveTo([]uint32{4}, in)
	if err != nil || !slices.Equal(dst, []uint32{4}) {
		t.Fatalf("move back = %v %v", dst, err)
	}
}

func TestStoreQuota(t *testing.T) {
	quota := int64(100)
	s, _ := newTestStore(t, StoreOptions{Quota: func(addr string) int64 {
		if addr == testAddr {
			return quota
		}
		return 0
	}})
	u := mustUser(t, s, testAddr)
	if _, _, err := u.Append("INBOX", strings.NewReader(strings.Repeat("x", 60)), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if s.OverQuota(testAddr) {
		t.Fatal("over quota at 60 of 100")
	}
	if _, _, err := u.Append("INBOX", strings.NewReader(strings.Repeat("x", 41)), nil, time.Time{}); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("Append beyond the quota: %v", err)
	}
	// Delivery was decided at RCPT time: with room left it delivers even
	// past the quota, so nothing accepted bounces later...
	s2, _ := newTestStore(t, StoreOptions{Quota: func(string) int64 { return 100 }})
	if err := s2.DeliverOnce(testAddr, "Q1", "b@example.test", []byte(strings.Repeat("y", 20)), false); err != nil {
		t.Fatalf("DeliverOnce with room left: %v", err)
	}
	if err := s2.DeliverOnce(testAddr, "Q2", "b@example.test", []byte(strings.Repeat("y", 90)), false); err != nil {
		t.Fatalf("DeliverOnce taking the mailbox past its quota: %v", err)
	}
	// ...but a mailbox already full defers.
	if !s2.OverQuota(testAddr) {
		t.Fatal("not over quota after two deliveries")
	}
	err := s2.DeliverOnce(testAddr, "Q3", "b@example.test", []byte("y"), false)
	if !errors.Is(err, ErrOverQuota) {
		t.Fatalf("DeliverOnce to a full mailbox: %v", err)
	}
	in := mustOpen(t, u, "INBOX")
	if _, _, _, err := in.CopyTo([]uint32{1}, mustOpen(t, u, "Trash")); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("CopyTo beyond the quota: %v", err)
	}
	if _, _, _, err := in.MoveTo([]uint32{1}, mustOpen(t, u, "Trash")); err != nil {
		t.Fatalf("MoveTo at 60 of 100: %v", err)
	}
	if _, _, err := u.Append("INBOX", strings.NewReader(strings.Repeat("x", 40)), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !s.OverQuota(testAddr) {
		t.Fatal("not over quota at 100 of 100")
	}
	if us, _ := s.Usage(testAddr); us.Bytes != 100 || us.Messages != 2 {
		t.Fatalf("Usage %+v", us)
	}
	// Other users have none; a user never seen uses nothing.
	if err := s.DeliverOnce("bob@example.test", "Q2", "b@example.test", []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	if us, err := s.Usage("nobody@example.test"); err != nil || us != (Usage{}) {
		t.Fatalf("Usage of nobody = %+v, %v", us, err)
	}
	// Disk changes are found (after usageTTL).
	usageTTL = 0
	t.Cleanup(func() { usageTTL = time.Second })
	in.Expunge([]uint32{2})
	if us, _ := s.Usage(testAddr); us.Bytes != 60 {
		t.Fatalf("Usage after expunge %+v", us)
	}
}

func TestDotlock(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "dovecot-uidlist")
	oldWait := lockWait
	lockWait = 100 * time.Millisecond
	t.Cleanup(func() { lockWait = oldWait })

	lk, err := lockFile(defaultPerm, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockFile(defaultPerm, p); !errors.Is(err, errLockTimeout) {
		t.Fatalf("second lock: %v", err)
	}
	if err := lk.commit([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "data" {
		t.Fatalf("committed %q", b)
	}
	if _, err := os.Stat(p + ".lock"); !os.IsNotExist(err) {
		t.Fatalf("lock left behind: %v", err)
	}
	// A stale lock (a crashed holder) is taken over.
	os.WriteFile(p+".lock", nil, fileMode)
	old := time.Now().Add(-3 * time.Minute)
	os.Chtimes(p+".lock", old, old)
	lk, err = lockFile(defaultPerm, p)
	if err != nil {
		t.Fatalf("stale lock not taken over: %v", err)
	}
	lk.release()
	if b, _ := os.ReadFile(p); string(b) != "data" {
		t.Fatalf("release changed the file: %q", b)
	}
}

// TestStoreSubscriptions: subscriptions outlive their folders (RFC 3501
// 6.3.6) and come back as UTF-8 API names, which LIST (SUBSCRIBED)
// needs to report \NonExistent.
func TestStoreSubscriptions(t *testing.T) {
	s, _ := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	for _, n := range []string{"Entwürfe", "Gone"} {
		if err := u.Create(n); err != nil {
			t.Fatal(err)
		}
		if err := u.Subscribe(n, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Subscribe("Never.Made", true); err != nil {
		t.Fatal(err)
	}
	if err := u.Subscribe("Junk", false); err != nil {
		t.Fatal(err)
	}
	if err := u.Delete("Gone"); err != nil {
		t.Fatal(err)
	}
	got, err := u.Subscriptions()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Sent", "Drafts", "Trash", "Archive", "Entwürfe", "Gone", "Never.Made"}
	if !slices.Equal(got, want) {
		t.Fatalf("Subscriptions = %q, want %q", got, want)
	}
	// A second User value of the same address sees the same file.
	got, err = mustUser(t, s, strings.ToUpper(testAddr)).Subscriptions()
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Subscriptions of a second User = %q, %v", got, err)
	}
	if _, err := (&User{}).Subscriptions(); err == nil {
		t.Fatal("Subscriptions of a User not from Store.User succeeded")
	}
}

// TestOrphanKeywordLetterNotReused: a letter still in a file name is not
// given to a new keyword, even when dovecot-keywords no longer names it
// (lost or damaged): the untouched message must not gain the new keyword.
func TestOrphanKeywordLetterNotReused(t *testing.T) {
	s, root := newTestStore(t, StoreOptions{})
	u := mustUser(t, s, testAddr)
	for _, body := range []string{"Subject: one\r\n\r\nx\r\n", "Subject: two\r\n\r\ny\r\n"} {
		if _, _, err := u.Append("INBOX", strings.NewReader(body), nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	in := mustOpen(t, u, "INBOX")
	if err := in.StoreFlags([]uint32{1}, FlagsAdd, []string{"$Junk"}); err != nil {
		t.Fatal(err)
	}
	in.Close()
	s.Close()
	// The keywords file is lost; a fresh store reads the tree again.
	dir := filepath.Join(root, "example.test", "alice")
	if err := os.Remove(filepath.Join(dir, "dovecot-keywords")); err != nil {
		t.Fatal(err)
	}
	s2 := NewStore(root, StoreOptions{})
	t.Cleanup(func() { s2.Close() })
	in2 := mustOpen(t, mustUser(t, s2, testAddr), "INBOX")
	if err := in2.StoreFlags([]uint32{2}, FlagsAdd, []string{"$NotJunk"}); err != nil {
		t.Fatal(err)
	}
	snap, err := in2.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range snap.Messages {
		if m.UID == 1 && slices.Contains(m.Flags, "$NotJunk") {
			t.Fatalf("message 1 gained $NotJunk through its orphan letter: %v", m.Flags)
		}
		if m.UID == 2 && !slices.Contains(m.Flags, "$NotJunk") {
			t.Fatalf("message 2 lacks $NotJunk: %v", m.Flags)
		}
	}
}
