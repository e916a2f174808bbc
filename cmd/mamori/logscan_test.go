package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan"
	"github.com/mamori-mail/mamori/internal/logscan/loggen"
	"github.com/mamori-mail/mamori/internal/testutil"
)

const logscanSample = `May  4 09:00:01 mx1 postfix/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5]
May  4 09:00:02 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<alice@corp.test>, size=1500, nrcpt=2 (queue active)
May  4 09:00:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<bob@ext.example>, relay=mx[192.0.2.1]:25, status=sent (ok)
May  4 09:00:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<carol@ext.example>, relay=mx[192.0.2.1]:25, status=sent (ok)
May  4 09:00:04 mx1 postfix/qmgr[3]: 4ABCDEF01: removed
May  4 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@far.example>: Relay access denied; from=<` + "evil\x1b[2J\xff" + `@spam.example> to=<x@far.example> proto=ESMTP helo=<h>
`

func TestLogscanJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"logscan", "--json", "--year", "2026", "-"}, strings.NewReader(logscanSample), &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	var r struct {
		Senders []struct {
			Address    string `json:"address"`
			Messages   *int   `json:"messages"`
			Recipients *int   `json:"recipients"`
		} `json:"senders"`
		Clients []struct {
			IP       string `json:"ip"`
			Messages *int   `json:"messages"`
		} `json:"clients"`
		Findings []struct {
			Kind     string          `json:"kind"`
			Subject  string          `json:"subject"`
			Evidence json.RawMessage `json:"evidence"`
		} `json:"findings"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(r.Senders) != 2 || r.Senders[0].Address != "alice@corp.test" || *r.Senders[0].Messages != 1 || *r.Senders[0].Recipients != 2 {
		t.Errorf("senders: %s", out.String())
	}
	if len(r.Clients) != 2 || r.Clients[0].IP != "10.0.0.5" || *r.Clients[0].Messages != 1 {
		t.Errorf("clients: %s", out.String())
	}
	if r.Findings == nil || len(r.Findings) != 0 {
		t.Errorf("findings should be an empty list: %s", out.String())
	}
	if bytes.ContainsRune(out.Bytes(), 0x1b) {
		t.Error("escape byte in JSON output")
	}
}

func TestLogscanText(t *testing.T) {
	p := filepath.Join(t.TempDir(), "maillog")
	if err := os.WriteFile(p, []byte(logscanSample), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"logscan", p, "--year", "2026"}, nil, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	s := out.String()
	if !strings.Contains(s, "FINDINGS (0)") || !strings.Contains(s, "alice@corp.test") || !strings.Contains(s, "10.0.0.5") {
		t.Errorf("report:\n%s", s)
	}
	if strings.ContainsRune(s, 0x1b) {
		t.Errorf("raw escape reached the terminal:\n%s", s)
	}
	if err := run([]string{"logscan", "--format", "qmail", p}, nil, &out, &errb); err == nil {
		t.Error("--format qmail accepted")
	}
}

// reportLog is a deterministic day with every kind of episode, and a
// sender and subject that try to break out of the HTML.
func reportLog(t *testing.T) []byte {
	t.Helper()
	day := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	g := loggen.New(11, day)
	g.NormalDay(60, 10)
	g.Worm("10.0.9.99", day.Add(14*time.Hour), 12*time.Minute, 200)
	g.RelayStorm("203.0.113.66", day.Add(3*time.Hour), 5*time.Minute, 40)
	g.OpenRelay("100.70.0.9", day.Add(4*time.Hour), 8*time.Minute, 12)
	g.Raw(day.Add(5*time.Hour), `May  4 05:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.51.100.7]: 554 5.7.1 <x@far.example>: Relay access denied; from=<"<script>alert(1)</script>"@evil.example> to=<x@far.example> proto=ESMTP helo=<h>`)
	return []byte(strings.Join(g.Lines(), "\n") + "\n")
}

func TestLogscanHTMLGolden(t *testing.T) {
	rep, err := logscan.Scan([]logscan.Input{{Name: "/var/log/maillog", R: bytes.NewReader(reportLog(t))}}, logscan.Options{Clock: logscan.Clock{Year: 2026}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) < 3 {
		t.Fatalf("findings %+v", rep.Findings)
	}
	var b bytes.Buffer
	if err := writeHTML(&b, rep, 5, time.UTC); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script", "http://", "https://", "src=", "<link", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q: not self-contained or not escaped", bad)
		}
	}
	for _, want := range []string{"<svg", "Messages per hour", "Rejects per hour", "Deferrals per hour", "10.0.9.99", "open-relay"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Index(page, "Findings (") > strings.Index(page, "Senders (") {
		t.Error("findings do not come first")
	}
	testutil.Golden(t, "logscan_report.golden.html", page, *update)
	// Every sender listed: the hostile one is there, escaped.
	b.Reset()
	if err := writeHTML(&b, rep, 100000, time.UTC); err != nil {
		t.Fatal(err)
	}
	if page = b.String(); strings.Contains(page, "<script") || !strings.Contains(page, "&lt;script") {
		t.Error("the hostile sender is missing or not escaped")
	}
}

func TestLogscanHTMLFlag(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "maillog")
	if err := os.WriteFile(p, reportLog(t), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "report.html")
	var stdout, stderr bytes.Buffer
	if err := run([]string{"logscan", "--year", "2026", "--html", out, p}, nil, &stdout, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	page, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(page, []byte("<!DOCTYPE html>")) || !bytes.Contains(page, []byte("10.0.9.99")) {
		t.Errorf("page: %.200s", page)
	}
	if !strings.Contains(stdout.String(), "FINDINGS (") {
		t.Errorf("the text report is still printed: %s", stdout.String())
	}
	// Not a terminal: no progress bar, nothing on stderr.
	if stderr.Len() != 0 {
		t.Errorf("stderr when piped: %q", stderr.String())
	}
}

// TestLogscanThresholdFlags: the thresholds and --local-domain reach the
// detectors.
func TestLogscanThresholdFlags(t *testing.T) {
	var b strings.Builder
	for i := range 3 {
		fmt.Fprintf(&b, "May  4 09:00:0%d mx1 postfix/smtpd[1]: 4ABCDEF0%d: client=out[100.70.0.9]\n", i, i)
		fmt.Fprintf(&b, "May  4 09:00:0%d mx1 postfix/qmgr[3]: 4ABCDEF0%d: from=<s@spam.example>, size=100, nrcpt=1 (queue active)\n", i, i)
		fmt.Fprintf(&b, "May  4 09:00:0%d mx1 postfix/smtp[4]: 4ABCDEF0%d: to=<v%d@victim.example>, relay=mx.victim.example[192.0.2.1]:25, dsn=2.0.0, status=sent (ok)\n", i, i, i)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"--local-domain", "corp.test"}, nil}, // 3 relayed: under 5
		{[]string{"--local-domain", "corp.test", "--relay-out", "3"}, []string{"open-relay 100.70.0.9"}},
		{[]string{"--local-domain", "victim.example", "--relay-out", "3"}, nil}, // ours, then
		{[]string{"--worm-msgs", "3"}, []string{"worm 100.70.0.9", "worm s@spam.example"}},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"logscan", "--json", "--year", "2026"}, tc.args...)
		if err := run(append(args, "-"), strings.NewReader(b.String()), &out, &errb); err != nil {
			t.Fatal(err, errb.String())
		}
		var r struct {
			Findings []struct{ Kind, Subject string }
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		var got []string
		for _, f := range r.Findings {
			got = append(got, f.Kind+" "+f.Subject)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: findings %v, want %v", tc.args, got, tc.want)
		}
	}
	var out, errb bytes.Buffer
	for _, bad := range [][]string{{"--window", "10s"}, {"--local-domain", "a@b"}, {"--webhook", "http://x"}, {"--follow", "a", "b"}} {
		if err := run(append([]string{"logscan"}, append(bad, "x")...), nil, &out, &errb); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestProgressThrottled: the progress line is redrawn at most once per
// interval whatever the read rate, and cleared at the end.
func TestProgressThrottled(t *testing.T) {
	var mu sync.Mutex
	var b bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return b.Write(p) })
	var n atomic.Int64
	stop := runProgress(w, n.Load, 1<<30, 50*time.Millisecond)
	for range 300 {
		n.Add(1 << 20)
		time.Sleep(time.Millisecond)
	}
	time.Sleep(60 * time.Millisecond)
	stop()
	mu.Lock()
	s := b.String()
	mu.Unlock()
	draws := strings.Count(s, "logscan: ")
	if draws == 0 || draws > 12 {
		t.Errorf("%d redraws in about 0.4 s at one per 50 ms", draws)
	}
	if !strings.Contains(s, "M of 1.0G (") {
		t.Errorf("progress line: %q", s)
	}
	if !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("not cleared at the end: %q", s[max(0, len(s)-40):])
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestSpanEnd(t *testing.T) {
	day := time.Date(2026, 3, 2, 13, 51, 0, 0, time.UTC)
	for _, tc := range []struct {
		last time.Time
		want string
	}{
		{day.Add(time.Hour), "14:51"},
		{day.Add(18 * time.Hour), "Mar  3 07:51"},
	} {
		if got := spanEnd(day, tc.last, "Jan _2 15:04"); got != tc.want {
			t.Errorf("spanEnd(%v) = %q, want %q", tc.last, got, tc.want)
		}
	}
}

// TestLogscanTextHoursBounded: a log of many days prints its busiest 48
// hours in time order, not hundreds of rows; --json keeps every hour.
func TestLogscanTextHoursBounded(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var lines []string
	for d := range 5 { // five quiet days…
		g := loggen.New(uint64(100+d), start.AddDate(0, 0, d))
		g.NormalDay(1, 10)
		lines = append(lines, g.Lines()...)
	}
	peak := time.Date(2026, 5, 6, 14, 0, 0, 0, time.UTC)
	g := loggen.New(7, peak)
	g.Worm("10.0.9.99", peak, 12*time.Minute, 300) // …and one busy hour
	lines = append(lines, g.Lines()...)
	p := filepath.Join(t.TempDir(), "maillog")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"logscan", p, "--year", "2026"}, nil, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	_, hours, ok := strings.Cut(out.String(), "\nHOURS")
	if !ok {
		t.Fatalf("no HOURS table:\n%s", out.String())
	}
	rows := strings.Count(hours, "\n") - 2 // the title and header lines
	if !strings.Contains(hours, "busiest") || rows != maxTextHours {
		t.Fatalf("HOURS table has %d rows (want %d, the busiest):\n%s", rows, maxTextHours, hours)
	}
	if !strings.Contains(hours, peak.In(time.Local).Format("Jan _2 15:00")) {
		t.Errorf("the busiest hour is not listed:\n%s", hours)
	}
	out.Reset()
	if err := run([]string{"logscan", "--json", p, "--year", "2026"}, nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	var rep struct{ Hours []json.RawMessage }
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Hours) <= maxTextHours {
		t.Fatalf("--json has %d hours (%v), want them all", len(rep.Hours), err)
	}
}
