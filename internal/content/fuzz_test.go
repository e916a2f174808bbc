package content

import (
	"testing"
)

func FuzzCheck(f *testing.F) {
	f.Add([]byte("From: a@example.org\r\n\r\nhello\r\n"))
	f.Add(mkMsg(attach("invoice.pdf.exe", "application/pdf", []byte("x"))))
	f.Add(mkMsg(attach("a.zip", "application/zip", mkZip(f, entry{name: "in.zip", data: mkZip(f, entry{name: "x.scr", data: fakePE()})}))))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\n\r\nx\r\n--C--\r\n--B--\r\n"))
	p := DefaultPolicy()
	p.MaxExpanded = 1 << 20
	f.Fuzz(func(t *testing.T, msg []byte) {
		v := p.Check(msg)
		switch v.Action {
		case Accept, Reject:
		default:
			t.Fatalf("unexpected action %q", v.Action)
		}
		assertReplySafe(t, v.Reason)
		assertReplySafe(t, v.Part)
	})
}

func FuzzZip(f *testing.F) {
	f.Add(mkZip(f, entry{name: "a.txt", data: []byte("hello")}))
	f.Add(mkZip(f, entry{name: "in.zip", data: mkZip(f, entry{name: "x.txt", data: fakePE()})}))
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	p := DefaultPolicy().normalized()
	p.MaxExpanded = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		w := newWalker(p, data, true)
		w.inspectZip(data, []string{"f.zip"}, 1)
		if w.expanded > p.MaxExpanded {
			t.Fatalf("expanded %d > budget %d", w.expanded, p.MaxExpanded)
		}
		for _, v := range w.hits {
			assertReplySafe(t, v.Reason)
			assertReplySafe(t, v.Part)
		}
	})
}
