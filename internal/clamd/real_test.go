package clamd_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/clamd"
	"github.com/mamori-mail/mamori/internal/clamd/clamdtest"
)

// mimeMessage returns an RFC 5322 message with a text part and attachment
// carried base64-encoded, CRLF line endings, 76-column lines.
func mimeMessage(filename string, attachment []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(attachment)
	var body strings.Builder
	for len(enc) > 76 {
		body.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	body.WriteString(enc + "\r\n")
	return []byte("From: alice@example.org\r\n" +
		"To: bob@example.net\r\n" +
		"Subject: the report\r\n" +
		"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n" +
		"Message-ID: <test-1@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
		"\r\n" +
		"--b1\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Please find the file attached.\r\n" +
		"--b1\r\n" +
		"Content-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"" + filename + "\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		body.String() +
		"--b1--\r\n")
}

func TestRealClamd(t *testing.T) {
	const streamMax = 1 << 20
	srv := clamdtest.Start(t, clamdtest.Options{TCP: true, StreamMaxLength: streamMax})
	ctx := context.Background()
	unixClient := &clamd.Client{Addr: srv.Addr(), Timeout: 30 * time.Second, MaxSize: streamMax}
	tcpClient := &clamd.Client{Addr: srv.TCPAddr, Timeout: 30 * time.Second, MaxSize: streamMax}

	t.Run("Ping", func(t *testing.T) {
		for _, c := range []*clamd.Client{unixClient, tcpClient} {
			if err := c.Ping(ctx); err != nil {
				t.Errorf("Ping %s: %v", c.Addr, err)
			}
		}
	})

	eicarHit := []string{clamdtest.SigEICARBody, clamdtest.SigEICARHash}
	tests := []struct {
		name string
		data []byte
		// sigs lists acceptable signature names; nil means clean.
		sigs []string
	}{
		{name: "clean text", data: []byte("hello, world\n")},
		{name: "empty", data: nil},
		{name: "clean message", data: mimeMessage("report.pdf", []byte("%PDF-1.4 not really a pdf"))},
		{name: "clean 900 KiB", data: bytes.Repeat([]byte("0123456789abcdef"), 900<<10/16)},
		{name: "EICAR file", data: []byte(clamdtest.EICAR), sigs: eicarHit},
		// Only the body signature can match EICAR embedded in other data.
		{name: "EICAR embedded", data: []byte("prefix " + clamdtest.EICAR + " suffix"), sigs: []string{clamdtest.SigEICARBody}},
		// clamd parses the message (ScanMail) and scans the decoded attachment.
		{name: "EICAR in MIME message, base64", data: mimeMessage("eicar.com", []byte(clamdtest.EICAR)), sigs: eicarHit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []*clamd.Client{unixClient, tcpClient} {
				res, err := c.Scan(ctx, bytes.NewReader(tt.data))
				if err != nil {
					t.Fatalf("Scan via %s: %v", c.Addr, err)
				}
				if res.Infected != (tt.sigs != nil) {
					t.Fatalf("via %s: result %+v, want infected=%v", c.Addr, res, tt.sigs != nil)
				}
				t.Logf("via %s: %+v", c.Addr, res)
				if tt.sigs != nil && !contains(tt.sigs, res.Signature) {
					t.Errorf("via %s: signature %q, want one of %q", c.Addr, res.Signature, tt.sigs)
				}
			}
		})
	}

	t.Run("clamav-testfiles", func(t *testing.T) {
		// Debian's harmless samples: clam.exe matches our hash signature,
		// also unpacked from archives and decoded from a mailbox.
		files := []string{"clam.exe", "clam.zip", "clam.tar.gz", "clam.exe.mbox.base64"}
		for _, name := range files {
			data, err := os.ReadFile(filepath.Join(clamdtest.TestFilesDir, name))
			if err != nil {
				if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
					t.Fatalf("clamav-testfiles required (MAMORI_REQUIRE_TOOLS set): %v", err)
				}
				t.Skipf("clamav-testfiles not installed: %v", err)
			}
			res, err := unixClient.Scan(ctx, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !res.Infected || res.Signature != clamdtest.SigClamExe {
				t.Errorf("%s: %+v, want infected with %s", name, res, clamdtest.SigClamExe)
			}
		}
	})

	t.Run("oversize refused by clamd", func(t *testing.T) {
		// Misconfiguration: the client allows more than StreamMaxLength.
		c := &clamd.Client{Addr: srv.Addr(), Timeout: 30 * time.Second, MaxSize: 4 * streamMax}
		_, err := c.Scan(ctx, bytes.NewReader(make([]byte, 2*streamMax)))
		if !errors.Is(err, clamd.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if !strings.Contains(err.Error(), "size limit exceeded") {
			t.Errorf("err = %v, want clamd's own size-limit reply", err)
		}
	})

	t.Run("oversize refused by client", func(t *testing.T) {
		_, err := unixClient.Scan(ctx, bytes.NewReader(make([]byte, streamMax+1)))
		if !errors.Is(err, clamd.ErrTooLarge) || errors.Is(err, clamd.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrTooLarge (and not ErrUnavailable)", err)
		}
		// The connection was dropped mid-stream; clamd must still work.
		if err := unixClient.Ping(ctx); err != nil {
			t.Fatalf("Ping after oversize: %v", err)
		}
	})
}

// TestRealClamdScanMailOff pins down why a whole message is detected: with
// clamd's mail parsing off, base64-encoded EICAR in a message is not found
// by either signature form, while the raw file still is.
func TestRealClamdScanMailOff(t *testing.T) {
	off := false
	srv := clamdtest.Start(t, clamdtest.Options{ScanMail: &off})
	c := &clamd.Client{Addr: srv.Addr(), Timeout: 30 * time.Second}
	ctx := context.Background()

	res, err := c.Scan(ctx, bytes.NewReader(mimeMessage("eicar.com", []byte(clamdtest.EICAR))))
	if err != nil || res.Infected {
		t.Errorf("message with ScanMail no: %+v, %v; want clean", res, err)
	}
	res, err = c.Scan(ctx, strings.NewReader(clamdtest.EICAR))
	if err != nil || !res.Infected {
		t.Errorf("raw EICAR with ScanMail no: %+v, %v; want infected", res, err)
	}
}

func TestRealClamdStopped(t *testing.T) {
	srv := clamdtest.Start(t, clamdtest.Options{TCP: true})
	srv.Stop()
	const timeout = 2 * time.Minute
	for _, addr := range []string{srv.Addr(), srv.TCPAddr} {
		c := &clamd.Client{Addr: addr, Timeout: timeout}
		start := time.Now()
		err := c.Ping(context.Background())
		if !errors.Is(err, clamd.ErrUnavailable) {
			t.Errorf("Ping %s: err = %v, want ErrUnavailable", addr, err)
		}
		_, err = c.Scan(context.Background(), strings.NewReader(clamdtest.EICAR))
		if !errors.Is(err, clamd.ErrUnavailable) {
			t.Errorf("Scan %s: err = %v, want ErrUnavailable", addr, err)
		}
		// "Fast" means: refused at once, not after waiting for Timeout.
		if el := time.Since(start); el > timeout/4 {
			t.Errorf("%s: took %v to report clamd down", addr, el)
		}
	}
}

// TestHashSignatureMatchesSigtool checks our .hdb line against the format
// `sigtool --md5` prints, when sigtool is installed.
func TestHashSignatureMatchesSigtool(t *testing.T) {
	sigtool, err := exec.LookPath("sigtool")
	if err != nil {
		t.Skip("sigtool not installed (Debian package clamav); nothing to compare")
	}
	dir := t.TempDir()
	name := "Mamori-Test-EICAR-HDB"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(clamdtest.EICAR), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sigtool, "--md5", name)
	cmd.Dir = dir // sigtool names the signature after the path given
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sigtool: %v", err)
	}
	want := clamdtest.HashSignature([]byte(clamdtest.EICAR), name)
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("sigtool --md5 = %q, HashSignature = %q", got, want)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
