package delivery

import (
	"bytes"
	"flag"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/queue"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

// TestDSNGolden pins the DSNs mamori writes: RFC 3464 for ASCII mail, RFC
// 6533 (global-delivery-status, utf-8 address type, global-headers) when
// an address or the returned header is UTF-8, and the 7-bit form of the
// latter that is signed and sent to an ASCII sender.
func TestDSNGolden(t *testing.T) {
	received := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	now := received.Add(2 * time.Hour)
	for _, tc := range []struct {
		name       string
		from       string
		rcpt       string
		header     string
		reportType string
		statusType string
		finalRcpt  string
		headerType string
	}{
		{"plain", "alice@local.test", "bad@dest.test", "From: alice@local.test\r\nSubject: report\r\n",
			"delivery-status", "message/delivery-status", "rfc822; bad@dest.test", "text/rfc822-headers"},
		{"utf8-rcpt", "alice@local.test", "jürgen+x@dest.test", "From: alice@local.test\r\nSubject: report\r\n",
			"global-delivery-status", "message/global-delivery-status", `utf-8; jürgen\x{2B}x@dest.test`, "text/rfc822-headers"},
		{"utf8-header", "alice@local.test", "bad@dest.test", "From: Zoë <alice@local.test>\r\nSubject: Grüße\r\n",
			"delivery-status", "message/delivery-status", "rfc822; bad@dest.test", "message/global-headers"},
		{"utf8-sender", "zoë@local.test", "bad@dest.test", "From: zoë@local.test\r\nSubject: Grüße\r\n",
			"global-delivery-status", "message/global-delivery-status", "rfc822; bad@dest.test", "message/global-headers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := queue.Meta{ID: "Q1", From: tc.from, Received: received, Subject: "Grüße"}
			failed := []queue.Rcpt{{Addr: tc.rcpt, Status: queue.RcptFailed, Diag: "550 5.1.1 no such user"}}
			dsn := buildDSN("postmaster@local.test", "mx.local.test", m, failed, []byte(tc.header), now, "0123456789abcdef")
			golden(t, "dsn-"+tc.name+".golden", dsn)

			msg, err := mail.ReadMessage(bytes.NewReader(dsn))
			if err != nil {
				t.Fatal(err)
			}
			if _, p, _ := mime.ParseMediaType(msg.Header.Get("Content-Type")); p["report-type"] != tc.reportType {
				t.Errorf("report-type %q, want %q", p["report-type"], tc.reportType)
			}
			for _, want := range []string{"Content-Type: " + tc.statusType + "\r\n", "Final-Recipient: " + tc.finalRcpt + "\r\n",
				"Content-Type: " + tc.headerType + "\r\n", "To: <" + tc.from + ">\r\n"} {
				if !bytes.Contains(dsn, []byte(want)) {
					t.Errorf("no %q in DSN", want)
				}
			}
			if mimeconv.Has8bit(dsn) && !strings.Contains(tc.name, "utf8") {
				t.Errorf("8-bit octets in an ASCII DSN")
			}
			if tc.name == "utf8-rcpt" || tc.name == "utf8-header" {
				// What sendDSN signs for an ASCII sender: 7-bit, so no
				// later downgrade can break the signature.
				seven, err := mimeconv.Downgrade8bit(dsn)
				if err != nil {
					t.Fatal(err)
				}
				golden(t, "dsn-"+tc.name+".7bit.golden", seven)
				if mimeconv.Has8bit(seven) {
					t.Errorf("downgraded DSN is not 7-bit")
				}
			}
		})
	}
}

// dkimKey makes an Ed25519 DKIM key for local.test and returns a Sign
// function and the TXT record lookup to verify with.
func dkimKey(t *testing.T) (func([]byte) []byte, func(string) ([]string, error)) {
	t.Helper()
	path, name, value, err := msgauth.Keygen("local.test", "sel", "ed25519", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := msgauth.LoadSigner("local.test", "sel", path)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(msg []byte) []byte {
		out, err := signer.Sign(msg)
		if err != nil {
			t.Errorf("sign: %v", err)
			return msg
		}
		return out
	}
	lookup := func(domain string) ([]string, error) {
		if domain+"." != name && domain != name {
			t.Errorf("TXT lookup of %q, want %q", domain, name)
		}
		return []string{value}, nil
	}
	return sign, lookup
}

func verifyDKIM(t *testing.T, msg []byte, lookup func(string) ([]string, error)) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "local.test" {
		for _, v := range vs {
			t.Errorf("verification %+v", v)
		}
		t.Fatalf("%d DKIM signatures, want one valid for local.test:\n%s", len(vs), msg)
	}
}

// TestDSNIsDKIMSigned: the DSN a failed delivery produces carries a
// DKIM-Signature of our domain that verifies, also for an RFC 6533 DSN,
// which is made 7-bit before signing so that a downgrade on the way cannot
// break it.
func TestDSNIsDKIMSigned(t *testing.T) {
	srv := startRawServer(t, "PIPELINING", "ENHANCEDSTATUSCODES")
	srv.rcptReply["bad@dest.test"] = "550 5.1.1 no such user"
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": srv.addr}
	cfg.Postmaster = "postmaster@local.test"
	sign, lookup := dkimKey(t)
	cfg.Sign = sign
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bad@dest.test")}, "From: alice@local.test\r\nSubject: x\r\n\r\nx\r\n")
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("jürgen@dest.test")}, "From: alice@local.test\r\nSubject: Grüße\r\n\r\nx\r\n")
	_, enq := run(t, s, sp, 2)
	if len(enq) != 2 {
		t.Fatalf("%d DSNs, want 2", len(enq))
	}
	for _, e := range enq {
		if !bytes.HasPrefix(e.body, []byte("DKIM-Signature: ")) {
			t.Errorf("DSN not signed:\n%s", e.body)
		}
		verifyDKIM(t, e.body, lookup)
		if mimeconv.Has8bit(e.body) {
			t.Errorf("DSN to an ASCII sender is not 7-bit:\n%s", e.body)
		}
		if out, err := mimeconv.Downgrade8bit(e.body); err != nil || !bytes.Equal(out, e.body) {
			t.Errorf("a downgrade on the way would alter the signed DSN (%v)", err)
		}
	}
	global := enq[0].body
	if !bytes.Contains(global, []byte("global-delivery-status")) {
		global = enq[1].body
	}
	if !bytes.Contains(global, []byte("report-type=global-delivery-status")) {
		t.Errorf("DSN for a UTF-8 recipient is not RFC 6533:\n%s", global)
	}
}
