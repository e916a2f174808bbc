package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writeFileAtomic replaces path as an editor or config manager would,
// so a reload never reads half a file.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// sendMail sends one message over one SMTP session with net/smtp, from
// the loopback address src ("" for any).
func sendMail(src, addr, from string, to []string, body string) error {
	conn, err := dialFrom(src, addr)
	if err != nil {
		return err
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: test\r\n\r\n%s\r\n", from, to[0], body)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// serverCertSerial returns the serial of the certificate the submission
// listener presents after STARTTLS.
func serverCertSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	st, _ := c.TLSConnectionState()
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestReloadMidTraffic: a limit changed and SIGHUP sent while clients keep
// sending: no session is refused or dropped, a session that began before
// the reload keeps its limits, new sessions get the new ones; a new TLS
// pair is served without a restart; a broken config on SIGHUP (and on
// mamori reload) is refused and the server runs on with the old one.
func TestReloadMidTraffic(t *testing.T) {
	in := newInstance(t, "reload.test", func(cfg string) string {
		return strings.Replace(cfg, "[guard]\n", "[guard]\ninbound_msgs_per_minute = 100000\ninbound_rcpts_per_minute = 100000\nconns_per_minute = 100000\n", 1)
	})
	in.addUser("rcpt@reload.test", pw)
	in.start()
	pid := in.cmd.Process.Pid
	oldSerial := serverCertSerial(t, in.submission)

	// A session begun before the reload.
	early, err := smtp.Dial(in.smtp)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if err := early.Hello("early.test"); err != nil {
		t.Fatal(err)
	}

	// Traffic: 4 clients, one message of 2 recipients per session.
	var sent, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 500; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := sendMail("", in.smtp, "peer@far.test", []string{"rcpt@reload.test", "rcpt@reload.test"}, "traffic"); err != nil {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, err.Error())
					errMu.Unlock()
					continue
				}
				sent.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)

	// New limit and a new TLS pair, then SIGHUP mid-traffic.
	b, _ := os.ReadFile(in.cfg)
	writeFileAtomic(t, in.cfg, []byte(setKey(string(b), "max_recipients", "3")))
	other := t.TempDir()
	if out, err := exec.Command(mamoriBin, "init", "--dir", other, "--domain", "reload.test").CombinedOutput(); err != nil {
		t.Fatalf("init for a new TLS pair: %v\n%s", err, out)
	}
	for _, f := range []string{"cert.pem", "key.pem"} {
		nb, err := os.ReadFile(filepath.Join(other, "tls", f))
		if err != nil {
			t.Fatal(err)
		}
		writeFileAtomic(t, filepath.Join(in.dir, "tls", f), nb)
	}
	syscall.Kill(pid, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(in.log(), `"msg":"reloaded"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", in.logTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || sent.Load() < 20 {
		t.Fatalf("traffic across the reload: %d sent, %d failed: %v", sent.Load(), failed.Load(), errs[:min(len(errs), 5)])
	}

	// The early session keeps max_recipients 100; a new one gets 3.
	if err := early.Mail("peer@far.test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := early.Rcpt("rcpt@reload.test"); err != nil {
			t.Fatalf("session begun before the reload: RCPT %d refused: %v", i+1, err)
		}
	}
	early.Reset()
	err = sendMail("", in.smtp, "peer@far.test", []string{"rcpt@reload.test", "rcpt@reload.test", "rcpt@reload.test", "rcpt@reload.test"}, "four")
	if err == nil || !strings.Contains(err.Error(), "452") {
		t.Errorf("new session after reload, 4 recipients with max_recipients 3: %v", err)
	}
	if got := serverCertSerial(t, in.submission); got == oldSerial {
		t.Error("the submission listener still presents the old certificate after reload")
	}
	in.waitMail("rcpt@reload.test", int(sent.Load()), 30*time.Second) // the two recipients are one mailbox

	// A broken config: refused on SIGHUP and by mamori reload; the server
	// keeps running on the old one.
	good, _ := os.ReadFile(in.cfg)
	writeFileAtomic(t, in.cfg, append(bytes.Clone(good), []byte("\n[limits\nbroken = \n")...))
	syscall.Kill(pid, syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(in.log(), "reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("a broken config was not refused in the log:\n%s", in.logTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := in.cli("", "reload")
	if err == nil || !strings.Contains(out, "old configuration stays in force") {
		t.Errorf("mamori reload with a broken config: err=%v\n%s", err, out)
	}
	if err := sendMail("", in.smtp, "peer@far.test", []string{"rcpt@reload.test"}, "after broken"); err != nil {
		t.Errorf("server after a refused reload: %v", err)
	}
	err = sendMail("", in.smtp, "peer@far.test", []string{"rcpt@reload.test", "rcpt@reload.test", "rcpt@reload.test", "rcpt@reload.test"}, "four")
	if err == nil || !strings.Contains(err.Error(), "452") {
		t.Errorf("after a refused reload the last good limit (3) should hold: %v", err)
	}
	// Fixed again: mamori reload applies and says what needs a restart.
	writeFileAtomic(t, in.cfg, []byte(setKey(string(good), "smtp", `"127.0.0.1:1"`)))
	out, err = in.cli("", "reload")
	if err != nil || !strings.Contains(out, "reloaded") || !strings.Contains(out, "listen") {
		t.Errorf("mamori reload: err=%v\n%s", err, out)
	}
}
