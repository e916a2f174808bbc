package logscan

import (
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Clock turns syslog timestamps, which have no year and no zone, into
// times: Year is the year of the log (0: the current year), Loc its zone
// (nil: UTC).
type Clock struct {
	Year int
	Loc  *time.Location
}

// stamp turns the syslog "Mmm dd hh:mm:ss" fields into Unix seconds. It
// resolves the year once and caches the start of the last hour seen, so a
// line costs a few digit reads rather than a time.Date.
type stamp struct {
	year    int
	loc     *time.Location
	lastKey int // month<<16 | day<<8 | hour of base
	base    int64

	eximKey  int64 // year<<24 | month<<16 | day<<8 | hour, and the offset, of eximBase
	eximBase int64
}

func (c Clock) stamp() *stamp {
	st := &stamp{year: c.Year, loc: c.Loc, lastKey: -1, eximKey: -1}
	if st.loc == nil {
		st.loc = time.UTC
	}
	if st.year == 0 {
		st.year = time.Now().In(st.loc).Year()
	}
	return st
}

func month(s string) int {
	switch s {
	case "Jan":
		return 1
	case "Feb":
		return 2
	case "Mar":
		return 3
	case "Apr":
		return 4
	case "May":
		return 5
	case "Jun":
		return 6
	case "Jul":
		return 7
	case "Aug":
		return 8
	case "Sep":
		return 9
	case "Oct":
		return 10
	case "Nov":
		return 11
	case "Dec":
		return 12
	}
	return 0
}

// digits2 reads two decimal digits; a leading space counts as 0 when
// space is true (the day of month is space-padded).
func digits2(s string, space bool) (int, bool) {
	a, b := s[0], s[1]
	if a == ' ' && space {
		a = '0'
	}
	if a < '0' || a > '9' || b < '0' || b > '9' {
		return 0, false
	}
	return int(a-'0')*10 + int(b-'0'), true
}

// syslogHeader splits "Mmm dd hh:mm:ss host tag[pid]: msg" (or an RFC 3339
// timestamp in place of the first three fields) into the time, the
// program (the tag without [pid]) and the message.
func (st *stamp) syslogHeader(s string) (t int64, prog, msg string, ok bool) {
	var rest string
	if len(s) >= 16 && s[3] == ' ' && s[9] == ':' && s[12] == ':' {
		mon := month(s[:3])
		day, okd := digits2(s[4:6], true)
		h, okh := digits2(s[7:9], false)
		m, okm := digits2(s[10:12], false)
		sec, oks := digits2(s[13:15], false)
		if mon == 0 || !okd || !okh || !okm || !oks {
			return 0, "", "", false
		}
		if key := mon<<16 | day<<8 | h; key != st.lastKey {
			st.lastKey, st.base = key, time.Date(st.year, time.Month(mon), day, h, 0, 0, 0, st.loc).Unix()
		}
		t = st.base + int64(m*60+sec)
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
// and Postfix lines logscan does not count, give KindNone. The strings of
// the event are its own (line may be reused).
func (c Clock) ParsePostfix(line []byte) Event {
	ev := c.stamp().parsePostfix(unsafe.String(unsafe.SliceData(line), len(line)))
	ev.own()
	return ev
}

// own copies the event's strings out of the line they point into.
func (ev *Event) own() {
	for _, p := range [...]*string{&ev.QueueID, &ev.Client, &ev.User, &ev.From, &ev.To, &ev.Helo, &ev.Text} {
		*p = strings.Clone(*p)
	}
}

// parsePostfix is ParsePostfix without copies: the event's strings point
// into line. The scan keeps lines unchanged while their events live, and
// its aggregator copies the strings it keeps (see aggregator.intern).
func (st *stamp) parsePostfix(line string) Event {
	t, prog, msg, ok := st.syslogHeader(strings.TrimRight(line, "\r\n"))
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
	case strings.HasPrefix(body, "reject: ") || strings.HasPrefix(body, "milter-reject: "):
		// A refusal inside a session that already has a queue id (after
		// a first valid recipient with smtpd_delay_open_until_valid_rcpt,
		// or header/body checks): a reject like NOQUEUE's, not a message.
		_, r, _ := strings.Cut(body, "reject: ")
		return parseNoqueue(Event{Time: t}, r)
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
		ev.Size = atoi64(field(body, "size="))
		ev.Nrcpt = int(atoi64(field(body, "nrcpt=")))
	case strings.HasPrefix(body, "to="):
		ev.Status = statusOf(field(body, "status="))
		if ev.Status == StatusNone {
			return Event{}
		}
		ev.Kind = KindRcpt
		to := field(body, "to=")
		ev.To = lower(angle(to))
		rest := body[len("to=")+len(to):] // ", [orig_to=<...>, ]relay=..."
		ev.Forward = strings.HasPrefix(rest, ", orig_to=")
		ev.Dest = postfixDest(daemon, field(rest, "relay="))
		if ev.Dest == DestFilter && ev.Status == StatusSent {
			ev.Text = queuedAs(body)
		}
	case strings.HasPrefix(body, "warning: header Subject: ") || strings.HasPrefix(body, "info: header Subject: "):
		// header_checks WARN/INFO: "header Subject: Hi there from pc[10.0.0.5]; from=<a> to=<b> proto=ESMTP helo=<pc>"
		s := body[strings.Index(body, "Subject: ")+len("Subject: "):]
		if i := strings.LastIndex(s, "; from="); i >= 0 {
			s = s[:i]
		}
		if i := strings.LastIndex(s, " from "); i >= 0 {
			s = s[:i]
		}
		ev.Kind, ev.Text = KindSubject, s
	default:
		return Event{}
	}
	return ev
}

// atoi64 reads a non-negative decimal number; anything else is 0, as
// strconv.ParseInt's error case was.
func atoi64(s string) int64 {
	if len(s) == 0 || len(s) > 18 {
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			n, _ := strconv.ParseInt(s, 10, 64)
			return n
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// lower is strings.ToLower, which returns s itself when it has nothing to
// lower (so an aliasing string stays an alias, without a copy).
func lower(s string) string { return strings.ToLower(s) }

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
		ev.To = lower(angle(field(rest, "to=")))
	}
	ev.Text = reason
	ev.Relay = strings.Contains(reason, "Relay access denied")
	ev.Helo = angle(field(rest, "helo="))
	return ev
}

// postfixDest tells where a Postfix delivery agent sent a recipient: the
// local, virtual and lmtp agents (and pipe to a local delivery agent)
// deliver here; smtp to a loopback address is a content filter.
func postfixDest(daemon, relay string) Dest {
	switch {
	case daemon == "local" || daemon == "virtual" || relay == "local" || relay == "virtual":
		return DestLocal
	case strings.Contains(relay, "[127.") || strings.Contains(relay, "[::1]") || strings.HasPrefix(relay, "localhost["):
		return DestFilter
	case daemon == "lmtp" || strings.Contains(relay, "private/") || relay == "dovecot" || relay == "maildrop" || relay == "cyrus":
		return DestLocal
	case daemon == "smtp" || daemon == "relay":
		return DestRemote
	}
	return DestUnknown
}

// queuedAs returns X of "... status=sent (250 2.0.0 Ok: queued as X)".
func queuedAs(body string) string {
	i := strings.LastIndex(body, "queued as ")
	if i < 0 {
		return ""
	}
	id := body[i+len("queued as "):]
	if j := strings.IndexAny(id, ") ,;"); j >= 0 {
		id = id[:j]
	}
	if !isQueueID(id) {
		return ""
	}
	return id
}

// field returns the value of "key" in "a=1, key=v, b=2" or "key=v b=2".
// A value in <...> may hold spaces and commas.
func field(s, key string) string {
	s, ok := afterKey(s, key, " ,")
	if !ok {
		return ""
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

// afterKey returns what follows the first occurrence of key in s that
// starts s or follows one of the bytes in seps (so "to=" is not found
// inside "orig_to="); ok is false when there is none.
func afterKey(s, key, seps string) (rest string, ok bool) {
	i := 0
	for {
		j := strings.Index(s[i:], key)
		if j < 0 {
			return "", false
		}
		j += i
		if j == 0 || strings.IndexByte(seps, s[j-1]) >= 0 {
			return s[j+len(key):], true
		}
		i = j + len(key)
	}
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
	return lower(s)
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
