package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// topLive is a fixed live view with hostile text wherever an outsider
// or a user can put some.
func topLive() admin.Live {
	t0 := time.Date(2026, 5, 4, 9, 30, 15, 0, time.UTC)
	v := admin.Live{
		Time: t0,
		TopIPs: []admin.TopSender{
			{Key: "10.0.0.5", Trusted: true, MsgsPerMin: 31, RcptsPerMin: 93, LimitMsgs: 30, LimitRcpts: 100, Isolated: true},
			{Key: "203.0.113.9", Outside: true, MsgsPerMin: 12, RcptsPerMin: 240, LimitMsgs: 60, LimitRcpts: 200},
			{Key: "2001:db8:1:2::/64", Outside: true, MsgsPerMin: 0, RcptsPerMin: 3, LimitMsgs: 60, LimitRcpts: 200},
			{Key: "10.0.0.17", Trusted: true, MsgsPerMin: 2, RcptsPerMin: 2, LimitMsgs: 500, LimitRcpts: 2000},
		},
		TopUsers: []admin.TopSender{
			{Key: evil + "@corp.test", MsgsPerMin: 9, RcptsPerMin: 40, LimitMsgs: 30, LimitRcpts: 100, Isolated: true},
			{Key: "alice@corp.test", MsgsPerMin: 3, RcptsPerMin: 3, LimitMsgs: 30, LimitRcpts: 100},
		},
		Guard: guard.Snapshot{
			Isolated: []guard.Isolation{
				{IP: "10.0.0.5", Sender: "pc5@corp.test", Rule: "rate.msgs_per_minute", Counts: map[string]int{"msgs_per_minute": 31, "rcpts_per_minute": 93}, Since: t0.Add(-50 * time.Second), Held: 412},
				{IP: "198.51.100.7", User: evil + "@corp.test", Sender: evil + "@corp.test", Rule: "header_from", Since: t0.Add(-20 * time.Second), Held: 3},
			},
			Suspended: []guard.Suspension{{User: "bob@corp.test", Rule: "login.new_network_burst", Since: t0.Add(-time.Hour)}},
			Bans:      []guard.Ban{{CIDR: "192.0.2.0/24", Rule: "auth.spray", Expires: t0.Add(2 * time.Hour), Strikes: 2}},
		},
		Alerts: []admin.AlertItem{
			{Time: t0.Add(-20 * time.Second), Kind: "isolated", Rule: "header_from", IP: "198.51.100.7", User: evil + "@corp.test", Detail: "header_from tripped: " + evil},
			{Time: t0.Add(-50 * time.Second), Kind: "isolated", Rule: "rate.msgs_per_minute", IP: "10.0.0.5", Detail: "rate.msgs_per_minute tripped on the ip key; its new mail is held and its queued mail too"},
			{Time: t0.Add(-time.Hour), Kind: "banned", Rule: "auth.spray\r\nfake: line", IP: "192.0.2.1", Detail: "5 usernames failing from one network"},
		},
		Queue: admin.QueueCounts{
			Messages: map[string]int{"active": 3, "deferred": 1, "held": 415},
			Bytes:    map[string]int64{"active": 3000, "deferred": 700, "held": 1_234_567},
		},
		Sessions: map[string]int{"smtp": 4, "submission": 1, "imap": 12},
	}
	for i := range 60 {
		m := admin.TrafficMinute{Time: t0.Truncate(time.Minute).Add(time.Duration(i-59) * time.Minute), In: (i * 7) % 23, Out: (i * 5) % 11}
		if i == 58 {
			m.In, m.Out = 44, 10
		}
		if i == 59 {
			m.In, m.Out, m.Held, m.Guard, m.Isolated = 40, 9, 10, 11, 1
		}
		v.Traffic = append(v.Traffic, m)
	}
	return v
}

// checkPrintable fails on any control character (but \n), bidi control
// or invalid UTF-8 in out: nothing a sender wrote may reach the terminal
// raw.
func checkPrintable(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: invalid UTF-8", what)
	}
	for i, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Errorf("%s: raw %U at byte %d", what, r, i)
			return
		}
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	testutil.Golden(t, name, got, *update)
}

// TestTopOnce: the plain snapshot, against a golden file; hostile text
// shows as visible escapes.
func TestTopOnce(t *testing.T) {
	var b bytes.Buffer
	writeTopOnce(&b, topLive())
	out := b.String()
	golden(t, "top_once.golden", out)
	checkPrintable(t, "top --once", out)
	for _, want := range []string{`x\x1b[2J\x1b]0;t\x07\u009b1m\x7f\u202eexe.pdf\u2066@corp.test`, `auth.spray\r\nfake: line`,
		"10.0.0.5", "ISOLATED", "!31/30", "!240/200", "held 415 (1.2M)", "imap 12"} {
		if !strings.Contains(out, want) {
			t.Errorf("--once output lacks %q", want)
		}
	}
}

// TestTopScreen: the full-screen frame fits any terminal size (no line
// wider, no more lines than the terminal), holds no raw control, and at
// 80×24 matches a golden file.
func TestTopScreen(t *testing.T) {
	v := topLive()
	frame := func(w, h int) string {
		var lines []string
		for _, l := range renderScreen(v, w, h, "q: quit") {
			lines = append(lines, l.text)
		}
		return strings.Join(lines, "\n") + "\n"
	}
	golden(t, "top_screen_80x24.golden", frame(80, 24))
	for _, sz := range [][2]int{{80, 24}, {132, 43}, {60, 15}, {40, 10}, {20, 3}, {8, 2}, {250, 80}} {
		lines := renderScreen(v, sz[0], sz[1], "q: quit")
		if len(lines) > sz[1] {
			t.Errorf("%dx%d: %d lines", sz[0], sz[1], len(lines))
		}
		for _, l := range lines {
			if n := utf8.RuneCountInString(l.text); n > sz[0] {
				t.Errorf("%dx%d: line of %d columns: %q", sz[0], sz[1], n, l.text)
			}
		}
		checkPrintable(t, fmt.Sprintf("%dx%d", sz[0], sz[1]), frame(sz[0], sz[1]))
	}
	// With room, every list is shown whole; at 80×24 each keeps its title.
	big := frame(250, 80)
	for _, want := range []string{"alice@corp.test", "192.0.2.0/24", "5 usernames failing"} {
		if !strings.Contains(big, want) {
			t.Errorf("250x80 frame lacks %q", want)
		}
	}
	small := frame(80, 24)
	for _, want := range []string{"top senders by IP", "top senders by user", "isolated, suspended, banned", "recent alerts", "10.0.0.5"} {
		if !strings.Contains(small, want) {
			t.Errorf("80x24 frame lacks %q", want)
		}
	}
	// The frame's escapes are mamori's own: bold titles, clear to end of
	// line; the text between them is the checked text.
	var b bytes.Buffer
	if err := drawFrame(&b, renderScreen(v, 80, 24, "q: quit")); err != nil {
		t.Fatal(err)
	}
	raw := b.String()
	for _, seq := range []string{"\x1b[H", "\x1b[1m", "\x1b[0m", "\x1b[K", "\x1b[J"} {
		raw = strings.ReplaceAll(raw, seq, "")
	}
	checkPrintable(t, "drawn frame", strings.ReplaceAll(raw, "\r\n", "\n"))
}

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		vals  []int
		width int
		want  string
	}{
		{[]int{0, 1, 2, 3, 4, 5, 6, 7}, 8, "▁▂▃▄▅▆▇█"},
		{[]int{0, 0, 0}, 10, "▁▁▁"},
		{[]int{5, 0, 100, 50}, 3, "▁█▅"},
		{[]int{1, 2}, 0, ""},
	} {
		if got := sparkline(tc.vals, tc.width); got != tc.want {
			t.Errorf("sparkline(%v, %d) = %q, want %q", tc.vals, tc.width, got, tc.want)
		}
	}
}

// liveServer is a fake admin API serving v, with the config that points
// at it.
func liveServer(t *testing.T, v admin.Live) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/v1/live", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(v)
	})
	return configFor(t, mux)
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// TestTopCommand: --once and --once --json through the admin API; usage
// errors exit 2; no server running exits 1.
func TestTopCommand(t *testing.T) {
	v := topLive()
	cfg := liveServer(t, v)
	var out, errOut bytes.Buffer
	if err := run([]string{"top", "--once", "--config", cfg}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("top --once: %v", err)
	}
	var want bytes.Buffer
	writeTopOnce(&want, v)
	if out.String() != want.String() {
		t.Errorf("top --once printed:\n%s\nwant:\n%s", out.String(), want.String())
	}
	out.Reset()
	if err := run([]string{"top", "--once", "--json", "--config", cfg}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("top --once --json: %v", err)
	}
	checkPrintable(t, "--json", out.String())
	var got admin.Live
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if !reflect.DeepEqual(got, v) {
		t.Errorf("--json decodes to\n%+v\nwant\n%+v", got, v)
	}

	for _, args := range [][]string{
		{"top", "--json", "--config", cfg},          // --json needs --once
		{"top", "--once", "extra", "--config", cfg}, // no arguments
		{"top", "--once", "--bogus", "--config", cfg},
		{"top", "--once"},        // no config
		{"top", "--config", cfg}, // interactive, but stdout is no terminal
	} {
		err := run(args, strings.NewReader(""), &out, &errOut)
		if c := exitCode(err); c != 2 {
			t.Errorf("%v: exit %d (%v), want 2", args, c, err)
		}
	}

	// A server that is not running: exit 1, saying so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	p, _ := strconv.Atoi(port)
	res, err := config.Init(config.InitOptions{Dir: t.TempDir(), Domain: "example.test", ListenHost: "127.0.0.1", AdminPort: p,
		SMTPPort: 1, SubmissionPort: 2, SubmissionsPort: 3})
	if err != nil {
		t.Fatal(err)
	}
	err = run([]string{"top", "--once", "--config", res.ConfigPath}, strings.NewReader(""), &out, &errOut)
	if c := exitCode(err); c != 1 || !strings.Contains(err.Error(), "not running") {
		t.Errorf("no server: exit %d (%v), want 1 and 'not running'", c, err)
	}
}
