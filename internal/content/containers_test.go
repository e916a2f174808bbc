package content

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

type tarEntry struct {
	name string
	data []byte
	typ  byte // 0: regular file
	link string
}

// mkTar builds a tar archive in the given format (ustar, PAX or GNU).
func mkTar(t testing.TB, format tar.Format, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o644, Format: format, ModTime: time.Unix(0, 0)}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mkGz gzips data; name, if set, goes into the gzip header.
func mkGz(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Name = name
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawZip writes one entry with an arbitrary method and flags and raw
// (already "compressed") bytes: how an LZMA (14), PPMd (98) or deflate64
// (9) entry looks to a reader without that decompressor.
func rawZip(t testing.TB, name string, method uint16, flags uint16, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	fh := &zip.FileHeader{Name: name, Method: method, Flags: flags,
		CompressedSize64: uint64(len(raw)), UncompressedSize64: uint64(len(raw)) * 2}
	w, err := zw.CreateRaw(fh)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestContainers(t *testing.T) {
	pe := fakePE()
	exeTar := mkTar(t, tar.FormatUSTAR, tarEntry{name: "docs/readme.txt", data: []byte("hello")}, tarEntry{name: "setup.exe", data: pe})
	longName := strings.Repeat("d/", 80) + "invoice.pdf.exe"
	paxTar := mkTar(t, tar.FormatPAX, tarEntry{name: longName, data: []byte("x")})
	gnuTar := mkTar(t, tar.FormatGNU, tarEntry{name: strings.Repeat("e", 120) + ".js", data: []byte("x")})
	peTar := mkTar(t, tar.FormatUSTAR, tarEntry{name: "readme.txt", data: pe})
	docsTar := mkTar(t, tar.FormatPAX, tarEntry{name: "a.txt", data: []byte("a")}, tarEntry{name: "dir/", typ: tar.TypeDir}, tarEntry{name: "b.pdf", data: pdf})
	linkTar := mkTar(t, tar.FormatUSTAR, tarEntry{name: "invoice.pdf", typ: tar.TypeSymlink, link: "payload/run.bat"})
	docx := mkZip(t, entry{name: "[Content_Types].xml", data: []byte("<Types/>")}, entry{name: "word/document.xml", data: []byte("<w:document/>")})
	xlsx := mkZip(t, entry{name: "[Content_Types].xml", data: []byte("<Types/>")}, entry{name: "xl/workbook.xml", data: []byte("<workbook/>")}, entry{name: "xl/worksheets/sheet1.xml", data: bytes.Repeat([]byte("<row/>"), 2000)})
	scrZip := mkZip(t, entry{name: "x.scr", data: []byte("x")})
	jsTar := mkTar(t, tar.FormatUSTAR, tarEntry{name: "x.js", data: []byte("x")})
	lzma := rawZip(t, "report.pdf", 14, 0, []byte("\x09\x14\x05\x00]\x00\x00\x80\x00garbage"))
	ppmd := rawZip(t, "report.pdf", 98, 0, []byte("garbage"))
	deflate64 := rawZip(t, "report.pdf", 9, 0, []byte("garbage"))
	aes := rawZip(t, "report.pdf", 99, 1, []byte("garbage"))
	encrypted := mkZip(t, entry{name: "report.pdf", data: pdf, encrypted: true})
	gzPE := mkGz(t, "", pe)
	badCRC := mkGz(t, "", []byte("hello hello hello"))
	badCRC[len(badCRC)-8] ^= 0xff
	truncated := mkGz(t, "", bytes.Repeat([]byte("some text "), 1000))
	truncated = truncated[:len(truncated)/2]
	// zip(1) > tar.gz: gzip(2) > tar(3) > zip(4) > zip(5): one level too deep.
	tooDeep := mkZip(t, entry{name: "a.tar.gz", data: mkGz(t, "", mkTar(t, tar.FormatUSTAR,
		tarEntry{name: "b.zip", data: mkZip(t, entry{name: "c.zip", data: mkZip(t, entry{name: "ok.txt", data: []byte("ok")})})}))})
	// The same, one level less: at the limit.
	atLimit := mkZip(t, entry{name: "a.tar.gz", data: mkGz(t, "", mkTar(t, tar.FormatUSTAR,
		tarEntry{name: "b.zip", data: mkZip(t, entry{name: "ok.txt", data: []byte("ok")})}))})
	gz5 := []byte("plain")
	for range 5 {
		gz5 = mkGz(t, "", gz5)
	}
	svgPlain := []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red" opacity="0.5"/><a href="https://example.org/">x</a></svg>`)
	svgScript := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>location='https://phish.example/'</script></svg>`)
	svgOnload := []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="fetch('x')"></svg>`)
	svgEntityJS := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><a href="&#106;ava&#x09;script:alert(1)"><text>hi</text></a></svg>`)
	svgForeign := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><form action="https://phish.example/"><input name="pw"/></form></foreignObject></svg>`)

	tests := []struct {
		name     string
		msg      []byte
		pol      func(*Policy)
		wantRule Rule
		wantPart string
		action   Action
	}{
		// Ordinary attachments pass.
		{name: "pdf", msg: mkMsg(attach("report.pdf", "application/pdf", pdf))},
		{name: "docx is a zip", msg: mkMsg(attach("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", docx))},
		{name: "xlsx is a zip", msg: mkMsg(attach("sheet.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", xlsx))},
		{name: "harmless tar", msg: mkMsg(attach("docs.tar", "application/x-tar", docsTar))},
		{name: "harmless tar.gz", msg: mkMsg(attach("docs.tar.gz", "application/gzip", mkGz(t, "docs.tar", docsTar)))},
		{name: "harmless gz", msg: mkMsg(attach("log.txt.gz", "application/gzip", mkGz(t, "log.txt", bytes.Repeat([]byte("log line\n"), 5000))))},
		{name: "harmless bz2", msg: mkMsg(attach("report.txt.bz2", "application/x-bzip2", readTestdata(t, "report.txt.bz2")))},
		{name: "plain svg", msg: mkMsg(attach("logo.svg", "image/svg+xml", svgPlain))},

		// tar: ustar, pax and GNU names.
		{name: "exe in tar", msg: mkMsg(attach("a.tar", "application/x-tar", exeTar)), wantRule: RuleBlockedExt, wantPart: "a.tar > setup.exe"},
		{name: "tar by magic under another name", msg: mkMsg(attach("a.dat", "application/octet-stream", exeTar)), wantRule: RuleBlockedExt, wantPart: "a.dat > setup.exe"},
		{name: "pax long name", msg: mkMsg(attach("a.tar", "application/x-tar", paxTar)), wantRule: RuleDoubleExt},
		{name: "gnu long name", msg: mkMsg(attach("a.tar", "application/x-tar", gnuTar)), wantRule: RuleBlockedExt},
		{name: "PE renamed in tar", msg: mkMsg(attach("a.tar", "application/x-tar", peTar)), wantRule: RuleExecutableMagic, wantPart: "a.tar > readme.txt"},
		{name: "symlink target in tar", msg: mkMsg(attach("a.tar", "application/x-tar", linkTar)), wantRule: RuleBlockedExt},

		// gzip: the header's name, else the stripped name.
		{name: "exe in tar.gz", msg: mkMsg(attach("a.tar.gz", "application/gzip", mkGz(t, "", exeTar))), wantRule: RuleBlockedExt, wantPart: "a.tar.gz > a.tar > setup.exe"},
		{name: "exe in tgz", msg: mkMsg(attach("a.tgz", "application/x-gtar", mkGz(t, "", exeTar))), wantRule: RuleBlockedExt, wantPart: "a.tgz > a.tar > setup.exe"},
		{name: "gz header name", msg: mkMsg(attach("report.gz", "application/gzip", mkGz(t, "setup.exe", []byte("x")))), wantRule: RuleBlockedExt, wantPart: "report.gz > setup.exe"},
		{name: "gz stripped name", msg: mkMsg(attach("setup.exe.gz", "application/gzip", mkGz(t, "", []byte("x")))), wantRule: RuleBlockedExt, wantPart: "setup.exe.gz > setup.exe"},
		{name: "gz of PE named txt", msg: mkMsg(attach("notes.txt.gz", "application/gzip", gzPE)), wantRule: RuleExecutableMagic, wantPart: "notes.txt.gz > notes.txt"},
		{name: "gz by magic only", msg: mkMsg(attach("data.bin", "application/octet-stream", gzPE)), wantRule: RuleExecutableMagic},
		{name: "gz bad crc", msg: mkMsg(attach("a.txt.gz", "application/gzip", badCRC)), wantRule: RuleArchiveMalform},
		{name: "gz truncated", msg: mkMsg(attach("a.txt.gz", "application/gzip", truncated)), wantRule: RuleArchiveMalform},
		{name: "gz name but not gzip", msg: mkMsg(attach("a.txt.gz", "application/gzip", []byte("plain text, not gzip"))), wantRule: RuleArchiveMalform},
		{name: "svgz with script", msg: mkMsg(attach("logo.svgz", "image/svg+xml", mkGz(t, "", svgScript))), wantRule: RuleActiveContent, wantPart: "logo.svgz > logo.svg"},

		// Any nesting.
		{name: "zip in tar.gz", msg: mkMsg(attach("a.tar.gz", "application/gzip", mkGz(t, "", mkTar(t, tar.FormatPAX, tarEntry{name: "docs.zip", data: scrZip})))), wantRule: RuleBlockedExt, wantPart: "a.tar.gz > a.tar > docs.zip > x.scr"},
		{name: "tar in zip", msg: mkMsg(attach("a.zip", "application/zip", mkZip(t, entry{name: "inner.tar", data: jsTar}))), wantRule: RuleBlockedExt, wantPart: "a.zip > inner.tar > x.js"},
		{name: "tar.gz in zip", msg: mkMsg(attach("a.zip", "application/zip", mkZip(t, entry{name: "inner.tgz", data: mkGz(t, "", jsTar)}))), wantRule: RuleBlockedExt, wantPart: "a.zip > inner.tgz > inner.tar > x.js"},
		{name: "gz in gz", msg: mkMsg(attach("a.gz", "application/gzip", mkGz(t, "b.gz", mkGz(t, "run.bat", []byte("x"))))), wantRule: RuleBlockedExt, wantPart: "a.gz > b.gz > run.bat"},
		{name: "bz2 tar", msg: mkMsg(attach("setup.tar.bz2", "application/x-bzip2", readTestdata(t, "setup.tar.bz2"))), wantRule: RuleBlockedExt, wantPart: "setup.tar.bz2 > setup.tar > bin/setup.exe"},
		{name: "bz2 of PE named txt", msg: mkMsg(attach("notes.txt.bz2", "application/x-bzip2", readTestdata(t, "notes.txt.bz2"))), wantRule: RuleExecutableMagic},
		{name: "bz2 in zip", msg: mkMsg(attach("a.zip", "application/zip", mkZip(t, entry{name: "setup.tar.bz2", data: readTestdata(t, "setup.tar.bz2")}))), wantRule: RuleBlockedExt},
		{name: "nested beyond depth", msg: mkMsg(attach("a.zip", "application/zip", tooDeep)), wantRule: RuleArchiveTooDeep},
		{name: "nested to the limit", msg: mkMsg(attach("a.zip", "application/zip", atLimit))},
		{name: "gz five deep", msg: mkMsg(attach("a.gz", "application/gzip", gz5)), wantRule: RuleArchiveTooDeep},

		// What cannot be inspected.
		{name: "LZMA zip entry", msg: mkMsg(attach("a.zip", "application/zip", lzma)), wantRule: RuleArchiveUnsupported, wantPart: "a.zip > report.pdf"},
		{name: "PPMd zip entry", msg: mkMsg(attach("a.zip", "application/zip", ppmd)), wantRule: RuleArchiveUnsupported},
		{name: "deflate64 zip entry", msg: mkMsg(attach("a.zip", "application/zip", deflate64)), wantRule: RuleArchiveUnsupported},
		{name: "AES zip entry", msg: mkMsg(attach("a.zip", "application/zip", aes)), wantRule: RuleArchiveEncrypted},
		{name: "encrypted zip entry", msg: mkMsg(attach("a.zip", "application/zip", encrypted)), wantRule: RuleArchiveEncrypted},
		{name: "LZMA entry in tar.gz", msg: mkMsg(attach("a.tgz", "application/gzip", mkGz(t, "", mkTar(t, tar.FormatUSTAR, tarEntry{name: "x.zip", data: lzma})))), wantRule: RuleArchiveUnsupported},
		{name: "7z by magic", msg: mkMsg(attach("photos.dat", "application/octet-stream", []byte("7z\xbc\xaf\x27\x1c\x00\x04rest"))), wantRule: RuleArchiveUnsupported},
		{name: "rar by name", msg: mkMsg(attach("photos.rar", "application/vnd.rar", []byte("whatever"))), wantRule: RuleArchiveUnsupported},
		{name: "xz in tar", msg: mkMsg(attach("a.tar", "application/x-tar", mkTar(t, tar.FormatUSTAR, tarEntry{name: "b.xz", data: []byte("\xfd7zXZ\x00rest")}))), wantRule: RuleArchiveUnsupported, wantPart: "a.tar > b.xz"},
		{name: "uninspectable accepted", msg: mkMsg(attach("photos.7z", "application/x-7z-compressed", []byte("7z\xbc\xaf\x27\x1c"))), pol: func(p *Policy) { p.Uninspectable = Accept }},
		{name: "uninspectable held", msg: mkMsg(attach("a.zip", "application/zip", lzma)), pol: func(p *Policy) { p.Uninspectable = Hold }, wantRule: RuleArchiveUnsupported, action: Hold},
		{name: "held uninspectable, rejected exe: reject wins", msg: mkMsg(attach("a.zip", "application/zip", lzma), attach("b.exe", "application/octet-stream", []byte("x"))), pol: func(p *Policy) { p.Uninspectable = Hold }, wantRule: RuleBlockedExt},
		{name: "entry budget over tar", msg: mkMsg(attach("a.tar", "application/x-tar", exeTar)), pol: func(p *Policy) { p.MaxEntries = 1; p.BlockedExt = map[string]bool{} }, wantRule: RuleArchiveBomb},

		// SVG with active content.
		{name: "svg script", msg: mkMsg(attach("invoice.svg", "image/svg+xml", svgScript)), wantRule: RuleActiveContent},
		{name: "svg onload", msg: mkMsg(attach("invoice.svg", "image/svg+xml", svgOnload)), wantRule: RuleActiveContent},
		{name: "svg encoded javascript link", msg: mkMsg(attach("invoice.svg", "image/svg+xml", svgEntityJS)), wantRule: RuleActiveContent},
		{name: "svg foreignObject form", msg: mkMsg(attach("invoice.svg", "image/svg+xml", svgForeign)), wantRule: RuleActiveContent},
		{name: "svg sniffed without name", msg: mkMsg(part{ctype: "application/octet-stream", body: svgScript}), wantRule: RuleActiveContent},
		{name: "svg in zip", msg: mkMsg(attach("a.zip", "application/zip", mkZip(t, entry{name: "scan.svg", data: svgOnload}))), wantRule: RuleActiveContent, wantPart: "a.zip > scan.svg"},
		{name: "html body with inline svg is not sniffed", msg: mkMsg(part{ctype: "text/html", cte: "7bit", body: []byte("<html><body><svg onload=\"x\"></svg></body></html>")})},

		// Disguised carriers by magic.
		{name: "OneNote named pdf", msg: mkMsg(attach("scan.pdf", "application/pdf", append(append([]byte{}, oneNoteMagic...), make([]byte, 64)...))), wantRule: RuleExecutableMagic},
		{name: "shortcut named txt in zip", msg: mkMsg(attach("a.zip", "application/zip", mkZip(t, entry{name: "readme.txt", data: append(append([]byte{}, lnkMagic...), make([]byte, 64)...)}))), wantRule: RuleExecutableMagic},
		{name: "OneNote allowed by override", msg: mkMsg(attach("notes.one", "application/onenote", append(append([]byte{}, oneNoteMagic...), make([]byte, 64)...))), pol: func(p *Policy) { delete(p.BlockedExt, "one") }},
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

// TestNewDefaultExtensions: every extension added to the default list is
// blocked, as an attachment and inside a tar.gz.
func TestNewDefaultExtensions(t *testing.T) {
	for _, ext := range []string{"one", "onepkg", "xll", "url", "lnk", "iso", "img", "vhd", "vhdx", "hta",
		"wsf", "msc", "msi", "msix", "appx", "appinstaller", "cpl", "jnlp", "library-ms",
		"searchConnector-ms", "settingcontent-ms", "chm", "reg", "ps1", "psm1", "vbe", "jse", "wsh",
		"scf", "inf", "application", "gadget", "diagcab", "rdp", "iqy", "slk", "appref-ms", "website"} {
		t.Run(ext, func(t *testing.T) {
			name := "Invoice." + ext
			v := DefaultPolicy().Check(mkMsg(attach(name, "application/octet-stream", []byte("x"))))
			checkVerdict(t, v, RuleBlockedExt, name, 0)
			tgz := mkGz(t, "", mkTar(t, tar.FormatUSTAR, tarEntry{name: name, data: []byte("x")}))
			v = DefaultPolicy().Check(mkMsg(attach("a.tgz", "application/gzip", tgz)))
			checkVerdict(t, v, RuleBlockedExt, "a.tgz > a.tar > "+name, 0)
		})
	}
	// Macro-enabled Office files are not blocked by default (see lists.go)
	// but can be.
	docm := mkMsg(attach("budget.xlsm", "application/vnd.ms-excel.sheet.macroEnabled.12", mkZip(t, entry{name: "xl/workbook.xml", data: []byte("<x/>")})))
	checkVerdict(t, DefaultPolicy().Check(docm), "", "", 0)
	checkVerdict(t, DefaultPolicy().With(Overrides{Block: []string{".XLSM"}}).Check(docm), RuleBlockedExt, "", 0)
}

// multiGzBomb returns a multi-member gzip stream expanding to members MiB
// of zeros: each member is the same 1 MiB of zeros, so a 1 GiB bomb is
// built (and stored) in about 1 MB without ever expanding it.
func multiGzBomb(t testing.TB, members int) []byte {
	t.Helper()
	var m bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&m, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(m.Bytes(), members)
}

// TestGzipBomb: a gzip stream that expands to 1 GiB, and a gzip of such a
// stream that expands (twice over) to 10 GiB, are cut off after about
// 1 MiB of output by the ratio meter and refused as archive.bomb, cheaply.
// So is a stream with an honest ratio that merely exceeds the budget.
func TestGzipBomb(t *testing.T) {
	oneGiB := multiGzBomb(t, 1024)
	tenGiB := mkGz(t, "zeros.gz", multiGzBomb(t, 10240))
	// Random-ish text expands about 3x: over a 1 MiB budget, under the ratio.
	var text bytes.Buffer
	for i := 0; text.Len() < 3<<20; i++ {
		text.WriteString(strings.Repeat(string(rune('a'+i%26)), i%97) + " " + time.Unix(int64(i)*7919, 0).UTC().String() + "\n")
	}
	overBudget := mkGz(t, "log.txt", text.Bytes())
	tests := []struct {
		name   string
		data   []byte
		budget int64
		reason string
	}{
		{"1 GiB of zeros", oneGiB, 0, "compression ratio"},
		{"10 GiB through two layers", tenGiB, 0, "compression ratio"},
		{"over the byte budget", overBudget, 1 << 20, "beyond the inspection limit"},
		{"1 GiB inside a tar.gz in a zip", mkZip(t, entry{name: "x.tgz", data: mkGz(t, "", mkTar(t, tar.FormatUSTAR, tarEntry{name: "z.gz", data: oneGiB}))}), 0, "compression ratio"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.data) > 2<<20 {
				t.Fatalf("test bomb unexpectedly large: %d bytes", len(tc.data))
			}
			msg := mkMsg(attach("bomb.gz", "application/gzip", tc.data))
			p := DefaultPolicy()
			if tc.budget > 0 {
				p.MaxExpanded = tc.budget
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			v := p.Check(msg)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			checkVerdict(t, v, RuleArchiveBomb, "", 0)
			if !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("Reason %q, want it to say %q", v.Reason, tc.reason)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
				t.Errorf("Check allocated %d bytes on a bomb", grew)
			}
			if took > 5*time.Second {
				t.Errorf("Check took %v on a bomb", took)
			}
		})
	}
}

func TestAttachmentsInContainers(t *testing.T) {
	tgz := mkGz(t, "", mkTar(t, tar.FormatUSTAR, tarEntry{name: "x.txt", data: []byte("hello")}))
	msg := mkMsg(attach("a.tgz", "application/gzip", tgz))
	msg = append(msg[:len(msg)-len("--BOUND--\r\n")], []byte("--BOUND\r\nContent-Type: text/plain\r\n\r\n"+uuencode("u.bin", []byte("abc"))+"--BOUND--\r\n")...)
	atts, err := Attachments(msg, DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range atts {
		got = append(got, a.Path)
	}
	want := []string{"part 1 (text/plain)", "a.tgz", "a.tgz > a.tar", "a.tgz > a.tar > x.txt", "part 3 (text/plain)", "part 3 (text/plain) > u.bin"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
