package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
)

const (
	// maxGroupsPerMessage bounds how many destinations of one message are
	// worked on at the same time (each still needs a delivery slot).
	maxGroupsPerMessage = 4
	// nextErrorPause is how long Run waits after Spool.Next fails before
	// asking again.
	nextErrorPause = time.Second
)

// dnsResolver is the part of *resolver.Resolver delivery uses.
type dnsResolver interface {
	LookupMX(ctx context.Context, domain string) ([]resolver.MX, error)
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Scheduler runs delivery attempts for the messages the spool hands out.
type Scheduler struct {
	cfg   Config
	spool Spool
	local LocalDeliverer
	dns   dnsResolver
	log   *slog.Logger

	msgSlots  chan struct{} // messages in progress
	connSlots chan struct{} // SMTP sessions and local deliveries in progress
	perDest   *keyedSem     // SMTP sessions per destination

	now func() time.Time
}

// NewScheduler returns a scheduler; Run starts it. local may be nil when no
// domain is local; res may be nil when every destination is routed (MX
// lookups then fail temporarily); log nil means slog.Default().
func NewScheduler(cfg Config, sp Spool, local LocalDeliverer, res *resolver.Resolver, log *slog.Logger) *Scheduler {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	s := &Scheduler{
		cfg:       cfg,
		spool:     sp,
		local:     local,
		log:       log,
		msgSlots:  make(chan struct{}, cfg.Concurrency),
		connSlots: make(chan struct{}, cfg.Concurrency),
		perDest:   newKeyedSem(cfg.PerDomain),
		now:       time.Now,
	}
	if res != nil {
		s.dns = res
	}
	return s
}

// Run leases and delivers messages until ctx is done. On return every
// attempt it started has finished: in-flight SMTP sessions are aborted when
// ctx ends and their pending recipients handed back for an immediate retry.
// It returns nil after a cancellation.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case s.msgSlots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		lease, err := s.spool.Next(ctx)
		if err != nil {
			<-s.msgSlots
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("delivery: lease next message", "err", err)
			if !sleep(ctx, nextErrorPause) {
				return nil
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.msgSlots }()
			s.process(ctx, lease)
		}()
	}
}

// outcome is what happened to one recipient in this attempt.
type outcome struct {
	state   outcomeState
	diag    string // reply or error text
	relay   string // "host[ip]:port" or "local"
	tls     bool
	touched bool // the attempt got to this recipient (for expiry)
}

type outcomeState int

const (
	unresolved outcomeState = iota // not attempted or no definite answer
	delivered
	failed
	deferred // explicit temporary failure
)

// group is a set of recipients with one destination.
type group struct {
	dest dest
	idx  []int // indexes into the message's Rcpts
}

// process runs one delivery attempt for a leased message and reports it.
func (s *Scheduler) process(ctx context.Context, l Lease) {
	m := l.Message()
	log := s.log.With("queue_id", m.ID, "from", m.From, "client_ip", m.ClientIP, "user", m.User)
	if r, ok := l.(interface{ Recovered() bool }); ok && r.Recovered() {
		log.Info("delivery: recovered lease, retrying unfinished recipients")
	}
	outs := make([]outcome, len(m.Rcpts))

	if l.Revoked() {
		log.Info("delivery: lease revoked before attempt")
		s.finish(ctx, l, m, outs, nil, log)
		return
	}
	body, err := s.spool.Body(m.ID)
	if err != nil {
		diag := fmt.Sprintf("4.3.0 cannot read queued message: %v", err)
		for i, r := range m.Rcpts {
			if r.Status == queue.RcptPending {
				outs[i] = outcome{state: deferred, diag: diag, touched: true}
			}
		}
		s.finish(ctx, l, m, outs, nil, log)
		return
	}

	groups := s.groups(m, outs)
	var wg sync.WaitGroup
	limit := make(chan struct{}, maxGroupsPerMessage)
	for _, g := range groups {
		wg.Add(1)
		limit <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-limit }()
			s.deliverGroup(ctx, l, m, body, g, outs)
		}()
	}
	wg.Wait()
	s.finish(ctx, l, m, outs, body, log)
}

// groups sorts the pending recipients by destination. Recipients that can
// be failed without any lookup (bad syntax) are resolved in outs.
func (s *Scheduler) groups(m queue.Meta, outs []outcome) []*group {
	byKey := map[string]*group{}
	for i, r := range m.Rcpts {
		if r.Status != queue.RcptPending {
			continue
		}
		d, err := s.route(r.Addr)
		if err != nil {
			st, _ := statusOf(err.Error())
			outs[i] = outcome{state: stateFor(!strings.HasPrefix(st, "4")), diag: err.Error(), touched: true}
			continue
		}
		g := byKey[d.key]
		if g == nil {
			g = &group{dest: d}
			byKey[d.key] = g
		}
		g.idx = append(g.idx, i)
	}
	out := make([]*group, 0, len(byKey))
	for _, g := range byKey {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *group) int { return strings.Compare(a.dest.key, b.dest.key) })
	return out
}

// deliverGroup takes the slots the destination needs and delivers.
func (s *Scheduler) deliverGroup(ctx context.Context, l Lease, m queue.Meta, body []byte, g *group, outs []outcome) {
	if g.dest.kind == destLocal {
		release, ok := acquire(ctx, s.connSlots)
		if !ok {
			return
		}
		defer release()
		start := time.Now()
		s.deliverLocal(ctx, l, m, body, g, outs)
		s.cfg.Metrics.DeliveryAttempt("local", time.Since(start))
		return
	}
	if s.cfg.Paused != nil && s.cfg.Paused() {
		for _, i := range g.idx {
			outs[i] = outcome{state: deferred, diag: "4.7.0 outbound delivery paused: our sending IP is on a blocklist", relay: "paused", touched: true}
		}
		return
	}
	releaseDest, err := s.perDest.acquire(ctx, g.dest.key)
	if err != nil {
		return
	}
	defer releaseDest()
	release, ok := acquire(ctx, s.connSlots)
	if !ok {
		return
	}
	defer release()
	start := time.Now()
	s.deliverRemote(ctx, l, m, body, g, outs)
	s.cfg.Metrics.DeliveryAttempt("remote", time.Since(start))
}

func (s *Scheduler) deliverLocal(ctx context.Context, l Lease, m queue.Meta, body []byte, g *group, outs []outcome) {
	for _, i := range g.idx {
		if ctx.Err() != nil || !l.BeginSend() {
			return
		}
		rcpt := m.Rcpts[i].Addr
		err := s.local.DeliverLocal(ctx, rcpt, m, body)
		switch {
		case err == nil:
			outs[i] = outcome{state: delivered, diag: "2.0.0 delivered to mailbox", relay: "local", touched: true}
		case IsPermanent(err):
			outs[i] = outcome{state: failed, diag: withStatus("5.2.0", err.Error()), relay: "local", touched: true}
		default:
			outs[i] = outcome{state: deferred, diag: withStatus("4.2.0", err.Error()), relay: "local", touched: true}
		}
	}
}

// finish turns outcomes into recipient statuses, applies the lifetime
// limit, sends the DSN, logs, and hands the attempt back to the spool.
// body is nil when the attempt never read it (revoked, unreadable).
func (s *Scheduler) finish(ctx context.Context, l Lease, m queue.Meta, outs []outcome, body []byte, log *slog.Logger) {
	now := s.now()
	interrupted := ctx.Err() != nil
	rcpts := slices.Clone(m.Rcpts)

	expired := false
	if !interrupted && !l.Revoked() && !m.Received.IsZero() && now.Sub(m.Received) > s.cfg.MaxLifetime {
		expired = true
	}

	var newlyFailed []queue.Rcpt
	var failedIdx []int
	var lastError string
	pending := false
	for i := range rcpts {
		r := &rcpts[i]
		if r.Status != queue.RcptPending {
			continue
		}
		o := outs[i]
		if expired && o.touched && (o.state == deferred || o.state == unresolved) {
			last := o.diag
			if last == "" {
				last = r.Diag
			}
			o.state = failed
			o.diag = fmt.Sprintf("4.4.7 message expired after %s in the queue", now.Sub(m.Received).Round(time.Minute))
			if last != "" {
				o.diag += "; last error: " + last
			}
		}
		attrs := []any{"rcpt", r.Addr, "relay", o.relay, "reply", o.diag, "tls", o.tls,
			"delay", now.Sub(m.Received).Round(time.Millisecond).String()}
		switch o.state {
		case delivered:
			r.Status, r.Diag = queue.RcptDelivered, o.diag
			log.Info("delivered", attrs...)
			s.cfg.Metrics.DeliveryResult(deliveryKind(o), metrics.Delivered)
		case failed:
			r.Status, r.Diag = queue.RcptFailed, o.diag
			s.cfg.Metrics.DeliveryResult(deliveryKind(o), metrics.Bounced)
			newlyFailed = append(newlyFailed, *r)
			failedIdx = append(failedIdx, i)
			outs[i] = o
		default:
			pending = true
			if o.diag != "" {
				r.Diag = o.diag
				if lastError == "" {
					lastError = o.diag
				}
			}
			if o.touched {
				log.Info("deferred", attrs...)
				s.cfg.Metrics.DeliveryResult(deliveryKind(o), metrics.Deferred)
			}
		}
	}

	if len(newlyFailed) > 0 {
		dsn := s.sendDSN(m, newlyFailed, body, now, log)
		for _, i := range failedIdx {
			log.Info("bounced", "rcpt", rcpts[i].Addr, "relay", outs[i].relay, "reply", outs[i].diag, "tls", outs[i].tls, "dsn", dsn)
		}
	}

	a := Attempt{Rcpts: rcpts, LastError: lastError}
	if pending {
		switch {
		case interrupted || l.Revoked():
			a.NextAttempt = now
		default:
			a.NextAttempt = now.Add(s.backoff(m.Attempts + 1))
			if expiry := m.Received.Add(s.cfg.MaxLifetime); !m.Received.IsZero() && a.NextAttempt.After(expiry) && expiry.After(now) {
				// One last try right at expiry, then bounce.
				a.NextAttempt = expiry
			}
		}
	}
	if err := s.spool.Finish(l, a); err != nil {
		log.Error("delivery: record attempt", "err", err)
	}
}

// deliveryKind labels an outcome for metrics: local (Maildir) or remote.
func deliveryKind(o outcome) string {
	if o.relay == "local" {
		return "local"
	}
	return "remote"
}

// sendDSN queues a bounce for failed when the message may be bounced and
// says what happened ("queued <id>", "suppressed: <why>", "error: …").
func (s *Scheduler) sendDSN(m queue.Meta, failed []queue.Rcpt, body []byte, now time.Time, log *slog.Logger) string {
	switch {
	case m.From == "":
		return "suppressed: null sender"
	case m.Origin != queue.OriginSubmitted && m.Origin != queue.OriginTrusted && m.Origin != queue.OriginLocal:
		return "suppressed: origin " + string(m.Origin)
	}
	if body == nil {
		b, err := s.spool.Body(m.ID)
		if err == nil {
			body = b
		}
	}
	msg := buildDSN(s.cfg.Postmaster, s.cfg.Hostname, m, failed, headerOf(body), now, randomHex(12))
	if isASCII(m.From) {
		// Make the DSN 7-bit before signing (an RFC 6533 part is then
		// quoted-printable), so that no later downgrade on the way to a
		// server without 8BITMIME breaks its DKIM signature. A DSN to a
		// UTF-8 address needs SMTPUTF8, hence 8BITMIME, all the way.
		if d, err := mimeconv.Downgrade8bit(msg); err == nil {
			msg = d
		}
	}
	if s.cfg.Sign != nil {
		msg = s.cfg.Sign(msg)
	}
	dm := queue.Meta{
		From:     "",
		Rcpts:    []queue.Rcpt{{Addr: m.From}},
		Origin:   queue.OriginLocal,
		Subject:  dsnSubject,
		Size:     int64(len(msg)),
		Received: now,
		State:    queue.StateActive,
	}
	got, err := s.spool.Enqueue(dm, msg)
	if err != nil {
		log.Error("delivery: queue DSN", "err", err, "to", m.From)
		return "error: " + err.Error()
	}
	return "queued " + got.ID
}

// backoff is the delay before attempt number n+1 after n failed attempts:
// MinBackoff doubled per attempt, capped at MaxBackoff, minus up to 20%
// jitter so that retries of a burst spread out (never below MinBackoff).
func (s *Scheduler) backoff(attempt int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 1; i < attempt && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return max(d-jitter, s.cfg.MinBackoff)
}

// withStatus prefixes text with an enhanced status code unless it already
// starts with one (or with an SMTP reply code).
func withStatus(code, text string) string {
	if _, ok := statusOf(text); ok {
		return text
	}
	return code + " " + text
}

// acquire takes a slot of sem, or gives up when ctx ends.
func acquire(ctx context.Context, sem chan struct{}) (release func(), ok bool) {
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, true
	case <-ctx.Done():
		return nil, false
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// keyedSem is a set of counting semaphores, one per key, each created on
// first use and dropped when nobody holds or waits for it (so the map is
// bounded by the number of goroutines using it).
type keyedSem struct {
	limit int
	mu    sync.Mutex
	m     map[string]*semEntry
}

type semEntry struct {
	ch   chan struct{}
	refs int
}

func newKeyedSem(limit int) *keyedSem {
	return &keyedSem{limit: limit, m: make(map[string]*semEntry)}
}

func (k *keyedSem) acquire(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	e := k.m[key]
	if e == nil {
		e = &semEntry{ch: make(chan struct{}, k.limit)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			k.unref(key, e)
		}, nil
	case <-ctx.Done():
		k.unref(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyedSem) unref(key string, e *semEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.m, key)
	}
}

func (k *keyedSem) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
