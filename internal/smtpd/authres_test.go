package smtpd

import "testing"

func TestStripAuthResults(t *testing.T) {
	const body = "\r\n\r\nbody Authentication-Results: mx.ours.test; dkim=pass\r\n"
	tests := []struct{ name, in, want string }{
		{"ours removed, with continuation",
			"Authentication-Results: mx.ours.test;\r\n\tdkim=pass header.d=bank.test\r\nSubject: s",
			"Subject: s"},
		{"case-insensitive id",
			"authentication-results: MX.OURS.TEST; spf=pass\r\nFrom: a@b.test",
			"From: a@b.test"},
		{"other authserv-id kept",
			"Authentication-Results: mx.google.test; dkim=pass\r\nSubject: s",
			"Authentication-Results: mx.google.test; dkim=pass\r\nSubject: s"},
		{"lookalike id kept",
			"Authentication-Results: mx.ours.test.evil; dkim=pass\r\nSubject: s",
			"Authentication-Results: mx.ours.test.evil; dkim=pass\r\nSubject: s"},
		{"no header at all", "Subject: s", "Subject: s"},
	}
	for _, tc := range tests {
		got := string(stripAuthResults([]byte(tc.in+body), "mx.ours.test"))
		if got != tc.want+body {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want+body)
		}
	}
}

func FuzzStripAuthResults(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.ours.test; x\r\n\tcont\r\nA: b\r\n\r\nbody"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := stripAuthResults(msg, "mx.ours.test")
		if len(out) > len(msg) {
			t.Fatalf("grew: %d > %d", len(out), len(msg))
		}
	})
}
