package alert

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"mime"
	"mime/quotedprintable"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/guard"
)

// adminMail builds the postmaster mail for a. sum, when it holds alerts,
// says how many similar alerts were held back since the last mail.
func (n *Notifier) adminMail(a guard.Alert, sum pending, now time.Time) (outMail, bool) {
	if n.postmaster == "" {
		return outMail{}, false
	}
	subject := fmt.Sprintf("[mamori] %s %s: %s", clean(a.Kind), who(a), clean(a.Rule))
	if sum.n > 0 {
		subject += fmt.Sprintf(" (+%d more)", sum.n)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "mamori guard alert: %s\n\n", clean(a.Kind))
	field(&b, "Time", a.Time.Format(time.RFC3339))
	field(&b, "Kind", a.Kind)
	field(&b, "IP", a.IP)
	field(&b, "User", a.User)
	field(&b, "Sender", a.Sender)
	field(&b, "Rule", a.Rule)
	field(&b, "Detail", a.Detail)
	if len(a.Counts) > 0 {
		b.WriteString("\nCounts:\n")
		for _, k := range sortedKeys(a.Counts) {
			fmt.Fprintf(&b, "  %s: %d\n", clean(k), a.Counts[k])
		}
	}
	list(&b, "Sample subjects", a.Subjects, maxSamples)
	list(&b, "Sample recipients", a.Rcpts, maxSamples)
	if len(a.Extra) > 0 {
		b.WriteString("\nMore:\n")
		for _, k := range sortedKeys(a.Extra) {
			fmt.Fprintf(&b, "  %s: %s\n", clean(k), clean(a.Extra[k]))
		}
	}
	if sum.n > 0 {
		fmt.Fprintf(&b, "\nSuppressed: %d more %q alerts for this sender since %s were not mailed one by one\n"+
			"(at most one mail per %v); the latest is shown above.\n",
			sum.n, clean(a.Kind), sum.since.Format(time.RFC3339), n.cfg.MinInterval)
		list(&b, "Their sample subjects", sum.subjects, maxSamples)
		list(&b, "Their sample recipients", sum.rcpts, maxSamples)
	}
	actions(&b, a)
	return n.message(n.postmaster, subject, a.Kind, b.String(), now), true
}

// digestMail builds the mail that summarises the alerts of kind that went
// over the per-kind cap.
func (n *Notifier) digestMail(kind string, p pending, now time.Time) (outMail, bool) {
	if n.postmaster == "" {
		return outMail{}, false
	}
	subject := fmt.Sprintf("[mamori] %s: %d more alerts (summary)", clean(kind), p.n)
	var b strings.Builder
	fmt.Fprintf(&b, "mamori guard alert summary: %s\n\n", clean(kind))
	fmt.Fprintf(&b, "%d more %q alerts since %s were not mailed one by one\n"+
		"(more than %d in %v). Every alert is in the log (event \"alert\").\n",
		p.n, clean(kind), p.since.Format(time.RFC3339), maxPerKind, n.cfg.MinInterval)
	list(&b, "IPs", withMore(p.ips, p.moreIPs), maxDigestNames+1)
	list(&b, "Users", withMore(p.users, p.moreUsers), maxDigestNames+1)
	list(&b, "Rules", p.rules, maxDigestNames)
	list(&b, "Sample subjects", p.subjects, maxSamples)
	list(&b, "Sample recipients", p.rcpts, maxSamples)
	b.WriteString("\nWhat you can do (add --config FILE):\n")
	b.WriteString("  See every isolated sender, suspended account and ban:\n    mamori guard list\n")
	b.WriteString("  See the held mail:\n    mamori queue list --state held\n")
	return n.message(n.postmaster, subject, kind, b.String(), now), true
}

// userMail builds the notice to a suspended user at their Notify address.
func (n *Notifier) userMail(a guard.Alert, now time.Time) (outMail, bool) {
	if a.Kind != "suspended" || a.User == "" {
		return outMail{}, false
	}
	to, ok := n.notify[strings.ToLower(a.User)]
	if !ok {
		return outMail{}, false
	}
	user := clean(a.User)
	subject := fmt.Sprintf("[mamori] your mail account %s was suspended", user)
	var b strings.Builder
	fmt.Fprintf(&b, "Your mail account %s was suspended at %s\n", user, a.Time.Format(time.RFC3339))
	fmt.Fprintf(&b, "by the mail server's abuse protection (rule %s).\n\n", clean(a.Rule))
	if a.Detail != "" {
		fmt.Fprintf(&b, "Why: %s\n\n", clean(a.Detail))
	}
	b.WriteString("While it is suspended, nobody can log in with it or send mail from it,\n" +
		"and the mail it had queued is held, not sent.\n\n" +
		"If this was not you, someone else probably knows your password.\n" +
		"Contact your mail administrator (postmaster) to change it and have\n" +
		"the account released. Do not reply to this message.\n")
	return n.message(to, subject, a.Kind, b.String(), now), true
}

// actions writes the commands that act on a.
func actions(b *strings.Builder, a guard.Alert) {
	var cmds [][2]string
	ip, user := a.IP, a.User
	switch a.Kind {
	case "isolated", "suspended":
		for _, t := range []struct{ flag, val string }{{"--client-ip", ip}, {"--user", user}} {
			if t.val == "" || (a.Kind == "suspended" && t.flag == "--client-ip") {
				continue
			}
			v := shellQuote(t.val)
			cmds = append(cmds,
				[2]string{"See the held mail of " + v, "mamori queue list --state held " + t.flag + " " + v},
				[2]string{"Release " + v + " (its held mail is then delivered)", "mamori guard release " + v},
				[2]string{"Or delete the held mail of " + v + " (after saving the evidence)", "mamori queue delete --state held " + t.flag + " " + v},
			)
		}
	case "banned":
		if ip != "" {
			cmds = append(cmds,
				[2]string{"Lift the ban", "mamori guard unban " + shellQuote(ip)},
				[2]string{"See its mail still queued", "mamori queue list --client-ip " + shellQuote(ip)})
		}
	case "own_ip_listed":
		cmds = append(cmds,
			[2]string{"Find the sender that got us listed", "mamori guard list"},
			[2]string{"See outbound mail waiting", "mamori queue list --state deferred"},
			[2]string{"See held mail", "mamori queue list --state held"})
	case "released":
		return
	}
	cmds = append(cmds, [2]string{"See every isolated sender, suspended account and ban", "mamori guard list"})
	b.WriteString("\nWhat you can do (add --config FILE):\n")
	for _, c := range cmds {
		fmt.Fprintf(b, "  %s:\n    %s\n", c[0], c[1])
	}
}

// message renders a complete RFC 5322 message with CRLF line endings.
func (n *Notifier) message(to, subject, kind, body string, now time.Time) outMail {
	subject = truncate(clean(subject), 2*maxValue)
	// ASCII text is not encoded, so text that looks like an RFC 2047
	// encoded-word would be decoded by the reader's mail program (into
	// anything, line breaks included): break the lookalike.
	subject = strings.ReplaceAll(subject, "=?", "= ?")
	var m bytes.Buffer
	h := func(name, value string) { fmt.Fprintf(&m, "%s: %s\r\n", name, value) }
	h("Date", now.Format(time.RFC1123Z))
	h("From", "mamori guard <"+n.from+">")
	h("To", "<"+clean(to)+">")
	h("Subject", fold(len("Subject: "), mime.QEncoding.Encode("utf-8", subject)))
	h("Message-ID", "<"+messageID(now)+"@"+n.host+">")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	// RFC 3834: no vacation replies or other automatic answers to alerts.
	h("Auto-Submitted", "auto-generated")
	h("X-Mamori-Alert", token(kind))
	m.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&m)
	_, _ = qp.Write([]byte(body)) // writes to a bytes.Buffer do not fail
	_ = qp.Close()
	if !bytes.HasSuffix(m.Bytes(), []byte("\r\n")) {
		m.WriteString("\r\n")
	}
	return outMail{to: to, subject: subject, msg: m.Bytes()}
}

// fold breaks a header value at spaces so that no line is longer than 78
// characters where it can be helped (RFC 5322 §2.2.3); unfolding restores
// the value exactly. start is the length of "Name: ".
func fold(start int, v string) string {
	var b strings.Builder
	n := start
	for i, w := range strings.Split(v, " ") {
		if i > 0 {
			if n+1+len(w) > 78 {
				b.WriteString("\r\n")
				n = 0
			}
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

func field(b *strings.Builder, name, value string) {
	if value != "" {
		fmt.Fprintf(b, "%-8s %s\n", name+":", clean(value))
	}
}

// list writes at most limit values of vals under title.
func list(b *strings.Builder, title string, vals []string, limit int) {
	if len(vals) == 0 {
		return
	}
	fmt.Fprintf(b, "\n%s:\n", title)
	for i, v := range vals {
		if i == limit {
			fmt.Fprintf(b, "  … and %d more\n", len(vals)-i)
			break
		}
		fmt.Fprintf(b, "  - %s\n", clean(v))
	}
}

func withMore(vals []string, more bool) []string {
	if more {
		return append(slices.Clone(vals), "(and more)")
	}
	return vals
}

// who names the subject of an alert for the mail subject.
func who(a guard.Alert) string {
	switch {
	case a.IP != "" && a.User != "":
		return clean(a.IP) + " (" + clean(a.User) + ")"
	case a.IP != "":
		return clean(a.IP)
	case a.User != "":
		return clean(a.User)
	case a.Sender != "":
		return clean(a.Sender)
	}
	return "-"
}

// clean makes attacker-supplied text safe to quote in a header or a body
// line: invalid UTF-8 and every control character (CR and LF included)
// become a space or U+FFFD, runs of spaces collapse, and the result is at
// most maxValue runes.
func clean(s string) string {
	var b strings.Builder
	space := false
	runes := 0
	for _, r := range s { // invalid UTF-8 comes out as U+FFFD
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == ' ' ||
			r == '\u2028' || r == '\u2029' || r == '\u0085' {
			space = true
			continue
		}
		if runes >= maxValue {
			b.WriteString("…")
			break
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
		runes++
	}
	return b.String()
}

// truncate bounds s to max runes.
func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max]) + "…"
}

// token keeps [A-Za-z0-9._-] only: for header values that must stay one
// bare word.
func token(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
		if b.Len() >= 64 {
			break
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// safeHost returns h if it looks like a host name, else "localhost".
func safeHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if h == "" || len(h) > 253 {
		return "localhost"
	}
	for _, r := range h {
		if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z') {
			return "localhost"
		}
	}
	return h
}

// shellQuote quotes s for a POSIX shell unless it is made only of
// characters that need no quoting: the admin copies these commands.
func shellQuote(s string) string {
	s = clean(s)
	safe := s != ""
	for _, r := range s {
		if !(r == '@' || r == '%' || r == '+' || r == '=' || r == ':' || r == ',' || r == '.' || r == '/' || r == '_' || r == '-' ||
			r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func messageID(now time.Time) string {
	var r [8]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("%d.%s", now.UnixNano(), hex.EncodeToString(r[:]))
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
