package logscan

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

// benchLog is one busy day (about 100 MB) of the benchmark's mix.
func benchLog(b *testing.B) []byte {
	var buf bytes.Buffer
	g := loggen.New(1, day)
	for h := range 24 {
		t := day.Add(time.Duration(h) * time.Hour)
		g.Hour(t, 5000, 20)
		if _, err := g.WriteBefore(&buf, t.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := g.Flush(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkScan(b *testing.B) {
	data := benchLog(b)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Scan([]Input{{"maillog", bytes.NewReader(data)}}, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanFile scans the file named by LOGSCAN_BENCH_FILE as
// mamori logscan does (e.g. one written by bench/loggen).
func BenchmarkScanFile(b *testing.B) {
	p := os.Getenv("LOGSCAN_BENCH_FILE")
	if p == "" {
		b.Skip("LOGSCAN_BENCH_FILE not set")
	}
	st, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	for b.Loop() {
		if _, err := ScanFiles([]string{p}, nil, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePostfix(b *testing.B) {
	data := benchLog(b)
	lines := bytes.Split(data[:min(len(data), 8<<20)], []byte{'\n'})
	b.SetBytes(int64(min(len(data), 8<<20)))
	b.ResetTimer()
	for b.Loop() {
		for _, l := range lines {
			opts.Clock.ParsePostfix(l)
		}
	}
}
