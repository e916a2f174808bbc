// Package loggen writes realistic Postfix logs with exactly known counts,
// for the tests and benchmarks of package logscan: a normal busy day,
// and planted episodes (a worm, a relay-denied storm, brute-force AUTH).
package loggen

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"
)

// Counts are what a correct scan must report for a key.
type Counts struct{ Messages, Recipients, Rejects, Deferrals, Bounces int }

// Log is a generated log and what it holds.
type Log struct {
	lines   []line
	rng     *rand.Rand
	day     time.Time
	nextQID int
	seq     int // order of emission, ties in time keep it
	inbound int // running counters of Hour, so its mix cycles like NormalDay's
	rejects int

	Totals  Counts
	Orphans int
	Senders map[string]*Counts
	Clients map[string]*Counts
}

type line struct {
	t    time.Time
	seq  int
	text string
}

// New starts an empty log of the given day (UTC), seeded for repeatability.
func New(seed uint64, day time.Time) *Log {
	return &Log{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), day: day.UTC().Truncate(24 * time.Hour),
		Senders: map[string]*Counts{}, Clients: map[string]*Counts{}}
}

func (l *Log) emit(t time.Time, prog string, pid int, format string, args ...any) {
	text := fmt.Sprintf("%s mx1 %s[%d]: ", t.Format(time.Stamp), prog, pid) + fmt.Sprintf(format, args...)
	l.seq++
	l.lines = append(l.lines, line{t, l.seq, text})
}

// Raw adds a line as is (it gets the given time for ordering).
func (l *Log) Raw(t time.Time, text string) {
	l.seq++
	l.lines = append(l.lines, line{t, l.seq, text})
}

func count(m map[string]*Counts, k string) *Counts {
	if m[k] == nil {
		m[k] = &Counts{}
	}
	return m[k]
}

// Outcome of one recipient.
type Outcome int

// Outcomes.
const (
	Sent Outcome = iota
	DeferredThenSent
	Bounced
)

// Message logs one accepted message from client (ip, may be "" for local
// pickup) and its deliveries.
func (l *Log) Message(t time.Time, ip, user, from string, rcpts []string, outs []Outcome) string {
	l.nextQID++
	qid := fmt.Sprintf("%010X", 0x3A00000000+l.nextQID)
	if ip != "" {
		sasl := ""
		if user != "" {
			sasl = ", sasl_method=PLAIN, sasl_username=" + user
		}
		l.emit(t, "postfix/smtpd", 2000+l.nextQID%500, "%s: client=host-%d.example[%s]%s", qid, l.nextQID, ip, sasl)
	}
	l.emit(t, "postfix/cleanup", 3000, "%s: message-id=<%d.%d@mua.example>", qid, l.nextQID, t.Unix())
	size := 1000 + l.rng.IntN(50000)
	l.emit(t.Add(time.Second), "postfix/qmgr", 99, "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", qid, from, size, len(rcpts))
	e := []*Counts{&l.Totals, count(l.Senders, from)}
	if ip != "" {
		e = append(e, count(l.Clients, ip))
	}
	for _, c := range e {
		c.Messages++
		c.Recipients += len(rcpts)
	}
	last := t.Add(2 * time.Second)
	for i, to := range rcpts {
		at := t.Add(2 * time.Second)
		relay := fmt.Sprintf("mx.%s[192.0.2.%d]:25", domain(to), 1+i)
		switch outs[i] {
		case DeferredThenSent:
			l.emit(at, "postfix/smtp", 4000, "%s: to=<%s>, relay=none, delay=2, dsn=4.4.1, status=deferred (connect to %s: Connection timed out)", qid, to, relay)
			at = at.Add(30 * time.Minute)
			l.emit(at.Add(-time.Second), "postfix/qmgr", 99, "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", qid, from, size, len(rcpts))
			l.emit(at, "postfix/smtp", 4001, "%s: to=<%s>, relay=%s, delay=1802, dsn=2.0.0, status=sent (250 2.0.0 Ok)", qid, to, relay)
			for _, c := range e {
				c.Deferrals++
			}
		case Bounced:
			l.emit(at, "postfix/smtp", 4002, "%s: to=<%s>, relay=%s, delay=2, dsn=5.1.1, status=bounced (host said: 550 5.1.1 unknown user)", qid, to, relay)
			for _, c := range e {
				c.Bounces++
			}
		default:
			l.emit(at, "postfix/smtp", 4003, "%s: to=<%s>, relay=%s, delay=2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)", qid, to, relay)
		}
		if at.After(last) {
			last = at
		}
	}
	l.emit(last.Add(time.Second), "postfix/qmgr", 99, "%s: removed", qid)
	return qid
}

func domain(addr string) string {
	if i := bytes.LastIndexByte([]byte(addr), '@'); i >= 0 {
		return addr[i+1:]
	}
	return "localhost"
}

// Reject logs a NOQUEUE reject of one RCPT.
func (l *Log) Reject(t time.Time, ip, from, to string, relay bool) {
	reason := "550 5.1.1 <" + to + ">: Recipient address rejected: User unknown in local recipient table"
	if relay {
		reason = "554 5.7.1 <" + to + ">: Relay access denied"
	}
	l.emit(t, "postfix/smtpd", 2999, "NOQUEUE: reject: RCPT from unknown[%s]: %s; from=<%s> to=<%s> proto=ESMTP helo=<pc>", ip, reason, from, to)
	l.Totals.Rejects++
	count(l.Senders, from).Rejects++
	count(l.Clients, ip).Rejects++
}

// AuthFail logs a failed SASL login.
func (l *Log) AuthFail(t time.Time, ip string) {
	l.emit(t, "postfix/smtpd", 2998, "warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", ip)
}

func (l *Log) at(from, to time.Duration) time.Time {
	return l.day.Add(from + time.Duration(l.rng.Int64N(int64(to-from))))
}

// NormalDay adds a busy but healthy day: users at corp.test on 10.0.x.y
// sending 08:00–18:00, inbound mail from outside, a few unknown-user
// rejects, scattered relay denials and mistyped passwords.
func (l *Log) NormalDay(users, perUser int) {
	for u := range users {
		ip := fmt.Sprintf("10.0.%d.%d", u/200, 10+u%200)
		from := fmt.Sprintf("user%d@corp.test", u)
		for range perUser {
			rc, outs := l.rcpts(1 + l.rng.IntN(3))
			l.Message(l.at(8*time.Hour, 18*time.Hour), ip, from, from, rc, outs)
		}
	}
	for i := range users * perUser / 2 {
		ip := fmt.Sprintf("198.18.%d.%d", i%7, 1+i%211)
		to := fmt.Sprintf("user%d@corp.test", l.rng.IntN(users))
		l.Message(l.at(0, 24*time.Hour), ip, "", fmt.Sprintf("news%d@outside%d.example", i%97, i%13), []string{to}, []Outcome{Sent})
	}
	for i := range users / 4 {
		t := l.at(0, 24*time.Hour)
		ip := fmt.Sprintf("192.0.2.%d", 1+i%250)
		l.Reject(t, ip, "spam@bulk.example", fmt.Sprintf("nobody%d@corp.test", i), false)
		if i%5 == 0 {
			l.Reject(t.Add(time.Second), ip, "spam@bulk.example", "x@elsewhere.example", true)
		}
		if i%3 == 0 {
			l.AuthFail(t, fmt.Sprintf("10.0.0.%d", 10+i%200))
		}
	}
}

func (l *Log) rcpts(n int) ([]string, []Outcome) {
	var rc []string
	var outs []Outcome
	for len(rc) < n {
		to := fmt.Sprintf("contact%d@partner%d.example", l.rng.IntN(5000), l.rng.IntN(40))
		if slices.Contains(rc, to) {
			continue
		}
		o := Sent
		switch r := l.rng.IntN(100); {
		case r < 3:
			o = DeferredThenSent
		case r < 5:
			o = Bounced
		}
		rc, outs = append(rc, to), append(outs, o)
	}
	return rc, outs
}

// Worm plants an infected PC: n messages within span from ip, each with a
// forged sender and 1–3 fresh recipients.
func (l *Log) Worm(ip string, start time.Time, span time.Duration, n int) {
	for i := range n {
		rc, outs := l.rcpts(1 + l.rng.IntN(3))
		t := start.Add(span * time.Duration(i) / time.Duration(n))
		l.Message(t, ip, "", fmt.Sprintf("w%d@corp.test", i), rc, outs)
	}
}

// RelayStorm plants an open-relay probe: n relay-denied RCPTs from ip
// within span, and one %-hack attempt.
func (l *Log) RelayStorm(ip string, start time.Time, span time.Duration, n int) {
	for i := range n {
		t := start.Add(span * time.Duration(i) / time.Duration(n))
		l.Reject(t, ip, "promo@spam.example", fmt.Sprintf("victim%d@foreign%d.example", i, i%9), true)
	}
	l.Reject(start.Add(span), ip, "promo@spam.example", "victim%foreign.example@corp.test", true)
}

// BruteForce plants n failed AUTH attempts from ip within span.
func (l *Log) BruteForce(ip string, start time.Time, span time.Duration, n int) {
	for i := range n {
		l.AuthFail(start.Add(span*time.Duration(i)/time.Duration(n)), ip)
	}
}

// Orphan adds a delivery line of a queue id whose message is not in the
// log (it came in before the log started).
func (l *Log) Orphan(t time.Time) {
	l.emit(t, "postfix/smtp", 4100, "0FFFFFFFFF: to=<late@partner.example>, relay=mx.partner.example[192.0.2.9]:25, delay=9000, dsn=2.0.0, status=sent (250 Ok)")
	l.Orphans++
	l.Totals.Recipients++
}

// Lines returns the log lines in time order.
func (l *Log) Lines() []string {
	l.sort()
	out := make([]string, len(l.lines))
	for i, x := range l.lines {
		out[i] = x.text
	}
	return out
}

// Hour adds one hour, starting at start, of the same mix as NormalDay with
// the same users and perUser: each user's messages fall 08:00–18:00 (so an
// hour in that span gets users*perUser/10 of them), inbound mail and the
// rejects and AUTH failures are spread over the 24 hours. Calling it for
// the 24 hours of a day gives a day like NormalDay's, hour by hour, so a
// stream of any length can be written with WriteBefore without holding
// more than about an hour of lines.
func (l *Log) Hour(start time.Time, users, perUser int) {
	in := func() time.Time { return start.Add(time.Duration(l.rng.Int64N(int64(time.Hour)))) }
	if h := start.Hour(); h >= 8 && h < 18 {
		for range users * perUser / 10 {
			u := l.rng.IntN(users)
			ip := fmt.Sprintf("10.0.%d.%d", u/200, 10+u%200)
			from := fmt.Sprintf("user%d@corp.test", u)
			rc, outs := l.rcpts(1 + l.rng.IntN(3))
			l.Message(in(), ip, from, from, rc, outs)
		}
	}
	for range users * perUser / 2 / 24 {
		i := l.inbound
		l.inbound++
		ip := fmt.Sprintf("198.18.%d.%d", i%7, 1+i%211)
		to := fmt.Sprintf("user%d@corp.test", l.rng.IntN(users))
		l.Message(in(), ip, "", fmt.Sprintf("news%d@outside%d.example", i%97, i%13), []string{to}, []Outcome{Sent})
	}
	for range max(users/4/24, 1) {
		i := l.rejects
		l.rejects++
		t := in()
		ip := fmt.Sprintf("192.0.2.%d", 1+i%250)
		l.Reject(t, ip, "spam@bulk.example", fmt.Sprintf("nobody%d@corp.test", i%users), false)
		if i%5 == 0 {
			l.Reject(t.Add(time.Second), ip, "spam@bulk.example", "x@elsewhere.example", true)
		}
		if i%3 == 0 {
			l.AuthFail(t, fmt.Sprintf("10.0.0.%d", 10+i%200))
		}
	}
}

// WriteBefore writes the lines timed before t, in time order, one a line,
// and forgets them; later lines (a retry half an hour on) stay for the next
// call. WriteBefore(w, time.Time{}) is not special: use Flush for the rest.
func (l *Log) WriteBefore(w io.Writer, t time.Time) (int64, error) {
	l.sort()
	n := 0
	for n < len(l.lines) && l.lines[n].t.Before(t) {
		n++
	}
	var written int64
	for _, x := range l.lines[:n] {
		k, err := io.WriteString(w, x.text+"\n")
		written += int64(k)
		if err != nil {
			return written, err
		}
	}
	l.lines = append(l.lines[:0], l.lines[n:]...)
	return written, nil
}

// Flush writes all lines left, in time order.
func (l *Log) Flush(w io.Writer) (int64, error) {
	l.sort()
	if len(l.lines) == 0 {
		return 0, nil
	}
	return l.WriteBefore(w, l.lines[len(l.lines)-1].t.Add(time.Nanosecond))
}

func (l *Log) sort() {
	slices.SortStableFunc(l.lines, func(a, b line) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return a.seq - b.seq
	})
}
