package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
)

func TestReadBodyBudget(t *testing.T) {
	s := New(Config{MaxInflightBytes: 400 << 10}, nil, nil, nil)
	small := strings.Repeat("x", 100<<10)
	b1 := s.newBudget(false)
	got, err := b1.readBody(strings.NewReader(small))
	if err != nil || string(got) != small {
		t.Fatalf("small body: err %v, %d bytes", err, len(got))
	}
	// Once joined, the reservation is the body itself.
	if s.bodyBytes.Load() != b1.reserved || b1.reserved != int64(len(small)) {
		t.Errorf("reserved %d, counter %d for a %d-byte body", b1.reserved, s.bodyBytes.Load(), len(small))
	}
	// While the first body is held, a second large one exceeds the budget.
	b2 := s.newBudget(false)
	if _, err = b2.readBody(bytes.NewReader(make([]byte, 1<<20))); !errors.Is(err, errBodyBudget) {
		t.Fatalf("over budget: err %v", err)
	}
	b2.release()
	b1.release()
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
	// The outsiders' share leaves a quarter for users: 300 KiB fits a
	// user's session but not an outsider's when 700 KiB are held.
	s.receiveLimit = 1 << 20
	held := s.newBudget(false)
	if !held.take(700 << 10) {
		t.Fatal("700 KiB of 1 MiB refused")
	}
	outsider := s.newBudget(true)
	if _, err := outsider.readBody(bytes.NewReader(make([]byte, 100<<10))); !errors.Is(err, errBodyBudget) {
		t.Errorf("outsider over its share: %v", err)
	}
	outsider.release()
	user := s.newBudget(false)
	if _, err := user.readBody(bytes.NewReader(make([]byte, 100<<10))); err != nil {
		t.Errorf("user within the budget: %v", err)
	}
	user.release()
	held.release()
	if n := s.bodyBytes.Load(); n != 0 {
		t.Errorf("budget not returned: %d", n)
	}
}

func TestMemoryPlan(t *testing.T) {
	scan4 := func(n int) int64 { return 4*int64(n) + 10<<20 }
	check := func(context.Context, guard.Sender, []string, []byte) content.Verdict { return content.Verdict{} }
	tests := []struct {
		name                  string
		cfg                   Config
		wantReceive, wantScan int64
		wantErr               bool
	}{
		{"no content check: all for bodies", Config{MaxInflightBytes: 100 << 20, MaxMessageBytes: 10 << 20}, 100 << 20, 0, false},
		{"default sizes", Config{MaxInflightBytes: 256 << 20, MaxMessageBytes: 25 << 20, Content: check, ContentMemory: scan4},
			256<<20 - 110<<20, 110 << 20, false},
		// 25 MiB: scan 110 MiB, and an outsider's 3/4 of the rest must
		// hold 50 MiB, so 176 MiB is just too small.
		{"too small for outsiders", Config{MaxInflightBytes: 176 << 20, MaxMessageBytes: 25 << 20, Content: check, ContentMemory: scan4}, 0, 0, true},
		{"just enough", Config{MaxInflightBytes: 110<<20 + 67<<20, MaxMessageBytes: 25 << 20, Content: check, ContentMemory: scan4},
			67 << 20, 110 << 20, false},
		{"no size limit: halves", Config{MaxInflightBytes: 100 << 20, Content: check, ContentMemory: scan4}, 50 << 20, 50 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.ContentMemory == nil {
				tt.cfg.ContentMemory = func(n int) int64 { return int64(n) }
			}
			r, sc, err := tt.cfg.memoryPlan()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (r != tt.wantReceive || sc != tt.wantScan) {
				t.Errorf("receive %d scan %d, want %d %d", r, sc, tt.wantReceive, tt.wantScan)
			}
			if tt.cfg.Validate() != nil != tt.wantErr {
				t.Errorf("Validate disagrees with memoryPlan")
			}
		})
	}
}

// TestContentChecksWaitForScanMemory: a content check reserves its worst
// case from the scan pool and waits while other checks hold it, instead of
// refusing the message its client has just sent in full. Here the pool
// fits one check at a time: the second message waits for the first check
// and is then accepted.
func TestContentChecksWaitForScanMemory(t *testing.T) {
	var mu sync.Mutex
	running, most := 0, 0
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	check := func(context.Context, guard.Sender, []string, []byte) content.Verdict {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		entered <- struct{}{}
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return content.Verdict{Action: content.Accept}
	}
	spool := &fuzzSpool{}
	srv := New(Config{
		Hostname: "mx.ours.test", Domain: "ours.test", MaxMessageBytes: 64 << 10, MaxLineLength: 1000,
		CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second, MaxInflightBytes: 1 << 20,
		Content: check, ContentMemory: func(int) int64 { return 100 << 10 },
	}, fuzzDir{}, spool, nil)
	l := &oneConnListener{c: make(chan net.Conn, 2), done: make(chan struct{})}
	served := make(chan struct{})
	go func() { srv.Serve(KindMX, l); close(served) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
		l.Close()
		<-served
	}()
	send := func(done chan<- string) {
		client, server := net.Pipe()
		defer client.Close()
		l.c <- pipeConn{server}
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(client)
		reply := func() string { return lastReplyLine(r) }
		reply()
		for _, c := range []string{"EHLO c.test", "MAIL FROM:<x@out.test>", "RCPT TO:<bob@ours.test>", "DATA"} {
			fmt.Fprintf(client, "%s\r\n", c)
			if got := reply(); got[0] != '2' && got[0] != '3' {
				done <- c + ": " + got
				return
			}
		}
		fmt.Fprintf(client, "From: x@out.test\r\nSubject: hi\r\n\r\nhello\r\n.\r\n")
		done <- reply()
	}
	done := make(chan string, 2)
	go send(done)
	<-entered // the first check holds the pool
	go send(done)
	select {
	case <-entered:
		t.Fatal("a second check started while the first held the whole scan pool")
	case got := <-done:
		t.Fatalf("second message answered while waiting for scan memory: %s", got)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	for range 2 {
		if got := <-done; !strings.HasPrefix(got, "250") {
			t.Errorf("reply %q, want 250", got)
		}
	}
	if most != 1 {
		t.Errorf("%d checks ran at once, want 1", most)
	}
	if n := srv.bodyBytes.Load(); n != 0 {
		t.Errorf("budget held after both sessions: %d", n)
	}
}

// TestBareLFCountsAgainstSize: bare LF becomes CRLF before anything else,
// and the size limit applies to the normalised message (what is stored and
// sent): a message that fits raw but not normalised gets 552 5.3.4 and is
// not queued; one that fits both is queued with CRLF line ends.
func TestBareLFCountsAgainstSize(t *testing.T) {
	head := "EHLO c.test\r\nMAIL FROM:<x@out.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\nFrom: x@out.test\r\n\r\n"
	// runSession's MaxMessageBytes is 64 KiB.
	msgs, out := runSession(t, []byte(head+strings.Repeat("a\n", 20000)))
	if len(msgs) != 1 || bytes.Contains(msgs[0].body, []byte("a\na")) {
		t.Fatalf("40 KB of bare-LF lines (60 KB normalised): queued %d; transcript:\n%s", len(msgs), out)
	}
	msgs, out = runSession(t, []byte(head+strings.Repeat("a\n", 30000)))
	if len(msgs) != 0 || !strings.Contains(out, "552 5.3.4") {
		t.Errorf("60 KB of bare-LF lines (90 KB normalised, over 64 KiB): queued %d; transcript:\n%s", len(msgs), out)
	}
}
