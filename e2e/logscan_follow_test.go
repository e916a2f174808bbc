package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

// webhookSink is an httptest webhook that keeps the alerts POSTed to it.
type webhookSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []guard.Alert
	ch  chan guard.Alert
}

func newWebhookSink(t *testing.T) *webhookSink {
	s := &webhookSink{ch: make(chan guard.Alert, 100)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a guard.Alert
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, a)
		s.mu.Unlock()
		s.ch <- a
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// wait returns the first alert with rule within timeout.
func (s *webhookSink) wait(t *testing.T, rule string, timeout time.Duration) guard.Alert {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case a := <-s.ch:
			if a.Rule == rule {
				return a
			}
		case <-deadline:
			t.Fatalf("no %s alert at the webhook within %v", rule, timeout)
		}
	}
}

func (s *webhookSink) count(rule, ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.got {
		if a.Rule == rule && a.IP == ip {
			n++
		}
	}
	return n
}

// follower runs `mamori logscan --follow` and waits until it watches.
func startFollower(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(mamoriBin, append([]string{"logscan", "--follow", "--year", "2026"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var mu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "watching for findings") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("logscan --follow stderr:\n%s", log.String())
			mu.Unlock()
		}
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("logscan --follow did not start watching")
	}
	return cmd
}

func appendLog(t *testing.T, path string, lines []string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < len(lines); i += 50 { // as a syslog daemon writes: in bursts
		if _, err := f.WriteString(strings.Join(lines[i:min(i+50, len(lines))], "\n") + "\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestLogscanFollowWebhook: a worm episode appended to a growing Postfix
// log raises one alert at the webhook within seconds, naming the worm's
// IP; after the log is rotated by rename, a relay storm in the new file
// is alerted too.
func TestLogscanFollowWebhook(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "maillog")
	day := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	g := loggen.New(1, day)
	g.Hour(day.Add(9*time.Hour), 200, 20)
	normal := g.Lines()
	appendLog(t, path, normal[:len(normal)/2])
	hook := newWebhookSink(t)
	startFollower(t, "--webhook", hook.srv.URL, path)

	appendLog(t, path, normal[len(normal)/2:])
	w := loggen.New(2, day)
	w.Worm("10.0.9.99", day.Add(10*time.Hour), 6*time.Minute, 250)
	start := time.Now()
	appendLog(t, path, w.Lines())
	a := hook.wait(t, "logscan.worm", 5*time.Second)
	t.Logf("worm alert %v after the episode started to be written", time.Since(start).Round(time.Millisecond))
	if a.IP != "10.0.9.99" || a.Kind != "logscan" || a.Counts["messages"] < 50 || len(a.Rcpts) == 0 {
		t.Errorf("worm alert: %+v", a)
	}

	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	r := loggen.New(3, day)
	r.RelayStorm("203.0.113.66", day.Add(11*time.Hour), 4*time.Minute, 60)
	appendLog(t, path, r.Lines())
	if a := hook.wait(t, "logscan.relay-denied", 5*time.Second); a.IP != "203.0.113.66" {
		t.Errorf("relay alert after rotation: %+v", a)
	}
	time.Sleep(500 * time.Millisecond)
	if n := hook.count("logscan.worm", "10.0.9.99"); n != 1 {
		t.Errorf("%d worm alerts for one episode, want 1", n)
	}
	for _, a := range hook.got {
		if a.IP != "10.0.9.99" && a.IP != "203.0.113.66" {
			t.Errorf("alert about the normal traffic: %+v", a)
		}
	}
}

// TestLogscanFollowConfig: with --config, alerts are mailed to the
// postmaster through the server's own SMTP listener.
func TestLogscanFollowConfig(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.start()
	pw := "postmaster-pw-1234"
	in.addUser("postmaster@ours.test", pw)
	path := filepath.Join(t.TempDir(), "maillog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	startFollower(t, "--config", in.cfg, path)
	day := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	b := loggen.New(4, day)
	b.BruteForce("198.51.100.23", day.Add(22*time.Hour), 5*time.Minute, 40)
	appendLog(t, path, b.Lines())
	msgs := in.waitMail("postmaster@ours.test", 1, 20*time.Second)
	if all := strings.Join(msgs, "\n"); !strings.Contains(all, "198.51.100.23") || !strings.Contains(all, "logscan.auth-bruteforce") {
		t.Errorf("postmaster mail does not name the attacker and rule:\n%s", all)
	}
}
