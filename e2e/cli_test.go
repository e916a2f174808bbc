package e2e

import (
	"encoding/json"
	"errors"
	"net/smtp"
	"os/exec"
	"strings"
	"testing"
)

// evilSubject carries a screen clear, a window-title change with BEL, a C1
// CSI and a right-to-left override (RFC 2047 encoded, as a worm would), and
// rawSubject the same kind of bytes unencoded.
const (
	evilSubject = "=?utf-8?q?invoice=1B[2J=1B]0;pwned=07=C2=9B31m=E2=80=AEfdp.exe?="
	evilDecoded = "invoice\x1b[2J\x1b]0;pwned\x07\u009b31m\u202efdp.exe"
)

// TestCLIFiltersAndTerminalSafety drives the real binary: filters and
// arguments that do not parse are an error with exit code 2 and a usage
// text (never a silent 0 or an ignored flag), and message text an outsider
// controls is printed with its control characters escaped, while --json
// keeps the raw value.
func TestCLIFiltersAndTerminalSafety(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
		// far.test goes to a closed port: the message stays queued.
		return setRoutes(cfg, map[string]string{"far.test": "127.0.0.1:9"})
	})
	in.start()

	c, err := smtp.Dial(in.smtp)
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: <pc17@ours.test>\r\nTo: <x@far.test>\r\nSubject: " + evilSubject + "\r\n\r\nhello\r\n"
	if err := c.Hello("pc17.ours.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("pc17@ours.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("x@far.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(msg))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	// Plain output: escaped, visibly.
	out := in.mustCLI("", "queue", "list")
	for _, raw := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
		if strings.Contains(out, raw) {
			t.Errorf("queue list printed a raw %q:\n%q", raw, out)
		}
	}
	if !strings.Contains(out, `invoice\x1b[2J\x1b]0;pw`) {
		t.Errorf("queue list does not show the escaped subject:\n%s", out)
	}
	// JSON: the raw value, but nothing a terminal would act on.
	js := in.mustCLI("", "queue", "list", "--json")
	for _, raw := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
		if strings.Contains(js, raw) {
			t.Errorf("queue list --json printed a raw %q", raw)
		}
	}
	var items []struct{ ID, Subject string }
	if err := json.Unmarshal([]byte(js), &items); err != nil || len(items) != 1 || items[0].Subject != evilDecoded {
		t.Fatalf("queue list --json: %v %+v, want the subject %q", err, items, evilDecoded)
	}
	show := in.mustCLI("", "queue", "show", items[0].ID)
	if strings.ContainsAny(show, "\x1b\x07\u009b\u202e") {
		t.Errorf("queue show printed raw control characters: %q", show)
	}

	// Arguments that do not parse: exit 2, the reason, and how to use it.
	for _, args := range [][]string{
		{"queue", "list", "--client-ip", "10.0.0.0/33"},
		{"queue", "list", "--count", "--client-ip", "not-an-ip"},
		{"queue", "list", "--state", "frozen"},
		{"queue", "list", "--older-than", "3 days"},
		{"queue", "list", "--older-than", "NaNd"},
		{"queue", "list", "--larger-than", "big"},
		{"queue", "list", "--smaller-than", "0"},
		{"queue", "list", "--subject", "a\x1bb"},
		{"queue", "list", "--clientip", "127.0.0.1"},   // misspelt flag
		{"queue", "list", "--reason", "x"},             // a flag of another subcommand
		{"queue", "delete", "--count", "--all"},        // same
		{"queue", "delete"},                            // no filter, no --all
		{"queue", "release", "nope"},                   // not a queue ID
		{"queue", "show", "nope"},                      // same
		{"queue", "retry", "--older-than", "0s"},       // selects everything: needs --all
		{"queue", "frobnicate"},                        // unknown subcommand
		{"guard", "ban", "10.0.0.0/33"},                // bad CIDR
		{"guard", "ban", "192.0.2.1", "--for", "NaNd"}, // bad duration
		{"guard", "ban", "192.0.2.1", "--for", "0s"},   // zero
		{"guard", "ban", "192.0.2.1", "--for", "-1h"},  // negative
		{"guard", "unban", "192.0.2.1", "--for", "1h"},
		{"guard", "release", "10.0.0.0/8"}, // a CIDR is not a release target
		{"guard", "release", "no-at-sign"},
		{"guard", "list", "extra"},
		{"user", "list", "--days", "30"}, // --days without --stale
		{"user", "list", "--stale", "--days", "-1"},
		{"domain", "list", "extra"},
		{"alias", "list", "--password-stdin"},
	} {
		out, err := in.cli("", args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("mamori %s: %v, want exit code 2\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if !strings.Contains(out, "mamori:") || len(strings.TrimSpace(out)) < 20 {
			t.Errorf("mamori %s: no clear message: %q", strings.Join(args, " "), out)
		}
		if args[0] == "queue" && len(args) > 2 && args[1] == "list" && !strings.Contains(out, "usage:") {
			t.Errorf("mamori %s: no usage text:\n%s", strings.Join(args, " "), out)
		}
	}
	if n := in.queueCount(); n != 1 {
		t.Fatalf("refused commands changed the queue: %d messages", n)
	}
	// The same filters, well formed, work.
	if n := in.queueCount("--client-ip", "127.0.0.0/8", "--older-than", "0s", "--larger-than", "10", "--smaller-than", "1m"); n != 1 {
		t.Errorf("good filter: %d, want 1", n)
	}
	// A filter given to the API directly goes through the same parser.
	if n := in.queueCount("--client-ip", "::ffff:127.0.0.1"); n != 1 {
		t.Errorf("mapped client IP: %d, want 1", n)
	}
}
