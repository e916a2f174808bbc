package msgauth

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"

	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/testdns"
)

var (
	goodIP = netip.MustParseAddr("127.0.0.1")
	badIP  = netip.MustParseAddr("127.0.0.2")
)

// startDNS starts a test DNS server with records and returns it and a fresh
// resolver pointed at it (fresh, so no cache is shared between cases).
func startDNS(t *testing.T, records ...string) (*testdns.Server, *resolver.Resolver) {
	t.Helper()
	s, err := testdns.Start(nil)
	if err != nil {
		t.Fatalf("testdns.Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	for _, rr := range records {
		if err := s.Add(rr); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	r, err := resolver.New(s.Addr, 2*time.Second)
	if err != nil {
		t.Fatalf("resolver.New: %v", err)
	}
	return s, r
}

func message(from string) []byte {
	return []byte("From: Alice <" + from + ">\r\n" +
		"To: bob@example.net\r\n" +
		"Subject: quarterly report\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"Message-ID: <1@sender.test>\r\n" +
		"\r\n" +
		"Hello Bob,\r\nthe numbers are in.\r\n")
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSPF(t *testing.T) {
	tests := []struct {
		name       string
		records    []string
		servfail   string
		ip         netip.Addr
		helo, from string
		want       Result
		wantDomain string
	}{
		{name: "pass ip4", records: []string{`pass.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip: goodIP, helo: "mx.pass.test", from: "a@pass.test", want: "pass", wantDomain: "pass.test"},
		{name: "fail", records: []string{`pass.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip: badIP, helo: "x", from: "a@pass.test", want: "fail", wantDomain: "pass.test"},
		{name: "softfail", records: []string{`soft.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 ~all"`},
			ip: goodIP, helo: "x", from: "a@Soft.Test", want: "softfail", wantDomain: "soft.test"},
		{name: "neutral", records: []string{`neu.test. 60 IN TXT "v=spf1 ?all"`},
			ip: goodIP, helo: "x", from: "a@neu.test", want: "neutral", wantDomain: "neu.test"},
		{name: "none: no record", records: []string{`none.test. 60 IN A 127.0.0.1`},
			ip: goodIP, helo: "x", from: "a@none.test", want: "none", wantDomain: "none.test"},
		{name: "none: no such domain", ip: goodIP, helo: "x", from: "a@nx.test", want: "none", wantDomain: "nx.test"},
		{name: "mx mechanism", records: []string{
			`mxd.test. 60 IN TXT "v=spf1 mx -all"`,
			`mxd.test. 60 IN MX 10 mail.mxd.test.`,
			`mail.mxd.test. 60 IN A 127.0.0.1`,
		}, ip: goodIP, helo: "x", from: "a@mxd.test", want: "pass", wantDomain: "mxd.test"},
		{name: "null sender uses helo", records: []string{
			`mx.helo.test. 60 IN TXT "v=spf1 a -all"`,
			`mx.helo.test. 60 IN A 127.0.0.1`,
		}, ip: goodIP, helo: "mx.helo.test", from: "", want: "pass", wantDomain: "mx.helo.test"},
		{name: "null sender helo fail", records: []string{
			`mx.helo.test. 60 IN TXT "v=spf1 a -all"`,
			`mx.helo.test. 60 IN A 127.0.0.1`,
		}, ip: badIP, helo: "mx.helo.test", from: "", want: "fail", wantDomain: "mx.helo.test"},
		{name: "null sender, address literal helo", ip: goodIP, helo: "[127.0.0.1]", from: "", want: "none"},
		{name: "servfail is temperror", servfail: "tmp.test.", ip: goodIP, helo: "x", from: "a@tmp.test", want: "temperror", wantDomain: "tmp.test"},
		{name: "syntax error is permerror", records: []string{`perm.test. 60 IN TXT "v=spf1 ip4:not-an-ip -all"`},
			ip: goodIP, helo: "x", from: "a@perm.test", want: "permerror", wantDomain: "perm.test"},
		{name: "ipv6 client", records: []string{`v6.test. 60 IN TXT "v=spf1 ip6:::1 -all"`},
			ip: netip.MustParseAddr("::1"), helo: "x", from: "a@v6.test", want: "pass", wantDomain: "v6.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, r := startDNS(t, tc.records...)
			if tc.servfail != "" {
				s.SetRcode(tc.servfail, dns.RcodeServerFailure)
			}
			res := Verify(ctxT(t), r, "mx.example.net", tc.ip, tc.helo, tc.from, message("a@other.test"))
			if res.SPF != tc.want || res.SPFDomain != tc.wantDomain {
				t.Errorf("SPF = %q for %q, want %q for %q", res.SPF, res.SPFDomain, tc.want, tc.wantDomain)
			}
		})
	}
}

// keyRecord makes a key with Keygen and publishes its TXT record.
func keyRecord(t *testing.T, s *testdns.Server, domain, selector, algo string) *Signer {
	t.Helper()
	path, name, value, err := Keygen(domain, selector, algo, t.TempDir())
	if err != nil {
		t.Fatalf("Keygen: %v", err)
	}
	if err := s.Add(name + " 60 IN TXT " + TXTStrings(value)); err != nil {
		t.Fatalf("publish key: %v", err)
	}
	sg, err := LoadSigner(domain, selector, path)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	return sg
}

func TestDKIMSignVerify(t *testing.T) {
	for _, algo := range []string{"rsa", "ed25519"} {
		t.Run(algo, func(t *testing.T) {
			s, r := startDNS(t,
				`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject"`,
				`sender.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)
			sg := keyRecord(t, s, "sender.test", "mamori", algo)

			signed, err := sg.Sign(message("alice@sender.test"))
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) {
				t.Fatalf("signed message does not start with DKIM-Signature: %.60q", signed)
			}
			sig := string(signed[:bytes.Index(signed, []byte("From: "))])
			wantAlgo := map[string]string{"rsa": "a=rsa-sha256", "ed25519": "a=ed25519-sha256"}[algo]
			for _, want := range []string{wantAlgo, "c=relaxed/relaxed", "d=sender.test", "s=mamori"} {
				if !strings.Contains(sig, want) {
					t.Errorf("signature lacks %q:\n%s", want, sig)
				}
			}
			if h := strings.ToLower(strings.Join(strings.Fields(tagValue(sig, "h")), "")); !strings.HasPrefix(h, "from:from:") {
				t.Errorf("From not oversigned: h=%s", h)
			}

			// SPF fails (wrong IP), but the aligned DKIM signature makes DMARC pass.
			res := Verify(ctxT(t), r, "mx.example.net", goodIP, "mx.sender.test", "bounce@sender.test", signed)
			if len(res.DKIM) != 1 || res.DKIM[0] != (DKIMResult{Domain: "sender.test", Selector: "mamori", Result: "pass"}) {
				t.Fatalf("DKIM = %+v, want one pass for sender.test/mamori", res.DKIM)
			}
			if res.SPF != "fail" || res.DMARC != "pass" || res.DMARCPolicy != "" || !res.DKIMPass() {
				t.Errorf("SPF %q DMARC %q policy %q, want fail, pass, none", res.SPF, res.DMARC, res.DMARCPolicy)
			}

			// A tampered body fails DKIM, and then DMARC with p=reject.
			tampered := bytes.Replace(signed, []byte("numbers are in"), []byte("numbers are IN"), 1)
			res = Verify(ctxT(t), r, "mx.example.net", goodIP, "mx.sender.test", "bounce@sender.test", tampered)
			if len(res.DKIM) != 1 || res.DKIM[0].Result != "fail" {
				t.Errorf("tampered: DKIM = %+v, want fail", res.DKIM)
			}
			if res.DMARC != "fail" || res.DMARCPolicy != "reject" {
				t.Errorf("tampered: DMARC %q policy %q, want fail reject", res.DMARC, res.DMARCPolicy)
			}

			// A tampered signed header fails too.
			tampered = bytes.Replace(signed, []byte("quarterly report"), []byte("quarterly r3port"), 1)
			res = Verify(ctxT(t), r, "mx.example.net", goodIP, "mx.sender.test", "bounce@sender.test", tampered)
			if len(res.DKIM) != 1 || res.DKIM[0].Result != "fail" {
				t.Errorf("tampered header: DKIM = %+v, want fail", res.DKIM)
			}
		})
	}
}

func TestSignLFMessage(t *testing.T) {
	s, r := startDNS(t)
	sg := keyRecord(t, s, "sender.test", "lf", "ed25519")
	msg := bytes.ReplaceAll(message("alice@sender.test"), []byte("\r\n"), []byte("\n"))
	signed, err := sg.Sign(msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if bytes.Contains(bytes.ReplaceAll(signed, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("signed message still has bare LF")
	}
	res := Verify(ctxT(t), r, "mx", goodIP, "x", "a@sender.test", signed)
	if len(res.DKIM) != 1 || res.DKIM[0].Result != "pass" {
		t.Errorf("DKIM = %+v, want pass", res.DKIM)
	}
}

func TestDKIMErrors(t *testing.T) {
	s, r := startDNS(t)
	sg := keyRecord(t, s, "sender.test", "good", "ed25519")
	signed, err := sg.Sign(message("alice@sender.test"))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}

	// Same key, selectors whose record is missing or whose server fails.
	unpublished := &Signer{Domain: "sender.test", Selector: "missing", Key: sg.Key}
	noKey, err := unpublished.Sign(message("alice@sender.test"))
	if err != nil {
		t.Fatal(err)
	}
	broken := &Signer{Domain: "sender.test", Selector: "broken", Key: sg.Key}
	s.SetRcode("broken._domainkey.sender.test.", dns.RcodeServerFailure)
	tempFail, err := broken.Sign(message("alice@sender.test"))
	if err != nil {
		t.Fatal(err)
	}

	// Two signatures on one message: both are reported, in order.
	both, err := broken.Sign(signed)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		msg  []byte
		want []DKIMResult
	}{
		{"unsigned", message("alice@sender.test"), nil},
		{"no key record", noKey, []DKIMResult{{"sender.test", "missing", "permerror"}}},
		{"servfail on key", tempFail, []DKIMResult{{"sender.test", "broken", "temperror"}}},
		{"two signatures", both, []DKIMResult{{"sender.test", "broken", "temperror"}, {"sender.test", "good", "pass"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Verify(ctxT(t), r, "mx", goodIP, "x", "a@sender.test", tc.msg)
			if len(res.DKIM) != len(tc.want) {
				t.Fatalf("DKIM = %+v, want %+v", res.DKIM, tc.want)
			}
			for i := range tc.want {
				if res.DKIM[i] != tc.want[i] {
					t.Errorf("DKIM[%d] = %+v, want %+v", i, res.DKIM[i], tc.want[i])
				}
			}
		})
	}
}

func TestDKIMBoundedSignatures(t *testing.T) {
	s, r := startDNS(t)
	sg := keyRecord(t, s, "sender.test", "good", "ed25519")
	msg := message("alice@sender.test")
	for range MaxDKIMSignatures + 3 {
		var err error
		if msg, err = sg.Sign(msg); err != nil {
			t.Fatal(err)
		}
	}
	res := Verify(ctxT(t), r, "mx", goodIP, "x", "a@sender.test", msg)
	if len(res.DKIM) != MaxDKIMSignatures {
		t.Fatalf("verified %d signatures, want %d", len(res.DKIM), MaxDKIMSignatures)
	}
	if !res.DKIMPass() {
		t.Errorf("DKIM = %+v, want passes", res.DKIM)
	}
}

func TestDMARC(t *testing.T) {
	tests := []struct {
		name       string
		records    []string
		servfail   string
		ip         netip.Addr
		mailFrom   string
		from       string
		want       Result
		wantPolicy Policy
	}{
		{name: "reject: spf fail, no dkim",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject"`, `sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip:      badIP, mailFrom: "a@sender.test", from: "alice@sender.test", want: "fail", wantPolicy: "reject"},
		{name: "quarantine: spf pass but unaligned",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=quarantine"`, `other.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip:      goodIP, mailFrom: "a@other.test", from: "alice@sender.test", want: "fail", wantPolicy: "quarantine"},
		{name: "pass: spf relaxed alignment (subdomain)",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject"`, `bounce.sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip:      goodIP, mailFrom: "a@bounce.sender.test", from: "alice@sender.test", want: "pass"},
		{name: "fail: spf strict alignment (subdomain)",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject; aspf=s"`, `bounce.sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`},
			ip:      goodIP, mailFrom: "a@bounce.sender.test", from: "alice@sender.test", want: "fail", wantPolicy: "reject"},
		{name: "subdomain policy from organisational domain",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject; sp=quarantine"`},
			ip:      badIP, mailFrom: "a@x.test", from: "alice@news.sender.test", want: "fail", wantPolicy: "quarantine"},
		{name: "pct=0 downgrades reject",
			records: []string{`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject; pct=0"`},
			ip:      badIP, mailFrom: "a@x.test", from: "alice@sender.test", want: "fail", wantPolicy: "quarantine"},
		{name: "no record", ip: badIP, mailFrom: "a@x.test", from: "alice@sender.test", want: "none"},
		{name: "servfail", servfail: "_dmarc.sender.test.", ip: badIP, mailFrom: "a@x.test", from: "alice@sender.test", want: "temperror"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, r := startDNS(t, tc.records...)
			if tc.servfail != "" {
				s.SetRcode(tc.servfail, dns.RcodeServerFailure)
			}
			res := Verify(ctxT(t), r, "mx", tc.ip, "helo.test", tc.mailFrom, message(tc.from))
			if res.DMARC != tc.want || res.DMARCPolicy != tc.wantPolicy {
				t.Errorf("DMARC %q policy %q, want %q %q (spf %q)", res.DMARC, res.DMARCPolicy, tc.want, tc.wantPolicy, res.SPF)
			}
			if wantFrom := tc.from[strings.IndexByte(tc.from, '@')+1:]; res.FromDomain != wantFrom {
				t.Errorf("FromDomain = %q, want %q", res.FromDomain, wantFrom)
			}
		})
	}
}

// TestEveryAuthorDomain: RFC 7489 section 6.6.1 — with several author
// domains, each is evaluated and the strictest verdict applies, whatever
// their order.
func TestEveryAuthorDomain(t *testing.T) {
	_, r := startDNS(t,
		`_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.lax.test. 60 IN TXT "v=DMARC1; p=none"`,
		`evil.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
	)
	for _, from := range []string{"a@evil.test, b@bank.test", "b@bank.test, a@evil.test", "x@lax.test, b@bank.test"} {
		msg := []byte("From: " + from + "\r\nSender: a@evil.test\r\nSubject: x\r\n\r\nbody\r\n")
		res := Verify(ctxT(t), r, "mx", goodIP, "x", "a@evil.test", msg)
		if res.DMARC != ResultFail || res.DMARCPolicy != PolicyReject {
			t.Errorf("From: %s: DMARC %q policy %q, want fail reject (%+v)", from, res.DMARC, res.DMARCPolicy, res.Authors)
		}
		if len(res.Authors) != 2 {
			t.Errorf("From: %s: %d author verdicts, want 2", from, len(res.Authors))
		}
		if !strings.Contains(res.Header, "header.from=bank.test") {
			t.Errorf("Authentication-Results lacks the bank.test verdict: %s", res.Header)
		}
	}
}

func TestAmbiguousFromIsPermerror(t *testing.T) {
	_, r := startDNS(t)
	for _, head := range []string{
		"From: a@one.test\r\nFrom: b@two.test\r\n",
		"From:\r\nFrom: b@two.test\r\n",
		"Subject: no From\r\n",
	} {
		res := Verify(ctxT(t), r, "mx", goodIP, "x", "a@one.test", []byte(head+"\r\nbody\r\n"))
		if res.DMARC != ResultPermError {
			t.Errorf("%q: DMARC = %q, want permerror", head, res.DMARC)
		}
	}
}

func TestHeaderParsesBack(t *testing.T) {
	s, r := startDNS(t,
		`_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)
	sg := keyRecord(t, s, "sender.test", "a-rather-long-selector-name-2026", "ed25519")
	sg2 := &Signer{Domain: "sender.test", Selector: "another-long-selector-that-is-missing", Key: sg.Key}
	msg, err := sg.Sign(message("alice@sender.test"))
	if err != nil {
		t.Fatal(err)
	}
	if msg, err = sg2.Sign(msg); err != nil {
		t.Fatal(err)
	}
	res := Verify(ctxT(t), r, "mx.example.net", goodIP, "mx.sender.test", "very.long.local.part+tag=x@sender.test", msg)

	h := res.Header
	if !strings.HasPrefix(h, "Authentication-Results: ") || !strings.HasSuffix(h, "\r\n") {
		t.Fatalf("header %q: bad shape", h)
	}
	lines := strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n")
	if len(lines) < 2 {
		t.Errorf("header not folded: %q", h)
	}
	for i, l := range lines {
		if len(l) > maxLine {
			t.Errorf("line %d is %d chars: %q", i, len(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("continuation line %d does not start with white space: %q", i, l)
		}
		if strings.ContainsAny(l, "\r\n") {
			t.Errorf("stray CR/LF in line %d", i)
		}
	}

	value := strings.TrimPrefix(strings.ReplaceAll(h, "\r\n", ""), "Authentication-Results: ")
	id, results, err := authres.Parse(value)
	if err != nil {
		t.Fatalf("authres.Parse(%q): %v", value, err)
	}
	if id != "mx.example.net" {
		t.Errorf("authserv-id = %q", id)
	}
	var got []string
	for _, res := range results {
		switch v := res.(type) {
		case *authres.SPFResult:
			got = append(got, "spf="+string(v.Value)+" "+v.From)
		case *authres.DKIMResult:
			got = append(got, "dkim="+string(v.Value)+" "+v.Domain)
		case *authres.DMARCResult:
			got = append(got, "dmarc="+string(v.Value)+" "+v.From)
		default:
			t.Errorf("unexpected result %T", res)
		}
	}
	want := []string{
		`spf=pass "very.long.local.part+tag=x@sender.test"`,
		"dkim=pass sender.test",
		"dkim=permerror sender.test",
		"dmarc=pass sender.test",
	}
	// The second signature was prepended, so it comes first.
	want[1], want[2] = want[2], want[1]
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("parsed results:\n%v\nwant\n%v\nheader:\n%s", got, want, h)
	}
	if !strings.Contains(value, "header.s=a-rather-long-selector-name-2026") {
		t.Errorf("selector missing from header: %s", h)
	}
}

func TestHeaderNoInjection(t *testing.T) {
	_, r := startDNS(t)
	res := Verify(ctxT(t), r, "mx.example.net", goodIP, "evil\r\nX-Injected: yes", "", message("a@b.test"))
	if strings.Contains(res.Header, "X-Injected") || strings.Count(res.Header, "\r\n") != strings.Count(res.Header, "\r\n\t")+1 {
		t.Errorf("header injection: %q", res.Header)
	}
	if !strings.Contains(res.Header, "dkim=none") {
		t.Errorf("unsigned message: want dkim=none in %q", res.Header)
	}
}

func TestTimeoutIsTemperror(t *testing.T) {
	s, r := startDNS(t, `slow.test. 60 IN TXT "v=spf1 +all"`)
	s.SetDelay("slow.test.", 5*time.Second)
	s.SetDelay("_dmarc.slow.test.", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan Results, 1)
	go func() { done <- Verify(ctx, r, "mx", goodIP, "x", "a@slow.test", message("a@slow.test")) }()
	select {
	case res := <-done:
		if res.SPF != "temperror" || res.DMARC != "temperror" {
			t.Errorf("SPF %q DMARC %q, want temperror", res.SPF, res.DMARC)
		}
	case <-time.After(4 * time.Second): // far beyond the 300 ms deadline: a hang
		t.Fatal("Verify did not return after its context expired")
	}
}

func TestKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dkim")
	for _, algo := range []string{"rsa", "ed25519"} {
		path, name, value, err := Keygen("Example.TEST", "mamori", algo, dir)
		if err != nil {
			t.Fatalf("%s: %v", algo, err)
		}
		if path != filepath.Join(dir, "example.test.mamori.key") {
			t.Errorf("path = %q", path)
		}
		if name != "mamori._domainkey.example.test." {
			t.Errorf("name = %q", name)
		}
		if !strings.HasPrefix(value, "v=DKIM1; k="+algo+"; p=") {
			t.Errorf("value = %q", value)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("key mode = %v, want 0600", fi.Mode().Perm())
		}
		before, _ := os.ReadFile(path)
		if _, _, _, err := Keygen("example.test", "mamori", "ed25519", dir); err == nil {
			t.Errorf("Keygen overwrote an existing key")
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Errorf("existing key changed")
		}
		if _, err := LoadSigner("example.test", "mamori", path); err != nil {
			t.Errorf("LoadSigner: %v", err)
		}
		os.Remove(path)
	}
	for _, bad := range []struct{ domain, selector, algo string }{
		{"../etc", "mamori", "rsa"}, {"example.test", "a/b", "rsa"}, {"localhost", "mamori", "rsa"},
		{"example.test", "", "rsa"}, {"example.test", "mamori", "dsa"},
	} {
		if _, _, _, err := Keygen(bad.domain, bad.selector, bad.algo, dir); err == nil {
			t.Errorf("Keygen(%q, %q, %q) succeeded", bad.domain, bad.selector, bad.algo)
		}
	}
}

func TestLoadSignerRejects(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	for _, p := range []string{garbage, filepath.Join(dir, "missing.key")} {
		if _, err := LoadSigner("example.test", "s", p); err == nil {
			t.Errorf("LoadSigner(%s) succeeded", p)
		}
	}
}

func TestTXTStrings(t *testing.T) {
	long := strings.Repeat("a", 600)
	got := TXTStrings(long)
	want := `"` + long[:255] + `" "` + long[255:510] + `" "` + long[510:] + `"`
	if got != want {
		t.Errorf("TXTStrings(600 a) = %q", got)
	}
	if got := TXTStrings("v=DKIM1"); got != `"v=DKIM1"` {
		t.Errorf("TXTStrings(short) = %q", got)
	}
}

func TestFold(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct{ in, want string }{
		{"A: b c", "A: b c\r\n"},
		{"A: " + long + " y", "A:\r\n\t" + long + "\r\n\ty\r\n"},
		{"A: " + strings.Repeat("abc ", 25), "A: " + strings.TrimSpace(strings.Repeat("abc ", 18)) + " abc\r\n\t" + strings.TrimSpace(strings.Repeat("abc ", 6)) + "\r\n"},
	}
	for _, tc := range tests {
		if got := fold(tc.in); got != tc.want {
			t.Errorf("fold(%q) =\n%q\nwant\n%q", tc.in, got, tc.want)
		}
	}
}

func TestDKIMSignedBy(t *testing.T) {
	r := Results{DKIM: []DKIMResult{
		{Domain: "news.ours.test", Result: ResultPass},
		{Domain: "slow.test", Result: ResultTempError},
		{Domain: "Ours.Test.", Result: ResultFail},
	}}
	for _, tc := range []struct {
		domain     string
		pass, temp bool
	}{
		{"ours.test", false, false},      // a subdomain's pass does not vouch for the parent
		{"news.ours.test", true, false},  // exact
		{"NEWS.ours.test.", true, false}, // canonical forms compare equal
		{"slow.test", false, true},       // DNS trouble: try again later
		{"other.test", false, false},
	} {
		pass, temp := r.DKIMSignedBy(tc.domain)
		if pass != tc.pass || temp != tc.temp {
			t.Errorf("%s: pass %v temp %v, want %v %v", tc.domain, pass, temp, tc.pass, tc.temp)
		}
	}
}

func TestCheckSPF(t *testing.T) {
	_, r := startDNS(t,
		`ours.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`soft.test. 60 IN TXT "v=spf1 ~all"`,
	)
	for _, tc := range []struct {
		ip     netip.Addr
		domain string
		want   Result
	}{
		{goodIP, "ours.test", ResultPass},
		{goodIP, "OURS.test.", ResultPass},
		{badIP, "ours.test", ResultFail},
		{goodIP, "soft.test", ResultSoftFail},
		{goodIP, "none.test", ResultNone},
	} {
		if got, err := CheckSPF(ctxT(t), r, tc.ip, tc.domain); got != tc.want {
			t.Errorf("CheckSPF(%s, %s) = %q (%v), want %q", tc.ip, tc.domain, got, err, tc.want)
		}
	}
}

func TestDKIMRecordMatchesKeygen(t *testing.T) {
	for _, algo := range []string{"rsa", "ed25519"} {
		path, _, value, err := Keygen("example.test", "sel", algo, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s, err := LoadSigner("example.test", "sel", path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DKIMRecord(s.Key)
		if err != nil || got != value {
			t.Errorf("%s: DKIMRecord = %q, %v; want Keygen's %q", algo, got, err, value)
		}
		if !strings.HasPrefix(got, "v=DKIM1; k="+algo+"; p=") {
			t.Errorf("%s: DKIMRecord = %q", algo, got)
		}
	}
}
