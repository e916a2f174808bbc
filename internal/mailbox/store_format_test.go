package mailbox

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestUidlistGolden(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "dovecot-uidlist.golden"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseUidlist(golden)
	if err != nil {
		t.Fatal(err)
	}
	if l.uidValidity != 1700000000 || l.nextUID != 5 || l.guid != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("header = %d %d %q", l.uidValidity, l.nextUID, l.guid)
	}
	want := []uidRec{
		{1, "", "1700000000.M1P1.host,S=10"},
		{2, "W12", "1700000001.M2P1.host,S=20"},
		{4, "", "1700000002.M3P1.host"},
	}
	if !slices.Equal(l.recs, want) {
		t.Fatalf("recs = %v, want %v", l.recs, want)
	}
	if got := l.marshal(); string(got) != string(golden) {
		t.Fatalf("marshal = %q, want the golden file %q", got, golden)
	}
}

func TestParseUidlist(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
		v, n    uint32
		keys    []string
	}{
		{"version 3", "3 V7 N3\n1 :a\n2 :b\n", false, 7, 3, []string{"a", "b"}},
		{"next below max", "3 V7 N1\n5 :a\n", false, 7, 6, []string{"a"}},
		{"version 1", "1 9 4\n1 a\n3 b\n", false, 9, 4, []string{"a", "b"}},
		{"ext fields", "3 V1 N9 G00ff\n8 W1 S2 :a:b\n", false, 1, 9, nil}, // ':' in a key is refused
		{"unordered skipped", "3 V1 N9\n5 :a\n3 :b\n6 :c\n", false, 1, 9, []string{"a", "c"}},
		{"dup key skipped", "3 V1 N9\n1 :a\n2 :a\n", false, 1, 9, []string{"a"}},
		{"bad lines skipped", "3 V1 N9\nx :a\n0 :b\n2\n3 :../x\n4 :.hidden\n", false, 1, 9, nil},
		{"no validity", "3 N5\n", true, 0, 0, nil},
		{"bad version", "2 V1 N1\n", true, 0, 0, nil},
		{"empty", "", true, 0, 0, nil},
		{"bad V", "3 Vx N1\n", true, 0, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := parseUidlist([]byte(tc.in))
			if tc.wantErr {
				if err == nil || !errors.Is(err, errBadUidlist) {
					t.Fatalf("err = %v, want errBadUidlist", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, r := range l.recs {
				keys = append(keys, r.key)
			}
			if l.uidValidity != tc.v || l.nextUID != tc.n || !slices.Equal(keys, tc.keys) {
				t.Fatalf("got V%d N%d %q, want V%d N%d %q", l.uidValidity, l.nextUID, keys, tc.v, tc.n, tc.keys)
			}
		})
	}
}

func TestKeywordsGolden(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "dovecot-keywords.golden"))
	if err != nil {
		t.Fatal(err)
	}
	kt := parseKeywords(golden)
	if kt[0] != "$Junk" || kt[1] != "NonJunk" || kt[2] != "" || kt[3] != "$label1" {
		t.Fatalf("table = %q", kt[:4])
	}
	if got := kt.marshal(); string(got) != string(golden) {
		t.Fatalf("marshal = %q, want %q", got, golden)
	}
	if kt.index("nonjunk") != 1 || kt.index("x") != -1 {
		t.Fatalf("index is wrong")
	}
	if got := kt.names(); !slices.Equal(got, []string{"$Junk", "$label1", "NonJunk"}) {
		t.Fatalf("names = %q", got)
	}
	// Bad lines: index out of range, bad atoms, duplicates.
	kt = parseKeywords([]byte("26 x\n-1 y\n0 a b\n1 (x\n2 ok\n3 OK\n2 other\nfoo\n"))
	if got := kt.names(); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("names = %q, want [ok]", got)
	}
}

func TestFileNameFlags(t *testing.T) {
	tests := []struct {
		name string
		key  string
		sys  uint8
		kw   uint32
		ok   bool
		out  string // fileName of the parsed flags
	}{
		{"1.M1.h,S=5:2,FS", "1.M1.h,S=5", sysFlagged | sysSeen, 0, true, "1.M1.h,S=5:2,FS"},
		{"1.M1.h:2,STRPFD", "1.M1.h", sysDraft | sysFlagged | sysPassed | sysReplied | sysSeen | sysTrashed, 0, true, "1.M1.h:2,DFPRST"},
		{"1.M1.h:2,Sca", "1.M1.h", sysSeen, 5, true, "1.M1.h:2,Sac"},
		{"1.M1.h:2,Sz", "1.M1.h", sysSeen, 1 << 25, true, "1.M1.h:2,Sz"},
		{"1.M1.h", "1.M1.h", 0, 0, true, "1.M1.h:2,"},
		{"1.M1.h:1,S", "1.M1.h", 0, 0, true, "1.M1.h:2,"}, // experimental info: no flags
		{"1.M1.h:2,S?!", "1.M1.h", sysSeen, 0, true, "1.M1.h:2,S"},
		{".hidden", "", 0, 0, false, ""},
		{":2,S", "", 0, 0, false, ""},
		{"", "", 0, 0, false, ""},
	}
	for _, tc := range tests {
		key, sys, kw, ok := parseFileName(tc.name)
		if key != tc.key || sys != tc.sys || kw != tc.kw || ok != tc.ok {
			t.Errorf("parseFileName(%q) = %q %b %b %v, want %q %b %b %v", tc.name, key, sys, kw, ok, tc.key, tc.sys, tc.kw, tc.ok)
			continue
		}
		if ok {
			if got := fileName(key, sys, kw); got != tc.out {
				t.Errorf("fileName = %q, want %q", got, tc.out)
			}
		}
	}
}

func TestSizeFromKey(t *testing.T) {
	tests := []struct {
		key  string
		size int64
		ok   bool
	}{
		{"1.M1.h,S=123", 123, true},
		{"1.M1.h,S=123,W=130", 123, true},
		{"1.M1.h", 0, false},
		{"1.M1.h,S=", 0, false},
		{"1.M1.h,S=-1", 0, false},
		{"1.M1.h,S=x", 0, false},
	}
	for _, tc := range tests {
		size, ok := sizeFromKey(tc.key)
		if size != tc.size || ok != tc.ok {
			t.Errorf("sizeFromKey(%q) = %d %v", tc.key, size, ok)
		}
	}
}

func TestMUTF7(t *testing.T) {
	tests := []struct{ utf8, mutf7 string }{
		{"INBOX", "INBOX"},
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
		{"&", "&-"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"A&B", "A&-B"},
		{"😀", "&2D3eAA-"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := mutf7Encode(tc.utf8); got != tc.mutf7 {
			t.Errorf("encode(%q) = %q, want %q", tc.utf8, got, tc.mutf7)
		}
		got, err := mutf7Decode(tc.mutf7)
		if err != nil || got != tc.utf8 {
			t.Errorf("decode(%q) = %q, %v, want %q", tc.mutf7, got, err, tc.utf8)
		}
	}
	for _, bad := range []string{"&", "&U,BTFw", "&AGE-", "&U,BTFw-&ZeVnLIqe-", "&2D0-", "a\x01", "\xc3\xbc", "&Jjo!"} {
		if got, err := mutf7Decode(bad); err == nil {
			t.Errorf("decode(%q) = %q, want an error", bad, got)
		}
	}
}

func TestCanonFolder(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"INBOX", "INBOX", true},
		{"inbox", "INBOX", true},
		{"Inbox.Sub", "INBOX.Sub", true},
		{"Sent", "Sent", true},
		{"Lists.Go", "Lists.Go", true},
		{"Entwürfe", "Entwürfe", true},
		{"", "", false},
		{".", "", false},
		{"a..b", "", false},
		{"a.", "", false},
		{".a", "", false},
		{"a/b", "", false},
		{`a\b`, "", false},
		{"a*", "", false},
		{"a%", "", false},
		{"a\x00b", "", false},
		{"a\nb", "", false},
		{"a\u0085b", "", false},
		{"\xff", "", false},
		{strings.Repeat("x", 256), "", false},
		{strings.Repeat("x", 250), strings.Repeat("x", 250), true},
		{strings.Repeat("ü", 100), "", false}, // 200 octets of UTF-16 in base64: > 255 on disk
	}
	for _, tc := range tests {
		got, err := canonFolder(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("canonFolder(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadFolderName) {
			t.Errorf("canonFolder(%q) error %v is not ErrBadFolderName", tc.in, err)
		}
	}
	if _, ok := folderFromDisk(".."); ok {
		t.Errorf(`folderFromDisk("..") accepted`)
	}
	if n, ok := folderFromDisk(".Entw&APw-rfe"); !ok || n != "Entwürfe" {
		t.Errorf("folderFromDisk = %q %v", n, ok)
	}
}

func FuzzUidlist(f *testing.F) {
	f.Add([]byte("3 V1 N2 G00\n1 :a\n"))
	f.Add([]byte("1 5 6\n1 a\n2 b\n"))
	f.Add([]byte("3 V1700000000 N5\n1 W12 :x,S=1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parseUidlist(data)
		if err != nil {
			return
		}
		// What we write we read back the same.
		out := l.marshal()
		l2, err := parseUidlist(out)
		if err != nil {
			t.Fatalf("reparse of %q: %v", out, err)
		}
		if l2.uidValidity != l.uidValidity || l2.nextUID != l.nextUID || !slices.Equal(l2.recs, l.recs) {
			t.Fatalf("round trip changed %q", out)
		}
		var last uint32
		for _, r := range l.recs {
			if r.uid <= last || r.uid >= l.nextUID || !validKey(r.key) {
				t.Fatalf("bad record %v (next %d)", r, l.nextUID)
			}
			last = r.uid
		}
	})
}

func FuzzKeywords(f *testing.F) {
	f.Add([]byte("0 $Junk\n1 NonJunk\n"))
	f.Add([]byte("25 z\n3 x y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kt := parseKeywords(data)
		if kt2 := parseKeywords(kt.marshal()); kt2 != kt {
			t.Fatalf("round trip changed %q", kt.marshal())
		}
		for _, k := range kt {
			if k != "" && !validKeyword(k) {
				t.Fatalf("invalid keyword %q accepted", k)
			}
		}
	})
}

func FuzzFileName(f *testing.F) {
	f.Add("1.M1.h,S=5:2,FS")
	f.Add("1.M1.h:2,Sabz")
	f.Add("x")
	f.Fuzz(func(t *testing.T, name string) {
		key, sys, kw, ok := parseFileName(name)
		if !ok {
			return
		}
		n := fileName(key, sys, kw)
		key2, sys2, kw2, ok2 := parseFileName(n)
		if !ok2 || key2 != key || sys2 != sys || kw2 != kw {
			t.Fatalf("round trip of %q via %q changed", name, n)
		}
		if strings.ContainsAny(key, "/:") {
			t.Fatalf("key %q has a separator", key)
		}
		sizeFromKey(key)
	})
}

func FuzzMUTF7(f *testing.F) {
	f.Add("~peter/mail/&U,BTFw-/&ZeVnLIqe-")
	f.Add("&-")
	f.Add("Entwürfe")
	f.Fuzz(func(t *testing.T, s string) {
		if dec, err := mutf7Decode(s); err == nil {
			if enc := mutf7Encode(dec); enc != s {
				t.Fatalf("decode(%q) = %q encodes to %q", s, dec, enc)
			}
		}
		if utf8.ValidString(s) {
			enc := mutf7Encode(s)
			dec, err := mutf7Decode(enc)
			if err != nil || dec != s {
				t.Fatalf("encode(%q) = %q decodes to %q, %v", s, enc, dec, err)
			}
		}
	})
}
