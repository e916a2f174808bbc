package queue_test

import (
	"testing"

	"github.com/mamori-mail/mamori/internal/queue"
)

func TestStorageCheck(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.Open(dir, queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Enqueue(queue.Meta{From: "a@x.test", Rcpts: []queue.Rcpt{{Addr: "b@y.test"}}}, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		maxBytes, minFree int64
		size              int64
		ok                bool
	}{
		{"no limits", 0, 0, 1 << 40, true},
		{"fits under the cap", 100000, 0, 1000, true},
		{"over the cap", 6000, 0, 2000, false},
		{"free space ample", 0, 1, 1000, true},
		{"free space short", 0, 1 << 62, 0, false},
	}
	for _, tc := range tests {
		if err := q.Space(tc.maxBytes, tc.minFree).Check(tc.size); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
