package logscan

import (
	"strings"
	"time"
	"unsafe"
)

// ParseExim parses one line of Exim's main log ("2026-12-06 10:00:00
// [pid] 1abcDE-000123-AB <= ..."): arrivals (<=), deliveries (=> and ->),
// deferrals (==), bounces (**), Completed, rejections and failed AUTHs.
// Other lines give KindNone. The strings of the event are its own (line
// may be reused). The time is read in the Clock's zone unless the line
// carries its own offset (log_timezone).
func (c Clock) ParseExim(line []byte) Event {
	ev := c.stamp().parseExim(unsafe.String(unsafe.SliceData(line), len(line)))
	ev.own()
	return ev
}

// eximTime reads "YYYY-MM-DD HH:MM:SS" and an optional " +hhmm" at the
// start of s, caching the start of the last hour seen as stamp does.
func (st *stamp) eximTime(s string) (t int64, rest string, ok bool) {
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' {
		return 0, "", false
	}
	y1, ok1 := digits2(s[0:2], false)
	y2, ok2 := digits2(s[2:4], false)
	mon, ok3 := digits2(s[5:7], false)
	day, ok4 := digits2(s[8:10], false)
	h, ok5 := digits2(s[11:13], false)
	m, ok6 := digits2(s[14:16], false)
	sec, ok7 := digits2(s[17:19], false)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 || mon < 1 || mon > 12 || day < 1 || day > 31 || h > 23 || m > 59 || sec > 60 {
		return 0, "", false
	}
	rest = s[19:]
	key := int64(y1*100+y2)<<24 | int64(mon)<<16 | int64(day)<<8 | int64(h)
	if len(rest) >= 6 && rest[0] == ' ' && (rest[1] == '+' || rest[1] == '-') {
		oh, okh := digits2(rest[2:4], false)
		om, okm := digits2(rest[4:6], false)
		if okh && okm && (len(rest) == 6 || rest[6] == ' ') {
			off := int64(oh*3600 + om*60)
			if rest[1] == '-' {
				off = -off
			}
			key |= 1<<40 | (off+1<<20)<<41
			rest = rest[6:]
		}
	}
	if key != st.eximKey {
		loc := st.loc
		if key>>40 != 0 {
			loc = time.FixedZone("", int(key>>41-1<<20))
		}
		st.eximKey, st.eximBase = key, time.Date(y1*100+y2, time.Month(mon), day, h, 0, 0, 0, loc).Unix()
	}
	return st.eximBase + int64(m*60+sec), rest, true
}

// parseExim is ParseExim without copies: the event's strings point into
// line (see parsePostfix).
func (st *stamp) parseExim(line string) Event {
	t, rest, ok := st.eximTime(strings.TrimRight(line, "\r\n"))
	if !ok {
		return Event{}
	}
	rest = strings.TrimLeft(rest, " ")
	if strings.HasPrefix(rest, "[") { // log_selector +pid
		if i := strings.IndexByte(rest, ']'); i >= 0 {
			rest = strings.TrimLeft(rest[i+1:], " ")
		}
	}
	ev := Event{Time: t}
	id, body, _ := strings.Cut(rest, " ")
	if isEximID(id) {
		ev.QueueID = id
		if body == "Completed" {
			ev.Kind = KindRemoved
			return ev
		}
		if len(body) > 3 && body[2] == ' ' {
			switch body[:2] {
			case "<=":
				return eximArrival(ev, body[3:])
			case "=>", "->":
				ev.Status = StatusSent
			case "==":
				ev.Status = StatusDeferred
			case "**":
				ev.Status = StatusBounced
			}
			if ev.Status != StatusNone {
				ev.Kind = KindRcpt
				ev.To = lower(eximRcpt(body[3:]))
				if ev.To == "" {
					return Event{}
				}
				if tr := eximValue(body, "T="); tr != "" {
					ev.Dest = DestLocal
					if strings.Contains(tr, "smtp") {
						ev.Dest = DestRemote
					}
				}
				// "=> b@far.example (alias@here) <alias@here> R=...": a redirect.
				head, _, _ := strings.Cut(body[3:], " R=")
				addr, more, _ := strings.Cut(head, " ")
				ev.Forward = strings.IndexByte(addr, '@') >= 0 && strings.Contains(more, "<")
				return ev
			}
		}
		ev.QueueID = ""
	} else {
		body = rest
	}
	if i := strings.Index(body, "authenticator failed for "); i >= 0 {
		// dovecot_login authenticator failed for (helo) [192.0.2.1]:4711 I=[...]:587: 535 Incorrect authentication data (set_id=bob)
		s := body[i+len("authenticator failed for "):]
		ev.Kind = KindAuthFail
		ev.Client = eximIP(s)
		if _, u, ok := strings.Cut(s, "(set_id="); ok {
			ev.User, _, _ = strings.Cut(u, ")")
		}
		return ev
	}
	if i := strings.Index(body, "rejected "); i > 0 && body[i-1] == ' ' {
		// H=(helo) [192.0.2.1] F=<s@x> rejected RCPT <x@y>: relay not permitted
		ev.Kind = KindReject
		head, reason := strings.TrimRight(body[:i], " "), body[i+len("rejected "):]
		ev.Client = eximIP(eximValue(head, "H="))
		ev.Helo = eximHelo(eximValue(head, "H="))
		if f := eximValue(head, "F="); f != "" {
			ev.From = sender(angle(f))
		}
		if strings.HasPrefix(reason, "RCPT ") {
			if to, _, ok := strings.Cut(reason[len("RCPT "):], ": "); ok {
				ev.To = lower(angle(to))
			}
		} else if strings.HasPrefix(reason, "MAIL ") && ev.From == "" {
			if f, _, ok := strings.Cut(reason[len("MAIL "):], ": "); ok {
				ev.From = sender(angle(f))
			}
		}
		ev.Text = reason
		ev.Relay = strings.Contains(reason, "relay not permitted")
		return ev
	}
	return Event{}
}

// eximArrival reads "a@x H=host (helo) [1.2.3.4]:25 I=... P=esmtpa
// A=login:user S=1234 id=..." after "<= ".
func eximArrival(ev Event, s string) Event {
	from, rest, _ := strings.Cut(s, " ")
	ev.Kind = KindQueued
	if from == "<>" {
		from = ""
	}
	ev.From = sender(from)
	ev.Client = eximIP(eximValue(rest, "H="))
	ev.Helo = eximHelo(eximValue(rest, "H="))
	if t := eximValue(rest, "T="); len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' {
		ev.Text = t[1 : len(t)-1] // log_selector +subject
	}
	if a := eximValue(rest, "A="); a != "" {
		if _, u, ok := strings.Cut(a, ":"); ok {
			ev.User = u
		}
	}
	ev.Size = atoi64(eximValue(rest, "S="))
	return ev
}

// eximRcpt returns the recipient of "b@y [(parent)] [<orig@y>] R=...": the
// address itself, or the original address when Exim logged a bare local
// part ("=> alice <alice@corp.test> R=...").
func eximRcpt(s string) string {
	addr, rest, _ := strings.Cut(s, " ")
	addr = strings.TrimSuffix(addr, ":")
	if strings.IndexByte(addr, '@') < 0 {
		for range 2 {
			var tok string
			tok, rest, _ = strings.Cut(rest, " ")
			tok = strings.TrimSuffix(tok, ":")
			if len(tok) > 2 && tok[0] == '<' && tok[len(tok)-1] == '>' {
				return tok[1 : len(tok)-1]
			}
			if tok == "" || tok[0] != '(' {
				break
			}
		}
	}
	return angle(addr)
}

// eximValue returns the value of " K=" in s: up to the next " X=" field,
// so that "H=host (helo) [1.2.3.4]:25" keeps its parts.
func eximValue(s, key string) string {
	s, ok := afterKey(s, key, " ")
	if !ok {
		return ""
	}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], ' ')
		if j < 0 {
			return s
		}
		j += i
		if r := s[j+1:]; len(r) >= 2 && r[1] == '=' && 'A' <= r[0] && r[0] <= 'Z' || strings.HasPrefix(r, "id=") {
			return s[:j]
		}
		i = j + 1
	}
}

// eximHelo returns the HELO name of "host (helo) [1.2.3.4]:25" (the part in
// parentheses) or of "host [1.2.3.4]" (the host, which then said that).
func eximHelo(s string) string {
	if i := strings.IndexByte(s, '('); i >= 0 {
		if j := strings.IndexByte(s[i:], ')'); j > 0 {
			return lower(s[i+1 : i+j])
		}
	}
	if h, _, ok := strings.Cut(s, " "); ok && !strings.HasPrefix(h, "[") {
		return lower(h)
	}
	return ""
}

// eximIP returns the IP of "host (helo) [1.2.3.4]:25" or "[2001:db8::1]":
// the first bracketed part.
func eximIP(s string) string {
	i := strings.IndexByte(s, '[')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(s[i:], ']')
	if j < 0 {
		return ""
	}
	return s[i+1 : i+j]
}

// isEximID reports whether s looks like an Exim message id: 1abcDE-000123-AB
// (before 4.97) or 1rGHkA-00000000Ls3-0bGq.
func isEximID(s string) bool {
	if len(s) < 16 || len(s) > 24 || s[6] != '-' {
		return false
	}
	dashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-':
			dashes++
		case '0' <= c && c <= '9', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		default:
			return false
		}
	}
	return dashes == 2
}
