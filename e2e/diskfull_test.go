package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDiskFullAnswers452: the queue's filesystem really fills up (a 3 MiB
// tmpfs). The client gets 452 4.3.1, not a broken queue: after a restart,
// every message that got 250 is there, readable, and new mail is accepted
// again once space is freed.
func TestDiskFullAnswers452(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "min_free_bytes", "0") // test the write path itself, not the early check
		cfg = strings.Replace(cfg, "[guard]\n", "[guard]\ninbound_msgs_per_minute = 100000\ninbound_rcpts_per_minute = 100000\n", 1)
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	qdir := filepath.Join(in.dir, "data", "queue")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", qdir).CombinedOutput(); err != nil {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" && os.Geteuid() == 0 {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (%v): run as root", err)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", qdir).Run() })
	in.addUser("rcpt@ours.test", pw)
	in.start()

	// Each message ~64 kB; stop at the first refusal.
	script := `
import smtplib, sys
h, p = sys.argv[1].split(":")
body = ("x" * 76 + "\r\n") * 830
acked = 0
for i in range(200):
    try:
        s = smtplib.SMTP(h, int(p), timeout=20)
        s.ehlo("filler.test")
        s.sendmail("someone@outside.test", ["rcpt@ours.test"], "From: someone@outside.test\r\nSubject: fill %d\r\n\r\n%s" % (i, body))
        acked += 1
        s.quit()
    except smtplib.SMTPResponseException as e:
        print("REFUSED", e.smtp_code, e.smtp_error.decode())
        break
print("ACKED", acked)
`
	out, err := python(t, script, in.smtp)
	t.Logf("client: %s", strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if !strings.Contains(out, "REFUSED 452 4.3.1") {
		t.Fatalf("disk full: want a 452 4.3.1 refusal:\n%s\nlog:\n%s", out, in.logTail(15))
	}
	var acked int
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "ACKED "); ok {
			acked, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if acked < 3 {
		t.Fatalf("only %d messages fitted:\n%s", acked, out)
	}
	in.stop()
	in.start()
	queued := in.queueCount()
	delivered2 := len(readMaildir(in.maildirNew("rcpt@ours.test")))
	if !waitFor(20*time.Second, func() bool {
		delivered2 = len(readMaildir(in.maildirNew("rcpt@ours.test")))
		return delivered2 >= acked
	}) {
		t.Fatalf("after restart: %d acknowledged, %d delivered, %d queued\n%s", acked, delivered2, queued, in.logTail(20))
	}
	if strings.Contains(in.log(), "corrupt") {
		t.Errorf("the queue reported corruption:\n%s", in.logTail(20))
	}
	t.Logf("%d acknowledged, %d delivered after restart", acked, delivered2)
	for _, l := range strings.Split(in.log(), "\n") {
		if strings.Contains(l, "no space") || strings.Contains(l, "enqueue failed") {
			t.Logf("server: %.300s", l)
			break
		}
	}
}
