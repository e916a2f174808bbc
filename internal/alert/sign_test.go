package alert

import (
	"bytes"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mamori-mail/mamori/internal/msgauth"
)

// TestAlertMailIsDKIMSigned: with Sign and From set, alert mail is From
// the local domain and carries a DKIM-Signature of it that verifies.
func TestAlertMailIsDKIMSigned(t *testing.T) {
	path, name, value, err := msgauth.Keygen("example.test", "sel", "ed25519", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := msgauth.LoadSigner("example.test", "sel", path)
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
	q := &fakeQueue{}
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test",
		From: "postmaster@example.test", Sign: sign}, q, nil)
	defer n.Close()
	n.Alert(testAlert())

	msgs := q.all()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	body := msgs[0].body
	if !bytes.HasPrefix(body, []byte("DKIM-Signature: ")) || !bytes.Contains(body, []byte("From: mamori guard <postmaster@example.test>\r\n")) {
		t.Fatalf("alert not signed or not From the local domain:\n%s", body)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(body), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if domain+"." != name && domain != name {
				t.Errorf("TXT lookup of %q, want %q", domain, name)
			}
			return []string{value}, nil
		},
	})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.test" {
		t.Fatalf("DKIM verification: %v %+v", err, vs)
	}
}
