package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// queueIDs lists the queued message IDs, oldest first.
func (in *instance) queueIDs() []string {
	in.t.Helper()
	var items []struct {
		ID string `json:"id"`
	}
	out := in.mustCLI("", "queue", "list", "--json")
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		in.t.Fatalf("queue list --json: %v\n%s", err, out)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

// exitCode runs a mamori subcommand and returns its output and exit status.
func (in *instance) exitCode(args ...string) (string, int) {
	in.t.Helper()
	out, err := in.cli("", args...)
	if err == nil {
		return out, 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		in.t.Fatalf("mamori %v: %v", args, err)
	}
	return out, ee.ExitCode()
}

// TestQueueCheckRepair: a byte of the queue log damaged while the server is
// stopped costs exactly the message it is in. The server still starts and
// serves the others, naming the lost message in its log; `mamori queue
// check` refuses while the server runs, names the lost message (exit 1);
// --repair rewrites a clean log and keeps the damaged segment aside; after
// a restart the remaining messages are all there and the log is clean.
func TestQueueCheckRepair(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		// far.test goes to a closed port: the mail stays queued.
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	in.addUser("alice@ours.test", pw)
	in.start()
	host, port, _ := strings.Cut(in.submission, ":")
	for i := range 3 {
		if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
			"--auth-password", pw, "--from", "alice@ours.test", "--to", "x@far.test",
			"--header", fmt.Sprintf("Subject: check %d", i), "--body", fmt.Sprintf("BODY-MARKER-%d %s", i, strings.Repeat("x", 500))); code != 0 {
			t.Fatalf("send %d: %s", i, out)
		}
	}
	in.mustCLI("", "queue", "hold", "--from", "alice@ours.test", "--reason", "evidence")
	ids := in.queueIDs()
	if len(ids) != 3 {
		t.Fatalf("queued %v, want 3", ids)
	}
	if out, code := in.exitCode("queue", "check"); code != 2 || !strings.Contains(out, "server is running") {
		t.Fatalf("queue check while the server runs: exit %d\n%s", code, out)
	}
	in.stop()

	// Damage one byte in the body of the second message.
	queueDir := filepath.Join(in.dir, "data", "queue")
	segs, _ := filepath.Glob(filepath.Join(queueDir, "*.wal"))
	damaged := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte("BODY-MARKER-1")); i >= 0 {
			b[i+3] ^= 0x20
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			damaged = true
		}
	}
	if !damaged {
		t.Fatal("message body not found in the queue log")
	}
	lost := ids[1]
	rest := []string{ids[0], ids[2]}

	// The server starts anyway, serves the intact mail and says what was lost.
	in.start()
	if got := in.queueIDs(); !slices.Equal(got, rest) {
		t.Fatalf("after damage, server lists %v, want %v", got, rest)
	}
	if !strings.Contains(in.log(), `"level":"ERROR"`) || !strings.Contains(in.log(), `"lost_ids":["`+lost+`"]`) {
		t.Fatalf("start-up log does not name the lost message %s:\n%s", lost, in.logTail(20))
	}
	in.stop()

	out, code := in.exitCode("queue", "check")
	t.Logf("queue check:\n%s", out)
	if code != 1 || !strings.Contains(out, lost) || !strings.Contains(out, "lost messages: 1") {
		t.Fatalf("queue check: exit %d, want 1 naming %s\n%s", code, lost, out)
	}
	out, code = in.exitCode("queue", "check", "--repair")
	t.Logf("queue check --repair:\n%s", out)
	if code != 1 || !strings.Contains(out, "repaired") {
		t.Fatalf("queue check --repair: exit %d\n%s", code, out)
	}
	if saved, _ := filepath.Glob(filepath.Join(queueDir, "damaged", "*.wal")); len(saved) == 0 {
		t.Fatal("no damaged segment kept in queue/damaged")
	}
	out, code = in.exitCode("queue", "check", "--json")
	var rep struct {
		Clean    bool `json:"clean"`
		Messages int  `json:"messages"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.Clean || rep.Messages != 2 {
		t.Fatalf("queue check after repair: exit %d, %v\n%s", code, err, out)
	}

	logBefore := len(in.log())
	in.start()
	if got := in.queueIDs(); !slices.Equal(got, rest) {
		t.Fatalf("after repair, server lists %v, want %v", got, rest)
	}
	if after := in.log()[logBefore:]; strings.Contains(after, "DAMAGED") || strings.Contains(after, "lost_ids") {
		t.Fatalf("repaired log still reported damaged:\n%s", after)
	}
	for _, id := range rest {
		if body := in.mustCLI("", "queue", "show", id, "--body"); !strings.Contains(body, "BODY-MARKER-") {
			t.Fatalf("body of %s after repair:\n%s", id, body)
		}
	}
}
