// Package loggen writes realistic Postfix, Sendmail and Exim logs with
// exactly known counts, for the tests and benchmarks of package logscan: a
// normal busy day, and planted episodes (a worm, a relay-denied storm,
// brute-force AUTH, an open relay, backscatter, rotating IPs, a sender far
// above its own history). The same calls write the same story in each
// format (Log.Format); Postfix logs can also pass every message through a
// content filter on 127.0.0.1 that re-injects it under a second queue id
// (Log.Filter), as amavis does.
package loggen

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Counts are what a correct scan must report for a key.
type Counts struct{ Messages, Recipients, Rejects, Deferrals, Bounces int }

// Format is the log format written.
type Format int

// Formats.
const (
	Postfix Format = iota
	Sendmail
	Exim
)

// Log is a generated log and what it holds. Set Format and Filter before
// the first line.
type Log struct {
	Format Format
	Filter bool // Postfix: messages from the network pass a content filter on 127.0.0.1:10024

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
	var text string
	if l.Format == Exim {
		text = t.Format("2006-01-02 15:04:05 ") + fmt.Sprintf(format, args...)
	} else {
		text = fmt.Sprintf("%s mx1 %s[%d]: ", t.Format(time.Stamp), prog, pid) + fmt.Sprintf(format, args...)
	}
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

// LocalDomain is the generated server's own domain: its recipients are
// delivered locally.
const LocalDomain = "corp.test"

// Message logs one accepted message from client (ip, may be "" for local
// pickup) and its deliveries.
func (l *Log) Message(t time.Time, ip, user, from string, rcpts []string, outs []Outcome) string {
	return l.message(t, ip, user, from, "", rcpts, outs)
}

func (l *Log) qid() string {
	l.nextQID++
	switch l.Format {
	case Sendmail:
		return fmt.Sprintf("wB4%07d%04d", l.nextQID, l.nextQID%9973)
	case Exim:
		return fmt.Sprintf("1q%04X-%06d-%02X", l.nextQID%65536, l.nextQID, l.nextQID%256)
	}
	return fmt.Sprintf("%010X", 0x3A00000000+l.nextQID)
}

// message is Message with a subject (Postfix logs it through a
// header_checks WARN rule, Exim with log_selector +subject; Sendmail not).
func (l *Log) message(t time.Time, ip, user, from, subject string, rcpts []string, outs []Outcome) string {
	qid := l.qid()
	n := l.nextQID
	key := from
	if key == "" {
		key = "<>"
	}
	e := []*Counts{&l.Totals, count(l.Senders, key)}
	if ip != "" {
		e = append(e, count(l.Clients, ip))
	}
	for _, c := range e {
		c.Messages++
		c.Recipients += len(rcpts)
	}
	size := 1000 + l.rng.IntN(50000)
	helo := fmt.Sprintf("host-%d.example", n)
	switch l.Format {
	case Sendmail:
		relay := "root@localhost"
		if ip != "" {
			relay = fmt.Sprintf("%s [%s]", helo, ip)
			if user != "" {
				l.emit(t, "sm-mta", 2000+n%500, "%s: AUTH=server, relay=%s, authid=%s, mech=PLAIN, bits=0", qid, relay, user)
			}
		}
		l.emit(t, "sm-mta", 2000+n%500, "%s: from=<%s>, size=%d, class=0, nrcpts=%d, msgid=<%d.%d@mua.example>, proto=ESMTP, daemon=MTA, relay=%s", qid, from, size, len(rcpts), n, t.Unix(), relay)
	case Exim:
		f := from
		if f == "" {
			f = "<>"
		}
		var b strings.Builder
		if ip == "" {
			b.WriteString("U=root P=local")
		} else {
			fmt.Fprintf(&b, "H=%s (%s) [%s]:%d I=[192.0.2.25]:25 P=esmtp", helo, helo, ip, 40000+n%20000)
			if user != "" {
				fmt.Fprintf(&b, "sa A=dovecot_plain:%s", user)
			}
		}
		fmt.Fprintf(&b, " S=%d id=%d.%d@mua.example", size, n, t.Unix())
		if subject != "" {
			fmt.Fprintf(&b, " T=%q", subject)
		}
		l.emit(t, "exim", 0, "%s <= %s %s", qid, f, b.String())
	default:
		if ip != "" {
			sasl := ""
			if user != "" {
				sasl = ", sasl_method=PLAIN, sasl_username=" + user
			}
			l.emit(t, "postfix/smtpd", 2000+n%500, "%s: client=%s[%s]%s", qid, helo, ip, sasl)
		}
		l.emit(t, "postfix/cleanup", 3000, "%s: message-id=<%d.%d@mua.example>", qid, n, t.Unix())
		if subject != "" {
			l.emit(t, "postfix/cleanup", 3000, "%s: warning: header Subject: %s from %s[%s]; from=<%s> to=<%s> proto=ESMTP helo=<%s>", qid, subject, helo, ip, from, rcpts[0], helo)
		}
		l.emit(t.Add(time.Second), "postfix/qmgr", 99, "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", qid, from, size, len(rcpts))
		if l.Filter && ip != "" {
			// The first hop goes to the filter, which hands the message
			// back under a second queue id: that hop delivers.
			back := l.qid()
			l.emit(t.Add(time.Second), "postfix/smtpd", 2600, "%s: client=localhost[127.0.0.1]", back)
			l.emit(t.Add(time.Second), "postfix/cleanup", 3000, "%s: message-id=<%d.%d@mua.example>", back, n, t.Unix())
			l.emit(t.Add(time.Second), "postfix/qmgr", 99, "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", back, from, size+800, len(rcpts))
			for _, to := range rcpts {
				l.emit(t.Add(time.Second), "postfix/smtp", 4500, "%s: to=<%s>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as %s)", qid, to, back)
			}
			l.emit(t.Add(time.Second), "postfix/qmgr", 99, "%s: removed", qid)
			qid = back
		}
	}
	last := t.Add(2 * time.Second)
	for i, to := range rcpts {
		at := t.Add(2 * time.Second)
		switch outs[i] {
		case DeferredThenSent:
			l.delivery(at, qid, to, 4, i)
			at = at.Add(30 * time.Minute)
			if l.Format == Postfix {
				l.emit(at.Add(-time.Second), "postfix/qmgr", 99, "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", qid, from, size, len(rcpts))
			}
			l.delivery(at, qid, to, 2, i)
			for _, c := range e {
				c.Deferrals++
			}
		case Bounced:
			l.delivery(at, qid, to, 5, i)
			for _, c := range e {
				c.Bounces++
			}
		default:
			l.delivery(at, qid, to, 2, i)
		}
		if at.After(last) {
			last = at
		}
	}
	switch l.Format {
	case Postfix:
		l.emit(last.Add(time.Second), "postfix/qmgr", 99, "%s: removed", qid)
	case Exim:
		l.emit(last.Add(time.Second), "exim", 0, "%s Completed", qid)
	}
	return qid
}

// delivery logs one attempt for one recipient: class 2 sent, 4 deferred,
// 5 bounced; local-domain recipients are delivered locally.
func (l *Log) delivery(at time.Time, qid, to string, class, i int) {
	local := domain(to) == LocalDomain
	relay := fmt.Sprintf("mx.%s[192.0.2.%d]:25", domain(to), 1+i)
	switch l.Format {
	case Sendmail:
		mailer, rel := "esmtp", fmt.Sprintf(", relay=mx.%s. [192.0.2.%d]", domain(to), 1+i)
		if local {
			mailer, rel = "local", ""
		}
		stat := map[int]string{2: "dsn=2.0.0, stat=Sent (ok)", 4: "dsn=4.4.1, stat=Deferred: Connection timed out with mx." + domain(to) + ".", 5: "dsn=5.1.1, stat=User unknown"}[class]
		l.emit(at, "sm-mta", 4000+class, "%s: to=<%s>, delay=00:00:02, xdelay=00:00:01, mailer=%s, pri=120000%s, %s", qid, to, mailer, rel, stat)
	case Exim:
		route := fmt.Sprintf("R=dnslookup T=remote_smtp H=mx.%s [192.0.2.%d]", domain(to), 1+i)
		if local {
			route = "R=virtual_user T=dovecot_lmtp"
		}
		switch class {
		case 2:
			l.emit(at, "exim", 0, "%s => %s %s C=\"250 2.0.0 Ok\"", qid, to, route)
		case 4:
			l.emit(at, "exim", 0, "%s == %s R=dnslookup T=remote_smtp defer (110): Connection timed out", qid, to)
		default:
			l.emit(at, "exim", 0, "%s ** %s %s: SMTP error from remote mail server after RCPT TO:<%s>: 550 5.1.1 unknown user", qid, to, route, to)
		}
	default:
		prog := "postfix/smtp"
		if local {
			prog, relay = "postfix/local", "local"
		}
		switch class {
		case 2:
			l.emit(at, prog, 4003, "%s: to=<%s>, relay=%s, delay=2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)", qid, to, relay)
		case 4:
			l.emit(at, prog, 4000, "%s: to=<%s>, relay=none, delay=2, dsn=4.4.1, status=deferred (connect to %s: Connection timed out)", qid, to, relay)
		default:
			l.emit(at, prog, 4002, "%s: to=<%s>, relay=%s, delay=2, dsn=5.1.1, status=bounced (host said: 550 5.1.1 unknown user)", qid, to, relay)
		}
	}
}

func domain(addr string) string {
	if i := bytes.LastIndexByte([]byte(addr), '@'); i >= 0 {
		return addr[i+1:]
	}
	return "localhost"
}

// Reject logs a refused RCPT (Postfix NOQUEUE reject, Sendmail
// check_rcpt, Exim "rejected RCPT").
func (l *Log) Reject(t time.Time, ip, from, to string, relay bool) {
	l.reject(t, ip, "pc-"+ip, from, to, relay)
}

func (l *Log) reject(t time.Time, ip, helo, from, to string, relay bool) {
	switch l.Format {
	case Sendmail:
		reason := "550 5.1.1 <" + to + ">... User unknown"
		if relay {
			reason = "550 5.7.1 <" + to + ">... Relaying denied"
		}
		l.nextQID++
		qid := fmt.Sprintf("wB4%07d%04d", l.nextQID, l.nextQID%9973)
		l.emit(t, "sm-mta", 2999, "%s: ruleset=check_rcpt, arg1=<%s>, relay=%s [%s], reject=%s", qid, to, helo, ip, reason)
		l.emit(t, "sm-mta", 2999, "%s: from=<%s>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=%s [%s]", qid, from, helo, ip)
	case Exim:
		reason := "Unknown user"
		if relay {
			reason = "relay not permitted"
		}
		l.emit(t, "exim", 0, "H=(%s) [%s]:%d F=<%s> rejected RCPT <%s>: %s", helo, ip, 40000+l.seq%20000, from, to, reason)
	default:
		reason := "550 5.1.1 <" + to + ">: Recipient address rejected: User unknown in local recipient table"
		if relay {
			reason = "554 5.7.1 <" + to + ">: Relay access denied"
		}
		l.emit(t, "postfix/smtpd", 2999, "NOQUEUE: reject: RCPT from unknown[%s]: %s; from=<%s> to=<%s> proto=ESMTP helo=<%s>", ip, reason, from, to, helo)
	}
	if from == "" {
		from = "<>"
	}
	l.Totals.Rejects++
	if l.Format != Sendmail { // Sendmail's check_rcpt line does not name the sender
		count(l.Senders, from).Rejects++
	}
	count(l.Clients, ip).Rejects++
}

// AuthFail logs a failed SASL login.
func (l *Log) AuthFail(t time.Time, ip string) {
	switch l.Format {
	case Sendmail:
		l.emit(t, "sm-mta", 2998, "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=guess, relay=unknown [%s]", ip)
	case Exim:
		l.emit(t, "exim", 0, "dovecot_login authenticator failed for (pc) [%s]:5000 I=[192.0.2.25]:587: 535 Incorrect authentication data (set_id=guess)", ip)
	default:
		l.emit(t, "postfix/smtpd", 2998, "warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", ip)
	}
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
		l.message(t, ip, "", fmt.Sprintf("w%d@corp.test", i), fmt.Sprintf("Invoice %d overdue", i%7), rc, outs)
	}
}

// OpenRelay plants an open relay being used: n messages within span from
// the outside client ip, unauthenticated, from a foreign sender to foreign
// recipients, relayed out.
func (l *Log) OpenRelay(ip string, start time.Time, span time.Duration, n int) {
	for i := range n {
		t := start.Add(span * time.Duration(i) / time.Duration(n))
		to := fmt.Sprintf("target%d@victim%d.example", i, i%11)
		l.message(t, ip, "", "offers@spam.example", "Cheap meds", []string{to}, []Outcome{Sent})
	}
}

// Backscatter plants a flood of bounces for forged mail: n null-sender
// messages within span from n outside servers to made-up users of the
// local domain, every fourth refused as unknown at RCPT instead.
func (l *Log) Backscatter(start time.Time, span time.Duration, n int) {
	for i := range n {
		t := start.Add(span * time.Duration(i) / time.Duration(n))
		ip := fmt.Sprintf("203.0.113.%d", 1+i%250)
		to := fmt.Sprintf("x%dq@%s", 7000+i, LocalDomain)
		if i%4 == 3 {
			l.reject(t, ip, fmt.Sprintf("mx.bouncer%d.example", i), "", to, false)
			continue
		}
		l.message(t, ip, "", "", "", []string{to}, []Outcome{Sent})
	}
}

// Rotating plants a botnet: n messages within span, each from its own IP,
// all with the same envelope sender and HELO; each IP also has one RCPT
// refused (the refusal is where Postfix logs the HELO).
func (l *Log) Rotating(sender, helo string, start time.Time, span time.Duration, n int) {
	for i := range n {
		t := start.Add(span * time.Duration(i) / time.Duration(n))
		ip := fmt.Sprintf("198.51.100.%d", 1+i%250)
		if l.Format == Exim {
			// Exim logs the HELO in the arrival; keep it the botnet's.
			l.messageHelo(t, ip, helo, sender, fmt.Sprintf("user%d@%s", i%50, LocalDomain))
		} else {
			l.message(t, ip, "", sender, "", []string{fmt.Sprintf("user%d@%s", i%50, LocalDomain)}, []Outcome{Sent})
		}
		l.reject(t.Add(time.Second), ip, helo, sender, fmt.Sprintf("nobody%d@%s", i, LocalDomain), false)
	}
}

// messageHelo is an Exim arrival with a given HELO, delivered locally.
func (l *Log) messageHelo(t time.Time, ip, helo, from, to string) {
	qid := l.qid()
	l.emit(t, "exim", 0, "%s <= %s H=(%s) [%s]:%d I=[192.0.2.25]:25 P=esmtp S=%d id=%d@bot", qid, from, helo, ip, 40000+l.nextQID%20000, 2000, l.nextQID)
	l.delivery(t.Add(time.Second), qid, to, 2, 0)
	l.emit(t.Add(2*time.Second), "exim", 0, "%s Completed", qid)
	for _, c := range []*Counts{&l.Totals, count(l.Senders, from), count(l.Clients, ip)} {
		c.Messages++
		c.Recipients++
	}
}

// RateChange plants a regular user gone wild: n messages within the hour
// from start, from the user's own PC and address, one recipient each.
func (l *Log) RateChange(user int, start time.Time, n int) {
	ip := fmt.Sprintf("10.0.%d.%d", user/200, 10+user%200)
	from := fmt.Sprintf("user%d@%s", user, LocalDomain)
	for i := range n {
		t := start.Add(time.Hour * time.Duration(i) / time.Duration(n))
		rc, outs := l.rcpts(1)
		l.Message(t, ip, from, from, rc, outs)
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
	switch l.Format {
	case Sendmail:
		l.emit(t, "sm-mta", 4100, "wB3ZZZZZZ00001: to=<late@partner.example>, delay=02:30:00, xdelay=00:00:01, mailer=esmtp, pri=1, relay=mx.partner.example. [192.0.2.9], dsn=2.0.0, stat=Sent (ok)")
	case Exim:
		l.emit(t, "exim", 0, "1pZZZZ-000001-ZZ => late@partner.example R=dnslookup T=remote_smtp H=mx.partner.example [192.0.2.9] C=\"250 ok\"")
	default:
		l.emit(t, "postfix/smtp", 4100, "0FFFFFFFFF: to=<late@partner.example>, relay=mx.partner.example[192.0.2.9]:25, delay=9000, dsn=2.0.0, status=sent (250 Ok)")
	}
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
