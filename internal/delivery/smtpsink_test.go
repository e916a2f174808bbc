package delivery

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/queue"
)

// smtpSink finds Postfix's smtp-sink: $MAMORI_SMTP_SINK, $PATH, or the
// unpacked Debian package the benchmarks use
// (cd /tmp && apt-get download postfix && dpkg -x postfix_*.deb /tmp/postfix-root).
func smtpSink(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("MAMORI_SMTP_SINK"), "/tmp/postfix-root/usr/sbin/smtp-sink"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("smtp-sink"); err == nil {
		return p
	}
	if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
		t.Fatal("smtp-sink not found and MAMORI_REQUIRE_TOOLS is set; set MAMORI_SMTP_SINK or unpack postfix into /tmp/postfix-root")
	}
	t.Skip("smtp-sink not found; set MAMORI_SMTP_SINK or unpack postfix into /tmp/postfix-root")
	return ""
}

// startSmtpSink runs smtp-sink on a free loopback port with args, dumping
// each transaction into a file in the returned directory.
func startSmtpSink(t *testing.T, args ...string) (addr, dir string) {
	t.Helper()
	bin := smtpSink(t)
	// Under root smtp-sink writes as -u nobody: the directory and its
	// parent must be open to it (t.TempDir's parent is not).
	dir, err := os.MkdirTemp("", "mamori-smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", filepath.Join(dir, "%H%M%S."), addr, "10")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(filepath.Dir(bin), "..", "lib", "postfix"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("smtp-sink stderr:\n%s", stderr.String())
		}
	})
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, dir
		}
		if i == 50 {
			t.Fatalf("smtp-sink did not start: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSmtpSink delivers a message with UTF-8 header text, an 8-bit body,
// bare line ends and an over-long line to Postfix's smtp-sink, once with
// -8 (no 8BITMIME: everything must arrive 7-bit, MAIL without BODY=) and
// once without (8BITMIME offered: BODY=8BITMIME, the body stays 8-bit
// when it has no over-long line — a long line forces quoted-printable).
// smtp-sink never offers SMTPUTF8, so the header is always encoded.
func TestSmtpSink(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		eightBit bool
	}{
		{"without 8BITMIME", []string{"-8"}, false},
		{"with 8BITMIME", nil, true},
		{"with 8BITMIME, long line", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, dir := startSmtpSink(t, tc.args...)
			s, sp, _ := routedScheduler(t, addr)
			msg := dirtyMsg
			if tc.eightBit {
				msg = strings.Replace(msg, strings.Repeat("long ", 300)+"\r\n", "", 1)
			}
			sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, msg)
			fin, _ := run(t, s, sp, 1)
			if r := fin[0].a.Rcpts[0]; r.Status != queue.RcptDelivered {
				t.Fatalf("%s: %s %q", r.Addr, r.Status, r.Diag)
			}
			var files []string
			for i := 0; i < 50 && len(files) == 0; i++ {
				files, _ = filepath.Glob(filepath.Join(dir, "*"))
				time.Sleep(20 * time.Millisecond)
			}
			if len(files) != 1 {
				t.Fatalf("%d dump files, want 1", len(files))
			}
			dump, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			var mailArgs string
			for _, l := range strings.Split(string(dump), "\n") {
				if a, ok := strings.CutPrefix(l, "X-Mail-Args: "); ok {
					mailArgs = a
				}
				if len(l) > mimeconv.MaxLine {
					t.Errorf("line of %d octets arrived", len(l))
				}
			}
			if strings.Contains(mailArgs, "SMTPUTF8") || strings.Contains(mailArgs, "BODY=8BITMIME") != tc.eightBit {
				t.Errorf("MAIL arguments %q", mailArgs)
			}
			if mimeconv.Has8bit(dump) != tc.eightBit {
				t.Errorf("8-bit octets arrived: %v, want %v:\n%s", mimeconv.Has8bit(dump), tc.eightBit, dump)
			}
			if !bytes.Contains(dump, []byte("Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\n")) {
				t.Errorf("Subject not RFC 2047 encoded:\n%s", dump)
			}
		})
	}
}
