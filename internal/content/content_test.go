package content

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// part is one attachment of a test message.
type part struct {
	ctype  string // full Content-Type value
	disp   string // full Content-Disposition value, optional
	cte    string // transfer encoding; default base64
	body   []byte
	rawHdr string // extra raw header lines (CRLF-terminated)
}

// mkMsg builds a multipart/mixed message with a text body and parts.
func mkMsg(parts ...part) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"BOUND\"\r\n\r\n")
	b.WriteString("--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, see attached.\r\n")
	for _, p := range parts {
		b.WriteString("--BOUND\r\n")
		fmt.Fprintf(&b, "Content-Type: %s\r\n", p.ctype)
		if p.disp != "" {
			fmt.Fprintf(&b, "Content-Disposition: %s\r\n", p.disp)
		}
		cte := p.cte
		if cte == "" {
			cte = "base64"
		}
		fmt.Fprintf(&b, "Content-Transfer-Encoding: %s\r\n%s\r\n", cte, p.rawHdr)
		if cte == "base64" {
			enc := base64.StdEncoding.EncodeToString(p.body)
			for len(enc) > 76 {
				b.WriteString(enc[:76] + "\r\n")
				enc = enc[76:]
			}
			b.WriteString(enc + "\r\n")
		} else {
			b.Write(p.body)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("--BOUND--\r\n")
	return b.Bytes()
}

func attach(name, ctype string, body []byte) part {
	return part{ctype: ctype, disp: "attachment; filename=\"" + name + "\"", body: body}
}

// fakePE is a minimal buffer with a valid MZ header pointing at "PE\0\0".
func fakePE() []byte {
	b := make([]byte, 0x100)
	copy(b, "MZ")
	b[0x3C] = 0x80
	copy(b[0x80:], "PE\x00\x00")
	return b
}

type entry struct {
	name      string
	data      []byte
	encrypted bool
}

func mkZip(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.encrypted {
			fh.Flags |= 0x1
		}
		w, err := zw.CreateHeader(fh)
		if err != nil {
			t.Fatalf("zip create %s: %v", e.name, err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatalf("zip write: %v", err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zip close: %v", err)
	}
	return buf.Bytes()
}

var pdf = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")

func TestCheck(t *testing.T) {
	pe := fakePE()
	inner := mkZip(t, entry{name: "setup.scr", data: []byte("payload")})
	outer := mkZip(t, entry{name: "inner.zip", data: inner})
	peInZip := mkZip(t, entry{name: "docs/readme.txt", data: pe})
	encrypted := mkZip(t, entry{name: "secret.txt", data: pe, encrypted: true})
	encryptedExe := mkZip(t, entry{name: "run.exe", data: []byte("x"), encrypted: true})
	docx := mkZip(t, entry{name: "[Content_Types].xml", data: []byte("<Types/>")}, entry{name: "word/document.xml", data: []byte("<w:document/>")})
	deep := []byte("harmless")
	deep = mkZip(t, entry{name: "l5.txt", data: deep})
	for i := 4; i >= 1; i-- {
		deep = mkZip(t, entry{name: fmt.Sprintf("l%d.zip", i), data: deep})
	}
	fourDeep := mkZip(t, entry{name: "l3.zip", data: mkZip(t, entry{name: "l4.zip", data: mkZip(t, entry{name: "ok.txt", data: []byte("ok")})})})
	fourDeep = mkZip(t, entry{name: "l2.zip", data: fourDeep})

	plain := []byte("From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nJust text.\r\n")
	rfc822 := []byte("From: c@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=IN\r\n\r\n" +
		"--IN\r\nContent-Type: text/plain\r\n\r\nhi\r\n--IN\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--IN--\r\n")

	tests := []struct {
		name     string
		msg      []byte
		pol      func(*Policy)
		wantRule Rule
		wantPart string
		action   Action
	}{
		{name: "plain text", msg: plain},
		{name: "pdf", msg: mkMsg(attach("report.pdf", "application/pdf", pdf))},
		{name: "docx-like zip", msg: mkMsg(attach("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", docx))},
		{name: "shebang script not blocked", msg: mkMsg(attach("install.sh", "application/x-sh", []byte("#!/bin/sh\necho hi\n")))},
		{name: "MZ text is not PE", msg: mkMsg(attach("notes.txt", "text/plain", []byte("MZ is a nice prefix for text\n")))},
		{name: "exe", msg: mkMsg(attach("tool.exe", "application/octet-stream", []byte("x"))), wantRule: RuleBlockedExt, wantPart: "tool.exe"},
		{name: "upper-case EXE", msg: mkMsg(attach("TOOL.EXE", "application/octet-stream", []byte("x"))), wantRule: RuleBlockedExt},
		{name: "double extension", msg: mkMsg(attach("invoice.pdf.exe", "application/pdf", []byte("x"))), wantRule: RuleDoubleExt, wantPart: "invoice.pdf.exe"},
		{name: "double extension with spaces", msg: mkMsg(attach("name.pdf      .exe", "application/pdf", []byte("x"))), wantRule: RuleDoubleExt},
		{name: "trailing dots and spaces", msg: mkMsg(attach("run.bat. . ", "application/octet-stream", []byte("x"))), wantRule: RuleBlockedExt},
		{name: "rtl override", msg: mkMsg(attach("invoice\u202Efdp.exe", "application/pdf", []byte("x"))), wantRule: RuleRTLOverride},
		{name: "rtl override benign ext", msg: mkMsg(attach("photo\u202Egpj.zip", "application/zip", mkZip(t, entry{name: "a.txt", data: []byte("a")}))), wantRule: RuleRTLOverride},
		{name: "name only in content-type", msg: mkMsg(part{ctype: `application/octet-stream; name="x.js"`, body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "rfc2231 filename", msg: mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename*=utf-8''setup%2Escr", body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "rfc2231 unknown charset", msg: mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename*=x-weird''setup%2Ehta", body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "rfc2231 continuations", msg: mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename*0=\"in\"; filename*1=\"voice.v\"; filename*2=\"bs\"", body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "encoded word", msg: mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename=\"=?utf-8?B?" + base64.StdEncoding.EncodeToString([]byte("rechnung.lnk")) + "?=\"", body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "duplicate filename params", msg: mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename=\"a.pdf\"; filename=\"b.ps1\"", body: []byte("x")}), wantRule: RuleBlockedExt},
		{name: "blocked content type", msg: mkMsg(attach("report.dat", "application/x-msdownload", []byte("x"))), wantRule: RuleBlockedType},
		{name: "PE renamed txt", msg: mkMsg(attach("readme.txt", "text/plain", pe)), wantRule: RuleExecutableMagic, wantPart: "readme.txt"},
		{name: "PE as pdf", msg: mkMsg(attach("scan.pdf", "application/pdf", pe)), wantRule: RuleExecutableMagic},
		{name: "PE inline without name", msg: mkMsg(part{ctype: "application/octet-stream", body: pe}), wantRule: RuleExecutableMagic, wantPart: "part 2 (application/octet-stream)"},
		{name: "ELF", msg: mkMsg(attach("data.pdf", "application/pdf", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 64)...))), wantRule: RuleExecutableMagic},
		{name: "Mach-O", msg: mkMsg(attach("data.bin", "application/octet-stream", []byte("\xcf\xfa\xed\xfe\x07\x00\x00\x01"))), wantRule: RuleExecutableMagic},
		{name: "scr in zip in zip", msg: mkMsg(attach("invoice.zip", "application/zip", outer)), wantRule: RuleBlockedExt, wantPart: "invoice.zip > inner.zip > setup.scr"},
		{name: "zip by magic under other type", msg: mkMsg(attach("archive.dat", "application/octet-stream", outer)), wantRule: RuleBlockedExt, wantPart: "archive.dat > inner.zip > setup.scr"},
		{name: "PE renamed txt in zip", msg: mkMsg(attach("docs.zip", "application/zip", peInZip)), wantRule: RuleExecutableMagic, wantPart: "docs.zip > docs/readme.txt"},
		{name: "encrypted entry cannot be inspected", msg: mkMsg(attach("secret.zip", "application/zip", encrypted)), wantRule: RuleArchiveEncrypted, wantPart: "secret.zip > secret.txt"},
		{name: "encrypted entry accepted by policy", msg: mkMsg(attach("secret.zip", "application/zip", encrypted)), pol: func(p *Policy) { p.Uninspectable = Accept }},
		{name: "encrypted entry held by policy", msg: mkMsg(attach("secret.zip", "application/zip", encrypted)), pol: func(p *Policy) { p.Uninspectable = Hold }, wantRule: RuleArchiveEncrypted, action: Hold},
		{name: "accepting uninspectable keeps name checks", msg: mkMsg(attach("secret.zip", "application/zip", encryptedExe)), pol: func(p *Policy) { p.Uninspectable = Accept }, wantRule: RuleBlockedExt},
		{name: "encrypted entry blocked name", msg: mkMsg(attach("secret.zip", "application/zip", encryptedExe)), wantRule: RuleBlockedExt, wantPart: "secret.zip > run.exe"},
		{name: "zip nested too deep", msg: mkMsg(attach("l0.zip", "application/zip", deep)), wantRule: RuleArchiveTooDeep},
		{name: "zip nested to the limit", msg: mkMsg(attach("l1.zip", "application/zip", fourDeep))},
		{name: "broken zip", msg: mkMsg(attach("x.zip", "application/zip", []byte("PK\x03\x04garbage"))), wantRule: RuleArchiveMalform},
		{name: "forwarded message with exe", msg: mkMsg(part{ctype: "message/rfc822", cte: "7bit", body: rfc822}), wantRule: RuleBlockedExt, wantPart: "part 2 (message/rfc822) > evil.exe"},
		{name: "hold action", msg: mkMsg(attach("tool.exe", "application/octet-stream", []byte("x"))), pol: func(p *Policy) { p.Action = Hold }, wantRule: RuleBlockedExt, action: Hold},
		{name: "exe allowed by override", msg: mkMsg(attach("tool.exe", "application/octet-stream", pe)), pol: func(p *Policy) { delete(p.BlockedExt, "exe") }},
		{name: "override keeps disguise check", msg: mkMsg(attach("tool.txt", "text/plain", pe)), pol: func(p *Policy) { delete(p.BlockedExt, "exe") }, wantRule: RuleExecutableMagic},
		{name: "custom blocked ext with dot and case", msg: mkMsg(attach("a.docm", "application/octet-stream", []byte("x"))), pol: func(p *Policy) { p.BlockedExt = map[string]bool{".DOCM": true} }, wantRule: RuleBlockedExt},
		{name: "too many parts", msg: mkMsg(attach("a.txt", "text/plain", nil), attach("b.txt", "text/plain", nil), attach("c.txt", "text/plain", nil)), pol: func(p *Policy) { p.MaxParts = 3 }, wantRule: RuleMIMETooMany},
		{name: "too many zip entries", msg: mkMsg(attach("many.zip", "application/zip", mkZip(t, entry{name: "1"}, entry{name: "2"}, entry{name: "3"}))), pol: func(p *Policy) { p.MaxEntries = 2 }, wantRule: RuleArchiveBomb},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.pol != nil {
				tc.pol(&p)
			}
			v := p.Check(tc.msg)
			checkVerdict(t, v, tc.wantRule, tc.wantPart, tc.action)
		})
	}
}

func checkVerdict(t *testing.T, v Verdict, wantRule Rule, wantPart string, action Action) {
	t.Helper()
	if wantRule == "" {
		if v.Action != Accept {
			t.Fatalf("got %+v, want accept", v)
		}
		return
	}
	if action == 0 {
		action = Reject
	}
	if v.Action != action || v.Rule != wantRule {
		t.Fatalf("got %+v, want action %s rule %s", v, action, wantRule)
	}
	if wantPart != "" && v.Part != wantPart {
		t.Errorf("Part = %q, want %q", v.Part, wantPart)
	}
	assertReplySafe(t, v.Reason)
	assertReplySafe(t, v.Part)
	if v.Reason == "" {
		t.Error("empty Reason")
	}
}

func assertReplySafe(t *testing.T, s string) {
	t.Helper()
	if len(s) > 200 {
		t.Errorf("%q longer than 200", s)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7E {
			t.Errorf("%q has non-printable byte %#x", s, c)
			return
		}
	}
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		name     string
		msg      string
		wantRule Rule
	}{
		{
			name: "garbage header no attachment",
			msg:  " leading space\r\nno colon line\r\n\r\nbody",
		},
		{
			name:     "garbage header with attachment params",
			msg:      " leading space\r\nno colon line\r\nContent-Disposition: attachment; filename=x.exe\r\n\r\nbody",
			wantRule: RuleMIMEMalformed,
		},
		{
			name:     "bad base64 in named attachment",
			msg:      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!****\r\n--B--\r\n",
			wantRule: RuleMIMEMalformed,
		},
		{
			name: "bad base64 in text body",
			msg:  "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!****\r\n--B--\r\n",
		},
		{
			name:     "unknown encoding on attachment",
			msg:      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.dat\r\nContent-Transfer-Encoding: x-gremlin\r\n\r\nxyz\r\n--B--\r\n",
			wantRule: RuleMIMEMalformed,
		},
		{
			name:     "x-uuencode part is decoded",
			msg:      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.dat\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a.exe\r\n--B--\r\n",
			wantRule: RuleBlockedExt,
		},
		{
			name:     "x-uuencode part without a block",
			msg:      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.dat\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nnot uu\r\n--B--\r\n",
			wantRule: RuleMIMEMalformed,
		},
		{
			name: "missing final boundary",
			msg:  "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
		},
		{
			name:     "missing final boundary still checks part",
			msg:      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.vbs\r\n\r\nhello\r\n",
			wantRule: RuleBlockedExt,
		},
		{
			name: "multipart without boundary",
			msg:  "Content-Type: multipart/mixed\r\n\r\nhello\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := DefaultPolicy().Check([]byte(tc.msg))
			checkVerdict(t, v, tc.wantRule, "", 0)
		})
	}
}

func TestReplySafety(t *testing.T) {
	name := "evil\r\n250 OK\r\n" + strings.Repeat("ü", 300) + ".exe"
	msg := mkMsg(part{ctype: "application/octet-stream", disp: "attachment; filename*=utf-8''" + strings.ReplaceAll(strings.ReplaceAll(name, "\r", "%0D"), "\n", "%0A"), body: []byte("x")})
	v := DefaultPolicy().Check(msg)
	if v.Rule != RuleBlockedExt {
		t.Fatalf("got %+v, want blocked_ext", v)
	}
	assertReplySafe(t, v.Reason)
	assertReplySafe(t, v.Part)
}

func TestZeroPolicyUsesDefaults(t *testing.T) {
	v := Policy{}.Check(mkMsg(attach("tool.exe", "application/octet-stream", []byte("x"))))
	if v.Action != Reject || v.Rule != RuleBlockedExt {
		t.Fatalf("got %+v", v)
	}
	// The caller's map is not modified by normalisation.
	m := map[string]bool{".EXE": true}
	Policy{BlockedExt: m}.Check(mkMsg(attach("tool.exe", "application/octet-stream", []byte("x"))))
	if !m[".EXE"] || len(m) != 1 {
		t.Fatalf("caller map changed: %v", m)
	}
}

func TestAttachments(t *testing.T) {
	z := mkZip(t, entry{name: "a.txt", data: []byte("hello")}, entry{name: "b.exe", data: []byte("x")})
	atts, err := Attachments(mkMsg(attach("r.pdf", "application/pdf", pdf), attach("z.zip", "application/zip", z)), DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range atts {
		got = append(got, fmt.Sprintf("%s|%s|%d", a.Path, a.ContentType, a.Size))
	}
	want := []string{
		"part 1 (text/plain)|text/plain|20",
		fmt.Sprintf("r.pdf|application/pdf|%d", len(pdf)),
		fmt.Sprintf("z.zip|application/zip|%d", len(z)),
		"z.zip > a.txt||5",
		"z.zip > b.exe||1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// zeroZip streams n bytes of zeros through deflate into a zip entry, so the
// test never holds the expanded data. declared, if non-zero, replaces the
// honest uncompressed size in the headers (a lying bomb).
func zeroZip(t testing.TB, name string, n int64, declared uint64) []byte {
	t.Helper()
	var comp bytes.Buffer
	zw := zip.NewWriter(&comp)
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<16)
	for left := n; left > 0; left -= int64(len(zeros)) {
		if _, err := w.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if declared == 0 {
		return comp.Bytes()
	}
	// Re-pack the compressed stream raw with a false size.
	zr, err := zip.NewReader(bytes.NewReader(comp.Bytes()), int64(comp.Len()))
	if err != nil {
		t.Fatal(err)
	}
	f := zr.File[0]
	raw, err := f.OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw2 := zip.NewWriter(&out)
	fh := f.FileHeader
	fh.UncompressedSize64 = declared
	w2, err := zw2.CreateRaw(&fh)
	if err != nil {
		t.Fatal(err)
	}
	buf := new(bytes.Buffer)
	if _, err := buf.ReadFrom(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw2.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestZipBomb(t *testing.T) {
	const bombSize = 200 << 20
	honest := zeroZip(t, "zeros.txt", bombSize, 0)
	lying := zeroZip(t, "zeros.txt", bombSize, 1000)
	// 42.zip-like: an archive of archives whose entries each expand a lot.
	layer := zeroZip(t, "z.bin", 8<<20, 0)
	var es []entry
	for i := range 16 {
		es = append(es, entry{name: fmt.Sprintf("l%d.zip", i), data: layer})
	}
	nested := mkZip(t, es...)

	tests := []struct {
		name string
		zip  []byte
		rule Rule
	}{
		{"200MiB of zeros", honest, RuleArchiveBomb},
		{"lying declared size", lying, RuleArchiveMalform},
		{"nested layers", nested, RuleArchiveBomb},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.zip) > 4<<20 {
				t.Fatalf("test bomb unexpectedly large: %d bytes", len(tc.zip))
			}
			msg := mkMsg(attach("bomb.zip", "application/zip", tc.zip))
			p := DefaultPolicy()
			var v Verdict
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			v = p.Check(msg)
			runtime.ReadMemStats(&after)
			checkVerdict(t, v, tc.rule, "", 0)
			// Generous bound: the message is well under 1 MiB; expanding
			// the bomb would allocate hundreds of MiB.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("Check allocated %d bytes on a bomb", grew)
			}
		})
	}
}
