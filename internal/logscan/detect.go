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
	return t
}

// Finding kinds.
const (
	KindWorm       = "worm"         // a burst of messages or recipients
	KindRelayStorm = "relay-denied" // many "Relay access denied" from one IP
	KindRelayHack  = "relay-hack"   // source-routed, %-hack or !-path recipients
	KindBruteForce = "auth-bruteforce"
)

// Finding is one flagged pattern. Subject is the client IP or the sender
// address (SubjectType "ip" or "address").
type Finding struct {
	Kind        string   `json:"kind"`
	Subject     string   `json:"subject"`
	SubjectType string   `json:"subject_type"`
	Severity    string   `json:"severity"` // "medium" or "high"
	Evidence    Evidence `json:"evidence"`
}

// Evidence backs a finding: counts seen while the pattern held, the peak
// count within one window, when it held, and samples.
type Evidence struct {
	Messages         int       `json:"messages,omitempty"`
	Recipients       int       `json:"recipients,omitempty"`
	Rejects          int       `json:"rejects,omitempty"`
	AuthFailures     int       `json:"auth_failures,omitempty"`
	Peak             int       `json:"peak_per_window"`
	Window           string    `json:"window"`
	First            time.Time `json:"first"`
	Last             time.Time `json:"last"`
	SampleRecipients []string  `json:"sample_recipients,omitempty"`
	SampleUsers      []string  `json:"sample_users,omitempty"`
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

// burst is the worm detection of one sender or client: its rings, and
// its worm finding once there is one.
type burst struct {
	msgs, rcpts ring
	worm        *Finding
}

type fkey struct{ kind, subject string }

type detectors struct {
	th      Thresholds
	maxKeys int // per detector map; past it, new subjects go untracked
	relay   map[string]*ring
	auth    map[string]*ring
	found   map[fkey]*Finding
	ordered []*Finding
}

func newDetectors(th Thresholds, maxKeys int) detectors {
	return detectors{th: th, maxKeys: maxKeys, relay: map[string]*ring{}, auth: map[string]*ring{}, found: map[fkey]*Finding{}}
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
		f := b.worm
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
		if b == nil || b.worm == nil {
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
