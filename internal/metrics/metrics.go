// Package metrics is mamori's instrumentation: the Prometheus metrics
// served at /metrics on the admin listener, and the per-minute traffic
// ring of the last hour that the live view (dashboard, `mamori top`)
// draws. Both are fed by the same method calls, so there is one event
// path: a stage calls m.MessageAccepted(origin) once and the counter and
// the ring both move.
//
// Why github.com/prometheus/client_golang: it is the reference
// implementation of the exposition formats (text and protobuf, with
// content negotiation and gzip), its counters and histograms are lock-free
// on the hot path, and it brings the Go runtime and process collectors
// that every Prometheus user expects. Writing the format by hand would be
// less code to vendor but more to get right.
//
// Why a private registry: the global default registry is shared by every
// package linked in, so a dependency could add series to our endpoint, and
// tests that build several servers in one process would collide on
// registration. Each Metrics has its own *prometheus.Registry with the
// Go and process collectors added explicitly.
//
// The bounded-label rule: a label value never comes from the network. No
// IP, address, subject, host name or free text is ever a label; every
// label has a fixed set of values defined here (listeners, protocols,
// origins, refusal reasons, the guard's rule names from guard.RuleNames …)
// and anything outside the set is counted as "other". Stages pass names
// they own (constants), never strings they received, and even when they
// get it wrong the set stays bounded. The per-sender view lives in the
// guard's top list, not here.
//
// A nil *Metrics is valid: every method is a no-op, so packages and unit
// tests need none.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mamori-mail/mamori/internal/guard"
)

// Other is the label value of anything outside a label's fixed set.
const Other = "other"

// Label value sets. Every label of every metric takes its values from one
// of these (plus Other).
var (
	// Listeners are the listener names of [listen].
	Listeners = []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"}
	// ConnRules are why admission refuses a connection: the guard's
	// connection rules and the port-25 checks.
	ConnRules = []string{"ban", "conn.global", "conn.per_ip", "conn.per_net", "conn.rate", "dnsbl", "pregreet"}
	// Protocols are the login protocols.
	Protocols = []string{"smtp", "imap", "pop3"}
	// AuthResults are the outcomes of a login.
	AuthResults = []string{AuthSuccess, AuthFailure, AuthRefused, AuthDisabled}
	// Origins are queue.Origin values.
	Origins = []string{"inbound", "trusted", "submitted", "local"}
	// RefusalStages are the SMTP commands a refusal answers.
	RefusalStages = []string{"mail", "rcpt", "data", "auth"}
	// Reasons are why smtpd refused a command (the Reason* constants).
	Reasons = []string{ReasonAuthRequired, ReasonSize, ReasonResources, ReasonSender, ReasonAddress,
		ReasonRelay, ReasonUnknownUser, ReasonOverQuota, ReasonTooManyRcpts, ReasonGuard,
		ReasonHeader, ReasonLoop, ReasonAuthor, ReasonContent, ReasonScanner, ReasonOwnDomain,
		ReasonDMARC, ReasonTimeout, ReasonAborted}
	// HoldSources are where a message was put into the held state.
	HoldSources = []string{HeldGuard, HeldContent, HeldQueued, HeldAdmin}
	// DeliveryKinds and DeliveryResults label deliveries.
	DeliveryKinds   = []string{"local", "remote"}
	DeliveryResults = []string{Delivered, Deferred, Bounced}
	// Verdicts are guard.Verdict names.
	Verdicts = []string{"accept", "hold", "defer", "reject", "drop"}
	// GuardEvents are the guard's alert kinds.
	GuardEvents = []string{"isolated", "suspended", "banned", "throttled", "released", "disabled", "own_ip_listed", "own_ip_delisted"}
	// DNSTypes and DNSResults label DNS queries.
	DNSTypes   = []string{"MX", "A", "AAAA", "TXT", "PTR"}
	DNSResults = []string{DNSOK, DNSNotFound, DNSError}
	// ScanResults label clamd scans.
	ScanResults = []string{ScanClean, ScanInfected, ScanError}
	// QueueStates are the queue's states.
	QueueStates = []string{"active", "deferred", "held"}
)

// AUTH results.
const (
	AuthSuccess  = "success"  // logged in
	AuthFailure  = "failure"  // wrong password or unknown login
	AuthRefused  = "refused"  // refused by the guard (ban, throttle, suspension)
	AuthDisabled = "disabled" // right password of an account the administrator disabled
)

// SMTP refusal reasons.
const (
	ReasonAuthRequired = "auth_required"  // MAIL without AUTH on submission
	ReasonSize         = "size"           // over the message size limit
	ReasonResources    = "resources"      // memory budget, disk, queue full
	ReasonSender       = "sender"         // envelope sender not allowed (policy)
	ReasonAddress      = "address"        // bad address syntax
	ReasonRelay        = "relay"          // relay denied (foreign recipient, relay tricks)
	ReasonUnknownUser  = "unknown_user"   // 550 5.1.1
	ReasonOverQuota    = "over_quota"     // 452 4.2.2
	ReasonTooManyRcpts = "too_many_rcpts" // recipient expansion limit
	ReasonGuard        = "guard"          // a guard decision (see mamori_guard_decisions_total for the rule)
	ReasonHeader       = "header"         // malformed header
	ReasonLoop         = "loop"           // too many Received headers
	ReasonAuthor       = "author"         // header From/Sender not allowed
	ReasonContent      = "content"        // attachment policy or virus
	ReasonScanner      = "scanner"        // content scanner unavailable
	ReasonOwnDomain    = "own_domain"     // our domain as author from outside, unsigned
	ReasonDMARC        = "dmarc"          // sender domain's DMARC policy
	ReasonTimeout      = "timeout"        // DATA took too long
	ReasonAborted      = "aborted"        // DATA broken off
)

// Hold sources.
const (
	HeldGuard   = "guard"        // isolated sender, held at DATA
	HeldContent = "content"      // quarantined by the content policy at DATA
	HeldQueued  = "guard_queued" // already queued mail held when its sender was isolated
	HeldAdmin   = "admin"        // held by the administrator
)

// Delivery results, per recipient.
const (
	Delivered = "delivered"
	Deferred  = "deferred"
	Bounced   = "bounced"
)

// DNS query results.
const (
	DNSOK       = "ok"
	DNSNotFound = "not_found"
	DNSError    = "error"
)

// clamd scan results.
const (
	ScanClean    = "clean"
	ScanInfected = "infected"
	ScanError    = "error"
)

// labelSet is a fixed set of label values; anything else is Other.
type labelSet map[string]bool

func newSet(vals ...[]string) labelSet {
	s := labelSet{}
	for _, v := range vals {
		for _, x := range v {
			s[x] = true
		}
	}
	return s
}

// of returns v when it is in the set, else Other.
func (s labelSet) of(v string) string {
	if s[v] {
		return v
	}
	return Other
}

var (
	setListeners   = newSet(Listeners)
	setConnRules   = newSet(ConnRules)
	setProtocols   = newSet(Protocols)
	setAuthResults = newSet(AuthResults)
	setOrigins     = newSet(Origins)
	setStages      = newSet(RefusalStages)
	setReasons     = newSet(Reasons)
	setHold        = newSet(HoldSources)
	setDelKinds    = newSet(DeliveryKinds)
	setDelResults  = newSet(DeliveryResults)
	setVerdicts    = newSet(Verdicts)
	setGuardStages = newSet(guard.DecisionStages)
	setRules       = newSet(guard.RuleNames)
	setGuardEvents = newSet(GuardEvents)
	setDNSTypes    = newSet(DNSTypes)
	setDNSResults  = newSet(DNSResults)
	setScan        = newSet(ScanResults)
)

// Metrics holds the instruments. Build it with New; a nil *Metrics does
// nothing.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time // the ring's clock (tests inject one)

	conns       *prometheus.CounterVec // listener, result
	connRefused *prometheus.CounterVec // listener, rule
	auth        *prometheus.CounterVec // protocol, result
	accepted    *prometheus.CounterVec // origin
	refused     *prometheus.CounterVec // stage, reason
	held        *prometheus.CounterVec // source
	deliveries  *prometheus.CounterVec // kind, result
	guardDec    *prometheus.CounterVec // stage, rule, verdict
	guardEvents *prometheus.CounterVec // kind

	deliveryTime *prometheus.HistogramVec // kind
	dnsTime      *prometheus.HistogramVec // type, result
	scanTime     *prometheus.HistogramVec // result
	syncBatch    prometheus.Histogram

	// Open sessions by listener (index into Listeners; the last slot is
	// Other): the gauge and Sessions read the same counters.
	sessions [8]atomic.Int64

	state *stateCollector
	ring  ring
}

// New returns a Metrics with its own registry, the Go runtime and process
// collectors registered, and every series of a fixed label set created at
// zero (so rates work from the first scrape).
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now, state: &stateCollector{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(h)
		return h
	}
	m.conns = counter("mamori_connections_total",
		"Connections to the mail listeners by admission result: admitted, refused (see mamori_connections_refused_total), closed (the client left during the checks).",
		"listener", "result")
	m.connRefused = counter("mamori_connections_refused_total",
		"Connections refused at admission, by listener and rule.", "listener", "rule")
	m.auth = counter("mamori_auth_total",
		"Logins (SMTP AUTH, IMAP, POP3) by protocol and result: success, failure (wrong password or unknown login), refused (by the guard), disabled.",
		"protocol", "result")
	m.accepted = counter("mamori_messages_accepted_total",
		"Messages accepted into the queue (250 after DATA) by origin, held ones included.", "origin")
	m.refused = counter("mamori_messages_refused_total",
		"SMTP commands refused by smtpd (4xx or 5xx at MAIL, RCPT, DATA, AUTH) by stage and reason.", "stage", "reason")
	m.held = counter("mamori_messages_held_total",
		"Messages put into the held state, by source: guard and content at DATA, guard_queued (queued mail of a sender just isolated), admin.",
		"source")
	m.deliveries = counter("mamori_deliveries_total",
		"Delivery outcomes per recipient: delivered, deferred (will be retried), bounced (failed permanently).", "kind", "result")
	m.guardDec = counter("mamori_guard_decisions_total",
		"Guard decisions by stage, rule (none for accept) and verdict.", "stage", "rule", "verdict")
	m.guardEvents = counter("mamori_guard_events_total",
		"Guard alerts by kind: isolated, suspended, banned, throttled, released …", "kind")
	m.deliveryTime = histogram("mamori_delivery_attempt_duration_seconds",
		"Time of one delivery attempt to one destination (an SMTP session, or local Maildir writes).",
		[]float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}, "kind")
	m.dnsTime = histogram("mamori_dns_query_duration_seconds",
		"DNS queries sent to the resolver (cache hits are not counted), by type and result.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "type", "result")
	m.scanTime = histogram("mamori_clamd_scan_duration_seconds",
		"clamd INSTREAM scans by result: clean, infected, error.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "result")
	m.syncBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mamori_maildir_sync_batch_size",
		Help:    "Maildir deliveries made durable by one shared syncfs(2).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.reg.MustRegister(m.syncBatch)
	for i, l := range append(append([]string{}, Listeners...), Other) {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamori_sessions_open",
			Help:        "Sessions open now, by listener (admitted connections not yet closed).",
			ConstLabels: prometheus.Labels{"listener": l}},
			func() float64 { return float64(m.sessions[i].Load()) })
		m.reg.MustRegister(g)
	}
	m.reg.MustRegister(m.state)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	for _, l := range Listeners {
		for _, r := range []string{"admitted", "refused", "closed"} {
			m.conns.WithLabelValues(l, r)
		}
	}
	for _, p := range Protocols {
		for _, r := range AuthResults {
			m.auth.WithLabelValues(p, r)
		}
	}
	for _, o := range Origins {
		m.accepted.WithLabelValues(o)
	}
	for _, s := range HoldSources {
		m.held.WithLabelValues(s)
	}
	for _, k := range DeliveryKinds {
		for _, r := range DeliveryResults {
			m.deliveries.WithLabelValues(k, r)
		}
	}
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// Scrapes are rare and cheap; more than a few at once is a
		// misconfiguration or an attack on the admin listener.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Registry returns the registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func listenerIndex(l string) int {
	for i, x := range Listeners {
		if x == l {
			return i
		}
	}
	return len(Listeners)
}

// SessionOpened counts an admitted connection and a session now open.
func (m *Metrics) SessionOpened(listener string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(setListeners.of(listener), "admitted").Inc()
	m.sessions[listenerIndex(listener)].Add(1)
}

// SessionClosed ends a session SessionOpened counted.
func (m *Metrics) SessionClosed(listener string) {
	if m == nil {
		return
	}
	m.sessions[listenerIndex(listener)].Add(-1)
}

// ConnectionRefused counts a connection refused at admission by rule.
func (m *Metrics) ConnectionRefused(listener, rule string) {
	if m == nil {
		return
	}
	l := setListeners.of(listener)
	m.conns.WithLabelValues(l, "refused").Inc()
	m.connRefused.WithLabelValues(l, setConnRules.of(rule)).Inc()
}

// ConnectionClosed counts a client that left during the admission checks.
func (m *Metrics) ConnectionClosed(listener string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(setListeners.of(listener), "closed").Inc()
}

// Sessions returns the open sessions by listener (every listener, 0
// included).
func (m *Metrics) Sessions() map[string]int {
	out := make(map[string]int, len(Listeners))
	for i, l := range Listeners {
		if m == nil {
			out[l] = 0
			continue
		}
		out[l] = int(m.sessions[i].Load())
	}
	return out
}

// AuthResult counts a login by protocol and result (Auth* constants).
func (m *Metrics) AuthResult(protocol, result string) {
	if m == nil {
		return
	}
	m.auth.WithLabelValues(setProtocols.of(protocol), setAuthResults.of(result)).Inc()
}

// MessageAccepted counts a message queued with a 250, by queue origin.
func (m *Metrics) MessageAccepted(origin string) {
	if m == nil {
		return
	}
	m.accepted.WithLabelValues(setOrigins.of(origin)).Inc()
	m.ring.add(m.now(), fieldIn, 1)
}

// MessageHeld counts a message put into the held state (Held* sources).
// Messages held at DATA (guard, content) also count in the ring's Held.
func (m *Metrics) MessageHeld(source string) {
	m.MessagesHeld(source, 1)
}

// MessagesHeld counts n messages held at once (a bulk hold).
func (m *Metrics) MessagesHeld(source string, n int) {
	if m == nil || n <= 0 {
		return
	}
	s := setHold.of(source)
	m.held.WithLabelValues(s).Add(float64(n))
	if s == HeldGuard || s == HeldContent {
		m.ring.add(m.now(), fieldHeld, n)
	}
}

// MessageRefused counts an SMTP command refused by smtpd (Reason*
// constants). Refusals at RCPT and DATA count in the ring's Refused.
func (m *Metrics) MessageRefused(stage, reason string) {
	if m == nil {
		return
	}
	st := setStages.of(stage)
	m.refused.WithLabelValues(st, setReasons.of(reason)).Inc()
	if st == "rcpt" || st == "data" {
		m.ring.add(m.now(), fieldRefused, 1)
	}
}

// DeliveryResult counts one recipient's delivery outcome.
func (m *Metrics) DeliveryResult(kind, result string) {
	if m == nil {
		return
	}
	r := setDelResults.of(result)
	m.deliveries.WithLabelValues(setDelKinds.of(kind), r).Inc()
	switch r {
	case Delivered:
		m.ring.add(m.now(), fieldOut, 1)
	case Bounced:
		m.ring.add(m.now(), fieldBounced, 1)
	}
}

// DeliveryAttempt observes the time of one delivery attempt to one
// destination.
func (m *Metrics) DeliveryAttempt(kind string, d time.Duration) {
	if m == nil {
		return
	}
	m.deliveryTime.WithLabelValues(setDelKinds.of(kind)).Observe(d.Seconds())
}

// GuardDecision counts a guard decision (guard.Config.OnDecision).
// Decisions other than accept count in the ring's Guard.
func (m *Metrics) GuardDecision(stage, rule, verdict string) {
	if m == nil {
		return
	}
	v := setVerdicts.of(verdict)
	r := "none"
	if rule != "" {
		r = setRules.of(rule)
	}
	m.guardDec.WithLabelValues(setGuardStages.of(stage), r, v).Inc()
	if v != "accept" {
		m.ring.add(m.now(), fieldGuard, 1)
	}
}

// GuardEvent counts a guard alert by kind; isolations and suspensions
// count in the ring's Isolated.
func (m *Metrics) GuardEvent(kind string) {
	if m == nil {
		return
	}
	k := setGuardEvents.of(kind)
	m.guardEvents.WithLabelValues(k).Inc()
	if k == "isolated" || k == "suspended" {
		m.ring.add(m.now(), fieldIsolated, 1)
	}
}

// DNSQuery observes one DNS query sent to the resolver.
func (m *Metrics) DNSQuery(qtype, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.dnsTime.WithLabelValues(setDNSTypes.of(qtype), setDNSResults.of(result)).Observe(d.Seconds())
}

// ClamdScan observes one clamd scan.
func (m *Metrics) ClamdScan(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.scanTime.WithLabelValues(setScan.of(result)).Observe(d.Seconds())
}

// SyncBatch observes how many Maildir deliveries one syncfs covered.
func (m *Metrics) SyncBatch(n int) {
	if m == nil {
		return
	}
	m.syncBatch.Observe(float64(n))
}

// QueueState is the queue by state, read at scrape time.
type QueueState func() (messages map[string]int, bytes map[string]int64)

// GuardState counts what the guard has in force, read at scrape time.
type GuardState func() (isolated, suspended, bans, throttled int)

// WatchQueue makes every scrape read the queue's counts by state. Call
// it before serving.
func (m *Metrics) WatchQueue(fn QueueState) {
	if m == nil {
		return
	}
	m.state.mu.Lock()
	m.state.queue = fn
	m.state.mu.Unlock()
}

// WatchGuard makes every scrape read what the guard has in force.
func (m *Metrics) WatchGuard(fn GuardState) {
	if m == nil {
		return
	}
	m.state.mu.Lock()
	m.state.guard = fn
	m.state.mu.Unlock()
}

// WatchSharedCounters exports mamori_cluster_shared_counters_up: 1 while
// the guard counts cluster-wide, 0 while the shared store does not answer
// and the node limits on its own counts. Only called in clustered mode.
func (m *Metrics) WatchSharedCounters(up func() bool) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamori_cluster_shared_counters_up",
		Help: "1 while rate limits count cluster-wide through the shared store, 0 while this node limits on its own counts."},
		func() float64 {
			if up() {
				return 1
			}
			return 0
		}))
}

// stateCollector reads the queue and the guard when scraped.
type stateCollector struct {
	mu    sync.Mutex
	queue QueueState
	guard GuardState
}

var (
	descQueueMsgs  = prometheus.NewDesc("mamori_queue_messages", "Messages in the queue by state.", []string{"state"}, nil)
	descQueueBytes = prometheus.NewDesc("mamori_queue_bytes", "Bytes of the messages in the queue by state.", []string{"state"}, nil)
	descIsolated   = prometheus.NewDesc("mamori_guard_isolated", "Local senders (IPs and users) isolated now.", nil, nil)
	descSuspended  = prometheus.NewDesc("mamori_guard_suspended", "Accounts suspended now.", nil, nil)
	descBans       = prometheus.NewDesc("mamori_guard_bans", "IP and network bans in force.", nil, nil)
	descThrottled  = prometheus.NewDesc("mamori_guard_throttled", "Login names throttled now.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueMsgs, descQueueBytes, descIsolated, descSuspended, descBans, descThrottled} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	q, g := c.queue, c.guard
	c.mu.Unlock()
	if q != nil {
		msgs, bytes := q()
		for _, s := range QueueStates {
			ch <- prometheus.MustNewConstMetric(descQueueMsgs, prometheus.GaugeValue, float64(msgs[s]), s)
			ch <- prometheus.MustNewConstMetric(descQueueBytes, prometheus.GaugeValue, float64(bytes[s]), s)
		}
	}
	if g != nil {
		iso, sus, bans, thr := g()
		ch <- prometheus.MustNewConstMetric(descIsolated, prometheus.GaugeValue, float64(iso))
		ch <- prometheus.MustNewConstMetric(descSuspended, prometheus.GaugeValue, float64(sus))
		ch <- prometheus.MustNewConstMetric(descBans, prometheus.GaugeValue, float64(bans))
		ch <- prometheus.MustNewConstMetric(descThrottled, prometheus.GaugeValue, float64(thr))
	}
}
