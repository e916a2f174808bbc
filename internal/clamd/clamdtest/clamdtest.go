// Package clamdtest starts a private, real clamd for tests, so that mamori's
// malware-scanning path is exercised against ClamAV itself rather than a
// mock. It exists as a package (not a _test.go helper) so that both
// internal/clamd and the end-to-end tests can use it.
//
// No signature download is possible in tests, so Start writes a tiny
// signature database of its own (see the README in testdata/clamd):
//
//   - mamori.hdb: MD5 hash signatures (the format `sigtool --md5 FILE`
//     prints) for the 68-byte EICAR test file and, when Debian's
//     clamav-testfiles package is installed, for its harmless clam.exe.
//     A hash signature matches a file exactly, so it also matches an
//     attachment that clamd has decoded out of a MIME message, and a
//     clam.exe unpacked out of clam.zip.
//   - mamori.ndb: a body signature (target type 0, any file) for the EICAR
//     string, which matches EICAR embedded anywhere in the data, including
//     inside a decoded attachment.
//
// A whole RFC 5322 message streamed with INSTREAM is detected by both only
// because clamd parses mail (ScanMail yes, clamd's default, set explicitly
// here) and scans the decoded parts: with ScanMail no, a message carrying
// EICAR base64-encoded is reported clean by either signature.
//
// clamd reports signatures from such unsigned local databases with the
// suffix ".UNOFFICIAL", e.g. "Mamori-Test-EICAR-NDB.UNOFFICIAL".
//
// Dependencies: only the standard library, and the clamd binary from
// Debian's clamav-daemon package. When clamd is not installed, Start skips
// the test, unless MAMORI_REQUIRE_TOOLS is set (CI), where it fails.
package clamdtest

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EICAR is the standard 68-byte antivirus test file: harmless, but every
// scanner is expected to detect it. Kept as a constant so that no test
// fetches it from the network.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// Signature names in the generated database, as clamd reports them.
const (
	SigEICARHash = "Mamori-Test-EICAR-HDB.UNOFFICIAL"
	SigEICARBody = "Mamori-Test-EICAR-NDB.UNOFFICIAL"
	SigClamExe   = "Mamori-Test-ClamExe-HDB.UNOFFICIAL"
)

// TestFilesDir is where Debian's clamav-testfiles package puts its samples.
const TestFilesDir = "/usr/share/clamav-testfiles"

// Options configure the private clamd.
type Options struct {
	// StreamMaxLength is clamd's INSTREAM size limit in bytes; zero means
	// 26 MiB (just above the client's 25 MiB default).
	StreamMaxLength int64
	// TCP also makes clamd listen on a free port of 127.0.0.1.
	TCP bool
	// ScanMail sets clamd's ScanMail; nil means yes.
	ScanMail *bool
}

// Server is a running private clamd.
type Server struct {
	// Socket is the unix socket path; Addr() gives the client form.
	Socket string
	// TCPAddr is "127.0.0.1:port" when Options.TCP was set.
	TCPAddr string
	// Dir holds the config, database and log file.
	Dir string

	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

// Addr returns the unix socket address in clamd.Client.Addr form.
func (s *Server) Addr() string { return "unix:" + s.Socket }

// Binary returns the path of clamd, skipping (or, with
// MAMORI_REQUIRE_TOOLS set, failing) the test when it is not installed.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("clamd"); err == nil {
		return p
	}
	// Debian installs it in /usr/sbin, often not in a user's PATH.
	if fi, err := os.Stat("/usr/sbin/clamd"); err == nil && !fi.IsDir() {
		return "/usr/sbin/clamd"
	}
	if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
		t.Fatal("clamd is required (MAMORI_REQUIRE_TOOLS set) but not installed (apt-get install clamav-daemon)")
	}
	t.Skip("clamd not installed; run .ci/run or apt-get install clamav-daemon clamav-testfiles")
	return ""
}

// HashSignature returns one .hdb line, "md5:size:name", exactly what
// `sigtool --md5` prints for a file called name.
func HashSignature(data []byte, name string) string {
	sum := md5.Sum(data)
	return fmt.Sprintf("%s:%d:%s", hex.EncodeToString(sum[:]), len(data), name)
}

// BodySignature returns one .ndb line matching data anywhere in any file.
func BodySignature(data []byte, name string) string {
	return fmt.Sprintf("%s:0:*:%s", name, hex.EncodeToString(data))
}

// WriteDatabase writes mamori.hdb and mamori.ndb into dir.
func WriteDatabase(dir string) error {
	hdb := []string{HashSignature([]byte(EICAR), strings.TrimSuffix(SigEICARHash, ".UNOFFICIAL"))}
	if exe, err := os.ReadFile(filepath.Join(TestFilesDir, "clam.exe")); err == nil {
		hdb = append(hdb, HashSignature(exe, strings.TrimSuffix(SigClamExe, ".UNOFFICIAL")))
	}
	ndb := []string{BodySignature([]byte(EICAR), strings.TrimSuffix(SigEICARBody, ".UNOFFICIAL"))}
	if err := os.WriteFile(filepath.Join(dir, "mamori.hdb"), []byte(strings.Join(hdb, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write hdb: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mamori.ndb"), []byte(strings.Join(ndb, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write ndb: %w", err)
	}
	return nil
}

// Start runs a private clamd (foreground, own config, own database, own
// socket) and waits until it answers PING. It is stopped at test cleanup.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	bin := Binary(t)

	// A short directory of our own rather than t.TempDir(): unix socket
	// paths are limited to ~108 bytes and test names make long paths.
	dir, err := os.MkdirTemp("", "mamori-clamd-")
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	if err := WriteDatabase(db); err != nil {
		t.Fatalf("clamdtest: %v", err)
	}

	s := &Server{Socket: filepath.Join(dir, "clamd.sock"), Dir: dir, done: make(chan struct{})}
	maxLen := opt.StreamMaxLength
	if maxLen <= 0 {
		maxLen = 26 << 20
	}
	scanMail := "yes"
	if opt.ScanMail != nil && !*opt.ScanMail {
		scanMail = "no"
	}
	conf := []string{
		"Foreground yes",
		"LocalSocket " + s.Socket,
		"DatabaseDirectory " + db,
		"LogFile " + filepath.Join(dir, "clamd.log"),
		"PidFile " + filepath.Join(dir, "clamd.pid"),
		"TemporaryDirectory " + dir,
		fmt.Sprintf("StreamMaxLength %d", maxLen),
		"ScanMail " + scanMail,
		"SelfCheck 0",
	}
	if opt.TCP {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("clamdtest: free port: %v", err)
		}
		s.TCPAddr = l.Addr().String()
		l.Close()
		host, port, _ := net.SplitHostPort(s.TCPAddr)
		conf = append(conf, "TCPAddr "+host, "TCPSocket "+port)
	}
	confPath := filepath.Join(dir, "clamd.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("clamdtest: write config: %v", err)
	}

	s.cmd = exec.Command(bin, "--config-file="+confPath)
	out, err := os.Create(filepath.Join(dir, "clamd.out"))
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("clamdtest: start clamd: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		out.Close()
		close(s.done)
	}()
	t.Cleanup(s.Stop)

	if err := s.waitReady(30 * time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "clamd.out"))
		t.Fatalf("clamdtest: clamd did not come up: %v\n%s", err, log)
	}
	return s
}

// waitReady polls with PING until clamd answers, clamd exits, or limit.
func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("clamd exited: %v", s.cmd.ProcessState)
		default:
		}
		if ping(s.Socket) == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v", limit)
}

// ping is a minimal PING so that this package does not import the code
// under test.
func ping(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	b := make([]byte, 16)
	n, err := c.Read(b)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b[:n]), "PONG") {
		return fmt.Errorf("reply %q", b[:n])
	}
	return nil
}

// Stop terminates clamd and waits for it to exit (bounded). Safe to call
// more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd.Process == nil {
			return
		}
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}
