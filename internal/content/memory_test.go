package content

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"math/rand"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// sparse returns n bytes of low-entropy data: one random byte in 48, so
// it compresses well but stays under maxRatio (the shape of the hostile
// review's message).
func sparse(n int) []byte {
	data := make([]byte, n)
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < n; i += 48 {
		data[i] = byte(rnd.Intn(256))
	}
	return data
}

// storedZip is a zip with one stored (uncompressed) entry.
func storedZip(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return zb.Bytes()
}

// fastGz gzips at BestSpeed (building test input must stay quick).
func fastGz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// embed wraps msg as a message/rfc822 attachment of a new message,
// renaming msg's boundaries so that they differ from the new one's.
func embed(msg []byte) []byte {
	msg = bytes.ReplaceAll(msg, []byte("BOUND"), []byte("xBOUND"))
	return mkMsg(part{ctype: "message/rfc822", cte: "8bit", body: msg})
}

// noise returns n random (incompressible) bytes.
func noise(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(2)).Read(b)
	return b
}

// checkAlloc runs Check and returns the bytes it allocated. TotalAlloc
// counts every allocation, freed or not, so it is an upper bound on the
// heap growth during Check, and it does not depend on GC timing.
func checkAlloc(p Policy, msg []byte) (Verdict, int64) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v := p.Check(msg)
	runtime.ReadMemStats(&after)
	return v, int64(after.TotalAlloc - before.TotalAlloc)
}

// TestCheckMemoryBound is the regression test for the hostile review of
// issue 12 item 7: a 3.8 MB message (a zip inside gzip) made Check hold
// 64 MiB and allocate 220 MiB. Every message here must stay within
// Policy.MemoryBound, which is what smtpd reserves.
func TestCheckMemoryBound(t *testing.T) {
	accept := DefaultPolicy()
	accept.Uninspectable = Accept
	small := DefaultPolicy()
	small.MaxHeld = 1 << 20

	bigZipGz := fastGz(t, storedZip(t, "report.txt", sparse(24<<20)))
	fitZip := mkZip(t, entry{name: "notes.txt", data: noise(2 << 20)}, entry{name: "setup.pdf", data: fakePE()})
	fitZipTgz := fastGz(t, mkTar(t, tar.FormatPAX, tarEntry{name: "bundle.zip", data: fitZip}))
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg">` + strings.Repeat(`<Rect width="1" height="1"/><text>A &amp; B &#x41;</text>`+"\n", 80000) + `</svg>`)
	nested := mkMsg(attach("data.bin", "application/octet-stream", sparse(3<<20)))
	for range 4 {
		nested = embed(nested)
	}

	var manyEntries bytes.Buffer
	zw := zip.NewWriter(&manyEntries)
	for i := range 40000 {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: strconv.Itoa(i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		p        Policy
		msg      []byte
		wantRule Rule
		want     Action
	}{
		{"review: zip in gzip, default", DefaultPolicy(),
			mkMsg(attach("data.zip.gz", "application/gzip", bigZipGz)), RuleArchiveBomb, Reject},
		{"review: zip in gzip, uninspectable accepted", accept,
			mkMsg(attach("data.zip.gz", "application/gzip", bigZipGz)), "", Accept},
		{"zip in tar.gz within MaxHeld is inspected", DefaultPolicy(),
			mkMsg(attach("bundle.tgz", "application/gzip", fitZipTgz)), RuleExecutableMagic, Reject},
		{"zip in tar.gz over a small MaxHeld", small,
			mkMsg(attach("bundle.tgz", "application/gzip", fitZipTgz)), RuleArchiveBomb, Reject},
		{"svgz over MaxHeld", DefaultPolicy(),
			mkMsg(attach("map.svgz", "image/svg+xml", fastGz(t, bytes.Repeat(svg, 2)))), RuleArchiveBomb, Reject},
		{"large SVG part", DefaultPolicy(),
			mkMsg(attach("map.svg", "image/svg+xml", svg)), "", Accept},
		{"large plain attachment", DefaultPolicy(),
			mkMsg(attach("data.bin", "application/octet-stream", sparse(6<<20))), "", Accept},
		{"zip directory with 40000 entries", DefaultPolicy(),
			mkMsg(attach("many.zip", "application/zip", manyEntries.Bytes())), RuleArchiveBomb, Reject},
		{"SVG part in 8bit", DefaultPolicy(),
			mkMsg(part{ctype: "image/svg+xml", disp: "inline; filename=map.svg", cte: "8bit", body: svg}), "", Accept},
		{"text part full of a base64 block", DefaultPolicy(),
			mkMsg(part{ctype: "text/plain", cte: "8bit", body: []byte("begin-base64 644 data.bin\n" +
				strings.Repeat(strings.Repeat("QUFB", 19)+"\n", 60000) + "====\n")}), "", Accept},
		{"bzip2 tables over a small MaxHeld", small,
			mkMsg(attach("report.txt.bz2", "application/x-bzip2", readTestdata(t, "report.txt.bz2"))), RuleArchiveBomb, Reject},
		{"bzip2 within MaxHeld", DefaultPolicy(),
			mkMsg(attach("report.txt.bz2", "application/x-bzip2", readTestdata(t, "report.txt.bz2"))), "", Accept},
		{"embedded messages four deep", DefaultPolicy(), nested, "", Accept},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, alloc := checkAlloc(tc.p, tc.msg)
			if v.Action != tc.want || v.Rule != tc.wantRule {
				t.Errorf("verdict %v %s (%s), want %v %s", v.Action, v.Rule, v.Reason, tc.want, tc.wantRule)
			}
			bound := tc.p.MemoryBound(len(tc.msg))
			t.Logf("message %d KiB: allocated %d KiB, bound %d KiB", len(tc.msg)>>10, alloc>>10, bound>>10)
			if alloc > bound {
				t.Errorf("Check allocated %d bytes for a %d-byte message, over its bound %d", alloc, len(tc.msg), bound)
			}
		})
	}
}

func TestDomainPoliciesMemoryBound(t *testing.T) {
	big := DefaultPolicy()
	big.MaxHeld = 64 << 20
	d := DomainPolicies{Default: DefaultPolicy(), Domains: map[string]Policy{"big.test": big}}
	if got, want := d.MemoryBound(1000), big.MemoryBound(1000); got != want {
		t.Errorf("DomainPolicies.MemoryBound = %d, want the largest policy's %d", got, want)
	}
	if got, want := (Policy{}).MemoryBound(1000), int64(4*1000+2*defaultMaxHeld+2<<20); got != want {
		t.Errorf("zero Policy MemoryBound = %d, want %d (defaults)", got, want)
	}
}

// TestActiveSVGOnePass covers the one-pass lower-casing and reference
// decoding that replaced the copy-per-step version, and a nested SVG read
// through the held buffer.
func TestActiveSVGOnePass(t *testing.T) {
	for _, tc := range []struct {
		svg  string
		want string
	}{
		{`<svg><a href="&#x4A;AVA&#x53;cript:x">`, "a script link"},
		{`<svg><a href="JAVA` + strings.Repeat("\n", 100000) + `SCRIPT:x">`, "a script link"},
		{`<SVG><SCRIPT>x</SCRIPT></SVG>`, "a script"},
		{`<svg><rect ONLOAD   ="x"/>`, "an event handler"},
		{`<svg>&amp;lt;script&#</svg>`, ""},
		{`<svg><text>&#1114112;&#x110000;</text></svg>`, ""},
	} {
		if got := activeSVG([]byte(tc.svg)); got != tc.want {
			t.Errorf("activeSVG(%.40q) = %q, want %q", tc.svg, got, tc.want)
		}
	}
	svgz := fastGz(t, []byte(`<svg xmlns="http://www.w3.org/2000/svg">`+strings.Repeat("<g/>", 100000)+`<script>x</script></svg>`))
	v := DefaultPolicy().Check(mkMsg(attach("map.svgz", "image/svg+xml", svgz)))
	checkVerdict(t, v, RuleActiveContent, "map.svgz > map.svg", Reject)
}
