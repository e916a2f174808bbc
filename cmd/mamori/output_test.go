package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// evil is text an outsider controls: ESC sequences, BEL, a C1 CSI, DEL
// and bidi overrides.
const evil = "x\x1b[2J\x1b]0;t\x07\u009b1m\x7f\u202eexe.pdf\u2066"

// fakeServer answers the admin API with evil text everywhere and returns
// the path of a config that points at it.
func fakeServer(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/v1/guard", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(guard.Snapshot{
			Isolated:  []guard.Isolation{{IP: "192.0.2.1", Sender: evil + "@x.test", User: evil, Rule: "rate " + evil, Counts: map[string]int{evil: 3}, Since: time.Now()}},
			Suspended: []guard.Suspension{{User: evil, Rule: evil, Since: time.Now()}},
			Bans:      []guard.Ban{{CIDR: "192.0.2.0/24", Rule: evil, Expires: time.Now().Add(time.Hour)}},
			Throttled: []guard.Throttle{{User: evil + "@x.test", Since: time.Now(), Until: time.Now().Add(time.Hour), Failures: 11}},
		})
	})
	mux.HandleFunc("/api/v1/queue", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]admin.QueueItem{{ID: "0123456789abcdef", From: evil + "@x.test", To: []string{evil + "@y.test"},
			ClientIP: "192.0.2.1", User: evil, State: "held", Subject: evil, Rule: evil}})
	})
	mux.HandleFunc("/api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]mailbox.User{{Address: evil + "@x.test"}})
	})
	return configFor(t, mux)
}

// configFor serves mux as a fake admin API and returns a config file
// whose admin listener points at it.
func configFor(t *testing.T, mux *http.ServeMux) string {
	t.Helper()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	res, err := config.Init(config.InitOptions{Dir: t.TempDir(), Domain: "example.test", ListenHost: "127.0.0.1", AdminPort: p,
		SMTPPort: 1, SubmissionPort: 2, SubmissionsPort: 3})
	if err != nil {
		t.Fatal(err)
	}
	return res.ConfigPath
}

// TestListsEscapeControls: guard list, queue list and user list print
// every control character an outsider put in a field as a visible escape;
// --json keeps the value but writes no raw control either.
func TestListsEscapeControls(t *testing.T) {
	cfg := fakeServer(t)
	for _, args := range [][]string{
		{"guard", "list"}, {"guard", "list", "--json"},
		{"queue", "list"}, {"queue", "list", "--json"},
		{"user", "list"},
	} {
		var out, errb bytes.Buffer
		if err := run(append(args, "--config", cfg), strings.NewReader(""), &out, &errb); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		s := out.String()
		for _, r := range s {
			if (r < 0x20 && r != '\n' && r != '\t' && r != ' ') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
				t.Errorf("%v printed a raw %U:\n%q", args, r, s)
				break
			}
		}
		if args[len(args)-1] == "--json" {
			var v any
			if err := json.Unmarshal(out.Bytes(), &v); err != nil || !strings.Contains(fmtJSON(v), evil) {
				t.Errorf("%v: JSON does not decode to the raw value (%v)", args, err)
			}
		} else if !strings.Contains(s, `x\x1b[2J`) || !strings.Contains(s, `\u202e`) {
			t.Errorf("%v: escapes not visible:\n%s", args, s)
		}
	}
}

func fmtJSON(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			b.WriteString(x + "\n")
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				b.WriteString(k + "\n")
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:25":          "127.0.0.1:25",
		":25":                 "127.0.0.1:25",
		"[::]:25":             "[::1]:25",
		"[::0]:25":            "[::1]:25",
		"[::ffff:0.0.0.0]:25": "127.0.0.1:25",
		"192.0.2.1:25":        "192.0.2.1:25",
		"127.0.0.5:2525":      "127.0.0.5:2525",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestGuardListShowsNode: in a cluster, guard list names the node that
// made each decision, plain and --json.
func TestGuardListShowsNode(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/v1/guard", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(guard.Snapshot{
			Isolated:  []guard.Isolation{{IP: "192.0.2.1", Rule: "rate.msgs_per_minute", Since: time.Now(), Node: "mx-b"}},
			Suspended: []guard.Suspension{{User: "u@example.test", Rule: "admin", Since: time.Now(), Node: "mx-c"}},
			Bans:      []guard.Ban{{CIDR: "192.0.2.0/24", Rule: "admin", Expires: time.Now().Add(time.Hour), Node: "mx-a"}},
		})
	})
	cfg := configFor(t, mux)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"guard", "list"}, []string{"192.0.2.0/24 rule=admin", "node=mx-a", "node=mx-b", "node=mx-c"}},
		{[]string{"guard", "list", "--json"}, []string{`"node": "mx-a"`, `"node": "mx-b"`, `"node": "mx-c"`, `"cidr": "192.0.2.0/24"`}},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if err := run(append(tt.args, "--config", cfg), strings.NewReader(""), &out, &errb); err != nil {
			t.Fatalf("%v: %v\n%s", tt.args, err, errb.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out.String())
			}
		}
	}
}
