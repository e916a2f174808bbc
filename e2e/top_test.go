package e2e

// End-to-end proofs of `mamori top` (issue 14): a worm on the trusted
// network shows up in the live view as isolated and among the top
// senders, in the plain snapshot, in its JSON, and on the full screen of
// a real terminal (tmux), which q leaves as it found it.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
)

// topWorm starts a server trusting 127.0.0.0/8 and makes 127.0.0.9 burst
// past msgs_per_minute (30) until the guard isolates it; the held mail
// and the isolation are settled when it returns.
func topWorm(t *testing.T) (*instance, string) {
	t.Helper()
	requireTool(t, "python3")
	far := startCountingServer(t)
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
		return setRoutes(cfg, map[string]string{"far.test": far.addr})
	})
	in.start()
	const worm = "127.0.0.9"
	res, err := runSend(t, in.smtp, sendJob{src: worm, user: "-", from: "worm@ours.test",
		count: 45, conns: 2, rcpts: 2, rcptPrefix: "victim-", subject: "worm"})
	if err != nil {
		t.Fatal(err)
	}
	if res["250"] != 45 {
		t.Fatalf("worm replies %v, want 45 × 250 (held mail is accepted)", res)
	}
	if _, ok := isolationOf(in.guardList(), worm, ""); !ok {
		t.Fatalf("worm %s not isolated", worm)
	}
	// The guard holds what was still queued on its own goroutine: wait
	// until nothing of the worm's is neither held nor delivered.
	if !waitFor(30*time.Second, func() bool {
		return in.queueCount("--client-ip", worm) == in.queueCount("--client-ip", worm, "--state", "held")
	}) {
		t.Fatalf("worm's queued mail not held")
	}
	return in, worm
}

func TestTopOnce(t *testing.T) {
	in, worm := topWorm(t)

	out := in.mustCLI("", "top", "--once")
	if strings.Contains(out, "\x1b") {
		t.Errorf("top --once printed an escape sequence:\n%q", out)
	}
	// The worm is listed among the top senders by IP, marked isolated,
	// over its limit of 30 messages a minute, and in the guard's list.
	var senderLine, isoLine bool
	section := ""
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, " ") {
			section = l
			continue
		}
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(section, "top senders by IP") && len(f) > 0 && f[0] == worm:
			senderLine = strings.Contains(l, "ISOLATED") && strings.Contains(l, "trusted") && strings.Contains(l, "/30")
		case strings.HasPrefix(section, "isolated, suspended") && strings.Contains(l, "isolated  ip "+worm+" "):
			isoLine = strings.Contains(l, "rule rate.")
		}
	}
	if !senderLine || !isoLine {
		t.Errorf("top --once: worm %s as top sender %v, as isolated %v:\n%s", worm, senderLine, isoLine, out)
	}

	js := in.mustCLI("", "top", "--once", "--json")
	var v admin.Live
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("top --once --json: %v\n%s", err, js)
	}
	var top *admin.TopSender
	for i := range v.TopIPs {
		if v.TopIPs[i].Key == worm {
			top = &v.TopIPs[i]
		}
	}
	// 30 messages pass, the 31st trips the rule: the window holds about
	// 31 (a little less if the burst straddled a minute).
	if top == nil || !top.Trusted || !top.Isolated || top.LimitMsgs != 30 || top.LimitRcpts != 100 ||
		top.MsgsPerMin < 25 || top.MsgsPerMin > 31 || top.RcptsPerMin != 2*top.MsgsPerMin {
		t.Errorf("worm in top_ips: %+v (all: %+v)", top, v.TopIPs)
	}
	if len(v.Guard.Isolated) != 1 || v.Guard.Isolated[0].IP != worm {
		t.Errorf("guard.isolated = %+v, want %s only", v.Guard.Isolated, worm)
	}
	held := in.queueCount("--state", "held")
	if v.Queue.Messages["held"] != held || held < 45-31 {
		t.Errorf("queue.messages.held = %d, queue list says %d (worm sent 45, 30 allowed)", v.Queue.Messages["held"], held)
	}
	if v.Queue.Bytes["held"] <= int64(held)*50 {
		t.Errorf("queue.bytes.held = %d for %d messages", v.Queue.Bytes["held"], held)
	}
	var alerted bool
	for _, a := range v.Alerts {
		alerted = alerted || (a.Kind == "isolated" && a.IP == worm && a.Rule != "")
	}
	if !alerted {
		t.Errorf("no isolation alert for %s in %+v", worm, v.Alerts)
	}
	if v.Sessions == nil || v.Traffic == nil || v.TopUsers == nil {
		t.Errorf("sessions, traffic or top_users is null:\n%s", js)
	}
}

// TestTopInteractive runs `mamori top` in a real terminal (a detached
// tmux session of 80×24), reads the screen, and quits with q: the process
// exits 0 and the terminal is back from the alternate screen.
func TestTopInteractive(t *testing.T) {
	tmux := requireTool(t, "tmux")
	in, worm := topWorm(t)
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tm := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = append(os.Environ(), "TERM=xterm-256color")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// A placeholder first, so that the pane outlives mamori top (to read
	// its exit status) whenever that exits.
	tm("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "sleep 600")
	t.Cleanup(func() { exec.Command(tmux, "-S", sock, "kill-server").Run() })
	tm("set-option", "-t", "top", "remain-on-exit", "on")
	status := filepath.Join(t.TempDir(), "status")
	tm("respawn-pane", "-k", "-t", "top", "sh", "-c", `"$0" top --config "$1"; echo $? >"$2"`, mamoriBin, in.cfg, status)

	// The screen after about two refreshes.
	var screen string
	ok := waitFor(10*time.Second, func() bool {
		screen = tm("capture-pane", "-p", "-t", "top")
		return strings.Contains(screen, "ISOLATED") && strings.Contains(screen, "q: quit")
	})
	if !ok {
		t.Fatalf("screen after 10 s:\n%s", screen)
	}
	time.Sleep(2 * time.Second)
	screen = tm("capture-pane", "-p", "-t", "top")
	t.Logf("screen:\n%s", screen)
	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	if len(lines) > 24 {
		t.Errorf("%d lines on a 24-line terminal", len(lines))
	}
	var found bool
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == worm && strings.Contains(l, "ISOLATED") {
			found = true
		}
	}
	for _, want := range []string{"mamori top", "top senders by IP", "isolated, suspended, banned", "recent alerts", "isolated  ip " + worm} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q", want)
		}
	}
	if !found {
		t.Errorf("worm %s not shown as an isolated top sender", worm)
	}
	if alt := strings.TrimSpace(tm("display-message", "-p", "-t", "top", "#{alternate_on}")); alt != "1" {
		t.Errorf("alternate screen %q while running, want 1", alt)
	}

	tm("send-keys", "-t", "top", "q")
	var code []byte
	if !waitFor(5*time.Second, func() bool {
		code, _ = os.ReadFile(status)
		return len(code) > 0
	}) {
		t.Fatalf("top still running 5 s after q")
	}
	if c := strings.TrimSpace(string(code)); c != "0" {
		t.Errorf("top exited with %s after q, want 0", c)
	}
	// The terminal is back from the alternate screen: what top drew is gone.
	if alt := strings.TrimSpace(tm("display-message", "-p", "-t", "top", "#{alternate_on}")); alt != "0" {
		t.Errorf("alternate screen %q after q, want 0", alt)
	}
	if after := tm("capture-pane", "-p", "-t", "top"); strings.Contains(after, "top senders") {
		t.Errorf("top's screen still shown after q:\n%s", after)
	}
}
