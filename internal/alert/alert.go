// Package alert tells the administrator when the guard acts: a sender
// isolated, an account suspended, an IP banned, the server's own IP found
// on a blocklist.
//
// Why it exists: isolating a worm-infected PC in seconds is only half the
// job; someone has to clean the PC and decide about the held mail
// (DESIGN.md S1, S7). Every alert is logged at once (a structured "alert"
// event), mailed to the postmaster with the commands to act, optionally
// POSTed as JSON to a webhook (chat, ticketing), and a suspended user is
// told at an address other than the hijacked one.
//
// An attack produces alerts in floods, and a flood of alert mail would be
// a second incident (DESIGN.md S3: floods are summarised, not mailed one by
// one). So mail is throttled twice: per (kind, IP, user) at most one mail
// per interval, and per kind at most a fixed number of mails per interval.
// What is held back is counted and summarised in the next mail for that
// key, or in one digest per kind, sent when the interval ends. The log and
// the webhook still see every alert.
//
// Alert mail is built here by hand, not with a MIME library: it is one
// text/plain part. Its subject and body quote attacker-chosen text (sample
// subjects and recipients), so every value is stripped of control
// characters before it goes into a header, non-ASCII header text is RFC 2047
// encoded, and the body is quoted-printable. The envelope sender is null, so
// an alert can never bounce and start a loop.
//
// Dependencies: the standard library only (net/http for the webhook,
// mime and mime/quotedprintable for the message), plus mamori's own queue
// (alert mail is delivered like any other mail) and guard (the Alert type).
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

const (
	defaultWebhookTimeout = 5 * time.Second
	defaultMinInterval    = 10 * time.Minute

	// webhookQueue bounds the alerts waiting for the webhook; more are
	// dropped (and logged), so a dead webhook cannot grow memory.
	webhookQueue = 100
	// webhookRetryDelay is the pause before the one retry of a failed POST.
	webhookRetryDelay = time.Second
	// maxWebhookResponse bounds how much of a webhook's answer we read.
	maxWebhookResponse = 64 << 10

	// maxPerKind is how many mails one kind of alert may produce per
	// interval before the rest are only counted into a digest.
	maxPerKind = 20
	// maxSamples bounds the sample subjects and recipients quoted.
	maxSamples = 5
	// maxDigestNames bounds the IPs, users and rules a digest names.
	maxDigestNames = 20
	// maxValue bounds any single quoted value (runes).
	maxValue = 200
	// maxKeys triggers pruning of idle throttle windows.
	maxKeys = 4096
	// RecentAlerts is how many of the latest alerts Recent returns (the
	// live view's list).
	RecentAlerts = 20
)

// Enqueuer is where alert mail goes: *queue.Queue.
type Enqueuer interface {
	Enqueue(m queue.Meta, parts ...[]byte) (queue.Meta, error)
}

// Config says where alerts go.
type Config struct {
	Hostname       string            // for Message-ID and From (postmaster@Hostname); default: os.Hostname
	Postmaster     string            // where alert mail goes; "" means no mail (log and webhook only)
	Webhook        string            // optional http(s) URL; JSON POST of the guard.Alert
	WebhookTimeout time.Duration     // per POST; default 5 s
	Notify         map[string]string // user address → address to tell on suspension (not the hijacked one)
	MinInterval    time.Duration     // per (kind, ip, user) at most one mail per interval; default 10 min
	// From is the header From address of alert mail; default
	// postmaster@Hostname. Use an address of a local domain so that Sign
	// has a key for it.
	From string
	// Sign, when set, DKIM-signs each alert mail before it is queued (with
	// the key of its From domain; it returns the mail unchanged when it has
	// none), so alerts pass DMARC at receivers with p=reject.
	Sign func(msg []byte) []byte
}

// Notifier delivers alerts. It is safe for concurrent use.
type Notifier struct {
	cfg        Config
	host       string
	from       string // header From address
	postmaster string // parsed; "" when no mail goes to the postmaster
	notify     map[string]string
	webhook    string // "" when disabled
	enq        Enqueuer
	log        *slog.Logger
	client     *http.Client
	now        func() time.Time // time.Now; replaced in tests
	retryDelay time.Duration    // webhookRetryDelay; shorter in tests

	mu      sync.Mutex
	closed  bool
	recent  [RecentAlerts]guard.Alert // ring of the latest alerts
	nRecent int                       // alerts ever put in recent
	windows map[key]*window
	kinds   map[string]*kindWindow

	hooks   chan []byte
	stop    context.CancelFunc
	hookCtx context.Context
	done    chan struct{}
}

// key is what mail is throttled by.
type key struct{ kind, ip, user string }

// window is the mail throttle of one key.
type window struct {
	last  time.Time // when the last alert for this key was handled
	pend  pending   // alerts suppressed since
	timer *time.Timer
}

// kindWindow caps the mails of one kind per interval.
type kindWindow struct {
	start time.Time
	sent  int
	pend  pending // alerts over the cap, for the digest
	timer *time.Timer
}

// pending accumulates alerts that were not mailed.
type pending struct {
	n                  int
	since              time.Time
	latest             guard.Alert
	subjects, rcpts    []string
	ips, users, rules  []string
	moreIPs, moreUsers bool
}

func (p *pending) add(a guard.Alert) {
	if p.n == 0 {
		p.since = a.Time
	}
	p.n++
	p.latest = a
	p.subjects = addUnique(p.subjects, maxSamples, a.Subjects...)
	p.rcpts = addUnique(p.rcpts, maxSamples, a.Rcpts...)
	p.rules = addUnique(p.rules, maxDigestNames, a.Rule)
	if a.IP != "" && !slices.Contains(p.ips, a.IP) {
		if len(p.ips) < maxDigestNames {
			p.ips = append(p.ips, a.IP)
		} else {
			p.moreIPs = true
		}
	}
	if a.User != "" && !slices.Contains(p.users, a.User) {
		if len(p.users) < maxDigestNames {
			p.users = append(p.users, a.User)
		} else {
			p.moreUsers = true
		}
	}
}

// merge adds the alerts of q to p (q.latest stands for them).
func (p *pending) merge(q pending) {
	if q.n == 0 {
		return
	}
	n := p.n
	p.add(q.latest)
	p.n = n + q.n
	if p.since.IsZero() || q.since.Before(p.since) {
		p.since = q.since
	}
	p.subjects = addUnique(p.subjects, maxSamples, q.subjects...)
	p.rcpts = addUnique(p.rcpts, maxSamples, q.rcpts...)
	p.rules = addUnique(p.rules, maxDigestNames, q.rules...)
}

func addUnique(dst []string, limit int, vals ...string) []string {
	for _, v := range vals {
		if len(dst) >= limit {
			break
		}
		if v != "" && !slices.Contains(dst, v) {
			dst = append(dst, v)
		}
	}
	return dst
}

// New returns a Notifier. enq may be nil (no mail); log may be nil. An
// invalid Postmaster, Notify entry or Webhook is logged and ignored, so a
// typo in the configuration never stops the alerts that can still go out.
func New(cfg Config, enq Enqueuer, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = defaultWebhookTimeout
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = defaultMinInterval
	}
	host := cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	host = safeHost(host)

	n := &Notifier{
		cfg:        cfg,
		host:       host,
		from:       "postmaster@" + host,
		notify:     make(map[string]string),
		enq:        enq,
		log:        log,
		client:     &http.Client{Timeout: cfg.WebhookTimeout},
		now:        time.Now,
		retryDelay: webhookRetryDelay,
		windows:    make(map[key]*window),
		kinds:      make(map[string]*kindWindow),
		hooks:      make(chan []byte, webhookQueue),
		done:       make(chan struct{}),
	}
	if cfg.From != "" {
		if a, err := mail.ParseAddress(cfg.From); err != nil || strings.ContainsAny(a.Address, "<>\r\n") {
			log.Error("alert: invalid From address, using the default", "from", cfg.From, "err", err)
		} else {
			n.from = a.Address
		}
	}
	if cfg.Postmaster != "" {
		if a, err := mail.ParseAddress(cfg.Postmaster); err != nil {
			log.Error("alert: invalid postmaster address, alert mail disabled", "postmaster", cfg.Postmaster, "err", err)
		} else {
			n.postmaster = a.Address
		}
	}
	for user, to := range cfg.Notify {
		a, err := mail.ParseAddress(to)
		if err != nil {
			log.Error("alert: invalid notify address, ignored", "user", user, "notify", to, "err", err)
			continue
		}
		if strings.EqualFold(a.Address, user) {
			log.Error("alert: notify address is the user's own address (the one that may be hijacked), ignored", "user", user)
			continue
		}
		n.notify[strings.ToLower(user)] = a.Address
	}
	if cfg.Webhook != "" {
		if u, err := url.Parse(cfg.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			log.Error("alert: invalid webhook URL, webhook disabled", "webhook", cfg.Webhook, "err", err)
		} else {
			n.webhook = cfg.Webhook
		}
	}
	n.hookCtx, n.stop = context.WithCancel(context.Background())
	go n.postLoop()
	return n
}

// Alert reports a: it logs it at once, enqueues the postmaster mail (unless
// throttled), queues the webhook POST without waiting for it, and for a
// suspension tells the user at their Notify address. It does not wait for
// the network; the only wait is the queue's durable write.
func (n *Notifier) Alert(a guard.Alert) {
	// Our own copy: summaries are built later, and the caller may reuse
	// its maps and slices.
	a.Counts = maps.Clone(a.Counts)
	a.Extra = maps.Clone(a.Extra)
	a.Subjects = slices.Clone(a.Subjects)
	a.Rcpts = slices.Clone(a.Rcpts)
	now := n.now()
	if a.Time.IsZero() {
		a.Time = now
	}
	n.log.Warn("alert",
		"kind", a.Kind, "ip", a.IP, "user", a.User, "sender", a.Sender, "rule", a.Rule,
		"counts", a.Counts, "subjects", a.Subjects, "rcpts", a.Rcpts,
		"detail", a.Detail, "extra", a.Extra, "time", a.Time)

	var body []byte
	if n.webhook != "" {
		var err error
		if body, err = json.Marshal(a); err != nil {
			n.log.Error("alert: encode webhook body", "err", err)
		}
	}

	n.mu.Lock()
	n.recent[n.nRecent%RecentAlerts] = a
	n.nRecent++
	if n.closed {
		n.mu.Unlock()
		n.log.Warn("alert: notifier closed, alert only logged", "kind", a.Kind, "ip", a.IP, "user", a.User)
		return
	}
	if body != nil {
		select {
		case n.hooks <- body:
		default:
			n.log.Warn("alert: webhook queue full, dropping", "kind", a.Kind, "ip", a.IP, "user", a.User, "queued", webhookQueue)
		}
	}
	mails := n.handleLocked(a, now)
	n.mu.Unlock()

	n.send(mails)
}

// Recent returns the latest alerts, newest first, at most RecentAlerts:
// every alert reported, whether or not it was mailed.
func (n *Notifier) Recent() []guard.Alert {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := min(n.nRecent, RecentAlerts)
	out := make([]guard.Alert, k)
	for i := range k {
		a := n.recent[(n.nRecent-1-i)%RecentAlerts]
		a.Counts = maps.Clone(a.Counts)
		a.Extra = maps.Clone(a.Extra)
		a.Subjects = slices.Clone(a.Subjects)
		a.Rcpts = slices.Clone(a.Rcpts)
		out[i] = a
	}
	return out
}

// handleLocked applies the throttles to a and returns the mails to send.
func (n *Notifier) handleLocked(a guard.Alert, now time.Time) []outMail {
	k := key{a.Kind, a.IP, strings.ToLower(a.User)}
	w := n.windows[k]
	if w != nil && !w.last.IsZero() && now.Sub(w.last) < n.cfg.MinInterval {
		w.pend.add(a)
		if w.timer == nil {
			w.timer = time.AfterFunc(w.last.Add(n.cfg.MinInterval).Sub(now), func() { n.flushKey(k) })
		}
		return nil
	}
	if w == nil {
		if len(n.windows) >= maxKeys {
			n.pruneLocked(now)
		}
		if len(n.windows) >= maxKeys {
			// Thousands of distinct senders within one interval: a flood.
			// Keep memory bounded and count this one into the digest.
			n.overflowLocked(a.Kind, now, func(p *pending) { p.add(a) })
			return nil
		}
		w = &window{}
		n.windows[k] = w
	}
	// The key is free: what was suppressed (if the timer has not fired
	// yet) rides along in this mail.
	sum := w.pend
	w.pend = pending{}
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.last = now

	var mails []outMail
	if m, ok := n.userMail(a, now); ok {
		mails = append(mails, m)
	}
	if n.kindAllowsLocked(a.Kind, now) {
		if m, ok := n.adminMail(a, sum, now); ok {
			mails = append(mails, m)
		}
	} else {
		n.overflowLocked(a.Kind, now, func(p *pending) { p.add(a); p.merge(sum) })
	}
	return mails
}

// kindAllowsLocked counts one mail of kind against its per-interval cap.
func (n *Notifier) kindAllowsLocked(kind string, now time.Time) bool {
	kw := n.kindLocked(kind, now)
	if kw.sent >= maxPerKind {
		return false
	}
	kw.sent++
	return true
}

// kindLocked returns the window of kind, starting a new interval when the
// last one is over.
func (n *Notifier) kindLocked(kind string, now time.Time) *kindWindow {
	kw := n.kinds[kind]
	if kw == nil {
		kw = &kindWindow{start: now}
		n.kinds[kind] = kw
	}
	if now.Sub(kw.start) >= n.cfg.MinInterval {
		kw.start, kw.sent = now, 0
	}
	return kw
}

// overflowLocked records alerts of kind that went over the cap; the digest
// goes out when the kind's interval ends.
func (n *Notifier) overflowLocked(kind string, now time.Time, add func(*pending)) {
	kw := n.kindLocked(kind, now)
	add(&kw.pend)
	if kw.timer == nil {
		d := max(0, kw.start.Add(n.cfg.MinInterval).Sub(now))
		kw.timer = time.AfterFunc(d, func() { n.flushKind(kind) })
	}
}

// flushKey mails the summary of a key's suppressed alerts when its
// interval ends.
func (n *Notifier) flushKey(k key) {
	n.mu.Lock()
	w := n.windows[k]
	if n.closed || w == nil || w.pend.n == 0 {
		n.mu.Unlock()
		return
	}
	now := n.now()
	sum := w.pend
	w.pend, w.timer, w.last = pending{}, nil, now
	var mails []outMail
	if n.kindAllowsLocked(k.kind, now) {
		if m, ok := n.adminMail(sum.latest, sum, now); ok {
			mails = append(mails, m)
		}
	} else {
		n.overflowLocked(k.kind, now, func(p *pending) { p.merge(sum) })
	}
	n.mu.Unlock()
	n.send(mails)
}

// flushKind mails the digest of the alerts of kind that went over the cap.
func (n *Notifier) flushKind(kind string) {
	n.mu.Lock()
	kw := n.kinds[kind]
	if n.closed || kw == nil || kw.pend.n == 0 {
		n.mu.Unlock()
		return
	}
	now := n.now()
	p := kw.pend
	kw.pend, kw.timer = pending{}, nil
	m, ok := n.digestMail(kind, p, now)
	n.mu.Unlock()
	if ok {
		n.send([]outMail{m})
	}
}

// pruneLocked forgets throttle windows with nothing pending whose interval
// is over: they would let the next alert through anyway.
func (n *Notifier) pruneLocked(now time.Time) {
	for k, w := range n.windows {
		if w.pend.n == 0 && now.Sub(w.last) >= n.cfg.MinInterval {
			delete(n.windows, k)
		}
	}
}

// Close sends the summaries still pending, then waits briefly (at most the
// webhook timeout) for queued webhook POSTs and abandons the rest. Call it
// before closing the queue. Alerts after Close are only logged.
func (n *Notifier) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	now := n.now()
	var mails []outMail
	for _, k := range slices.SortedFunc(maps.Keys(n.windows), compareKeys) {
		w := n.windows[k]
		if w.timer != nil {
			w.timer.Stop()
		}
		if w.pend.n > 0 {
			if m, ok := n.adminMail(w.pend.latest, w.pend, now); ok {
				mails = append(mails, m)
			}
		}
	}
	for _, kind := range slices.Sorted(maps.Keys(n.kinds)) {
		kw := n.kinds[kind]
		if kw.timer != nil {
			kw.timer.Stop()
		}
		if kw.pend.n > 0 {
			if m, ok := n.digestMail(kind, kw.pend, now); ok {
				mails = append(mails, m)
			}
		}
	}
	close(n.hooks)
	n.mu.Unlock()
	n.send(mails)

	t := time.NewTimer(n.cfg.WebhookTimeout)
	defer t.Stop()
	select {
	case <-n.done:
	case <-t.C:
		n.stop()
		<-n.done
	}
	n.stop()
}

func compareKeys(a, b key) int {
	return strings.Compare(a.kind+"\x00"+a.ip+"\x00"+a.user, b.kind+"\x00"+b.ip+"\x00"+b.user)
}

// postLoop POSTs queued webhook bodies one at a time until Close.
func (n *Notifier) postLoop() {
	defer close(n.done)
	abandoned := 0
	for body := range n.hooks {
		if n.hookCtx.Err() != nil {
			abandoned++
			continue
		}
		err := n.post(body)
		if err != nil {
			n.log.Warn("alert: webhook failed, retrying once", "err", err)
			t := time.NewTimer(n.retryDelay)
			select {
			case <-t.C:
				err = n.post(body)
			case <-n.hookCtx.Done():
			}
			t.Stop()
		}
		if err != nil {
			n.log.Error("alert: webhook failed, alert not posted", "err", err)
		}
	}
	if abandoned > 0 {
		n.log.Warn("alert: webhook posts abandoned at shutdown", "count", abandoned)
	}
}

func (n *Notifier) post(body []byte) error {
	ctx, cancel := context.WithTimeout(n.hookCtx, n.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.webhook, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mamori")
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookResponse))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook post: %w: %s", errWebhookStatus, resp.Status)
	}
	return nil
}

var errWebhookStatus = errors.New("unexpected status")

// outMail is one alert message ready for the queue.
type outMail struct {
	to      string
	subject string // plain (sanitised, not encoded), for queue.Meta
	msg     []byte
}

func (n *Notifier) send(mails []outMail) {
	if n.enq == nil {
		return
	}
	for _, m := range mails {
		meta := queue.Meta{
			From:    "", // null sender: an alert never bounces
			Rcpts:   []queue.Rcpt{{Addr: m.to}},
			Origin:  queue.OriginLocal,
			Subject: m.subject,
			// ClientIP and User stay empty on purpose: `queue delete
			// --client-ip X` must delete X's mail, not the alert about X.
		}
		msg := m.msg
		if n.cfg.Sign != nil {
			msg = n.cfg.Sign(msg)
		}
		if _, err := n.enq.Enqueue(meta, msg); err != nil {
			n.log.Error("alert: cannot queue alert mail", "to", m.to, "subject", m.subject, "err", err)
		}
	}
}
