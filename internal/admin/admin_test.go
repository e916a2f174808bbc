package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

func testAPI(t *testing.T) (*queue.Queue, *httptest.Server, *Client) {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	for _, from := range []string{"a@example.org", "b@example.org", "c@example.net"} {
		if _, err := q.Enqueue(queue.Meta{From: from, Rcpts: []queue.Rcpt{{Addr: "v@example.com"}}, ClientIP: "192.0.2.1",
			State: queue.StateHeld, Rule: "worm"}, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	s := NewServer(nil, q, "secret", nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return q, ts, &Client{Base: ts.URL, Token: "secret", HTTP: ts.Client()}
}

func call(t *testing.T, ts *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestQueueFilterRefused: a filter that does not parse is a 400 with a JSON
// error naming the field, never an empty list or a count of 0.
func TestQueueFilterRefused(t *testing.T) {
	_, ts, _ := testAPI(t)
	for _, tc := range []struct{ query, want string }{
		{"client_ip=10.0.0.0/33", "client-ip"},
		{"client_ip=not-an-ip", "client-ip"},
		{"state=frozen", "state"},
		{"older_than=3days", "older-than"},
		{"older_than=NaNd", "older-than"},
		{"older_than=-2h", "older-than"},
		{"min_size=big", "larger-than"},
		{"max_size=0", "smaller-than"},
		{"min_size=10&max_size=5", "size"},
		{"id=nope", "id"},
		{"from=%3Ca@x", "from"},
		{"subject=a%1b%5B2J", "subject"},
		{"client-ip=192.0.2.1", "unknown parameter"}, // misspelt: not silently "no filter"
		{"state=held&state=active", "more than once"},
	} {
		for _, path := range []string{"/api/v1/queue?", "/api/v1/queue?count=1&"} {
			code, body := call(t, ts, "GET", path+tc.query, "")
			var e struct{ Error string }
			if code != http.StatusBadRequest || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.want) {
				t.Errorf("GET %s%s: %d %s, want 400 with a JSON error naming %q", path, tc.query, code, body, tc.want)
			}
		}
		code, body := call(t, ts, "POST", "/api/v1/queue/delete?"+tc.query, "")
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("POST delete?%s: %d %s, want 400", tc.query, code, body)
		}
	}
	// A good filter still works, and the same parser canonicalises it.
	code, body := call(t, ts, "GET", "/api/v1/queue?count=1&client_ip=192.0.2.0/24&state=HELD&older_than=0s", "")
	if code != 200 || !strings.Contains(body, `"count": 3`) {
		t.Errorf("good filter: %d %s", code, body)
	}
	if code, _ := call(t, ts, "GET", "/api/v1/queue/nope", ""); code != http.StatusBadRequest {
		t.Errorf("GET /api/v1/queue/nope: %d, want 400", code)
	}
}

// TestQueueBulkNeedsFilterOrAll: like the CLI, the API refuses a bulk
// operation without a filter unless all=true.
func TestQueueBulkNeedsFilterOrAll(t *testing.T) {
	q, ts, cl := testAPI(t)
	for _, op := range []string{"hold", "release", "delete", "retry"} {
		if code, body := call(t, ts, "POST", "/api/v1/queue/"+op, ""); code != http.StatusBadRequest || !strings.Contains(body, "all=true") {
			t.Errorf("POST %s without a filter: %d %s", op, code, body)
		}
		if code, _ := call(t, ts, "POST", "/api/v1/queue/"+op+"?all=perhaps", ""); code != http.StatusBadRequest {
			t.Errorf("POST %s?all=perhaps: %d", op, code)
		}
	}
	if n := q.Count(queue.Filter{}); n != 3 {
		t.Fatalf("refused operations changed the queue: %d left", n)
	}
	if code, _ := call(t, ts, "POST", "/api/v1/queue/delete?reason=x&from=a@example.org", ""); code != http.StatusBadRequest {
		t.Errorf("delete with a reason: %d, want 400", code)
	}
	if code, _ := call(t, ts, "POST", "/api/v1/queue/hold?reason=a%0Ab&from=a@example.org", ""); code != http.StatusBadRequest {
		t.Errorf("hold with a control character in the reason: %d, want 400", code)
	}
	if _, err := cl.QueueOp("delete", queue.Filter{}, ""); err == nil {
		t.Error("client QueueOp with an empty filter was sent")
	}
	n, err := cl.QueueOp("delete", queue.Filter{From: "@example.org"}, "")
	if err != nil || n != 2 {
		t.Fatalf("delete by filter: %d %v", n, err)
	}
	n, err = cl.QueueOpAll("delete", queue.Filter{}, "")
	if err != nil || n != 1 {
		t.Fatalf("delete all=true: %d %v", n, err)
	}
}

type fakeGuard struct {
	released []string
	banned   []time.Duration
}

func (g *fakeGuard) Snapshot() guard.Snapshot { return guard.Snapshot{} }
func (g *fakeGuard) Ban(p netip.Prefix, d time.Duration, rule string) {
	g.banned = append(g.banned, d)
}
func (g *fakeGuard) Unban(p netip.Prefix) bool { return true }
func (g *fakeGuard) Release(t string) bool {
	g.released = append(g.released, t)
	return true
}

// TestGuardArguments: ban, unban and release refuse what does not parse
// and hand the guard canonical values.
func TestGuardArguments(t *testing.T) {
	_, ts, cl := testAPI(t)
	s := ts.Config.Handler.(*Server)
	g := &fakeGuard{}
	s.SetGuard(g, nil)
	for _, body := range []string{
		`{"cidr":"10.0.0.0/33"}`, `{"cidr":"10.0.0.1","for":"NaNd"}`, `{"cidr":"10.0.0.1","for":"0s"}`,
		`{"cidr":"10.0.0.1","for":"-1h"}`, `{"cidr":"10.0.0.1","for":"soon"}`, `{"cidr":"10.0.0.1","for":"1e300d"}`,
	} {
		if code, resp := call(t, ts, "POST", "/api/v1/guard/ban", body); code != http.StatusBadRequest {
			t.Errorf("ban %s: %d %s, want 400", body, code, resp)
		}
	}
	if len(g.banned) != 0 {
		t.Fatalf("refused bans reached the guard: %v", g.banned)
	}
	if err := cl.GuardBan("10.0.0.1", "2d"); err != nil || len(g.banned) != 1 || g.banned[0] != 48*time.Hour {
		t.Fatalf("ban 2d: %v %v", err, g.banned)
	}
	for _, bad := range []string{"10.0.0.0/8", "", "not an address", "user@", "@example.org", "a\x1b@x.test"} {
		_, err := cl.GuardRelease(bad, false)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("release %q: %v, want 400", bad, err)
		}
	}
	for in, want := range map[string]string{"[10.0.0.1]": "10.0.0.1", "::ffff:10.0.0.2": "10.0.0.2", " Alice@Example.ORG ": "alice@example.org"} {
		g.released = nil
		if _, err := cl.GuardRelease(in, false); err != nil || len(g.released) != 1 || g.released[0] != want {
			t.Errorf("release %q: %v, guard got %v, want %q", in, err, g.released, want)
		}
	}
}

// TestDisabledNeedsAValue: the disable route refuses a body without
// "disabled" (an empty object must not silently enable an account).
func TestDisabledNeedsAValue(t *testing.T) {
	_, ts, _ := testAPI(t)
	for _, body := range []string{`{}`, `{"disabled":"yes"}`, `{"disable":true}`} {
		code, out := call(t, ts, "PUT", "/api/v1/users/x@example.org/disabled", body)
		if code != http.StatusBadRequest || !strings.Contains(out, "error") {
			t.Errorf("PUT disabled %s: %d %s, want 400 with an error", body, code, out)
		}
	}
}
