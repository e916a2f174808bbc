package content

import (
	"bytes"
	"testing"
)

// BenchmarkCheck measures the end-of-DATA attachment check on typical
// messages: a plain text mail, one with a 200 kB PDF, one with a zip of ten
// documents, and one carrying an .exe (refused).
func BenchmarkCheck(b *testing.B) {
	pdf := append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte("stream data 0123456789\n"), 9000)...)
	var docs []entry
	for i := 0; i < 10; i++ {
		docs = append(docs, entry{name: "doc" + string(rune('a'+i)) + ".docx", data: bytes.Repeat([]byte("text "), 4000)})
	}
	cases := []struct {
		name string
		msg  []byte
	}{
		{"plain", []byte("From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\n" + string(bytes.Repeat([]byte("hello world\r\n"), 100)))},
		{"pdf-200k", mkMsg(attach("report.pdf", "application/pdf", pdf))},
		{"zip-10-docs", mkMsg(attach("docs.zip", "application/zip", mkZip(b, docs...)))},
		{"exe-refused", mkMsg(attach("setup.exe", "application/octet-stream", fakePE()))},
	}
	p := DefaultPolicy()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.msg)))
			b.ReportAllocs()
			for b.Loop() {
				p.Check(c.msg)
			}
		})
	}
}
