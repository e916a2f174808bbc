package mimeconv

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F) {
	ins, _ := filepath.Glob("testdata/*.in")
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Subject: \xff\r\n\r\nx\r.\r\n\n.\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe4\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nFrom: \xc3\xa4 <a@b>\r\n\r\n\xc3\xa4\r\n"))
	f.Add([]byte("Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4 \xe4=\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=\"h\xc3\xa9\"\r\n\r\n--h\xc3\xa9\r\n\r\nx\r\n--h\xc3\xa9--\r\n"))
	f.Add([]byte("Content-Type: text/plain; name=h\xc3\xa9llo\r\n\r\nx\r\n"))
}

// canon maps every line end (CRLF, CR, LF) to LF.
func canon(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

func FuzzNormalizeCRLF(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := NormalizeCRLF(msg)
		if n := NormalizedLen(msg); n != len(out) || (n != len(msg) && cap(out) != n) {
			t.Fatalf("NormalizedLen %d, result %d bytes in a %d-byte buffer", n, len(out), cap(out))
		}
		if !bytes.Equal(canon(out), canon(msg)) {
			t.Fatalf("content changed: %q → %q", msg, out)
		}
		if n := bytes.Count(out, []byte("\r\n")); n != bytes.Count(out, []byte("\r")) || n != bytes.Count(out, []byte("\n")) {
			t.Fatalf("bare CR or LF left: %q", out)
		}
		if !bytes.Equal(NormalizeCRLF(out), out) {
			t.Fatalf("not idempotent")
		}
	})
}

func FuzzFoldLongLines(f *testing.F) {
	addSeeds(f)
	f.Add(append([]byte("X: "), bytes.Repeat([]byte("y"), 2100)...))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := FoldLongLines(msg)
		checkInvariants(t, msg, out, false)
	})
}

func FuzzDowngrade8bit(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := Downgrade8bit(msg)
		if err != nil {
			if !errors.Is(err, ErrNeedsSMTPUTF8) && !errors.Is(err, ErrNeeds8BITMIME) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		checkInvariants(t, msg, out, true)
		again, err := Downgrade8bit(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent (%v):\n%q\n%q", err, out, again)
		}
	})
}

func FuzzDowngradeHeaders(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := DowngradeHeaders(msg)
		if err != nil {
			if !errors.Is(err, ErrNeedsSMTPUTF8) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if HeaderHas8bit(out) || hasLongLine(out) {
			t.Fatalf("8-bit or long line left in header: %q", out)
		}
	})
}
