package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestQueueCapRefusesWith452: when the queue reaches its byte cap, MAIL is
// refused with 452 4.3.1 — and every message that got 250 is still there.
func TestQueueCapRefusesWith452(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "max_bytes", "60000")
		// far.test goes to a closed port: mail stays queued (deferred).
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	in.addUser("alice@ours.test", pw)
	in.start()
	host, port, _ := strings.Cut(in.submission, ":")
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", 250) // 16 kB
	accepted, refused := 0, ""
	for i := 0; i < 10 && refused == ""; i++ {
		out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
			"--auth-password", pw, "--from", "alice@ours.test", "--to", "x@far.test", "--body", body)
		if code == 0 {
			accepted++
			continue
		}
		refused = replyTo(out, "MAIL FROM")
		if !strings.HasPrefix(refused, "4") && !strings.HasPrefix(refused, "5") {
			t.Logf("send %d failed after MAIL:\n%s", i, out)
		}
	}
	if !strings.HasPrefix(refused, "452 4.3.1") {
		t.Fatalf("after %d accepted, want 452 4.3.1 at MAIL, got %q", accepted, refused)
	}
	if accepted < 2 {
		t.Fatalf("only %d accepted before the cap", accepted)
	}
	if n := in.queueCount("--from", "alice@ours.test"); n != accepted {
		t.Errorf("queue has %d messages, %d were acknowledged", n, accepted)
	}
}

// TestHeldRetention: held mail older than held_retention is deleted (and
// the deletion logged); other mail stays.
func TestHeldRetention(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	in.addUser("alice@ours.test", pw)
	in.start()
	host, port, _ := strings.Cut(in.submission, ":")
	for i := 0; i < 3; i++ {
		if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
			"--auth-password", pw, "--from", "alice@ours.test", "--to", "x@far.test"); code != 0 {
			t.Fatalf("send: %s", out)
		}
	}
	in.mustCLI("", "queue", "hold", "--from", "alice@ours.test", "--older-than", "0s", "--reason", "evidence")
	if n := in.queueCount("--state", "held"); n != 3 {
		t.Fatalf("%d held, want 3", n)
	}
	in.stop()
	time.Sleep(1100 * time.Millisecond)
	in.cfgEdit(func(cfg string) string { return setKey(cfg, "held_retention", `"1s"`) })
	in.start()
	if !waitFor(10*time.Second, func() bool { return in.queueCount("--state", "held") == 0 }) {
		t.Fatalf("held mail not expired: %d left", in.queueCount("--state", "held"))
	}
	if !strings.Contains(in.log(), `"msg":"held mail expired","stage":"queue","count":3`) {
		t.Errorf("expiry not logged with its count:\n%s", in.logTail(10))
	}
}
