package pop3d

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// poplibScript logs in with Python's poplib over POP3S, lists, downloads
// and deletes every message; then checks STLS on the plain port.
const poplibScript = `
import json, os, poplib, ssl
ctx = ssl.create_default_context(cafile=os.environ["CAFILE"])
out = {}
p = poplib.POP3_SSL("127.0.0.1", int(os.environ["POP3S_PORT"]), context=ctx, timeout=10)
out["capa"] = sorted(p.capa().keys())
p.user(os.environ["POP_USER"])
p.pass_(os.environ["POP_PASS"])
count, size = p.stat()
out["stat"] = [count, size]
out["list"] = [l.decode() for l in p.list()[1]]
out["uidl"] = [l.decode() for l in p.uidl()[1]]
out["messages"] = []
for i in range(1, count + 1):
    resp, lines, octets = p.retr(i)
    out["messages"].append(b"\r\n".join(lines).decode() + "\r\n")
    p.dele(i)
out["quit"] = p.quit().decode()

p = poplib.POP3("127.0.0.1", int(os.environ["POP3_PORT"]), timeout=10)
out["plain_capa"] = sorted(p.capa().keys())
p.stls(ctx)
out["tls_capa"] = sorted(p.capa().keys())
p.user(os.environ["POP_USER"])
p.pass_(os.environ["POP_PASS"])
out["stat_after"] = list(p.stat())
p.quit()
print(json.dumps(out))
`

func TestPythonPoplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatal("python3 is required (MAMORI_REQUIRE_TOOLS set) but not installed")
		}
		t.Skip("python3 not installed")
	}
	e := newEnv(t)
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	cmd := exec.Command(python, "-c", poplibScript)
	cmd.Env = append(os.Environ(), "CAFILE="+e.certFile, "POP3S_PORT="+port(e.pop3s), "POP3_PORT="+port(e.plain),
		"POP_USER="+alice, "POP_PASS="+alicePass)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("poplib: %v\n%s\n%s", err, out, stderr)
	}
	var res struct {
		Capa      []string `json:"capa"`
		Stat      []int    `json:"stat"`
		List      []string `json:"list"`
		UIDL      []string `json:"uidl"`
		Messages  []string `json:"messages"`
		Quit      string   `json:"quit"`
		PlainCapa []string `json:"plain_capa"`
		TLSCapa   []string `json:"tls_capa"`
		StatAfter []int    `json:"stat_after"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("poplib output %q: %v", out, err)
	}
	if !slices.Contains(res.Capa, "UIDL") || !slices.Contains(res.Capa, "SASL") || slices.Contains(res.Capa, "STLS") {
		t.Errorf("pop3s CAPA %q", res.Capa)
	}
	if !slices.Contains(res.PlainCapa, "STLS") || slices.Contains(res.PlainCapa, "USER") || !slices.Contains(res.TLSCapa, "USER") {
		t.Errorf("CAPA before STLS %q, after %q", res.PlainCapa, res.TLSCapa)
	}
	if len(res.Stat) != 2 || res.Stat[0] != len(seedMessages) || len(res.List) != len(seedMessages) || len(res.UIDL) != len(seedMessages) {
		t.Errorf("stat %v, list %q, uidl %q", res.Stat, res.List, res.UIDL)
	}
	if !slices.Equal(res.Messages, seedMessages) {
		t.Errorf("downloaded messages differ:\n got %q\nwant %q", res.Messages, seedMessages)
	}
	if !strings.HasPrefix(res.Quit, "+OK") || !slices.Equal(res.StatAfter, []int{0, 0}) {
		t.Errorf("quit %q, stat after %v", res.Quit, res.StatAfter)
	}
	if n := len(e.inbox(alice).Messages); n != 0 {
		t.Errorf("%d messages left in the store, want 0", n)
	}
}
