package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/mail"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/guard"
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
	ip := remoteIP(c.Conn())
	_, isTLS := c.TLSConnectionState()
	sess := &session{
		srv:     s,
		kind:    b.kind,
		conn:    c,
		tap:     tapOf(c.Conn()),
		ip:      ip,
		trusted: s.isTrusted(ip),
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
	kind    Kind
	conn    *smtp.Conn
	tap     *tapConn
	ip      netip.Addr
	trusted bool
	helo    string
	tls     bool
	user    string // authenticated login
	log     *slog.Logger

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
	s.log.Debug("disconnect")
	if r := s.srv.cfg.Recorder; r != nil && (len(s.sum.Transactions) > 0 || len(s.sum.Rejects) > 0 || s.sum.AuthFailures > 0) {
		s.sum.End = time.Now()
		s.sum.User = s.user
		r.RecordSession(s.sum)
	}
	return nil
}

func smtpErr(r *policy.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

func (s *session) reject(stage, arg string, e *smtp.SMTPError) error {
	s.noteReject(stage)
	s.log.Info("rejected", "stage", stage, "arg", arg, "user", s.user, "code", e.Code,
		"status", fmt.Sprintf("%d.%d.%d", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2]), "reason", e.Message)
	return e
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.kind != KindMX && s.user == "" && !s.trusted {
		return s.reject("mail", from, &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"})
	}
	if opts != nil && opts.Size > 0 && s.srv.cfg.MaxMessageBytes > 0 && opts.Size > s.srv.cfg.MaxMessageBytes {
		return s.reject("mail", from, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message size %d exceeds the limit of %d bytes", opts.Size, s.srv.cfg.MaxMessageBytes)})
	}
	if st := s.srv.cfg.Storage; st != nil {
		var size int64
		if opts != nil {
			size = opts.Size
		}
		if err := st(size); err != nil {
			s.log.Warn("storage low", "err", err.Error())
			return s.reject("mail", from, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
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
		return s.reject("mail", from, smtpErr(rep))
	}
	s.Reset()
	s.hasFrom = true
	s.from = addr.String()
	s.smtputf = opts != nil && opts.UTF8
	s.log.Debug("mail", "from", s.from, "user", s.user)
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	routed := s.tap != nil && s.tap.takeRouted(to)
	d := policy.CheckRcpt(policy.RcptInput{
		Rcpt:          to,
		SourceRouted:  routed,
		Authenticated: s.user != "",
		Trusted:       s.trusted,
		IsLocalDomain: s.srv.dir.IsLocalDomain,
		LocalIPs:      s.srv.cfg.LocalIPs,
	})
	if d.Reject != nil {
		s.guardRcpt(to, false)
		return s.reject("rcpt", to, smtpErr(d.Reject))
	}
	addr := d.Addr.String()
	targets := []string{addr}
	if d.Local {
		var ok bool
		targets, ok = s.srv.dir.Lookup(addr)
		if !ok || len(targets) == 0 {
			s.guardRcpt(addr, false)
			return s.reject("rcpt", to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
				Message: fmt.Sprintf("<%s>: Recipient address rejected: User unknown", addr)})
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
			return s.reject("rcpt", to, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"})
		}
		s.seen[k] = true
		s.rcpts = append(s.rcpts, t)
	}
	s.log.Debug("rcpt", "rcpt", addr, "local", d.Local, "targets", len(targets))
	return nil
}

func (s *session) Data(r io.Reader) error {
	if !s.hasFrom || len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Need MAIL and RCPT first"}
	}
	// One budget for the whole DATA phase, so a client cannot trickle a
	// message forever one byte per command timeout.
	_ = s.conn.Conn().SetReadDeadline(time.Now().Add(s.srv.cfg.DataTimeout))
	body, reserved, err := s.srv.readBody(r)
	defer s.srv.bodyBytes.Add(-reserved)
	if err != nil {
		if errors.Is(err, errBodyBudget) {
			s.log.Warn("data refused: in-flight message memory budget exhausted", "budget", s.srv.cfg.MaxInflightBytes)
			return s.reject("data", "", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
				Message: "Insufficient system resources, try again later"})
		}
		if errors.Is(err, smtp.ErrDataTooLarge) {
			return s.reject("data", "", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
				Message: fmt.Sprintf("Message exceeds the size limit of %d bytes", s.srv.cfg.MaxMessageBytes)})
		}
		s.log.Info("data aborted", "err", err.Error())
		return err
	}
	hdr, err := readHeader(body)
	if err != nil {
		return s.reject("data", "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message header: " + err.Error()})
	}
	if n := len(hdr.Values("Received")); n >= s.srv.cfg.MaxReceived {
		return s.reject("data", "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6},
			Message: fmt.Sprintf("Too many Received headers (%d): mail loop", n)})
	}
	if s.user != "" {
		if e := s.checkHeaderFrom(hdr); e != nil {
			if g := s.srv.cfg.Guard; g != nil {
				g.Message(guard.Message{Sender: s.sender(), Rcpts: s.rcpts, Foreign: s.foreignRcpts(),
					Subject: decodeSubject(hdr.Get("Subject")), HeaderFromMismatch: true})
			}
			return s.reject("data", hdr.Get("From"), e)
		}
	}
	origin := queue.OriginInbound
	switch {
	case s.user != "":
		origin = queue.OriginSubmitted
	case s.trusted:
		origin = queue.OriginTrusted
	}
	subject := decodeSubject(hdr.Get("Subject"))
	// Content first (attachment policy, virus scan): its verdict is also a
	// signal for the guard — a PC that suddenly mails executables is a worm.
	cv := ContentVerdict{Action: "accept"}
	if cf := s.srv.cfg.Content; cf != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.DataTimeout)
		cv = cf(ctx, s.sender(), s.rcpts, body)
		cancel()
		if cv.Action == "defer" {
			return s.reject("data", cv.Rule, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
				Message: "Content scanner unavailable, try again later"})
		}
	}
	hit := ""
	if cv.Action == "reject" || cv.Action == "hold" {
		hit = cv.Rule
	}
	var av AuthVerdict
	if origin == queue.OriginInbound && s.srv.cfg.Verify != nil {
		body = stripAuthResults(body, s.srv.cfg.Hostname)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		av = s.srv.cfg.Verify(ctx, s.ip, s.helo, s.from, body)
		cancel()
	}
	state, rule := queue.StateActive, ""
	if g := s.srv.cfg.Guard; g != nil {
		gd := g.Message(guard.Message{Sender: s.sender(), Rcpts: s.rcpts, Foreign: s.foreignRcpts(), Subject: subject, ContentHit: hit, AuthFail: av.Fail})
		switch gd.Verdict {
		case guard.Accept:
		case guard.Hold:
			state, rule = queue.StateHeld, gd.Rule
		default:
			return s.guardRefusal("data", "", gd)
		}
	}
	switch cv.Action {
	case "", "accept":
	case "hold":
		if state != queue.StateHeld { // an isolated sender's rule stays the first reason
			state, rule = queue.StateHeld, cv.Rule
		}
	default:
		return s.reject("data", cv.Rule, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Message refused: " + cv.Reason})
	}
	if av.Reject {
		return s.reject("data", "dmarc", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Rejected by the sender domain's DMARC policy: " + av.Reason})
	}
	if origin != queue.OriginInbound && s.srv.cfg.Sign != nil {
		body = s.srv.cfg.Sign(body)
	}
	msg := append(s.receivedHeader(), av.Header...)
	msg = append(msg, body...)
	m, err := s.srv.spool.Enqueue(queue.Meta{
		From:     s.from,
		Rcpts:    rcptList(s.rcpts),
		ClientIP: s.ip.String(),
		Helo:     s.helo,
		User:     s.user,
		Origin:   origin,
		Subject:  subject,
		Size:     int64(len(msg)),
		State:    state,
		Rule:     rule,
	}, msg)
	if err != nil {
		if errors.Is(err, queue.ErrFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return s.reject("data", "", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Queue full, try again later"})
		}
		s.log.Error("enqueue failed", "err", err.Error())
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error while queueing, try again later"}
	}
	s.noteQueued(m.ID, m.From, s.rcpts, subject, string(state), rule)
	s.log.Info("queued", "queue_id", m.ID, "from", m.From, "rcpts", len(m.Rcpts), "size", m.Size, "user", s.user,
		"origin", string(origin), "state", string(state), "rule", rule)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + m.ID}
}

// checkHeaderFrom applies the sender login map to the header From (and
// Sender): an authenticated user may only put addresses it owns there.
func (s *session) checkHeaderFrom(h textproto.MIMEHeader) *smtp.SMTPError {
	for _, field := range []string{"From", "Sender"} {
		v := h.Get(field)
		if v == "" {
			continue
		}
		list, err := mail.ParseAddressList(v)
		if err != nil {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: fmt.Sprintf("Malformed %s header", field)}
		}
		for _, a := range list {
			pa, err := policy.ParseAddress(a.Address)
			if err != nil || !s.srv.dir.Owns(s.user, pa.String()) {
				return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
					Message: fmt.Sprintf("%s header address <%s> not owned by user %s", field, a.Address, s.user)}
			}
		}
	}
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
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (mamori) with %s", helo, s.ip, s.srv.cfg.Hostname, proto)
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

// readHeader parses the header block of a message (up to the first empty
// line). A message without a header/body separator is all header.
func readHeader(msg []byte) (textproto.MIMEHeader, error) {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = bytes.Index(msg, []byte("\n\n"))
	}
	if end < 0 {
		end = len(msg)
	}
	head := msg[:end]
	if len(bytes.TrimSpace(head)) == 0 {
		return textproto.MIMEHeader{}, nil
	}
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(head), strings.NewReader("\r\n\r\n"))))
	h, err := r.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return h, err
	}
	return h, nil
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

func (s *session) sender() guard.Sender {
	return guard.Sender{IP: s.ip, User: s.user, From: s.from, Trusted: s.trusted}
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
	if g := s.srv.cfg.Guard; g != nil {
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
	return s.reject(stage, arg, &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: text})
}

