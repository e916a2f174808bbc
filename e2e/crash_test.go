package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// streamScript sends messages from several threads over port 25, printing
// "ACK n" only after the server answered 250 to the message's DATA.
const streamScript = `
import smtplib, sys, threading
addr, total, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h, p = addr.split(":")
lock = threading.Lock()
def worker(k):
    try:
        s = smtplib.SMTP(h, int(p), timeout=10)
        s.ehlo("streamer.test")
        for i in range(k, total, threads):
            msg = "From: a@outside.test\r\nSubject: crash-%d\r\nMessage-ID: <crash-%d@outside.test>\r\n\r\nbody %d\r\n" % (i, i, i)
            s.sendmail("a@outside.test", ["sink@ours.test"], msg)
            with lock:
                print("ACK", i, flush=True)
    except Exception as e:
        with lock:
            print("ERR", k, type(e).__name__, flush=True)
threads_ = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in threads_: t.start()
for t in threads_: t.join()
`

// TestCrashSafety kills the server with SIGKILL while clients stream mail;
// after a restart every message that got a 250 is delivered, exactly once.
func TestCrashSafety(t *testing.T) {
	py := requireTool(t, "python3")
	// This test is about durability, not rate limits: let the streaming
	// client (an outsider on port 25) send far above the inbound limit.
	in := newInstance(t, "ours.test", func(cfg string) string {
		return strings.Replace(cfg, "[guard]\n", "[guard]\ninbound_msgs_per_minute = 1000000\ninbound_rcpts_per_minute = 1000000\n", 1)
	})
	in.addUser("sink@ours.test", pw)
	in.start()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", streamScript, in.smtp, "3000", "4")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "ACK" {
			acked[f[1]] = true
		}
		if !killed && len(acked) >= 300 {
			in.kill()
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("stream ended before the kill (%d acks)", len(acked))
	}
	t.Logf("%d messages acknowledged before SIGKILL", len(acked))

	in.start()
	deadline := time.Now().Add(60 * time.Second)
	re := regexp.MustCompile(`Subject: crash-(\d+)\r?\n`)
	for {
		seen := map[string]int{}
		for _, m := range readMaildir(in.maildirNew("sink@ours.test")) {
			if mm := re.FindStringSubmatch(m); mm != nil {
				seen[mm[1]]++
			}
		}
		missing := 0
		for id := range acked {
			if seen[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			dups := 0
			for id, n := range seen {
				if n > 1 {
					dups++
					t.Errorf("message crash-%s delivered %d times", id, n)
				}
			}
			t.Logf("all %d acknowledged messages delivered (%d in mailbox, %d duplicates)", len(acked), len(seen), dups)
			// Recovery must not trip over its own crash leftovers (a
			// half-written Maildir tmp/ file, a lease that was in flight).
			if strings.Contains(in.log(), `"msg":"deferred"`) {
				t.Errorf("local delivery deferred after the restart:\n%s", in.logTail(20))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages missing after restart\n%s", missing, len(acked), in.logTail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
