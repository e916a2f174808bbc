package queue

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkEnqueueParallel measures accepted messages per second with fsync
// on, at the session counts of the Postfix comparison (420-650 msgs/s).
func BenchmarkEnqueueParallel(b *testing.B) {
	body := bodyFor(0, 1024)
	for _, sessions := range []int{10, 50} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			q := openQueue(b, b.TempDir(), Options{})
			m := msg("sender@example.com", "rcpt@example.net")
			b.SetParallelism((sessions + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := q.Enqueue(m, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkEnqueueSerial is one session: every enqueue pays a full fsync.
func BenchmarkEnqueueSerial(b *testing.B) {
	body := bodyFor(0, 1024)
	q := openQueue(b, b.TempDir(), Options{})
	m := msg("sender@example.com", "rcpt@example.net")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := q.Enqueue(m, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkFilter100k: a From filter over 100,000 queued messages, 10% of
// them from one abuser (scenario S8).
func BenchmarkFilter100k(b *testing.B) {
	q := openQueue(b, b.TempDir(), Options{NoSync: true})
	body := bodyFor(0, 512)
	for i := range 100_000 {
		from := fmt.Sprintf("user%d@example.com", i%5000)
		if i%10 == 0 {
			from = "abuser@evil.test"
		}
		m := msg(from, fmt.Sprintf("r%d@dest%d.test", i, i%100))
		m.Subject = fmt.Sprintf("message %d", i)
		if _, err := q.Enqueue(m, body); err != nil {
			b.Fatal(err)
		}
	}
	f := Filter{From: "abuser@evil.test"}
	for b.Loop() {
		if n := len(q.List(f)); n != 10_000 {
			b.Fatalf("List matched %d, want 10000", n)
		}
	}
}
