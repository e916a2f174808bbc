package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/testutil"
)

const webToken = "0123456789abcdef0123456789abcdef"

// nopManager and nopGuard accept everything: the tests here are about who
// may call, not what the calls do.
type nopManager struct{}

func (nopManager) Users() ([]mailbox.User, error)    { return []mailbox.User{}, nil }
func (nopManager) AddUser(string, string) error      { return nil }
func (nopManager) DelUser(string) error              { return nil }
func (nopManager) SetPassword(string, string) error  { return nil }
func (nopManager) SetQuota(string, int64) error      { return nil }
func (nopManager) SetDisabled(string, bool) error    { return nil }
func (nopManager) Domains() ([]string, error)        { return []string{}, nil }
func (nopManager) AddDomain(string) error            { return nil }
func (nopManager) DelDomain(string) error            { return nil }
func (nopManager) Aliases() ([]mailbox.Alias, error) { return []mailbox.Alias{}, nil }
func (nopManager) AddAlias(string, []string) error   { return nil }
func (nopManager) DelAlias(string) error             { return nil }

type nopGuard struct{}

func (nopGuard) Snapshot() guard.Snapshot                { return guard.Snapshot{} }
func (nopGuard) Ban(netip.Prefix, time.Duration, string) {}
func (nopGuard) Unban(netip.Prefix) bool                 { return true }
func (nopGuard) Release(string) bool                     { return true }

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

func cookieOf(resp *http.Response) *http.Cookie { return findCookie(resp.Cookies()) }

func withCookie(req *http.Request, id string) *http.Request {
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: id})
	return req
}

func findCookie(cs []*http.Cookie) *http.Cookie {
	for _, c := range cs {
		if c.Name == SessionCookie {
			return c
		}
	}
	return nil
}

type webTest struct {
	t    *testing.T
	s    *Server
	ts   *httptest.Server
	logs *bytes.Buffer
	now  time.Time
}

// newWebTest serves a full API (manager, queue, guard, live, a metrics
// endpoint) with a fake clock for sessions and login backoff.
func newWebTest(t *testing.T, tlsOn bool) *webTest {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	if _, err := q.Enqueue(queue.Meta{From: "a@example.org", Rcpts: []queue.Rcpt{{Addr: "v@example.com"}}, ClientIP: "192.0.2.1"},
		[]byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	w := &webTest{t: t, logs: &bytes.Buffer{}, now: time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC)}
	w.s = NewServer(nopManager{}, q, webToken, slog.New(slog.NewTextHandler(w.logs, nil)))
	w.s.SetGuard(nopGuard{}, []int{25})
	w.s.SetLive(fixedLive(Live{}))
	w.s.Handle("GET /metrics", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "mamori_up 1\n") }))
	clock := func() time.Time { return w.now }
	w.s.sessions.now, w.s.logins.now = clock, clock
	if tlsOn {
		w.ts = httptest.NewTLSServer(w.s)
	} else {
		w.ts = httptest.NewServer(w.s)
	}
	t.Cleanup(w.ts.Close)
	return w
}

func (w *webTest) url(path string) string { return w.ts.URL + path }

// client does not follow redirects, so the tests see them.
func (w *webTest) client() *http.Client {
	return &http.Client{CheckRedirect: noRedirect, Transport: w.ts.Client().Transport}
}

func (w *webTest) do(req *http.Request) *http.Response {
	w.t.Helper()
	resp, err := w.client().Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	return resp
}

func (w *webTest) postLogin(token string) *http.Response {
	w.t.Helper()
	req, _ := http.NewRequest("POST", w.url("/login"), strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return w.do(req)
}

// login logs in and returns the session id and its CSRF token (read from
// the dashboard page, as the script does).
func (w *webTest) login() (id, csrf string) {
	w.t.Helper()
	resp := w.postLogin(webToken)
	resp.Body.Close()
	c := cookieOf(resp)
	if resp.StatusCode != http.StatusSeeOther || c == nil || c.Value == "" {
		w.t.Fatalf("login: %d, cookie %v", resp.StatusCode, c)
	}
	req, _ := http.NewRequest("GET", w.url("/"), nil)
	page := bodyOf(w.do(withCookie(req, c.Value)))
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`).FindStringSubmatch(page)
	if m == nil {
		w.t.Fatalf("dashboard page has no CSRF token:\n%s", page)
	}
	return c.Value, m[1]
}

// TestDashboardLogin: the login form, a wrong and a right token, the
// cookie's attributes, the dashboard page, logout.
func TestDashboardLogin(t *testing.T) {
	w := newWebTest(t, false)

	resp := w.do(must(http.NewRequest("GET", w.url("/"), nil)))
	body := bodyOf(resp)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || cookieOf(resp) != nil {
		t.Fatalf("GET / without a session: %d, cookie %v, want the login form:\n%s", resp.StatusCode, cookieOf(resp), body)
	}

	resp = w.postLogin("not-the-token")
	body = bodyOf(resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong token") || cookieOf(resp) != nil {
		t.Errorf("wrong token: %d, cookie %v, body:\n%s", resp.StatusCode, cookieOf(resp), body)
	}
	if strings.Contains(w.logs.String(), "not-the-token") || !strings.Contains(w.logs.String(), "admin login failed") {
		t.Errorf("a failed login is logged, without the token:\n%s", w.logs)
	}
	w.now = w.now.Add(time.Minute) // past the backoff

	resp = w.postLogin(" " + webToken + "\n") // pasted with blanks around it
	resp.Body.Close()
	c := cookieOf(resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || c == nil {
		t.Fatalf("right token: %d %q, cookie %v", resp.StatusCode, resp.Header.Get("Location"), c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.MaxAge <= 0 || len(c.Value) < 40 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP, a long random id", c)
	}
	if strings.Contains(w.logs.String(), webToken) || strings.Contains(w.logs.String(), c.Value) {
		t.Errorf("the token or the session id is in the log:\n%s", w.logs)
	}

	id, csrf := w.login()
	if id == c.Value || len(csrf) < 40 {
		t.Errorf("sessions share ids, or the CSRF token is short: %q", csrf)
	}
	page := bodyOf(w.do(withCookie(must(http.NewRequest("GET", w.url("/"), nil)), id)))
	for _, want := range []string{`src="/static/app.js"`, `href="/static/app.css"`, `action="/logout"`, `id="isolated"`, `id="search-form"`} {
		if !strings.Contains(page, want) {
			t.Errorf("dashboard page lacks %s", want)
		}
	}

	// Logout needs the CSRF token too, then the session is gone.
	req := withCookie(must(http.NewRequest("POST", w.url("/logout"), strings.NewReader(""))), id)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp := w.do(req); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without the CSRF token: %d, want 403", resp.StatusCode)
	}
	req = withCookie(must(http.NewRequest("POST", w.url("/logout"), strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))), id)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp = w.do(req)
	resp.Body.Close()
	if c := cookieOf(resp); resp.StatusCode != http.StatusSeeOther || c == nil || c.MaxAge >= 0 {
		t.Errorf("logout: %d, cookie %+v, want a redirect that clears the cookie", resp.StatusCode, c)
	}
	if resp := w.do(withCookie(must(http.NewRequest("GET", w.url("/api/v1/queue"), nil)), id)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API call after logout: %d, want 401", resp.StatusCode)
	}
}

// TestSessionCookieSecureUnderTLS: over TLS the cookie is Secure.
func TestSessionCookieSecureUnderTLS(t *testing.T) {
	w := newWebTest(t, true)
	resp := w.postLogin(webToken)
	resp.Body.Close()
	if c := cookieOf(resp); c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie over TLS: %+v, want Secure, HttpOnly, SameSite=Strict", c)
	}
}

// TestSessionAuthRules: who may call what, with a session, a bearer token
// or neither.
func TestSessionAuthRules(t *testing.T) {
	w := newWebTest(t, false)
	expired, _ := w.login()
	id, csrf := w.login()
	w.now = w.now.Add(SessionIdle - time.Second)
	if _, ok := w.s.sessions.get(id); !ok { // id is used, expired is not
		t.Fatal("session ended early")
	}
	w.now = w.now.Add(2 * time.Second)
	const del = "/api/v1/queue/hold?from=a@example.org"
	tests := []struct {
		name         string
		method, path string
		cookie       string
		csrf         string
		bearer       string
		origin       string
		want         int
	}{
		{"nothing", "GET", "/api/v1/queue", "", "", "", "", 401},
		{"session GET", "GET", "/api/v1/queue", id, "", "", "", 200},
		{"session GET live", "GET", "/api/v1/live", id, "", "", "", 200},
		{"expired session", "GET", "/api/v1/queue", expired, "", "", "", 401},
		{"unknown session", "GET", "/api/v1/queue", "forged-" + id[:10], "", "", "", 401},
		{"session POST without CSRF", "POST", del, id, "", "", "", 403},
		{"session POST wrong CSRF", "POST", del, id, csrf[:len(csrf)-1] + "x", "", "", 403},
		{"session POST other session's CSRF", "POST", del, id, "AAAA" + csrf[4:], "", "", 403},
		{"session POST with CSRF", "POST", del, id, csrf, "", "", 200},
		{"session POST with CSRF, cross-origin", "POST", del, id, csrf, "", "http://evil.test", 403},
		{"session POST with CSRF, Origin null (no-referrer)", "POST", del, id, csrf, "", "null", 200},
		{"bearer POST, no CSRF", "POST", del, "", "", webToken, "", 200},
		{"wrong bearer", "POST", del, "", "", webToken[:31] + "x", "", 401},
		{"wrong bearer with a session", "GET", "/api/v1/queue", "", "", "nope", "", 401},
		{"metrics: bearer", "GET", "/metrics", "", "", webToken, "", 200},
		{"metrics: session is not enough", "GET", "/metrics", id, "", "", "", 401},
		{"dashboard page: no session", "GET", "/", "", "", "", "", 200},
		{"static file: no session", "GET", "/static/app.js", "", "", "", "", 200},
		{"other file: nothing", "GET", "/static/index.html", "", "", "", "", 401},
		{"healthz", "GET", "/healthz", "", "", "", "", 200},
	}
	for _, tc := range tests {
		req := must(http.NewRequest(tc.method, w.url(tc.path), nil))
		if tc.cookie != "" {
			withCookie(req, tc.cookie)
		}
		if tc.csrf != "" {
			req.Header.Set(CSRFHeader, tc.csrf)
		}
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp := w.do(req)
		body := bodyOf(resp)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s: %d, want %d: %s", tc.name, tc.method, tc.path, resp.StatusCode, tc.want, body)
		}
	}
}

// TestCookieWithoutCSRFRefusedOnEveryRoute: every state-changing route of
// the API refuses a session cookie without the CSRF token (and does not
// act), and accepts it with the token — so the 403 is the CSRF check, not
// a missing route.
func TestCookieWithoutCSRFRefusedOnEveryRoute(t *testing.T) {
	w := newWebTest(t, false)
	var ops []string
	w.s.OnQueueOp(func(op, _ string, _ int, _ string) { ops = append(ops, op) })
	id, csrf := w.login()
	routes := []struct{ method, path, body string }{
		{"POST", "/api/v1/users", `{"address":"x@example.org","password":"correct horse battery"}`},
		{"DELETE", "/api/v1/users/x@example.org", ""},
		{"PUT", "/api/v1/users/x@example.org/password", `{"password":"correct horse battery"}`},
		{"PUT", "/api/v1/users/x@example.org/quota", `{"quota":1000}`},
		{"PUT", "/api/v1/users/x@example.org/disabled", `{"disabled":true}`},
		{"POST", "/api/v1/domains", `{"domain":"example.net"}`},
		{"DELETE", "/api/v1/domains/example.net", ""},
		{"POST", "/api/v1/aliases", `{"alias":"a@example.org","targets":["x@example.org"]}`},
		{"DELETE", "/api/v1/aliases/a@example.org", ""},
		{"POST", "/api/v1/queue/hold?from=a@example.org", ""},
		{"POST", "/api/v1/queue/release?from=a@example.org", ""},
		{"POST", "/api/v1/queue/retry?from=a@example.org", ""},
		{"POST", "/api/v1/queue/delete?from=nobody@example.org", ""},
		{"POST", "/api/v1/guard/ban", `{"cidr":"192.0.2.0/24","for":"1h"}`},
		{"POST", "/api/v1/guard/unban", `{"cidr":"192.0.2.0/24"}`},
		{"POST", "/api/v1/guard/release", `{"target":"192.0.2.7"}`},
	}
	for _, rt := range routes {
		for _, withCSRF := range []bool{false, true} {
			req := withCookie(must(http.NewRequest(rt.method, w.url(rt.path), strings.NewReader(rt.body))), id)
			req.Header.Set("Content-Type", "application/json")
			if withCSRF {
				req.Header.Set(CSRFHeader, csrf)
			}
			resp := w.do(req)
			body := bodyOf(resp)
			switch {
			case !withCSRF && resp.StatusCode != http.StatusForbidden:
				t.Errorf("%s %s with the cookie, no CSRF token: %d, want 403: %s", rt.method, rt.path, resp.StatusCode, body)
			case withCSRF && resp.StatusCode/100 != 2:
				t.Errorf("%s %s with the cookie and the CSRF token: %d, want 2xx: %s", rt.method, rt.path, resp.StatusCode, body)
			}
		}
	}
	// The refused calls did nothing: only those with the token reached the queue.
	if got := strings.Join(ops, " "); got != "hold release retry delete" {
		t.Errorf("queue operations done: %q, want one of each (those with the CSRF token)", got)
	}
}

// TestSessionLifetime: sessions end when idle, at their maximum age, and
// past MaxSessions the least recently used goes.
func TestSessionLifetime(t *testing.T) {
	now := time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC)
	st := newSessions()
	st.now = func() time.Time { return now }

	idle, _ := st.create()
	now = now.Add(SessionIdle)
	if _, ok := st.get(idle); ok {
		t.Error("a session idle for SessionIdle is still valid")
	}

	busy, csrf := st.create()
	created := now
	for range 2 * int(SessionMaxAge/SessionIdle) {
		now = now.Add(SessionIdle / 2)
		got, ok := st.get(busy)
		if want := now.Sub(created) < SessionMaxAge; ok != want {
			t.Fatalf("session in use, %v after its login: valid=%v, want %v", now.Sub(created), ok, want)
		}
		if ok && got != csrf {
			t.Fatal("the CSRF token changed")
		}
	}

	first, _ := st.create()
	now = now.Add(time.Second)
	var ids []string
	for range MaxSessions {
		id, _ := st.create()
		ids = append(ids, id)
		now = now.Add(time.Second)
	}
	if n := st.count(); n != MaxSessions {
		t.Errorf("%d sessions kept, want at most %d", n, MaxSessions)
	}
	if _, ok := st.get(first); ok {
		t.Error("the least recently used session survived past MaxSessions")
	}
	if _, ok := st.get(ids[len(ids)-1]); !ok {
		t.Error("the newest session was dropped")
	}
	if _, ok := st.get(""); ok {
		t.Error("an empty id is a session")
	}
}

// TestLoginBackoff: wrong tokens make the client wait, doubling; while it
// waits even the right token is refused; a right token clears the count.
func TestLoginBackoff(t *testing.T) {
	w := newWebTest(t, false)
	for i, wantWait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		resp := w.postLogin("guess")
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i+1, resp.StatusCode)
		}
		resp = w.postLogin(webToken)
		body := bodyOf(resp)
		if resp.StatusCode != http.StatusTooManyRequests || cookieOf(resp) != nil || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "wait") {
			t.Fatalf("right token right after guess %d: %d, cookie %v: %s", i+1, resp.StatusCode, cookieOf(resp), body)
		}
		w.now = w.now.Add(wantWait - time.Millisecond)
		if resp := w.postLogin(webToken); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("guess %d: waited less than %v and got %d", i+1, wantWait, resp.StatusCode)
		}
		w.now = w.now.Add(time.Millisecond)
	}
	if resp := w.postLogin(webToken); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right token after the wait: %d", resp.StatusCode)
	}
	if resp := w.postLogin("guess"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("guess after a login: %d", resp.StatusCode)
	}
	if d := w.s.logins.wait("127.0.0.1"); d != time.Second {
		t.Errorf("after a successful login the count restarts: wait %v, want 1s", d)
	}
	for range 20 {
		w.s.logins.fail("127.0.0.1")
	}
	if d := w.s.logins.wait("127.0.0.1"); d != loginMaxWait {
		t.Errorf("wait after many guesses: %v, want the cap %v", d, loginMaxWait)
	}
	for i := range maxLoginClients + 10 {
		w.s.logins.fail(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String())
	}
	if n := len(w.s.logins.m); n > maxLoginClients {
		t.Errorf("%d clients remembered, want at most %d", n, maxLoginClients)
	}
	// A cross-site form never logs in.
	req, _ := http.NewRequest("POST", w.url("/login"), strings.NewReader(url.Values{"token": {webToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.test")
	w.now = w.now.Add(time.Hour)
	if resp := w.do(req); resp.StatusCode != http.StatusForbidden || cookieOf(resp) != nil {
		t.Errorf("cross-origin login: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", w.url("/login"), strings.NewReader(url.Values{"token": {webToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "null")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp := w.do(req); resp.StatusCode != http.StatusForbidden || cookieOf(resp) != nil {
		t.Errorf("cross-site login (Sec-Fetch-Site): %d", resp.StatusCode)
	}
}

// TestSecurityHeaders: every dashboard and API answer carries the
// headers; API JSON is never cached.
func TestSecurityHeaders(t *testing.T) {
	w := newWebTest(t, false)
	id, _ := w.login()
	reqs := map[string]*http.Request{
		"login form":     must(http.NewRequest("GET", w.url("/"), nil)),
		"dashboard":      withCookie(must(http.NewRequest("GET", w.url("/"), nil)), id),
		"app.js":         must(http.NewRequest("GET", w.url("/static/app.js"), nil)),
		"app.css":        must(http.NewRequest("GET", w.url("/static/app.css"), nil)),
		"API (session)":  withCookie(must(http.NewRequest("GET", w.url("/api/v1/live"), nil)), id),
		"API (refused)":  must(http.NewRequest("GET", w.url("/api/v1/queue"), nil)),
		"API POST (403)": withCookie(must(http.NewRequest("POST", w.url("/api/v1/queue/delete?from=x@example.org"), nil)), id),
	}
	bearer := must(http.NewRequest("GET", w.url("/api/v1/queue"), nil))
	bearer.Header.Set("Authorization", "Bearer "+webToken)
	reqs["API (bearer)"] = bearer
	for name, req := range reqs {
		resp := w.do(req)
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q", name, csp)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s %q, want %q", name, k, h.Get(k), v)
			}
		}
	}
	resp := w.do(must(http.NewRequest("GET", w.url("/static/app.js"), nil)))
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("app.js served as %q", ct)
	}
}

// TestDashboardFilesAreSafe: the pages have no inline script or style
// (the CSP would block them anyway) and the script never parses strings as
// HTML: server data goes in as text only.
func TestDashboardFilesAreSafe(t *testing.T) {
	w := newWebTest(t, false)
	id, _ := w.login()
	pages := map[string]string{
		"login":     bodyOf(w.do(must(http.NewRequest("GET", w.url("/"), nil)))),
		"dashboard": bodyOf(w.do(withCookie(must(http.NewRequest("GET", w.url("/"), nil)), id))),
	}
	for name, p := range pages {
		for _, re := range []string{`<script[^>]*>\s*[^<\s]`, `<style`, `\sstyle=`, `\son[a-z]+=`, `javascript:`, `https?://`} {
			if regexp.MustCompile(re).MatchString(p) {
				t.Errorf("%s page matches %s", name, re)
			}
		}
		for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(p, -1) {
			if !strings.Contains(tag, ` src="/static/`) {
				t.Errorf("%s page: %s is not one of the embedded scripts", name, tag)
			}
		}
	}
	js := bodyOf(w.do(must(http.NewRequest("GET", w.url("/static/app.js"), nil))))
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://"} {
		if strings.Contains(strings.ReplaceAll(js, `"http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

func must(req *http.Request, err error) *http.Request {
	if err != nil {
		panic(err)
	}
	return req
}

// TestTLSClientPinsTheCertificate: the CLI's client for [admin] tls talks
// to a server with the certificate of [tls] cert, and to no other.
func TestTLSClientPinsTheCertificate(t *testing.T) {
	w := newWebTest(t, true)
	dir := t.TempDir()
	good := dir + "/cert.pem"
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := NewTLSClient(strings.TrimPrefix(w.ts.URL, "https://"), webToken, good, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Live(); err != nil {
		t.Errorf("with the server's certificate: %v", err)
	}
	other := httptest.NewUnstartedServer(http.NotFoundHandler())
	other.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}} // another self-signed certificate
	other.StartTLS()
	defer other.Close()
	cl, err = NewTLSClient(strings.TrimPrefix(other.URL, "https://"), webToken, good, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Live(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("with another server's certificate: %v, want refused", err)
	}
	if _, err := NewTLSClient("127.0.0.1:1", webToken, dir+"/missing.pem", "", nil); err == nil {
		t.Error("a missing certificate file is accepted")
	}

	// [tls] acme: once issued, the listener serves the ACME certificate
	// for hostname; the client accepts it when it chains to a trusted root
	// for that name, and still nothing else.
	issued := testutil.NewCert(t, "mx.example.test")
	acme := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{}`))
	}))
	acme.TLS = issued.Server
	acme.StartTLS()
	defer acme.Close()
	addr := strings.TrimPrefix(acme.URL, "https://")
	cl, err = NewTLSClient(addr, webToken, good, "mx.example.test", issued.Client.RootCAs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Live(); err != nil {
		t.Errorf("with the ACME certificate for hostname: %v", err)
	}
	cl, _ = NewTLSClient(addr, webToken, good, "other.example.test", issued.Client.RootCAs)
	if _, err := cl.Live(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("with a certificate for another name: %v, want refused", err)
	}
	cl, _ = NewTLSClient(addr, webToken, good, "mx.example.test", nil)
	if _, err := cl.Live(); err == nil {
		t.Error("a certificate from an untrusted CA is accepted")
	}
}

// selfSigned makes a fresh self-signed certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestQueueListLimit: limit=N lists the first N; a bad limit is a 400.
func TestQueueListLimit(t *testing.T) {
	_, ts, _ := testAPI(t)
	code, body := call(t, ts, "GET", "/api/v1/queue?limit=2", "")
	var items []QueueItem
	if code != 200 || json.Unmarshal([]byte(body), &items) != nil || len(items) != 2 {
		t.Errorf("limit=2: %d, %d items: %s", code, len(items), body)
	}
	for _, bad := range []string{"0", "-1", "x"} {
		if code, body := call(t, ts, "GET", "/api/v1/queue?limit="+bad, ""); code != 400 || !strings.Contains(body, "limit") {
			t.Errorf("limit=%s: %d %s", bad, code, body)
		}
	}
}
