package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestGuardStateSurvivesRestart: bans and isolations are in memory on the
// hot path but persisted; a clean restart keeps them (and a SIGKILL keeps
// what the last periodic save had).
func TestGuardStateSurvivesRestart(t *testing.T) {
	requireTool(t, "swaks")
	in := newInstance(t, "ours.test", func(cfg string) string {
		return setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
	})
	in.addUser("pc@ours.test", pw)
	in.start()
	in.mustCLI("", "guard", "ban", "127.0.0.77", "--for", "2h")
	// Isolate a trusted PC by exceeding its per-minute allowance.
	host, port, _ := strings.Cut(in.smtp, ":")
	for i := 0; i < 32; i++ {
		if out, code := swaks(t, "--server", host, "--port", port, "--local-interface", "127.0.0.78",
			"--from", "pc@ours.test", "--to", "pc@ours.test", "--h-Subject", "burst"); code != 0 {
			t.Fatalf("send %d: %s", i, out)
		}
	}
	before := in.guardList()
	if _, ok := isolationOf(before, "127.0.0.78", ""); !ok {
		t.Fatalf("127.0.0.78 not isolated before the restart: %+v", before)
	}
	in.stop()
	in.start()
	after := in.guardList()
	if _, ok := banOf(after, "127.0.0.77/32"); !ok {
		t.Errorf("ban lost across restart: %+v", after.Bans)
	}
	if _, ok := isolationOf(after, "127.0.0.78", ""); !ok {
		t.Errorf("isolation lost across restart: %+v", after.Isolated)
	}
	if g, _ := greetingFrom("127.0.0.77", in.smtp); !strings.HasPrefix(g, "554") {
		t.Errorf("banned client after restart got %q", g)
	}
	// Still isolated: a new message from the PC is held, not delivered.
	n := len(readMaildir(in.maildirNew("pc@ours.test")))
	if out, code := swaks(t, "--server", host, "--port", port, "--local-interface", "127.0.0.78",
		"--from", "pc@ours.test", "--to", "pc@ours.test", "--h-Subject", "after restart"); code != 0 {
		t.Fatalf("send after restart: %s", out)
	}
	time.Sleep(500 * time.Millisecond)
	if m := readMaildir(in.maildirNew("pc@ours.test")); len(m) != n {
		t.Errorf("isolated sender's mail delivered after restart (%d → %d)", n, len(m))
	}
	// At least the message over the limit before the restart (more when the
	// burst did not straddle a minute boundary) and the one after it.
	if c := in.queueCount("--state", "held", "--client-ip", "127.0.0.78"); c < 2 {
		t.Errorf("held count %d, want the over-limit messages held", c)
	}
}
