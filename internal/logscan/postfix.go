package logscan

import (
	"strconv"
	"strings"
	"time"
)

// Clock turns syslog timestamps, which have no year and no zone, into
// times: Year is the year of the log (0: the current year), Loc its zone
// (nil: UTC).
type Clock struct {
	Year int
	Loc  *time.Location
}

var months = map[string]time.Month{"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
	"Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12}

// syslogHeader splits "Mmm dd hh:mm:ss host tag[pid]: msg" (or an RFC 3339
// timestamp in place of the first three fields) into the time, the
// program (the tag without [pid]) and the message.
func (c Clock) syslogHeader(s string) (t int64, prog, msg string, ok bool) {
	var rest string
	if len(s) >= 16 && s[3] == ' ' && s[9] == ':' && s[12] == ':' {
		mon, okm := months[s[:3]]
		day, errd := strconv.Atoi(strings.TrimLeft(s[4:6], " "))
		h, errh := strconv.Atoi(s[7:9])
		m, errm := strconv.Atoi(s[10:12])
		sec, errs := strconv.Atoi(s[13:15])
		if !okm || errd != nil || errh != nil || errm != nil || errs != nil {
			return 0, "", "", false
		}
		year, loc := c.Year, c.Loc
		if loc == nil {
			loc = time.UTC
		}
		if year == 0 {
			year = time.Now().In(loc).Year()
		}
		t = time.Date(year, mon, day, h, m, sec, 0, loc).Unix()
		rest = s[15:]
	} else {
		sp := strings.IndexByte(s, ' ')
		if sp < 0 {
			return 0, "", "", false
		}
		tt, err := time.Parse(time.RFC3339Nano, s[:sp])
		if err != nil {
			return 0, "", "", false
		}
		t, rest = tt.Unix(), s[sp:]
	}
	rest = strings.TrimLeft(rest, " ")
	sp := strings.IndexByte(rest, ' ') // after the host name
	if sp < 0 {
		return 0, "", "", false
	}
	rest = rest[sp+1:]
	colon := strings.Index(rest, ": ")
	if colon < 0 {
		return 0, "", "", false
	}
	prog, msg = rest[:colon], rest[colon+2:]
	if i := strings.IndexByte(prog, '['); i >= 0 {
		prog = prog[:i]
	}
	return t, prog, msg, true
}

// ParsePostfix parses one Postfix syslog line. Lines of other programs,
// and Postfix lines logscan does not count, give KindNone.
func (c Clock) ParsePostfix(line []byte) Event {
	t, prog, msg, ok := c.syslogHeader(strings.TrimRight(string(line), "\r\n"))
	if !ok || !strings.HasPrefix(prog, "postfix") {
		return Event{}
	}
	daemon := prog[strings.LastIndexByte(prog, '/')+1:]
	ev := Event{Time: t}
	if strings.HasPrefix(msg, "NOQUEUE: reject: ") {
		return parseNoqueue(ev, msg[len("NOQUEUE: reject: "):])
	}
	if strings.HasPrefix(msg, "warning: ") && strings.Contains(msg, " authentication failed") {
		// warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: ...
		w := msg[len("warning: "):]
		ev.Kind = KindAuthFail
		ev.Client = bracketIP(w[:max(strings.Index(w, ": "), 0)])
		ev.User = field(w, "sasl_username=")
		return ev
	}
	qid, body, ok := strings.Cut(msg, ": ")
	if !ok || !isQueueID(qid) {
		return Event{}
	}
	ev.QueueID = qid
	switch {
	case body == "removed":
		ev.Kind = KindRemoved
	case strings.HasPrefix(body, "client="):
		ev.Kind = KindClient
		ev.Client = bracketIP(field(body, "client="))
		ev.User = field(body, "sasl_username=")
	case strings.HasPrefix(body, "message-id="):
		ev.Kind = KindMessageID
		ev.Text = body[len("message-id="):]
	case daemon == "qmgr" && strings.HasPrefix(body, "from="):
		ev.Kind = KindFrom
		ev.From = sender(angle(field(body, "from=")))
		ev.Size, _ = strconv.ParseInt(field(body, "size="), 10, 64)
		n, _ := strconv.Atoi(field(body, "nrcpt="))
		ev.Nrcpt = n
	case strings.HasPrefix(body, "to="):
		ev.Status = statusOf(field(body, "status="))
		if ev.Status == StatusNone {
			return Event{}
		}
		ev.Kind = KindRcpt
		ev.To = strings.ToLower(angle(field(body, "to=")))
	default:
		return Event{}
	}
	return ev
}

// parseNoqueue reads "RCPT from host[ip]: 554 5.7.1 <to>: Relay access
// denied; from=<f> to=<t> proto=ESMTP helo=<h>".
func parseNoqueue(ev Event, s string) Event {
	ev.Kind = KindReject
	_, rest, _ := strings.Cut(s, " from ")
	if i := strings.Index(rest, ": "); i >= 0 {
		ev.Client = bracketIP(rest[:i])
		rest = rest[i+2:]
	}
	reason := rest
	if i := strings.LastIndex(rest, "; from="); i >= 0 {
		reason = rest[:i]
		rest = rest[i+2:]
		ev.From = sender(angle(field(rest, "from=")))
		ev.To = strings.ToLower(angle(field(rest, "to=")))
	}
	ev.Text = reason
	ev.Relay = strings.Contains(reason, "Relay access denied")
	return ev
}

// field returns the value of "key" in "a=1, key=v, b=2" or "key=v b=2".
// A value in <...> may hold spaces and commas.
func field(s, key string) string {
	i := 0
	for {
		j := strings.Index(s[i:], key)
		if j < 0 {
			return ""
		}
		j += i
		if j == 0 || s[j-1] == ' ' || s[j-1] == ',' {
			s = s[j+len(key):]
			break
		}
		i = j + len(key)
	}
	if strings.HasPrefix(s, "<") {
		if k := strings.IndexByte(s, '>'); k >= 0 {
			return s[:k+1]
		}
		return s
	}
	if k := strings.IndexAny(s, ", "); k >= 0 {
		return s[:k]
	}
	return s
}

func angle(s string) string {
	s = strings.TrimPrefix(s, "<")
	return strings.TrimSuffix(s, ">")
}

// sender lowercases an envelope sender; the null sender is "<>".
func sender(s string) string {
	if s == "" {
		return "<>"
	}
	return strings.ToLower(s)
}

// bracketIP returns the IP of "name[ip]" or "name[ip]:port".
func bracketIP(s string) string {
	i := strings.LastIndexByte(s, '[')
	j := strings.LastIndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}

func isQueueID(s string) bool {
	if len(s) < 5 || len(s) > 20 || s == "NOQUEUE" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

func statusOf(s string) Status {
	switch s {
	case "sent":
		return StatusSent
	case "deferred":
		return StatusDeferred
	case "bounced", "expired":
		return StatusBounced
	}
	return StatusNone
}
