package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIncidentExport: a worm-like PC is isolated; `mamori incident export`
// writes its held mail as .eml, a timeline with the session summaries and
// the guard's decision, and a manifest whose SHA-256 sums check out with
// the standard tools — before anything is purged.
func TestIncidentExport(t *testing.T) {
	requireTool(t, "swaks")
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	in.start()
	host, port, _ := strings.Cut(in.smtp, ":")
	for i := 0; i < 34; i++ {
		if out, code := swaks(t, "--server", host, "--port", port, "--local-interface", "127.0.0.91",
			"--from", "worm@ours.test", "--to", "victim@far.test", "--h-Subject", "invoice"); code != 0 {
			t.Fatalf("send %d: %s", i, out)
		}
	}
	held := in.queueCount("--state", "held", "--client-ip", "127.0.0.91")
	if held < 4 {
		t.Fatalf("only %d held", held)
	}
	out := filepath.Join(t.TempDir(), "incident.tar.gz")
	in.mustCLI("", "incident", "export", "--since", "1h", "--client-ip", "127.0.0.91", "--out", out)

	dir := t.TempDir()
	if b, err := exec.Command("tar", "-xzf", out, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	var man struct {
		Messages int
		Files    []struct {
			Name   string
			Size   int64
			SHA256 string
		}
	}
	mb, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatalf("manifest: %v\n%s", err, mb)
	}
	if man.Messages != held {
		t.Errorf("manifest lists %d messages, %d are held", man.Messages, held)
	}
	// Check every sum with sha256sum, as an investigator would.
	var sums strings.Builder
	emls := 0
	for _, f := range man.Files {
		sums.WriteString(f.SHA256 + "  " + f.Name + "\n")
		if strings.HasSuffix(f.Name, ".eml") {
			emls++
		}
	}
	check := exec.Command("sha256sum", "-c", "-")
	check.Dir, check.Stdin = dir, strings.NewReader(sums.String())
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}
	if emls != held {
		t.Errorf("%d .eml files, %d held", emls, held)
	}
	tl, err := os.ReadFile(filepath.Join(dir, "timeline.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"session"`, `"kind":"guard"`, `"ip":"127.0.0.91"`, "isolated"} {
		if !strings.Contains(string(tl), want) {
			t.Errorf("timeline lacks %s:\n%.2000s", want, tl)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "messages"))
	if len(ents) > 0 {
		b, _ := os.ReadFile(filepath.Join(dir, "messages", ents[0].Name()))
		if !strings.Contains(string(b), "Subject: invoice") {
			t.Errorf("exported .eml is not the message:\n%.500s", b)
		}
	}
	// Evidence kept, now purge: the queue is empty of it, the archive stays.
	in.mustCLI("", "queue", "delete", "--state", "held", "--client-ip", "127.0.0.91", "--yes")
	if n := in.queueCount("--state", "held"); n != 0 {
		t.Errorf("%d held after purge", n)
	}
}
