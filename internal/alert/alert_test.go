package alert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

// fakeQueue records what would have been queued.
type fakeQueue struct {
	mu   sync.Mutex
	msgs []queued
	err  error
}

type queued struct {
	meta queue.Meta
	body []byte
}

func (q *fakeQueue) Enqueue(m queue.Meta, parts ...[]byte) (queue.Meta, error) {
	body := bytes.Join(parts, nil)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return queue.Meta{}, q.err
	}
	q.msgs = append(q.msgs, queued{m, bytes.Clone(body)})
	return m, nil
}

func (q *fakeQueue) all() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.msgs...)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.SyncBuffer

// parsed is an alert mail taken apart.
type parsed struct {
	meta    queue.Meta
	header  mail.Header
	subject string // decoded
	body    string // decoded
	raw     string
}

func parse(t *testing.T, q queued) parsed {
	t.Helper()
	raw := string(q.body)
	// CRLF everywhere, no bare CR or LF, no line over 998 characters.
	for i, line := range strings.Split(strings.TrimSuffix(raw, "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 998 {
			t.Fatalf("line %d is %d characters long", i+1, len(line))
		}
	}
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("net/mail cannot parse the alert: %v\n%s", err, raw)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	if got := msg.Header.Get("Content-Transfer-Encoding"); got != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding = %q", got)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatalf("decode body: %v", err)
	}
	// The QP reader keeps the CRLF line ends; compare with LF.
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	return parsed{meta: q.meta, header: msg.Header, subject: subject, body: text, raw: raw}
}

func testAlert() guard.Alert {
	return guard.Alert{
		Time:     time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		Kind:     "isolated",
		IP:       "127.0.0.5",
		User:     "bob@example.test",
		Sender:   "bob@example.test",
		Rule:     "rate.msgs_per_minute",
		Counts:   map[string]int{"msgs_per_minute": 31, "rcpts_per_minute": 120},
		Subjects: []string{"Invoice 4711", "Grüße aus Köln"},
		Rcpts:    []string{"victim1@far.test", "victim2@far.test"},
		Detail:   "31 messages in 60s",
		Extra:    map[string]string{"helo": "pc-17"},
	}
}

func TestAlertMail(t *testing.T) {
	q := &fakeQueue{}
	var logs syncBuffer
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test"}, q,
		slog.New(slog.NewJSONHandler(&logs, nil)))
	defer n.Close()

	n.Alert(testAlert())

	msgs := q.all()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	p := parse(t, msgs[0])

	// Envelope.
	m := p.meta
	if m.From != "" {
		t.Errorf("envelope sender %q, want null", m.From)
	}
	if m.Origin != queue.OriginLocal {
		t.Errorf("Origin %q, want local", m.Origin)
	}
	if len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "admin@example.test" {
		t.Errorf("recipients %+v", m.Rcpts)
	}
	if m.ClientIP != "" || m.User != "" {
		t.Errorf("alert mail carries the offender's IP/user (%q, %q): queue delete by them would delete it", m.ClientIP, m.User)
	}

	// Headers.
	if _, err := p.header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	from, err := mail.ParseAddress(p.header.Get("From"))
	if err != nil || from.Address != "postmaster@mx.example.test" || from.Name != "mamori guard" {
		t.Errorf("From = %q (%v)", p.header.Get("From"), err)
	}
	if to, err := mail.ParseAddress(p.header.Get("To")); err != nil || to.Address != "admin@example.test" {
		t.Errorf("To = %q (%v)", p.header.Get("To"), err)
	}
	if id := p.header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@mx.example.test>") {
		t.Errorf("Message-ID = %q", id)
	}
	if got := p.header.Get("MIME-Version"); got != "1.0" {
		t.Errorf("MIME-Version = %q", got)
	}
	if mt, params, err := mime.ParseMediaType(p.header.Get("Content-Type")); err != nil || mt != "text/plain" || !strings.EqualFold(params["charset"], "utf-8") {
		t.Errorf("Content-Type = %q", p.header.Get("Content-Type"))
	}
	if got := p.header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q", got)
	}
	want := "[mamori] isolated 127.0.0.5 (bob@example.test): rate.msgs_per_minute"
	if p.subject != want {
		t.Errorf("Subject = %q, want %q", p.subject, want)
	}
	if m.Subject != want {
		t.Errorf("Meta.Subject = %q, want %q", m.Subject, want)
	}

	// Body: every field, counts, samples and the commands.
	for _, s := range []string{
		"127.0.0.5", "bob@example.test", "rate.msgs_per_minute", "31 messages in 60s",
		"msgs_per_minute: 31", "rcpts_per_minute: 120",
		"Invoice 4711", "Grüße aus Köln", "victim1@far.test", "victim2@far.test", "helo: pc-17",
		"mamori guard release 127.0.0.5",
		"mamori queue list --state held --client-ip 127.0.0.5",
		"mamori queue delete --state held --client-ip 127.0.0.5",
		"mamori queue list --state held --user bob@example.test",
		"mamori guard release bob@example.test",
	} {
		if !strings.Contains(p.body, s) {
			t.Errorf("body lacks %q:\n%s", s, p.body)
		}
	}

	// The log event, at once, with the fields.
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(logs.String(), "\n", 2)[0]), &ev); err != nil {
		t.Fatalf("log: %v: %s", err, logs.String())
	}
	if ev["msg"] != "alert" || ev["level"] != "WARN" || ev["kind"] != "isolated" || ev["ip"] != "127.0.0.5" ||
		ev["user"] != "bob@example.test" || ev["rule"] != "rate.msgs_per_minute" {
		t.Errorf("log event = %v", ev)
	}
	if c, _ := ev["counts"].(map[string]any); c["msgs_per_minute"] != float64(31) {
		t.Errorf("log event counts = %v", ev["counts"])
	}
}

func TestAlertHeaderInjection(t *testing.T) {
	tests := []struct {
		name string
		edit func(a *guard.Alert)
	}{
		{"CRLF in rule", func(a *guard.Alert) { a.Rule = "x\r\nBcc: evil@attacker.test" }},
		{"LF in IP", func(a *guard.Alert) { a.IP = "1.2.3.4\nX-Injected: 1" }},
		{"CR in user", func(a *guard.Alert) { a.User = "u@x.test\rX-Injected: 1" }},
		{"NUL and CRLF in kind", func(a *guard.Alert) { a.Kind = "isolated\x00\r\n\r\nbody" }},
		{"long non-ASCII user", func(a *guard.Alert) { a.User = strings.Repeat("ü", 2000) + "\r\nX-Injected: 1" }},
		{"encoded-word lookalike", func(a *guard.Alert) { a.Rule = "=?utf-8?q?a=0D=0AX-Injected:_1?=" }},
	}
	allowed := map[string]bool{
		"Date": true, "From": true, "To": true, "Subject": true, "Message-Id": true, "Mime-Version": true,
		"Content-Type": true, "Content-Transfer-Encoding": true, "Auto-Submitted": true, "X-Mamori-Alert": true,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test"}, q, nil)
			defer n.Close()
			a := testAlert()
			a.Subjects = append(a.Subjects, "hi\r\nBcc: evil@attacker.test", "x\r\n.\r\nMAIL FROM:<a@b>", "\x1b[31mred")
			a.Rcpts = append(a.Rcpts, "r@x.test\r\nX-Injected: 1")
			tt.edit(&a)
			n.Alert(a)
			msgs := q.all()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			p := parse(t, msgs[0])
			for k := range p.header {
				if !allowed[k] {
					t.Errorf("unexpected header %q in\n%s", k, p.raw)
				}
			}
			if strings.Contains(p.subject, "\n") || strings.Contains(p.subject, "\r") {
				t.Errorf("subject has a line break: %q", p.subject)
			}
			if strings.Contains(p.body, "\x1b") || strings.Contains(p.body, "\r") {
				t.Errorf("body has control characters: %q", p.body)
			}
			if !strings.Contains(p.body, "hi Bcc: evil@attacker.test") {
				t.Errorf("sample subject not quoted on one line:\n%s", p.body)
			}
		})
	}
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newThrottled(t *testing.T, interval time.Duration) (*Notifier, *fakeQueue, *clock) {
	t.Helper()
	q := &fakeQueue{}
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test", MinInterval: interval}, q, nil)
	clk := &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	n.now = clk.Now
	return n, q, clk
}

func alertFor(kind, ip, subject string) guard.Alert {
	return guard.Alert{Kind: kind, IP: ip, Rule: "rate.msgs_per_minute", Subjects: []string{subject}}
}

func TestThrottlePerKey(t *testing.T) {
	n, q, clk := newThrottled(t, time.Hour)

	n.Alert(alertFor("isolated", "127.0.0.5", "s1"))
	n.Alert(alertFor("isolated", "127.0.0.5", "s2"))
	n.Alert(alertFor("isolated", "127.0.0.5", "s3"))
	n.Alert(alertFor("isolated", "127.0.0.6", "other")) // another key
	n.Alert(alertFor("banned", "127.0.0.5", "b"))       // another kind
	if got := len(q.all()); got != 3 {
		t.Fatalf("%d mails after 3 alerts for one key and 2 others, want 3", got)
	}

	clk.Advance(61 * time.Minute)
	n.Alert(alertFor("isolated", "127.0.0.5", "s4"))
	msgs := q.all()
	if len(msgs) != 4 {
		t.Fatalf("%d mails after the interval, want 4", len(msgs))
	}
	p := parse(t, msgs[3])
	if !strings.HasSuffix(p.subject, "(+2 more)") {
		t.Errorf("subject %q does not count the 2 suppressed alerts", p.subject)
	}
	for _, s := range []string{"Suppressed: 2 more", "s2", "s3", "s4"} {
		if !strings.Contains(p.body, s) {
			t.Errorf("summary lacks %q:\n%s", s, p.body)
		}
	}

	n.Close()
	if got := len(q.all()); got != 4 {
		t.Fatalf("Close sent %d mails with nothing pending", got-4)
	}
}

func TestThrottleSummaryOnClose(t *testing.T) {
	n, q, _ := newThrottled(t, time.Hour)
	n.Alert(alertFor("isolated", "127.0.0.5", "s1"))
	n.Alert(alertFor("isolated", "127.0.0.5", "s2"))
	n.Close()
	msgs := q.all()
	if len(msgs) != 2 {
		t.Fatalf("%d mails, want the alert and the summary", len(msgs))
	}
	if p := parse(t, msgs[1]); !strings.HasSuffix(p.subject, "(+1 more)") || !strings.Contains(p.body, "s2") {
		t.Errorf("summary: %q\n%s", p.subject, p.body)
	}
	// After Close alerts are only logged.
	n.Alert(alertFor("isolated", "127.0.0.9", "late"))
	if got := len(q.all()); got != 2 {
		t.Fatalf("mail queued after Close")
	}
}

func TestThrottleSummaryWhenIntervalEnds(t *testing.T) {
	// The test clock stands still, so all three alerts fall in one
	// interval; the flush timer runs on real time.
	n, q, _ := newThrottled(t, 50*time.Millisecond)
	defer n.Close()
	for i := range 3 {
		n.Alert(alertFor("isolated", "127.0.0.5", fmt.Sprint("s", i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(q.all()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	msgs := q.all()
	if len(msgs) != 2 {
		t.Fatalf("%d mails, want the alert and the summary", len(msgs))
	}
	if p := parse(t, msgs[1]); !strings.HasSuffix(p.subject, "(+2 more)") {
		t.Errorf("summary subject %q", p.subject)
	}
}

func TestThrottlePerKind(t *testing.T) {
	n, q, _ := newThrottled(t, time.Hour)
	const total = maxPerKind + 5
	for i := range total {
		n.Alert(alertFor("banned", fmt.Sprintf("192.0.2.%d", i), "x"))
	}
	if got := len(q.all()); got != maxPerKind {
		t.Fatalf("%d mails for %d distinct bans, want the cap %d", got, total, maxPerKind)
	}
	n.Close()
	msgs := q.all()
	if len(msgs) != maxPerKind+1 {
		t.Fatalf("%d mails after Close, want the cap plus one digest", len(msgs))
	}
	p := parse(t, msgs[maxPerKind])
	if !strings.Contains(p.subject, "5 more alerts") {
		t.Errorf("digest subject %q", p.subject)
	}
	for i := maxPerKind; i < total; i++ {
		if ip := fmt.Sprintf("192.0.2.%d\n", i); !strings.Contains(p.body, ip) {
			t.Errorf("digest does not name %s:\n%s", ip, p.body)
		}
	}
}

func TestThrottleMemoryBounded(t *testing.T) {
	n, q, _ := newThrottled(t, time.Hour)
	const total = maxKeys + 1000
	for i := range total {
		n.Alert(alertFor("banned", fmt.Sprintf("10.%d.%d.1", i/256, i%256), "x"))
		if i%500 == 0 {
			n.mu.Lock()
			size := len(n.windows)
			n.mu.Unlock()
			if size > maxKeys {
				t.Fatalf("%d throttle windows, limit %d", size, maxKeys)
			}
		}
	}
	n.Close()
	msgs := q.all()
	if len(msgs) != maxPerKind+1 {
		t.Fatalf("%d mails, want %d and one digest", len(msgs), maxPerKind)
	}
	// Every alert is accounted for: mailed or counted in the digest.
	if p := parse(t, msgs[maxPerKind]); !strings.Contains(p.subject, fmt.Sprintf("%d more alerts", total-maxPerKind)) {
		t.Errorf("digest subject %q", p.subject)
	}
}

func TestNotifySuspendedUser(t *testing.T) {
	tests := []struct {
		name   string
		kind   string
		notify map[string]string
		want   []string // recipients, in order
	}{
		{"suspended with notify", "suspended", map[string]string{"Bob@Example.test": "bob.private@other.test"},
			[]string{"bob.private@other.test", "admin@example.test"}},
		{"suspended without notify", "suspended", nil, []string{"admin@example.test"}},
		{"notify to the hijacked address is ignored", "suspended", map[string]string{"bob@example.test": "BOB@example.test"},
			[]string{"admin@example.test"}},
		{"other kinds do not notify", "isolated", map[string]string{"bob@example.test": "bob.private@other.test"},
			[]string{"admin@example.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test", Notify: tt.notify}, q, nil)
			defer n.Close()
			n.Alert(guard.Alert{Kind: tt.kind, User: "bob@example.test", Rule: "auth.new_networks", Detail: "logins from 5 networks"})
			var got []string
			for _, m := range q.all() {
				got = append(got, m.meta.Rcpts[0].Addr)
				p := parse(t, m)
				if to, _ := mail.ParseAddress(p.header.Get("To")); to == nil || to.Address != m.meta.Rcpts[0].Addr {
					t.Errorf("To header %q does not match the envelope %q", p.header.Get("To"), m.meta.Rcpts[0].Addr)
				}
				if m.meta.Rcpts[0].Addr == "bob.private@other.test" {
					if !strings.Contains(p.body, "bob@example.test") || !strings.Contains(p.body, "auth.new_networks") {
						t.Errorf("user notice lacks account or rule:\n%s", p.body)
					}
					if strings.Contains(p.body, "mamori queue") {
						t.Errorf("user notice has admin commands:\n%s", p.body)
					}
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("mail went to %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNoPostmaster(t *testing.T) {
	q := &fakeQueue{}
	n := New(Config{Hostname: "mx.example.test"}, q, nil)
	n.Alert(testAlert())
	n.Close()
	if got := len(q.all()); got != 0 {
		t.Fatalf("%d mails without a postmaster", got)
	}
}

func TestEnqueueErrorIsLogged(t *testing.T) {
	q := &fakeQueue{err: errors.New("queue full")}
	var logs syncBuffer
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test"}, q, slog.New(slog.NewTextHandler(&logs, nil)))
	n.Alert(testAlert())
	n.Close()
	if !strings.Contains(logs.String(), "cannot queue alert mail") || !strings.Contains(logs.String(), "queue full") {
		t.Fatalf("enqueue failure not logged:\n%s", logs.String())
	}
}

func TestWebhook(t *testing.T) {
	type req struct {
		ctype string
		body  []byte
	}
	got := make(chan req, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- req{r.Header.Get("Content-Type"), b}
	}))
	defer srv.Close()

	n := New(Config{Webhook: srv.URL}, nil, nil)
	defer n.Close()
	a := testAlert()
	n.Alert(a)

	select {
	case r := <-got:
		if r.ctype != "application/json" {
			t.Errorf("Content-Type %q", r.ctype)
		}
		var back guard.Alert
		if err := json.Unmarshal(r.body, &back); err != nil {
			t.Fatalf("webhook body %s: %v", r.body, err)
		}
		if !reflect.DeepEqual(back, a) {
			t.Fatalf("webhook got %+v, want %+v", back, a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("webhook not called")
	}
}

func TestWebhookRetriesOnce(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()

	var logs syncBuffer
	n := New(Config{Webhook: srv.URL}, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	n.retryDelay = time.Millisecond
	n.Alert(testAlert())
	n.Close() // waits for the pending post (and its retry)

	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Fatalf("webhook called %d times, want 2 (one retry)", calls)
	}
	if !strings.Contains(logs.String(), "alert not posted") {
		t.Fatalf("final failure not logged:\n%s", logs.String())
	}
}

func TestSlowWebhookDoesNotBlock(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	var logs syncBuffer
	q := &fakeQueue{}
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test", Webhook: srv.URL, WebhookTimeout: 200 * time.Millisecond},
		q, slog.New(slog.NewTextHandler(&logs, nil)))

	// Far more alerts than the webhook queue holds: none may wait for the
	// webhook, the overflow is dropped and logged.
	done := make(chan struct{})
	go func() {
		for i := range 3 * webhookQueue {
			n.Alert(alertFor("isolated", fmt.Sprintf("10.0.%d.%d", i/256, i%256), "x"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Alert blocked on a slow webhook")
	}
	if !strings.Contains(logs.String(), "webhook queue full") {
		t.Error("dropped webhook posts not logged")
	}
	if len(q.all()) == 0 {
		t.Error("no mail while the webhook was slow")
	}
	// Close waits only briefly, then abandons the queued posts.
	closed := make(chan struct{})
	go func() { n.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the whole webhook backlog")
	}
}

func TestInvalidConfigIsLoggedAndIgnored(t *testing.T) {
	var logs syncBuffer
	q := &fakeQueue{}
	n := New(Config{Hostname: "bad host\r\n", Postmaster: "not an address", Webhook: "ftp://x.test/",
		Notify: map[string]string{"bob@example.test": "@@"}}, q, slog.New(slog.NewTextHandler(&logs, nil)))
	n.Alert(guard.Alert{Kind: "suspended", User: "bob@example.test", Rule: "r"})
	n.Close()
	if got := len(q.all()); got != 0 {
		t.Errorf("%d mails with an invalid postmaster and notify", got)
	}
	for _, s := range []string{"invalid postmaster", "invalid notify", "invalid webhook"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, logs.String())
		}
	}
	if n.host != "localhost" {
		t.Errorf("host = %q, want localhost for an invalid hostname", n.host)
	}
}

func TestSamplesBounded(t *testing.T) {
	q := &fakeQueue{}
	n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test"}, q, nil)
	defer n.Close()
	a := testAlert()
	a.Subjects = nil
	for i := range 10 {
		a.Subjects = append(a.Subjects, fmt.Sprintf("subject-%d", i))
	}
	a.Subjects = append(a.Subjects, strings.Repeat("long ", 1000))
	n.Alert(a)
	p := parse(t, q.all()[0])
	for i := range 10 {
		if has := strings.Contains(p.body, fmt.Sprintf("subject-%d\n", i)); has != (i < maxSamples) {
			t.Errorf("subject-%d quoted = %v, want %v", i, has, i < maxSamples)
		}
	}
	if !strings.Contains(p.body, "and 6 more") {
		t.Errorf("body does not say how many samples were left out:\n%s", p.body)
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.5", "127.0.0.5"},
		{"bob@example.test", "bob@example.test"},
		{"2001:db8::1", "2001:db8::1"},
		{"a b", "'a b'"},
		{"x'; rm -rf /", `'x'\''; rm -rf /'`},
		{"$(id)", "'$(id)'"},
		{"a\nb", "'a b'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOtherKindsCommands(t *testing.T) {
	tests := []struct {
		a       guard.Alert
		want    []string
		notWant []string
	}{
		{guard.Alert{Kind: "banned", IP: "203.0.113.7", Rule: "auth.bruteforce"},
			[]string{"mamori guard unban 203.0.113.7"}, []string{"guard release"}},
		{guard.Alert{Kind: "suspended", User: "eve@example.test", IP: "203.0.113.8", Rule: "auth.new_networks"},
			[]string{"mamori guard release eve@example.test", "mamori queue list --state held --user eve@example.test"},
			[]string{"--client-ip"}},
		{guard.Alert{Kind: "own_ip_listed", IP: "198.51.100.1", Rule: "dnsbl", Extra: map[string]string{"zone": "bl.test"}},
			[]string{"198.51.100.1", "zone: bl.test", "mamori guard list"}, nil},
		{guard.Alert{Kind: "released", IP: "127.0.0.5", Rule: "admin"},
			nil, []string{"mamori queue", "mamori guard release", "What you can do"}},
	}
	for _, tt := range tests {
		t.Run(tt.a.Kind, func(t *testing.T) {
			q := &fakeQueue{}
			n := New(Config{Hostname: "mx.example.test", Postmaster: "admin@example.test"}, q, nil)
			defer n.Close()
			n.Alert(tt.a)
			p := parse(t, q.all()[0])
			for _, s := range tt.want {
				if !strings.Contains(p.body, s) {
					t.Errorf("body lacks %q:\n%s", s, p.body)
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(p.body, s) {
					t.Errorf("body has %q:\n%s", s, p.body)
				}
			}
		})
	}
}
