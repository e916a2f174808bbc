package smtpd

import (
	"bytes"
	"testing"

	"github.com/mamori-mail/mamori/internal/msgheader"
)

func stripAuthResults(msg []byte, id string) ([]byte, error) {
	h, err := msgheader.Parse(msg, msgheader.Limits{})
	if err != nil {
		return nil, err
	}
	return bytes.Join(withoutFields(msg, ourAuthResults(h, id)), nil), nil
}

func TestStripAuthResults(t *testing.T) {
	const body = "\r\n\r\nbody Authentication-Results: mx.ours.test; dkim=pass\r\n"
	tests := []struct{ name, in, want string }{
		{"ours removed, with continuation",
			"Authentication-Results: mx.ours.test;\r\n\tdkim=pass header.d=bank.test\r\nSubject: s",
			"Subject: s"},
		{"case-insensitive id",
			"authentication-results: MX.OURS.TEST; spf=pass\r\nFrom: a@b.test",
			"From: a@b.test"},
		{"obsolete space before colon",
			"Authentication-Results : mx.ours.test; spf=pass\r\nFrom: a@b.test",
			"From: a@b.test"},
		{"two of ours, around others",
			"Authentication-Results: mx.ours.test; a=b\r\nX: 1\r\nAuthentication-Results: mx.ours.test; c=d\r\nY: 2",
			"X: 1\r\nY: 2"},
		{"other authserv-id kept",
			"Authentication-Results: mx.google.test; dkim=pass\r\nSubject: s",
			"Authentication-Results: mx.google.test; dkim=pass\r\nSubject: s"},
		{"lookalike id kept",
			"Authentication-Results: mx.ours.test.evil; dkim=pass\r\nSubject: s",
			"Authentication-Results: mx.ours.test.evil; dkim=pass\r\nSubject: s"},
		{"no header at all", "Subject: s", "Subject: s"},
	}
	for _, tc := range tests {
		got, err := stripAuthResults([]byte(tc.in+body), "mx.ours.test")
		if err != nil || string(got) != tc.want+body {
			t.Errorf("%s:\n got %q (%v)\nwant %q", tc.name, got, err, tc.want+body)
		}
	}
}

func FuzzStripAuthResults(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.ours.test; x\r\n\tcont\r\nA: b\r\n\r\nbody"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := stripAuthResults(msg, "mx.ours.test")
		if err != nil {
			return
		}
		if len(out) > len(msg) {
			t.Fatalf("grew: %d > %d", len(out), len(msg))
		}
		h, err := msgheader.Parse(out, msgheader.Limits{})
		if err != nil {
			t.Fatalf("stripping made the header unparsable: %v", err)
		}
		if n := len(ourAuthResults(h, "mx.ours.test")); n != 0 {
			t.Fatalf("%d of our fields left", n)
		}
	})
}
