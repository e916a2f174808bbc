package smtpd

import (
	"bytes"
	"fmt"
	"log/slog"
	"mime"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/admit"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/policy"
	"github.com/mamori-mail/mamori/internal/queue"
)

// maxExpandedRcpts bounds the mailboxes one message may fan out to after
// alias expansion.
const maxExpandedRcpts = 10000

type backend struct {
	srv  *Server
	kind Kind
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := b.srv
	ip := admit.RemoteIP(c.Conn())
	_, isTLS := c.TLSConnectionState()
	sess := &session{
		srv:     s,
		cfg:     s.conf(),
		kind:    b.kind,
		conn:    c,
		ip:      ip,
		trusted: s.isTrusted(ip),
		peer:    s.isPeer(ip),
		helo:    c.Hostname(),
		tls:     isTLS,
	}
	sess.log = s.log.With("sid", strconv.FormatUint(s.nextSID.Add(1), 36), "client_ip", ip.String(), "listener", b.kind.String())
	sess.sum = SessionSummary{Start: time.Now(), Listener: b.kind.String(), ClientIP: ip.String(), Helo: sess.helo, TLS: isTLS, Trusted: sess.trusted}
	sess.log.Info("connect", "helo", sess.helo, "tls", isTLS, "trusted", sess.trusted)
	if b.kind == KindMX {
		return sess, nil
	}
	return &authSession{sess}, nil
}

// session is one SMTP conversation after EHLO. It holds the envelope of
// the transaction in progress.
type session struct {
	srv     *Server
	cfg     *Config // as when the session began: a reload applies to new sessions
	kind    Kind
	conn    *smtp.Conn
	ip      netip.Addr
	trusted bool
	peer    bool // a node of this cluster (also trusted)
	helo    string
	tls     bool
	user    string // authenticated login
	log     *slog.Logger
	forget  func() // removes the session from cfg.Sessions; nil before AUTH

	hasFrom bool
	from    string
	rcpts   []string // final recipients after alias expansion
	seen    map[string]bool
	smtputf bool

	sum SessionSummary
}

func (s *session) Reset() {
	s.hasFrom, s.from, s.rcpts, s.seen, s.smtputf = false, "", nil, nil, false
}

func (s *session) Logout() error {
	if s.forget != nil {
		s.forget()
	}
	s.log.Debug("disconnect")
	if r := s.cfg.Recorder; r != nil && (len(s.sum.Transactions) > 0 || len(s.sum.Rejects) > 0 || s.sum.AuthFailures > 0) {
		s.sum.End = time.Now()
		s.sum.User = s.user
		r.RecordSession(s.sum)
	}
	return nil
}

func smtpErr(r *policy.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// reject logs and counts a refusal; reason is one of the metrics.Reason*
// constants (a fixed set: never anything the client sent).
func (s *session) reject(stage, reason, arg string, e *smtp.SMTPError) error {
	s.noteReject(stage)
	s.cfg.Metrics.MessageRefused(stage, reason)
	s.log.Info("rejected", "stage", stage, "arg", arg, "user", s.user, "code", e.Code,
		"status", fmt.Sprintf("%d.%d.%d", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2]), "reason", e.Message)
	return e
}

// mailReason names a sender refusal of the policy package.
func mailReason(r *policy.Reply) string {
	if r.Enhanced[1] == 1 { // 5.1.7 bad sender address syntax
		return metrics.ReasonAddress
	}
	return metrics.ReasonSender
}

// rcptReason names a recipient refusal of the policy package: 5.7.1 is
// relay denied (foreign domains, source routes, %-hacks), 5.1.x a bad
// address.
func rcptReason(r *policy.Reply) string {
	if r.Enhanced[1] == 7 {
		return metrics.ReasonRelay
	}
	return metrics.ReasonAddress
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.kind != KindMX && s.user == "" && !s.trusted {
		return s.reject("mail", metrics.ReasonAuthRequired, from, &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"})
	}
	if opts != nil && opts.Size > 0 && s.cfg.MaxMessageBytes > 0 && opts.Size > s.cfg.MaxMessageBytes {
		return s.reject("mail", metrics.ReasonSize, from, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message size %d exceeds the limit of %d bytes", opts.Size, s.cfg.MaxMessageBytes)})
	}
	if opts != nil && opts.Size > 0 && s.srv.bodyBytes.Load()+opts.Size > s.srv.newBudget(s.outsider()).limit {
		// Cheaper for both sides than refusing after the whole message
		// has been sent.
		s.log.Warn("mail refused: in-flight message memory budget exhausted", "budget", s.cfg.MaxInflightBytes, "size", opts.Size)
		return s.reject("mail", metrics.ReasonResources, from, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
			Message: "Insufficient system resources, try again later"})
	}
	if st := s.cfg.Storage; st != nil {
		var size int64
		if opts != nil {
			size = opts.Size
		}
		if err := st(size); err != nil {
			s.log.Warn("storage low", "err", err.Error())
			return s.reject("mail", metrics.ReasonResources, from, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
				Message: "Insufficient system storage, try again later"})
		}
	}
	addr, rep := policy.CheckMail(policy.MailInput{
		From:          from,
		Authenticated: s.user != "",
		User:          s.user,
		Trusted:       s.trusted,
		IsLocalDomain: s.srv.dir.IsLocalDomain,
		Owns:          s.srv.dir.Owns,
	})
	if rep != nil {
		return s.reject("mail", mailReason(rep), from, smtpErr(rep))
	}
	s.Reset()
	s.hasFrom = true
	s.from = addr.String()
	s.smtputf = opts != nil && opts.UTF8
	s.log.Debug("mail", "from", s.from, "user", s.user)
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.EqualFold(to, "postmaster") && s.cfg.Domain != "" {
		// RFC 5321 section 4.5.1: "RCPT TO:<Postmaster>" without a domain
		// must be accepted; it means the postmaster of this server.
		to = "postmaster@" + s.cfg.Domain
	}
	d := policy.CheckRcpt(policy.RcptInput{
		Rcpt:          to,
		Authenticated: s.user != "",
		Trusted:       s.trusted,
		IsLocalDomain: s.srv.dir.IsLocalDomain,
		LocalIPs:      s.cfg.LocalIPs,
	})
	if d.Reject != nil {
		s.guardRcpt(to, false)
		return s.reject("rcpt", rcptReason(d.Reject), to, smtpErr(d.Reject))
	}
	addr := d.Addr.String()
	targets := []string{addr}
	if d.Local {
		var ok bool
		targets, ok = s.srv.dir.Lookup(addr)
		if !ok || len(targets) == 0 {
			s.guardRcpt(addr, false)
			return s.reject("rcpt", metrics.ReasonUnknownUser, to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
				Message: fmt.Sprintf("<%s>: Recipient address rejected: User unknown", addr)})
		}
		if full := s.cfg.OverQuota; full != nil && allFull(targets, s.srv.dir.IsLocalDomain, full) {
			// Refused now, so the sender's server keeps it and retries:
			// no bounce later, and none from us to a forged sender.
			return s.reject("rcpt", metrics.ReasonOverQuota, to, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2},
				Message: fmt.Sprintf("<%s>: Mailbox full, try again later", addr)})
		}
	}
	if gd := s.guardRcpt(addr, true); gd.Verdict != guard.Accept && gd.Verdict != guard.Hold {
		return s.guardRefusal("rcpt", addr, gd)
	}
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	for _, t := range targets {
		k := strings.ToLower(t)
		if s.seen[k] {
			continue
		}
		if len(s.rcpts) >= maxExpandedRcpts {
			return s.reject("rcpt", metrics.ReasonTooManyRcpts, to, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"})
		}
		s.seen[k] = true
		s.rcpts = append(s.rcpts, t)
	}
	s.log.Debug("rcpt", "rcpt", addr, "local", d.Local, "targets", len(targets))
	return nil
}

// receivedHeader builds the trace header of RFC 5321 §4.4, with the
// protocol keywords of RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA).
func (s *session) receivedHeader() []byte {
	suffix := ""
	if _, isTLS := s.conn.TLSConnectionState(); isTLS {
		suffix += "S"
	}
	if s.user != "" {
		suffix += "A"
	}
	proto := "ESMTP" + suffix
	if s.smtputf {
		proto = "UTF8SMTP" + suffix // RFC 6531 §3.7.3
	}
	helo := sanitizeHeaderValue(s.helo)
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (mamori) with %s", helo, s.ip, s.cfg.Hostname, proto)
	if len(s.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitizeHeaderValue(s.rcpts[0]))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format(time.RFC1123Z))
	return b.Bytes()
}

func sanitizeHeaderValue(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' {
			return '_'
		}
		return r
	}, v)
}

func rcptList(addrs []string) []queue.Rcpt {
	out := make([]queue.Rcpt, len(addrs))
	for i, a := range addrs {
		out[i] = queue.Rcpt{Addr: a}
	}
	return out
}

func decodeSubject(s string) string {
	dec := new(mime.WordDecoder)
	if d, err := dec.DecodeHeader(s); err == nil {
		s = d
	}
	if len(s) > 998 {
		s = s[:998]
	}
	return s
}

// outsider reports an unauthenticated client from outside on port 25.
func (s *session) outsider() bool { return s.kind == KindMX && s.user == "" && !s.trusted }

func (s *session) sender() guard.Sender {
	// Only what a peer passes on to port 25 unauthenticated is mail it
	// checked and counted already; a login through it is a user's.
	peer := s.peer && s.user == "" && s.kind == KindMX
	return guard.Sender{IP: s.ip, User: s.user, From: s.from, Trusted: s.trusted, Peer: peer}
}

func (s *session) foreignRcpts() int {
	n := 0
	for _, r := range s.rcpts {
		if i := strings.LastIndexByte(r, '@'); i >= 0 && !s.srv.dir.IsLocalDomain(r[i+1:]) {
			n++
		}
	}
	return n
}

// guardRcpt tells the guard about a recipient (accepted or refused).
func (s *session) guardRcpt(rcpt string, accepted bool) guard.Decision {
	if g := s.cfg.Guard; g != nil {
		return g.Rcpt(s.sender(), rcpt, accepted)
	}
	return guard.Decision{}
}

// guardRefusal turns a guard decision into the SMTP reply; a Drop also ends
// the session right after the reply.
func (s *session) guardRefusal(stage, arg string, d guard.Decision) error {
	code, enh, text := d.Code, d.Enhanced, d.Text
	if code == 0 {
		code, enh, text = 451, [3]int{4, 7, 1}, "Temporarily refused by policy, try again later"
	}
	if d.Verdict == guard.Drop {
		// go-smtp writes our reply first; the next read then times out and
		// it closes the connection.
		_ = s.conn.Conn().SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	}
	s.log.Info("guard", "stage", stage, "arg", arg, "user", s.user, "rule", d.Rule, "verdict", int(d.Verdict))
	return s.reject(stage, metrics.ReasonGuard, arg, &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: text})
}

// allFull reports whether every target is a local mailbox at or over its
// quota. An alias with one full member among others is accepted: the
// others must not wait for it (its delivery is deferred instead).
func allFull(targets []string, isLocal func(string) bool, full func(string) bool) bool {
	for _, t := range targets {
		at := strings.LastIndexByte(t, '@')
		if at < 0 || !isLocal(t[at+1:]) || !full(t) {
			return false
		}
	}
	return len(targets) > 0
}
