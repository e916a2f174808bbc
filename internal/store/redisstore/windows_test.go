package redisstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"
)

// TestAddWindows: counts add up within a bucket, roll over with Redis's
// clock, and a key never holds more than three fields per window however
// long it lives (no bucket left behind).
func TestAddWindows(t *testing.T) { testAddWindows(t, testutil.StartRedis(t).URL) }

func testAddWindows(t *testing.T, url string) {
	s := open(t, url, "a")
	ctx := context.Background()
	widths := []int64{60000, 2} // a minute, and 2 ms: rolls over during the test
	var last [][]Window
	for i := 0; i < 200; i++ {
		now, ws, err := s.AddWindows(ctx, widths, []string{"f:pc@corp.test"}, [][]int64{{1, 1}})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(time.UnixMilli(now)); d < -time.Minute || d > time.Minute {
			t.Fatalf("Redis time %d is not now", now)
		}
		last = ws
		if i%20 == 0 {
			time.Sleep(3 * time.Millisecond)
		}
	}
	if got := last[0][0].Cur + last[0][0].Prev; got != 200 {
		t.Errorf("minute window counts %d of 200 adds", got)
	}
	if last[0][1].Cur >= 200 {
		t.Errorf("2 ms window never rolled over: %+v", last[0][1])
	}
	n, err := s.rdb.HLen(ctx, "{"+s.prefix+"}:c:f:pc@corp.test").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("counter key has %d fields, want 3 per window (6)", n)
	}
	ttl, _ := s.rdb.PTTL(ctx, "{"+s.prefix+"}:c:f:pc@corp.test").Result()
	if ttl <= 0 || ttl > 2*time.Minute {
		t.Errorf("counter key TTL %v, want at most twice the longest window", ttl)
	}
}

func TestRedactAndErrorsHidePasswords(t *testing.T) {
	for _, raw := range []string{
		"redis://u:s3cret@host:6379/0",
		"redis://u:pa/ss3cret@host:6379/0",
		"redis://:s3cret@host:badport/0",
		"redis+sentinel://u:s3cret@h1:26379,h2:26379/mymaster",
	} {
		if got := Redact(raw); strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q", raw, got)
		}
		if _, _, err := newClient(raw); err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("newClient(%q) error shows the password: %v", raw, err)
		}
	}
}

// TestClaimNode: a second process with the same node name is reported;
// a clean stop frees the name for the next one.
func TestClaimNode(t *testing.T) { testClaimNode(t, testutil.StartRedis(t).URL) }

func testClaimNode(t *testing.T, url string) {
	a, b := open(t, url, "mx1"), open(t, url, "mx1")
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() { a.ClaimNode(ctxA, nil); close(doneA) }()
	time.Sleep(100 * time.Millisecond)
	clashed := make(chan string, 1)
	ctxB, stopB := context.WithCancel(context.Background())
	doneB := make(chan struct{})
	go func() { b.ClaimNode(ctxB, func(n string) { clashed <- n }); close(doneB) }()
	select {
	case n := <-clashed:
		if n != "mx1" {
			t.Errorf("clash reported for %q", n)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("two processes named mx1: no clash reported")
	}
	stopB()
	<-doneB
	stopA()
	<-doneA
	c := open(t, url, "mx1")
	ctxC, stopC := context.WithCancel(context.Background())
	defer stopC()
	clashedC := make(chan string, 1)
	go c.ClaimNode(ctxC, func(n string) { clashedC <- n })
	select {
	case <-clashedC:
		t.Error("the name was not freed by a clean stop")
	case <-time.After(300 * time.Millisecond):
	}
}
