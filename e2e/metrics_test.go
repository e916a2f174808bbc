package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetrics scrapes /metrics with the admin token before and after real
// traffic — a message accepted on port 25 and delivered to a mailbox, a
// relay attempt refused at RCPT, a wrong password on submission, an IMAP
// login — and checks that each counter moved by exactly what that traffic
// makes it move; and that /metrics refuses a request without the token or
// with a wrong one.
func TestMetrics(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	in.addUser("alice@ours.test", pw)
	in.start()

	for _, auth := range []string{"", "Bearer wrong-" + in.token, "Basic " + in.token, in.token} {
		code, body := scrapeWith(t, in.admin, auth)
		if code != http.StatusUnauthorized {
			t.Errorf("/metrics with Authorization %q: %d, want 401", auth, code)
		}
		if strings.Contains(body, "mamori_") {
			t.Errorf("/metrics with Authorization %q leaked metrics:\n%.300s", auth, body)
		}
	}

	before := scrape(t, in)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes",
		`mamori_queue_messages{state="active"}`, "mamori_guard_bans"} {
		if _, ok := before[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	host, port, _ := strings.Cut(in.smtp, ":")
	// 1. A message from outside to a local user: accepted, delivered.
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "someone@outside.test",
		"--to", "alice@ours.test", "--h-Subject", "metrics"); code != 0 {
		t.Fatalf("swaks mx exit %d:\n%s", code, out)
	}
	// 2. A relay attempt: refused at RCPT.
	out, code := swaks(t, "--server", host, "--port", port, "--from", "someone@outside.test",
		"--to", "victim@elsewhere.test")
	if code == 0 || !strings.Contains(replyTo(out, "RCPT TO"), "554 5.7.1") {
		t.Fatalf("relay attempt not refused with 554 5.7.1 (exit %d):\n%s", code, out)
	}
	// 3. A wrong password on submission.
	subHost, subPort, _ := strings.Cut(in.submission, ":")
	out, code = swaks(t, "--server", subHost, "--port", subPort, "--tls", "--auth", "PLAIN",
		"--auth-user", "alice@ours.test", "--auth-password", "wrong password",
		"--from", "alice@ours.test", "--to", "alice@ours.test")
	if code == 0 || !strings.Contains(out, "535 5.7.8") {
		t.Fatalf("wrong password: want 535 5.7.8, exit %d:\n%s", code, out)
	}
	// 4. An IMAP login over implicit TLS.
	imapHost, imapPort, _ := strings.Cut(in.imaps, ":")
	if out, err := python(t, `
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL(sys.argv[1], int(sys.argv[2]), ssl_context=ctx, timeout=10)
M.login(sys.argv[3], sys.argv[4])
M.logout()
print("ok")
`, imapHost, imapPort, "alice@ours.test", pw); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("imap login: %v\n%s", err, out)
	}
	in.waitMail("alice@ours.test", 1, 20*time.Second)

	// What that traffic must have done, exactly.
	want := map[string]float64{
		`mamori_messages_accepted_total{origin="inbound"}`:                           1,
		`mamori_messages_accepted_total{origin="submitted"}`:                         0,
		`mamori_messages_refused_total{reason="relay",stage="rcpt"}`:                 1,
		`mamori_auth_total{protocol="smtp",result="failure"}`:                        1,
		`mamori_auth_total{protocol="smtp",result="success"}`:                        0,
		`mamori_auth_total{protocol="imap",result="success"}`:                        1,
		`mamori_auth_total{protocol="imap",result="failure"}`:                        0,
		`mamori_connections_total{listener="smtp",result="admitted"}`:                2,
		`mamori_connections_total{listener="submission",result="admitted"}`:          1,
		`mamori_connections_total{listener="imaps",result="admitted"}`:               1,
		`mamori_connections_total{listener="smtp",result="refused"}`:                 0,
		`mamori_deliveries_total{kind="local",result="delivered"}`:                   1,
		`mamori_deliveries_total{kind="remote",result="delivered"}`:                  0,
		`mamori_delivery_attempt_duration_seconds_count{kind="local"}`:               1,
		`mamori_guard_decisions_total{rule="none",stage="connect",verdict="accept"}`: 4,
		`mamori_guard_decisions_total{rule="none",stage="rcpt",verdict="accept"}`:    2,
		`mamori_guard_decisions_total{rule="none",stage="data",verdict="accept"}`:    1,
		`mamori_guard_decisions_total{rule="none",stage="auth",verdict="accept"}`:    2,
		`mamori_messages_held_total{source="guard"}`:                                 0,
		`mamori_sessions_open{listener="smtp"}`:                                      0,
		`mamori_sessions_open{listener="imaps"}`:                                     0,
		`mamori_queue_messages{state="active"}`:                                      0,
	}
	// Delivery is recorded just after the mailbox write and sessions
	// close just after the client's QUIT: wait for the counters to settle
	// on the expected values (they must then be exact, never more).
	var after map[string]float64
	var bad []string
	for deadline := time.Now().Add(15 * time.Second); ; {
		after = scrape(t, in)
		bad = bad[:0]
		for k, d := range want {
			if got := after[k] - before[k]; got != d {
				bad = append(bad, fmt.Sprintf("%s moved by %v, want %v", k, got, d))
			}
		}
		if len(bad) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(bad)
	for _, b := range bad {
		t.Error(b)
	}
	// No label carries an address or IP.
	for k := range after {
		if strings.Contains(k, "@") || strings.Contains(k, "127.0.0.1") {
			t.Errorf("series with an address or IP in its labels: %s", k)
		}
	}
	if t.Failed() {
		t.Logf("log tail:\n%s", in.logTail(40))
	}
}

// scrape reads /metrics with the admin token into series → value.
func scrape(t *testing.T, in *instance) map[string]float64 {
	t.Helper()
	code, body := scrapeWith(t, in.admin, "Bearer "+in.token)
	if code != http.StatusOK {
		t.Fatalf("/metrics with the token: %d\n%s", code, body)
	}
	return parseExposition(t, body)
}

func scrapeWith(t *testing.T, addr, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// parseExposition reads the Prometheus text format: one sample per line,
// `name{a="x",b="y"} value`, labels put in name order so keys are stable.
func parseExposition(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad exposition line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		series := line[:i]
		if name, labels, ok := strings.Cut(series, "{"); ok {
			pairs := strings.Split(strings.TrimSuffix(labels, "}"), ",")
			slices.Sort(pairs)
			series = name + "{" + strings.Join(pairs, ",") + "}"
		}
		out[series] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
