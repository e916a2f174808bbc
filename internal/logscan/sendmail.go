package logscan

import (
	"strings"
	"unsafe"
)

// maxRcptsPerLine bounds the recipients read from one Sendmail "to=" line
// (Sendmail lists every recipient of one delivery in one line).
const maxRcptsPerLine = 1000

// ParseSendmail parses one Sendmail syslog line (program sendmail or
// sm-mta). A "to=" line lists every recipient of one delivery and gives an
// event per recipient; other counted lines give one event; lines of other
// programs, and Sendmail lines logscan does not count, give none. The
// strings of the events are their own (line may be reused).
func (c Clock) ParseSendmail(line []byte) []Event {
	evs := c.stamp().appendSendmail(nil, unsafe.String(unsafe.SliceData(line), len(line)))
	for i := range evs {
		evs[i].own()
	}
	return evs
}

// appendSendmail appends the events of one Sendmail line to evs, without
// copies: their strings point into line (see parsePostfix).
func (st *stamp) appendSendmail(evs []Event, line string) []Event {
	t, prog, msg, ok := st.syslogHeader(strings.TrimRight(line, "\r\n"))
	if !ok || !isSendmailProg(prog) {
		return evs
	}
	ev := Event{Time: t}
	qid, body, ok := strings.Cut(msg, ": ")
	if ok && (qid == "NOQUEUE" || isQueueID(qid)) {
		if qid != "NOQUEUE" {
			ev.QueueID = qid
		}
	} else {
		body = msg
	}
	switch {
	case strings.HasPrefix(body, "from="):
		// from=<a>, size=N, class=0, nrcpts=N, msgid=<..>, proto=ESMTP, daemon=MTA, relay=host [ip]
		ev.Nrcpt = int(atoi64(field(body, "nrcpts=")))
		if ev.QueueID == "" || ev.Nrcpt == 0 {
			return evs // nrcpts=0: every recipient was refused, no message
		}
		ev.Kind = KindQueued
		ev.From = sender(angle(field(body, "from=")))
		ev.Size = atoi64(field(body, "size="))
		ev.Client = sendmailRelayIP(body)
	case strings.HasPrefix(body, "to="):
		if ev.QueueID == "" {
			return evs
		}
		ev.Status = sendmailStatus(field(body, "dsn="), sendmailValue(body, "stat="))
		if ev.Status == StatusNone {
			return evs
		}
		ev.Kind = KindRcpt
		switch m := field(body, "mailer="); {
		case m == "local" || m == "cyrus" || m == "lmtp" || m == "prog":
			ev.Dest = DestLocal
		case m == "esmtp" || m == "smtp" || m == "relay" || m == "smtp8" || m == "dsmtp":
			ev.Dest = DestRemote
		}
		list := sendmailValue(body, "to=")
		for n := 0; list != "" && n < maxRcptsPerLine; n++ {
			var to string
			to, list = splitAddrList(list)
			if to = lower(angle(strings.TrimSpace(to))); to != "" {
				ev.To = to
				evs = append(evs, ev)
			}
		}
		return evs
	case strings.HasPrefix(body, "ruleset="):
		// ruleset=check_rcpt, arg1=<x>, relay=h [ip], reject=550 5.7.1 <x>... Relaying denied
		reason := sendmailValue(body, "reject=")
		if reason == "" {
			return evs
		}
		ev.Kind, ev.QueueID, ev.Text = KindReject, "", reason
		ev.Client = sendmailRelayIP(body)
		arg := angle(field(body, "arg1="))
		switch field(body, "ruleset=") {
		case "check_rcpt":
			ev.To = lower(arg)
		case "check_mail":
			ev.From = sender(arg)
		}
		ev.Relay = strings.Contains(reason, "Relaying denied")
	case strings.HasPrefix(body, "AUTH failure"):
		// AUTH failure (LOGIN): authentication failure (-13) SASL(-13): ..., user=bob, relay=h [ip]
		ev.Kind, ev.QueueID = KindAuthFail, ""
		ev.Client = sendmailRelayIP(body)
		ev.User = field(body, "user=")
	case strings.HasPrefix(body, "AUTH="):
		// AUTH=server, relay=h [ip], authid=alice, mech=PLAIN, bits=0
		if ev.QueueID == "" {
			return evs
		}
		ev.Kind = KindClient
		ev.Client = sendmailRelayIP(body)
		ev.User = angle(field(body, "authid="))
	default:
		return evs
	}
	return append(evs, ev)
}

func isSendmailProg(p string) bool {
	return p == "sendmail" || strings.HasPrefix(p, "sm-mta")
}

// sendmailValue returns the value of key up to the next ", name=" (or the
// end): Sendmail values such as relay=, stat= and reject= hold spaces, and
// to= holds a list.
func sendmailValue(s, key string) string {
	s, ok := afterKey(s, key, " ,")
	if !ok {
		return ""
	}
	for i := 0; ; {
		j := strings.Index(s[i:], ", ")
		if j < 0 {
			return s
		}
		j += i
		if isKeyStart(s[j+2:]) {
			return s[:j]
		}
		i = j + 2
	}
}

// isKeyStart reports whether s starts with "name=" (lowercase letters,
// digits, underscores).
func isKeyStart(s string) bool {
	for i := 0; i < len(s) && i < 32; i++ {
		c := s[i]
		switch {
		case c == '=':
			return i > 0
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_':
		default:
			return false
		}
	}
	return false
}

// splitAddrList cuts the first address off "<a@x>,<b@y>"; a comma inside
// <...> or "..." does not separate.
func splitAddrList(s string) (first, rest string) {
	angleDepth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angleDepth++
		case c == '>' && angleDepth > 0:
			angleDepth--
		case c == ',' && angleDepth == 0:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// sendmailRelayIP returns the IP of "relay=host [1.2.3.4] (may be
// forged)" or "relay=[IPv6:2001:db8::1]"; "" when relay= has no address.
func sendmailRelayIP(s string) string {
	ip := bracketIP(sendmailValue(s, "relay="))
	if len(ip) > 5 && strings.EqualFold(ip[:5], "IPv6:") {
		ip = ip[5:]
	}
	return ip
}

// sendmailStatus reads the outcome of a delivery from dsn= (2.x.x sent,
// 4.x.x deferred, 5.x.x bounced) or, without one, from stat=.
func sendmailStatus(dsn, stat string) Status {
	if len(dsn) >= 2 && dsn[1] == '.' {
		switch dsn[0] {
		case '2':
			return StatusSent
		case '4':
			return StatusDeferred
		case '5':
			return StatusBounced
		}
	}
	switch {
	case stat == "":
		return StatusNone
	case strings.HasPrefix(stat, "Sent"):
		return StatusSent
	case strings.HasPrefix(stat, "Deferred"):
		return StatusDeferred
	case strings.HasPrefix(stat, "queued"), strings.HasPrefix(stat, "quarantined"):
		return StatusNone // not an attempt yet
	}
	return StatusBounced // User unknown, Service unavailable, ...
}
