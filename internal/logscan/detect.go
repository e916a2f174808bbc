package logscan

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Thresholds say when a pattern becomes a finding. Counts are per
// Window, from one client IP or one sender. Zero fields take the defaults.
type Thresholds struct {
	Window          time.Duration // default 10m; measured in whole minutes
	BurstMessages   int           // worm: messages (default 50)
	BurstRecipients int           // worm: recipients (default 150)
	RelayDenied     int           // relay-denied storm (default 20)
	AuthFailures    int           // brute-force AUTH (default 10)
	Backscatter     int           // null-sender recipients and rejects for one local domain (default 50)
	RotatingIPs     int           // distinct client IPs for one sender or HELO (default 20)
	RelayOut        int           // outside-to-outside recipients relayed from one IP (default 5)
	// RateFactor: a sender's messages in one clock hour against its
	// hourly average since its first message (at least 3 hours before),
	// and at least RateMin messages in that hour (defaults 10 and 30).
	RateFactor int
	RateMin    int
}

func (t Thresholds) withDefaults() Thresholds {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if t.Window < time.Minute {
		t.Window = 10 * time.Minute
	}
	def(&t.BurstMessages, 50)
	def(&t.BurstRecipients, 150)
	def(&t.RelayDenied, 20)
	def(&t.AuthFailures, 10)
	def(&t.Backscatter, 50)
	def(&t.RotatingIPs, 20)
	def(&t.RelayOut, 5)
	def(&t.RateFactor, 10)
	def(&t.RateMin, 30)
	return t
}

// Finding kinds.
const (
	KindWorm        = "worm"         // a burst of messages or recipients
	KindRelayStorm  = "relay-denied" // many "Relay access denied" from one IP
	KindRelayHack   = "relay-hack"   // source-routed, %-hack or !-path recipients
	KindBruteForce  = "auth-bruteforce"
	KindBackscatter = "backscatter"  // a flood of bounces (null sender) to one local domain
	KindRotating    = "rotating-ips" // many client IPs for one sender or HELO
	KindRelayOut    = "open-relay"   // mail from outside relayed to outside
	KindRateChange  = "rate-change"  // a sender far above its own hourly average
)

// Finding is one flagged pattern. Subject is the client IP or the sender
// address (SubjectType "ip" or "address"), for backscatter the local
// domain ("domain"), for rotating IPs the sender or the HELO name ("helo").
type Finding struct {
	Kind        string   `json:"kind"`
	Subject     string   `json:"subject"`
	SubjectType string   `json:"subject_type"`
	Severity    string   `json:"severity"` // "medium" or "high"
	Evidence    Evidence `json:"evidence"`
	expired     bool
}

// Evidence backs a finding: counts seen while the pattern held, the peak
// count within one window, when it held, and samples.
type Evidence struct {
	Messages         int       `json:"messages,omitempty"`
	Recipients       int       `json:"recipients,omitempty"`
	Rejects          int       `json:"rejects,omitempty"`
	AuthFailures     int       `json:"auth_failures,omitempty"`
	DistinctIPs      int       `json:"distinct_ips,omitempty"`
	BaselinePerHour  float64   `json:"baseline_per_hour,omitempty"`
	Peak             int       `json:"peak_per_window"`
	Window           string    `json:"window"`
	First            time.Time `json:"first"`
	Last             time.Time `json:"last"`
	SampleRecipients []string  `json:"sample_recipients,omitempty"`
	SampleSenders    []string  `json:"sample_senders,omitempty"`
	SampleIPs        []string  `json:"sample_ips,omitempty"`
	SampleSubjects   []string  `json:"sample_subjects,omitempty"`
	SampleUsers      []string  `json:"sample_users,omitempty"`
}

// sample adds v to a list of samples unless it is there or full.
func sample(list []string, v string) []string {
	if v == "" || len(list) >= samples || slices.Contains(list, v) {
		return list
	}
	return append(list, strings.Clone(v))
}

const samples = 5

// ring counts events in one-minute buckets over the last window.
type ring struct{ b []bucket }

type bucket struct{ minute, n int64 }

// add counts n at time t and returns the sum over the window ending at t.
func (r *ring) add(t int64, n int) int {
	if len(r.b) == 0 {
		return 0
	}
	m := t / 60
	k := int64(len(r.b))
	b := &r.b[int(m%k)]
	if b.minute != m {
		b.minute, b.n = m, 0
	}
	b.n += int64(n)
	sum := int64(0)
	for _, x := range r.b {
		if x.minute > m-k && x.minute <= m {
			sum += x.n
		}
	}
	return int(sum)
}

func newRing(w time.Duration) ring { return ring{b: make([]bucket, int(w/time.Minute))} }

// sub takes back n counted at time t, if t's bucket still holds that
// minute.
func (r *ring) sub(t int64, n int) {
	if len(r.b) == 0 {
		return
	}
	m := t / 60
	if b := &r.b[int(m%int64(len(r.b)))]; b.minute == m {
		b.n -= int64(n)
	}
}

// burst is the worm detection of one sender or client: its rings, and
// its worm finding once there is one; for senders also the client IPs of
// the last window (rotating IPs) and the messages per clock hour (rate
// change).
type burst struct {
	msgs, rcpts ring
	worm        *Finding
	ips         ipWindow
	hours       hourly
}

// hourly counts one sender's messages per clock hour against its hourly
// average since its first message.
type hourly struct {
	first, cur int64 // start of the first hour and of the current one
	n, before  int   // messages in the current hour, and before it
	f          *Finding
}

// ipWindow holds the distinct client IPs of the last window for one
// sender or HELO name, at most a fixed number (the oldest go first).
type ipWindow struct {
	ips []ipSeen
	f   *Finding
}

type ipSeen struct {
	ip string // the aggregator's copy
	t  int64
}

// add notes ip at time t and returns how many distinct IPs were seen in
// the window ending at t.
func (w *ipWindow) add(ip string, t, window int64, limit int) int {
	k, found := 0, false
	for _, x := range w.ips {
		if x.t <= t-window {
			continue
		}
		if x.ip == ip {
			x.t, found = max(x.t, t), true
		}
		w.ips[k] = x
		k++
	}
	clear(w.ips[k:])
	w.ips = w.ips[:k]
	if !found {
		if len(w.ips) >= limit {
			copy(w.ips, w.ips[1:])
			w.ips = w.ips[:len(w.ips)-1]
		}
		w.ips = append(w.ips, ipSeen{ip, t})
	}
	return len(w.ips)
}

type fkey struct{ kind, subject string }

type detectors struct {
	th       Thresholds
	maxKeys  int // per detector map; past it, new subjects go untracked
	relay    map[string]*ring
	auth     map[string]*ring
	bounces  map[string]*ring     // per local domain (backscatter)
	relayOut map[string]*ring     // per client IP
	helos    map[string]*ipWindow // per HELO name
	found    map[fkey]*Finding
	ordered  []*Finding
}

func newDetectors(th Thresholds, maxKeys int) detectors {
	return detectors{th: th, maxKeys: maxKeys, relay: map[string]*ring{}, auth: map[string]*ring{},
		bounces: map[string]*ring{}, relayOut: map[string]*ring{}, helos: map[string]*ipWindow{},
		found: map[fkey]*Finding{}}
}

// ringOf returns the ring of subject in m, adding one (with a copy of the
// subject) unless m is full (nil then: the subject goes untracked).
func (d *detectors) ringOf(m map[string]*ring, subject string) *ring {
	r := m[subject]
	if r == nil {
		if len(m) >= d.maxKeys {
			return nil
		}
		nr := newRing(d.th.Window)
		r = &nr
		m[strings.Clone(subject)] = r
	}
	return r
}

// live returns f unless it was expired (follow mode forgets old findings,
// so that a new episode of the same subject is a new finding).
func live(f *Finding) *Finding {
	if f == nil || f.expired {
		return nil
	}
	return f
}

func (d *detectors) finding(kind, subject, typ string, t int64) *Finding {
	k := fkey{kind, subject}
	f := d.found[k]
	if f == nil {
		ts := time.Unix(t, 0).UTC()
		subject = strings.Clone(subject) // it may point into a chunk
		k.subject = subject
		f = &Finding{Kind: kind, Subject: subject, SubjectType: typ, Severity: "medium",
			Evidence: Evidence{Window: d.th.Window.String(), First: ts}}
		d.found[k] = f
		d.ordered = append(d.ordered, f)
	}
	f.Evidence.Last = time.Unix(t, 0).UTC()
	return f
}

// message counts a message from a client and a sender (each with its
// rings; nil: none) and raises or extends their worm findings.
func (d *detectors) message(t int64, cb *burst, client string, fb *burst, from string, nrcpt int) {
	for _, k := range [...]struct {
		b        *burst
		key, typ string
	}{{cb, client, "ip"}, {fb, from, "address"}} {
		b := k.b
		if b == nil {
			continue
		}
		m, r := b.msgs.add(t, 1), b.rcpts.add(t, nrcpt)
		f := live(b.worm)
		if f == nil && m < d.th.BurstMessages && r < d.th.BurstRecipients {
			continue
		}
		if f == nil {
			f = d.finding(KindWorm, k.key, k.typ, t)
			b.worm = f
			f.Evidence.First = time.Unix(t-int64(d.th.Window/time.Second), 0).UTC()
			f.Evidence.Messages, f.Evidence.Recipients = m, r
		} else {
			f.Evidence.Last = time.Unix(t, 0).UTC()
			f.Evidence.Messages++
			f.Evidence.Recipients += nrcpt
		}
		f.Evidence.Peak = max(f.Evidence.Peak, m)
		if m >= 2*d.th.BurstMessages || r >= 2*d.th.BurstRecipients {
			f.Severity = "high"
		}
	}
}

func (d *detectors) recipient(cb, fb *burst, to string) {
	for _, b := range [...]*burst{cb, fb} {
		if b == nil || live(b.worm) == nil {
			continue
		}
		if f := b.worm; len(f.Evidence.SampleRecipients) < samples && !slices.Contains(f.Evidence.SampleRecipients, to) {
			f.Evidence.SampleRecipients = append(f.Evidence.SampleRecipients, strings.Clone(to))
		}
	}
}

// hacked reports a recipient that tries to route through us: a source
// route (@a:u@b), a %-hack (u%b@a) or a UUCP !-path.
func hacked(to string) bool {
	at := strings.LastIndexByte(to, '@')
	local := to
	if at >= 0 {
		local = to[:at]
	}
	return strings.HasPrefix(to, "@") || strings.ContainsAny(local, "%!")
}

func (d *detectors) reject(ev *Event) {
	subject, typ := ev.Client, "ip"
	if subject == "" {
		subject, typ = ev.From, "address"
	}
	if subject == "" {
		return
	}
	if hacked(ev.To) {
		f := d.finding(KindRelayHack, subject, typ, ev.Time)
		f.Evidence.Rejects++
		f.Evidence.Peak = f.Evidence.Rejects
		if len(f.Evidence.SampleRecipients) < samples {
			f.Evidence.SampleRecipients = append(f.Evidence.SampleRecipients, strings.Clone(ev.To))
		}
	}
	if !ev.Relay {
		return
	}
	r := d.relay[subject]
	if r == nil {
		if len(d.relay) >= d.maxKeys {
			return
		}
		nr := newRing(d.th.Window)
		r = &nr
		d.relay[strings.Clone(subject)] = r
	}
	n := r.add(ev.Time, 1)
	f := d.found[fkey{KindRelayStorm, subject}]
	if f == nil && n < d.th.RelayDenied {
		return
	}
	if f == nil {
		f = d.finding(KindRelayStorm, subject, typ, ev.Time)
		f.Evidence.First = time.Unix(ev.Time-int64(d.th.Window/time.Second), 0).UTC()
		f.Evidence.Rejects = n
	} else {
		f.Evidence.Last = time.Unix(ev.Time, 0).UTC()
		f.Evidence.Rejects++
	}
	f.Evidence.Peak = max(f.Evidence.Peak, n)
	if n >= 5*d.th.RelayDenied {
		f.Severity = "high"
	}
	if len(f.Evidence.SampleRecipients) < samples && ev.To != "" && !slices.Contains(f.Evidence.SampleRecipients, ev.To) {
		f.Evidence.SampleRecipients = append(f.Evidence.SampleRecipients, strings.Clone(ev.To))
	}
}

func (d *detectors) authFail(ev *Event) {
	if ev.Client == "" {
		return
	}
	r := d.auth[ev.Client]
	if r == nil {
		if len(d.auth) >= d.maxKeys {
			return
		}
		nr := newRing(d.th.Window)
		r = &nr
		d.auth[strings.Clone(ev.Client)] = r
	}
	n := r.add(ev.Time, 1)
	f := d.found[fkey{KindBruteForce, ev.Client}]
	if f == nil && n < d.th.AuthFailures {
		return
	}
	if f == nil {
		f = d.finding(KindBruteForce, ev.Client, "ip", ev.Time)
		f.Evidence.First = time.Unix(ev.Time-int64(d.th.Window/time.Second), 0).UTC()
		f.Evidence.AuthFailures = n
	} else {
		f.Evidence.Last = time.Unix(ev.Time, 0).UTC()
		f.Evidence.AuthFailures++
	}
	f.Evidence.Peak = max(f.Evidence.Peak, n)
	if n >= 5*d.th.AuthFailures {
		f.Severity = "high"
	}
	if ev.User != "" && len(f.Evidence.SampleUsers) < samples && !slices.Contains(f.Evidence.SampleUsers, ev.User) {
		f.Evidence.SampleUsers = append(f.Evidence.SampleUsers, strings.Clone(ev.User))
	}
}

// findings are sorted high severity first, then by the messages (or
// rejects, failures) they cover, most first.
func (d *detectors) findings() []Finding {
	out := make([]Finding, 0, len(d.ordered))
	for _, f := range d.ordered {
		out = append(out, *f)
	}
	weight := func(f Finding) int { return f.Evidence.Messages + f.Evidence.Rejects + f.Evidence.AuthFailures }
	slices.SortStableFunc(out, func(x, y Finding) int {
		if x.Severity != y.Severity {
			if x.Severity == "high" {
				return -1
			}
			return 1
		}
		return cmp.Compare(weight(y), weight(x))
	})
	return out
}
