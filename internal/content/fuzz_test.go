package content

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"
)

func FuzzCheck(f *testing.F) {
	f.Add([]byte("From: a@example.org\r\n\r\nhello\r\n"))
	f.Add(mkMsg(attach("invoice.pdf.exe", "application/pdf", []byte("x"))))
	f.Add(mkMsg(attach("a.zip", "application/zip", mkZip(f, entry{name: "in.zip", data: mkZip(f, entry{name: "x.scr", data: fakePE()})}))))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\n\r\nx\r\n--C--\r\n--B--\r\n"))
	f.Add(mkMsg(attach("a.tar.gz", "application/gzip", mkGz(f, "", mkTar(f, tar.FormatPAX, tarEntry{name: "b.zip", data: mkZip(f, entry{name: "c.txt", data: []byte("c")})})))))
	f.Add(textMsg(uuencode("setup.exe", fakePE())))
	f.Add(textMsg(yencode("setup.bin", fakePE())))
	f.Add([]byte("Content-Type: text/plain\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a.pdf\r\n#86)C\r\n`\r\nend\r\n"))
	f.Add(mkMsg(attach("a.svg", "image/svg+xml", []byte(`<svg onload="x"/>`))))
	p := DefaultPolicy()
	p.MaxExpanded = 1 << 20
	f.Fuzz(func(t *testing.T, msg []byte) {
		v := p.Check(msg)
		switch v.Action {
		case Accept, Reject:
		default:
			t.Fatalf("unexpected action %v", v.Action)
		}
		assertReplySafe(t, v.Reason)
		assertReplySafe(t, v.Part)
	})
}

func FuzzZip(f *testing.F) {
	f.Add(mkZip(f, entry{name: "a.txt", data: []byte("hello")}))
	f.Add(mkZip(f, entry{name: "in.zip", data: mkZip(f, entry{name: "x.txt", data: fakePE()})}))
	f.Add(mkZip(f, entry{name: "in.tgz", data: mkGz(f, "", mkTar(f, tar.FormatUSTAR, tarEntry{name: "x.txt", data: fakePE()}))}))
	f.Add(rawZip(f, "a.pdf", 14, 0, []byte("x")))
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	p := DefaultPolicy().normalized()
	p.MaxExpanded = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		w := newWalker(p, data, true)
		w.inspectZip(data, []string{"f.zip"}, 1)
		checkWalk(t, w)
	})
}

// FuzzStream feeds arbitrary bytes to the gzip, bzip2 and tar readers
// (and whatever they nest): no panic, the budget holds, replies stay safe.
func FuzzStream(f *testing.F) {
	tr := mkTar(f, tar.FormatPAX, tarEntry{name: strings.Repeat("d/", 60) + "a.txt", data: []byte("a")}, tarEntry{name: "b.gz", data: mkGz(f, "b", []byte("b"))})
	f.Add(tr)
	f.Add(mkTar(f, tar.FormatGNU, tarEntry{name: strings.Repeat("g", 150), data: fakePE()}))
	f.Add(mkGz(f, "x.tar", tr))
	f.Add(mkGz(f, "", mkGz(f, "", []byte("zz"))))
	f.Add(multiGzBomb(f, 1)[:600])
	f.Add(readTestdata(f, "setup.tar.bz2"))
	f.Add(readTestdata(f, "notes.txt.bz2"))
	p := DefaultPolicy().normalized()
	p.MaxExpanded = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, kind := range []containerKind{kindGzip, kindBzip2, kindTar} {
			w := newWalker(p, data, false)
			w.inspectStream(kind, bytes.NewReader(data), []string{"f.tar.gz"}, []string{"f"}, 1)
			checkWalk(t, w)
		}
	})
}

func checkWalk(t *testing.T, w *walker) {
	t.Helper()
	if w.expanded > w.p.MaxExpanded {
		t.Fatalf("expanded %d > budget %d", w.expanded, w.p.MaxExpanded)
	}
	if w.entries > w.p.MaxEntries+1 {
		t.Fatalf("%d entries inspected, budget %d", w.entries, w.p.MaxEntries)
	}
	for _, v := range w.hits {
		assertReplySafe(t, v.Reason)
		assertReplySafe(t, v.Part)
	}
}

// FuzzUUDecode: the uuencode, base64 and yEnc block decoders never panic,
// never return more than maxEmbedded blocks or more bytes than they read,
// and round-trip what the reference encoder writes.
func FuzzUUDecode(f *testing.F) {
	f.Add([]byte(uuencode("a.exe", fakePE())), []byte("x"))
	f.Add([]byte(yencode("a.exe", fakePE())), []byte("yy"))
	f.Add([]byte("begin-base64 644 a\r\nQUJD\r\n====\r\n"), []byte{0, 255})
	f.Add([]byte("begin 0 x\r\nM\r\n"), []byte{})
	f.Fuzz(func(t *testing.T, body, data []byte) {
		blocks := findEmbedded(body)
		if len(blocks) > maxEmbedded {
			t.Fatalf("%d blocks", len(blocks))
		}
		total := 0
		for _, b := range blocks {
			total += len(b.data)
			if strings.Contains(b.name, "\n") {
				t.Fatalf("name %q spans lines", b.name)
			}
		}
		if total > len(body) {
			t.Fatalf("decoded %d bytes from %d", total, len(body))
		}
		got := findEmbedded([]byte(uuencode("f.bin", data)))
		if len(got) != 1 || !bytes.Equal(got[0].data, data) {
			t.Fatalf("uu round trip of %x failed: %+v", data, got)
		}
		got = findEmbedded([]byte(yencode("f.bin", data)))
		if len(got) != 1 || !bytes.Equal(got[0].data, data) {
			t.Fatalf("yEnc round trip of %x failed", data)
		}
	})
}

// FuzzActiveSVG: the SVG check never panics on any input.
func FuzzActiveSVG(f *testing.F) {
	f.Add([]byte(`<svg onload="x"/>`))
	f.Add([]byte(`<svg><a href="&#x6a;avascript:1">&#99999999999;&#;&amp;</a></svg>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		activeSVG(b)
		isSVG(b, nil, "")
	})
}
