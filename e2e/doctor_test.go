package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/mamori-mail/mamori/internal/testdns"
)

// doctorReport is the JSON printed by `mamori doctor --json`.
type doctorReport struct {
	Checks []struct {
		Name, Subject, Status, Detail, Fix string
	} `json:"checks"`
	OK bool `json:"ok"`
}

// runDoctor runs `mamori doctor --json` and returns its report and exit code.
func runDoctor(t *testing.T, in *instance, probe string) (doctorReport, int, string) {
	t.Helper()
	cmd := exec.Command(mamoriBin, "doctor", "--json", "--probe", probe, "--timeout", "10s", "--config", in.cfg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("doctor: %v", err)
	}
	var rep doctorReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("doctor output is not the JSON report (exit %d): %v\n%s\nstderr: %s", code, err, out, stderr.String())
	}
	return rep, code, string(out)
}

// TestDoctor: against a running server whose DNS zone is right, `mamori
// doctor --json` exits 0 with every listener, the relay battery and the
// DNS records passing; with the DMARC record removed it exits 1 naming
// dmarc, and only dmarc.
func TestDoctor(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	in := newInstance(t, "doctor.test", func(cfg string) string {
		cfg = setKey(cfg, "resolver", fmt.Sprintf("%q", dns.Addr))
		return setKey(cfg, "public_ips", `["192.0.2.10"]`)
	})
	dkimRR := in.dkimKeygen("doctor.test")
	for _, r := range []string{
		dkimRR,
		"doctor.test. 60 IN MX 10 mx.doctor.test.",
		"mx.doctor.test. 60 IN A 192.0.2.10",
		"10.2.0.192.in-addr.arpa. 60 IN PTR mx.doctor.test.",
		`doctor.test. 60 IN TXT "v=spf1 mx ip4:192.0.2.10 -all"`,
		`_dmarc.doctor.test. 60 IN TXT "v=DMARC1; p=reject"`,
		// outbound25 is pointed at the server's own SMTP listener.
		"sink.test. 60 IN A 127.0.0.1",
	} {
		if err := dns.Add(r); err != nil {
			t.Fatalf("add %s: %v", r, err)
		}
	}
	in.start()
	_, port, _ := net.SplitHostPort(in.smtp)
	probe := "sink.test:" + port

	rep, code, raw := runDoctor(t, in, probe)
	if code != 0 || !rep.OK {
		t.Fatalf("doctor on a correct setup: exit %d, ok %v\n%s", code, rep.OK, raw)
	}
	status := map[string][]string{}
	for _, c := range rep.Checks {
		status[c.Name] = append(status[c.Name], c.Status)
	}
	want := map[string]string{"mx": "ok", "a": "ok", "ptr": "ok", "fcrdns": "ok", "spf": "ok", "dkim": "ok",
		"dmarc": "ok", "relay": "ok", "outbound25": "ok",
		"certificate": "warn", // init's certificate is self-signed
		"mta-sts":     "skip", "tls-rpt": "skip", "dnsbl": "skip"}
	for name, w := range want {
		if len(status[name]) == 0 {
			t.Errorf("no %s check in\n%s", name, raw)
		}
		for _, s := range status[name] {
			if s != w {
				t.Errorf("%s: %s, want %s", name, s, w)
			}
		}
	}
	// Every [listen] address of the instance answers its protocol.
	if got := status["listeners"]; len(got) != 8 || strings.Count(strings.Join(got, ","), "ok") != 8 {
		t.Errorf("listeners: %v, want 8 × ok\n%s", got, raw)
	}
	if t.Failed() {
		t.Fatalf("report:\n%s", raw)
	}

	dns.Remove("_dmarc.doctor.test")
	rep, code, raw = runDoctor(t, in, probe)
	if code != 1 || rep.OK {
		t.Fatalf("doctor without DMARC: exit %d, ok %v, want 1, false\n%s", code, rep.OK, raw)
	}
	var failed []string
	for _, c := range rep.Checks {
		if c.Status == "fail" {
			failed = append(failed, c.Name)
			if c.Name == "dmarc" && !strings.Contains(c.Fix, "_dmarc.doctor.test. IN TXT \"v=DMARC1;") {
				t.Errorf("dmarc fix %q is not the record to publish", c.Fix)
			}
		}
	}
	if strings.Join(failed, ",") != "dmarc" {
		t.Errorf("failed checks %v, want [dmarc]\n%s", failed, raw)
	}

	// The plain report names the failure and prints its fix.
	cmd := exec.Command(mamoriBin, "doctor", "--probe", probe, "--config", in.cfg)
	text, _ := cmd.Output()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(text), "FAIL  dmarc") ||
		!strings.Contains(string(text), "fix: _dmarc.doctor.test. IN TXT") {
		t.Errorf("plain report (exit %d):\n%s", cmd.ProcessState.ExitCode(), text)
	}
	t.Logf("plain report:\n%s", text)
}
