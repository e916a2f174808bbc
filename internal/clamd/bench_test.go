package clamd_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/mamori-mail/mamori/internal/clamd"
	"github.com/mamori-mail/mamori/internal/clamd/clamdtest"
)

// BenchmarkScan streams a clean 20 kB message to a real clamd (started by
// the benchmark with the local test signatures) over its unix socket.
func BenchmarkScan(b *testing.B) {
	clamdtest.Binary(b)
	srv := clamdtest.Start(b, clamdtest.Options{})
	c := &clamd.Client{Addr: srv.Addr()}
	msg := append([]byte("From: a@example.org\r\nSubject: hi\r\n\r\n"), bytes.Repeat([]byte("a clean line of text\r\n"), 900)...)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		res, err := c.Scan(context.Background(), bytes.NewReader(msg))
		if err != nil || res.Infected {
			b.Fatalf("scan: %+v %v", res, err)
		}
	}
}
