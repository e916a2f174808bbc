package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
)

const exeMsg = "From: a@outside.test\r\nTo: x@a.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
	"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"tool.exe\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n"

// encryptedZipMsg carries a zip whose one entry is encrypted.
func encryptedZipMsg(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "invoice.pdf", Method: zip.Deflate, Flags: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("%PDF-1.4")); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return []byte("From: a@outside.test\r\nTo: x@a.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(buf.Bytes()) + "\r\n")
}

// TestContentConfigWiring: the [content] config reaches the content
// package's policy layers (action, lists, uninspectable, per domain), and
// the typed verdict reaches smtpd as its struct.
func TestContentConfigWiring(t *testing.T) {
	c := &config.Config{}
	c.Content = config.Content{Action: "reject", VirusAction: "reject", ClamdFail: "closed", Uninspectable: "hold",
		Domains: map[string]config.ContentDomain{
			"lenient.test": {AllowExtensions: []string{".EXE"}},
			"quiet.test":   {Action: "hold"},
			"ppap.test":    {Uninspectable: "accept"},
		}}
	check := contentChecker(c, contentPolicies(c), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := guard.Sender{IP: netip.MustParseAddr("192.0.2.1")}
	enc := encryptedZipMsg(t)
	tests := []struct {
		rcpts []string
		msg   []byte
		want  content.Verdict
	}{
		{[]string{"x@plain.test"}, []byte(exeMsg), content.Verdict{Action: content.Reject, Rule: "attachment.blocked_ext"}},
		{[]string{"x@lenient.test"}, []byte(exeMsg), content.Verdict{Action: content.Accept}},
		{[]string{"x@quiet.test"}, []byte(exeMsg), content.Verdict{Action: content.Hold, Rule: "attachment.blocked_ext"}},
		{[]string{"x@lenient.test", "y@quiet.test"}, []byte(exeMsg), content.Verdict{Action: content.Hold, Rule: "attachment.blocked_ext"}},
		{[]string{"x@lenient.test", "y@plain.test"}, []byte(exeMsg), content.Verdict{Action: content.Reject, Rule: "attachment.blocked_ext"}},
		{[]string{"x@plain.test"}, enc, content.Verdict{Action: content.Hold, Rule: "archive.encrypted"}},
		{[]string{"x@ppap.test"}, enc, content.Verdict{Action: content.Accept}},
	}
	for _, tc := range tests {
		got := check(context.Background(), s, tc.rcpts, tc.msg)
		if got.Action != tc.want.Action || got.Rule != tc.want.Rule {
			t.Errorf("%v: %+v, want %s %s", tc.rcpts, got, tc.want.Action, tc.want.Rule)
		}
		if got.Action != content.Accept && got.Reason == "" {
			t.Errorf("%v: empty reason", tc.rcpts)
		}
	}
}
