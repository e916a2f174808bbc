package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testdns"
)

// TestDKIMBetweenInstancesAndDMARC: instance A signs its users' mail with
// a key from `mamori dkim keygen`; instance B, resolving through a test DNS
// server where A's key, SPF and DMARC records are published, adds
// Authentication-Results with dkim=pass, spf=pass and dmarc=pass. A forger
// using A's domain in From is refused by B under p=reject.
func TestDKIMBetweenInstancesAndDMARC(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	b := newInstance(t, "other.test", func(cfg string) string {
		return setKey(cfg, "resolver", fmt.Sprintf("%q", dns.Addr))
	})
	a := newInstance(t, "ours.test", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"other.test": b.smtp})
	})
	rr := a.dkimKeygen("ours.test")
	for _, r := range []string{rr,
		`ours.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`_dmarc.ours.test. 60 IN TXT "v=DMARC1; p=reject"`,
	} {
		if err := dns.Add(r); err != nil {
			t.Fatalf("add %s: %v", r, err)
		}
	}
	a.addUser("alice@ours.test", pw)
	b.addUser("bob@other.test", pw)
	a.start()
	b.start()

	host, port, _ := strings.Cut(a.submission, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "alice@ours.test",
		"--auth-password", pw, "--from", "alice@ours.test", "--to", "bob@other.test", "--h-Subject", "signed hello"); code != 0 {
		t.Fatalf("send: %s", out)
	}
	got := b.waitMail("bob@other.test", 1, 30*time.Second)[0]
	for _, want := range []string{"DKIM-Signature:", "d=ours.test", "Authentication-Results: mx.other.test",
		"dkim=pass", "spf=pass", "dmarc=pass"} {
		if !strings.Contains(got, want) {
			t.Errorf("B's copy lacks %q:\n%.1500s", want, got)
		}
	}

	// A forged Authentication-Results in B's own name is removed (RFC 8601 §5).
	host, port, _ = strings.Cut(b.smtp, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "x@elsewhere.test", "--to", "bob@other.test",
		"--add-header", "Authentication-Results: mx.other.test; dkim=pass header.d=bank.test",
		"--h-Subject", "pre-stamped"); code != 0 {
		t.Fatalf("send pre-stamped: %s", out)
	}
	for _, m := range b.waitMail("bob@other.test", 2, 30*time.Second) {
		if strings.Contains(m, "pre-stamped") {
			if strings.Contains(m, "header.d=bank.test") || strings.Count(m, "Authentication-Results: mx.other.test") != 1 {
				t.Errorf("forged Authentication-Results survived:\n%.1500s", m)
			}
		}
	}

	// A forger: envelope from elsewhere, From: ours.test, no signature.
	out, code := swaks(t, "--server", host, "--port", port, "--from", "x@elsewhere.test", "--h-From", "ceo@ours.test",
		"--to", "bob@other.test", "--h-Subject", "wire the money")
	if code == 0 || !strings.Contains(out, "550 5.7.1") || !strings.Contains(out, "DMARC") {
		t.Errorf("forged From under p=reject: want 550 5.7.1 naming DMARC, exit %d:\n%s", code, out)
	}
}
