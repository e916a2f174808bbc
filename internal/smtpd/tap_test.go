package smtpd

import (
	"net"
	"strings"
	"testing"
)

func TestRoutedMailbox(t *testing.T) {
	tests := []struct {
		arg, want string
		ok        bool
	}{
		{"TO:<@a.test:user@b.test>", "user@b.test", true},
		{"to:<@a.test,@c.test:user@b.test> NOTIFY=NEVER", "user@b.test", true},
		{"TO: <@a.test:\"x y\"@b.test>", "x y@b.test", true},
		{"TO:@a.test:user@b.test", "user@b.test", true},
		{"TO:<user@b.test>", "", false},
		{"TO:<@broken>", "", false},
		{"FROM:<@a:b@c>", "", false},
	}
	for _, tc := range tests {
		got, ok := routedMailbox(tc.arg, "TO:")
		if ok != tc.ok || got != tc.want {
			t.Errorf("routedMailbox(%q) = %q,%v want %q,%v", tc.arg, got, ok, tc.want, tc.ok)
		}
	}
}

// fakeConn feeds scripted client bytes and records server writes.
type fakeConn struct{ net.Conn }

func TestTapFollowsDataAndBdat(t *testing.T) {
	tp := newTap(fakeConn{}, false)
	feed := func(s string) { tp.scan([]byte(s)) }
	reply := func(s string) { tp.observeReply([]byte(s)) }
	feed("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<@r.test:u@ours.test>\r\nDATA\r\n")
	reply("354 go ahead")
	// A body line that looks like a routed RCPT must not be recorded.
	feed("Subject: x\r\n\r\nRCPT TO:<@evil:body@ours.test>\r\n.\r\n")
	// BDAT content is skipped by size, even when it spans reads.
	feed("BDAT 30 LAST\r\nRCPT TO:<@e:chunk@ours.t")
	feed("est>\r\n")
	feed("RCPT TO:<@r2:after@ours.test>\r\n")
	if !tp.takeRouted("u@ours.test") {
		t.Error("routed recipient before DATA not seen")
	}
	if tp.takeRouted("u@ours.test") {
		t.Error("observation not consumed")
	}
	if tp.takeRouted("body@ours.test") || tp.takeRouted("chunk@ours.test") {
		t.Error("message content was taken for commands")
	}
	if !tp.takeRouted("AFTER@ours.test") {
		t.Error("routed recipient after BDAT not seen (case-insensitive)")
	}
	feed("STARTTLS\r\n")
	reply("220 ready")
	feed("RCPT TO:<@x:cipher@ours.test>\r\n")
	if tp.takeRouted("cipher@ours.test") {
		t.Error("tap still scanning after STARTTLS")
	}
}

func TestTapFloodMarksAllRouted(t *testing.T) {
	tp := newTap(fakeConn{}, false)
	var b strings.Builder
	for i := 0; i < tapMaxRouted+1; i++ {
		b.WriteString("RCPT TO:<@r:x@ours.test>\r\n")
	}
	tp.scan([]byte(b.String()))
	if !tp.takeRouted("innocent@ours.test") {
		t.Error("after a flood of routed paths every recipient must count as routed")
	}
}

func TestTapLongLineIgnored(t *testing.T) {
	tp := newTap(fakeConn{}, false)
	tp.scan([]byte("RCPT TO:<@r:" + strings.Repeat("a", 5000) + "@ours.test>\r\nRCPT TO:<@r:ok@ours.test>\r\n"))
	if !tp.takeRouted("ok@ours.test") {
		t.Error("line after an over-long line not parsed")
	}
	if len(tp.line) != 0 {
		t.Error("line buffer not reset")
	}
}

// FuzzTapScan: arbitrary client bytes never panic the tap, its buffers
// stay bounded.
func FuzzTapScan(f *testing.F) {
	f.Add([]byte("RCPT TO:<@a:b@c>\r\nDATA\r\n"), []byte("354 go"))
	f.Add([]byte("BDAT 5\r\nabcdeRCPT TO:<@x,@y:\"q\\\"z\"@c>\r\n"), []byte("250 ok"))
	f.Add([]byte("STARTTLS\r\n\x16\x03\x01"), []byte("220 go"))
	f.Fuzz(func(t *testing.T, in, reply []byte) {
		tp := newTap(fakeConn{}, false)
		half := len(in) / 2
		tp.scan(in[:half])
		tp.observeReply(reply)
		tp.scan(in[half:])
		if len(tp.line) > tapMaxLine || len(tp.routed) > tapMaxRouted {
			t.Fatalf("unbounded state: line %d routed %d", len(tp.line), len(tp.routed))
		}
	})
}
