package e2e

// The web dashboard (issue 14) in a real headless Chromium, driven by
// chromedp over the DevTools protocol: log in with the token, watch a
// worm-like burst get isolated, release it, find and delete one sender's
// queued mail; a wrong token and a request without the CSRF token are
// refused. TestDashboardScreenshot (MAMORI_SCREENSHOT=FILE) writes the
// README's screenshot from the same setup.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// requireChromium returns the path of Debian's chromium (or another
// Chrome), skipping without it unless MAMORI_REQUIRE_TOOLS is set.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return requireTool(t, "chromium") // skips, or fails under MAMORI_REQUIRE_TOOLS
}

// browser starts a headless Chromium with a 1280×900 window and returns a
// chromedp context for one tab, ended with the test.
func browser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	bin := requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancelTimeout() })
	if err := chromedp.Do(bctx); err != nil { // start the browser now
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// stepTimeout bounds one group of browser steps (a wait that never ends
// fails the test here, not at the test's deadline).
const stepTimeout = 60 * time.Second

// do runs browser steps, failing the test with what was being done.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// get runs one browser action that returns a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// apiGet calls the admin API with the bearer token, as the CLI does.
func (in *instance) apiGet(path string, v any) {
	in.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+in.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		in.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		in.t.Fatalf("GET %s: %v", path, err)
	}
}

// dashboardInstance is a server whose trusted network is 127.0.0.0/8 and
// whose mail to stuck.test waits in the queue (its route answers nothing).
func dashboardInstance(t *testing.T) *instance {
	t.Helper()
	far := startCountingServer(t)
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nobody listens there
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
		return setRoutes(cfg, map[string]string{"far.test": far.addr, "stuck.test": closed})
	})
	in.addUser("postmaster@ours.test", pw)
	in.start()
	return in
}

// burst makes the trusted host at ip behave like a worm: 60 messages of 3
// outside recipients as fast as it can (the allowance is 30 a minute).
func burst(t *testing.T, in *instance, ip, from string) {
	t.Helper()
	res, err := runSend(t, in.smtp, sendJob{src: ip, user: "-", from: from, count: 60, conns: 2, rcpts: 3,
		rcptPrefix: "victim", subject: "Invoice overdue"})
	if err != nil {
		t.Fatal(err)
	}
	if res["250"] != 60 {
		t.Fatalf("burst from %s: %v, want 60 × 250 (held mail is accepted)", ip, res)
	}
}

// queueStuck queues n messages from one sender that stay in the queue:
// their recipients' domain routes to a port where nobody answers, so they
// are deferred, not delivered.
func queueStuck(t *testing.T, in *instance, ip, from string, n int) {
	t.Helper()
	host, port, _ := net.SplitHostPort(in.smtp)
	for i := range n {
		if out, code := swaks(t, "--server", host, "--port", port, "--local-interface", ip, "--from", from,
			"--to", fmt.Sprintf("reader%d@stuck.test", i), "--h-Subject", fmt.Sprintf("Newsletter %d", i+1)); code != 0 {
			t.Fatalf("queue from %s: %s", from, out)
		}
	}
}

func TestDashboard(t *testing.T) {
	requireTool(t, "python3")
	requireTool(t, "swaks")
	requireChromium(t)
	in := dashboardInstance(t)
	base := "http://" + in.admin + "/"
	ctx := browser(t, 4*time.Minute)

	// A wrong token: the page says so and no cookie is set.
	do(t, ctx, "wrong token",
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-the-admin-token"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	)
	if msg := get(t, ctx, "read the error", chromedp.Text(chromedp.ID("login-error"))); !strings.Contains(msg, "Wrong token") {
		t.Errorf("after a wrong token the page says %q", msg)
	}
	if c := sessionCookie(t, ctx); c != nil {
		t.Errorf("a wrong token set a cookie: %+v", c)
	}
	if strings.Contains(in.log(), "not-the-admin-token") || !strings.Contains(in.log(), "admin login failed") {
		t.Errorf("the failed login is not logged, or logged with the token")
	}
	time.Sleep(1100 * time.Millisecond) // the backoff after one wrong token

	// Log in through the form.
	do(t, ctx, "log in",
		chromedp.SendKeys(chromedp.ID("token"), in.token),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("p-isolated")),
		chromedp.WaitVisible(chromedp.CSS("#queue-counts table")), // the first poll arrived
	)
	c := sessionCookie(t, ctx)
	if c == nil || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
	}

	// A worm on the LAN: it appears as isolated, without a reload.
	const worm = "127.0.0.9"
	burst(t, in, worm, "pc9@ours.test")
	card := `#isolated article[data-key="` + worm + `"]`
	do(t, ctx, "see the isolation",
		chromedp.WaitVisible(chromedp.CSS(card)),
		chromedp.WaitVisible(chromedp.CSS(card+" ul.subjects li:not(.empty)")), // sample subjects of its held mail
	)
	iso, ok := isolationOf(in.guardList(), worm, "")
	if !ok {
		t.Fatal("the API does not list the isolation the page shows")
	}
	cardText := get(t, ctx, "read the card", chromedp.Text(chromedp.CSS(card)))
	for _, want := range []string{"isolated", iso.Rule, "pc9@ours.test", "Invoice overdue", "Release"} {
		if !strings.Contains(cardText, want) {
			t.Errorf("isolation card lacks %q:\n%s", want, cardText)
		}
	}
	held := in.queueCount("--client-ip", worm, "--state", "held")
	if held == 0 {
		t.Fatal("nothing held from the worm")
	}

	// Release: the card goes, and the isolation has ended.
	do(t, ctx, "release",
		chromedp.Click(chromedp.CSS(card+" button.release")),
		chromedp.WaitNotPresent(chromedp.CSS(card)),
	)
	if iso, ok := isolationOf(in.guardList(), worm, ""); ok {
		t.Errorf("still isolated after Release: %+v", iso)
	}
	if n := in.queueCount("--client-ip", worm, "--state", "held"); n != held {
		t.Errorf("Release changed the held mail: %d held, want %d (it stays held until released or deleted)", n, held)
	}

	// Queue search: one sender's mail, found and deleted.
	const sender = "newsletter@ours.test"
	queueStuck(t, in, "127.0.0.20", sender, 4)
	if n := in.queueCount("--from", sender); n != 4 {
		t.Fatalf("%d messages from %s queued, want 4", n, sender)
	}
	do(t, ctx, "search",
		chromedp.SetValue(chromedp.ID("q-from"), sender),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.ID("results-table")),
	)
	if count := get(t, ctx, "read the count", chromedp.Text(chromedp.ID("result-count"))); !strings.Contains(count, "4 messages match") {
		t.Errorf("search for %s: %q", sender, count)
	}
	if rows := get(t, ctx, "count rows", chromedp.Evaluate[int](`document.querySelectorAll("#results-table tbody tr").length`)); rows != 4 {
		t.Errorf("%d result rows, want 4", rows)
	}
	// Readable on a phone: at 375 px nothing scrolls sideways, results included.
	do(t, ctx, "phone width", chromedp.EmulateViewport(375, 800), chromedp.Sleep(300*time.Millisecond))
	if w := get(t, ctx, "page width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 375 {
		t.Errorf("at 375 px the page is %d px wide: it scrolls sideways", w)
	}
	do(t, ctx, "laptop width", chromedp.EmulateViewport(1280, 900))
	do(t, ctx, "delete",
		chromedp.Click(chromedp.ID("act-delete")),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitNotPresent(chromedp.ID("results-table")),
	)
	if count := get(t, ctx, "read the count", chromedp.Text(chromedp.ID("result-count"))); !strings.Contains(count, "No message matches") {
		t.Errorf("after Delete the search says %q", count)
	}
	var left struct{ Count int }
	in.apiGet("/api/v1/queue?count=1&from="+url.QueryEscape(sender), &left)
	if left.Count != 0 {
		t.Errorf("%d messages from %s left after Delete", left.Count, sender)
	}
	if n := in.queueCount("--client-ip", worm, "--state", "held"); n != held {
		t.Errorf("deleting %s's mail touched the worm's: %d held, want %d", sender, n, held)
	}

	// The session cookie without the CSRF token changes nothing (from Go,
	// with the browser's cookie in a jar); with the cookie a GET works, so
	// the refusal is the missing token.
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(base)
	jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/"}})
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := hc.Get(base + "api/v1/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /api/v1/live with the session cookie: %d, want 200", resp.StatusCode)
	}
	for _, path := range []string{"api/v1/queue/delete?client_ip=" + worm, "api/v1/guard/ban"} {
		resp, err := hc.Post(base+path, "application/json", strings.NewReader(`{"cidr":"192.0.2.0/24"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /%s with the cookie, no CSRF token: %d, want 403", path, resp.StatusCode)
		}
	}
	if n := in.queueCount("--client-ip", worm, "--state", "held"); n != held {
		t.Errorf("a POST without the CSRF token deleted mail: %d held, want %d", n, held)
	}
	if _, banned := banOf(in.guardList(), "192.0.2.0/24"); banned {
		t.Error("a POST without the CSRF token banned a network")
	}
}

// sessionCookie returns the browser's mamori session cookie, if any.
func sessionCookie(t *testing.T, ctx context.Context) *network.Cookie {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("browser: read cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "mamori_session" {
			return c
		}
	}
	return nil
}

// TestDashboardScreenshot writes docs/dashboard.png: run it with
// MAMORI_SCREENSHOT=FILE (bench/screenshot.sh does).
func TestDashboardScreenshot(t *testing.T) {
	out := os.Getenv("MAMORI_SCREENSHOT")
	if out == "" {
		t.Skip("set MAMORI_SCREENSHOT=FILE to write the dashboard screenshot")
	}
	requireTool(t, "python3")
	requireTool(t, "swaks")
	in := dashboardInstance(t)
	ctx := browser(t, 4*time.Minute)
	// Some traffic: staff PCs, a newsletter stuck in the queue, one worm, a ban.
	for i := range 6 {
		if _, err := runSend(t, in.smtp, sendJob{src: fmt.Sprintf("127.0.0.%d", 30+i), user: "-",
			from: fmt.Sprintf("staff%d@ours.test", i), count: 3 + 2*i, conns: 1, rcpts: 1 + i%3,
			rcptPrefix: "friend", subject: "Quarterly report"}); err != nil {
			t.Fatal(err)
		}
	}
	queueStuck(t, in, "127.0.0.20", "newsletter@ours.test", 6)
	burst(t, in, "127.0.0.9", "pc9@ours.test")
	in.mustCLI("", "guard", "ban", "203.0.113.0/24", "--for", "2h")
	do(t, ctx, "log in and search",
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate("http://"+in.admin+"/"),
		chromedp.SendKeys(chromedp.ID("token"), in.token),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(`#isolated article[data-key="127.0.0.9"] ul.subjects li:not(.empty)`)),
		chromedp.SetValue(chromedp.ID("q-from"), "newsletter@ours.test"),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.ID("results-table")),
		chromedp.Sleep(2500*time.Millisecond), // one more poll: rates settle
	)
	_ = get(t, ctx, "scroll to the top", chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`))
	png := get(t, ctx, "screenshot", chromedp.CaptureScreenshot())
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

// TestAdminTLS: with [admin] tls = true the admin listener speaks HTTPS
// only; the CLI reaches it (trusting the [tls] certificate) and the
// dashboard's cookie is Secure.
func TestAdminTLS(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string { return setKey(cfg, "tls", "true") })
	in.start()
	in.guardList() // the CLI over HTTPS
	// Every CLI command that reads the admin API, top included, keeps the
	// pinned certificate.
	if out := in.mustCLI("", "top", "--once"); !strings.Contains(out, "mamori top") {
		t.Errorf("top --once over HTTPS:\n%s", out)
	}
	resp, err := http.Get("http://" + in.admin + "/api/v1/guard")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS admin listener: %d, want 400", resp.StatusCode)
		}
	}
	hc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	resp, err = hc.PostForm("https://"+in.admin+"/login", url.Values{"token": {in.token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "mamori_session" {
			c = k
		}
	}
	if resp.StatusCode != http.StatusSeeOther || c == nil || !c.Secure || !c.HttpOnly {
		t.Errorf("login over HTTPS: %d, cookie %+v, want a Secure HttpOnly cookie", resp.StatusCode, c)
	}
}
