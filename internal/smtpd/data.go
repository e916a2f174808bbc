package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/admit"
	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/msgheader"
	"github.com/mamori-mail/mamori/internal/policy"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Data receives a message, checks it and queues it. The header is parsed
// once (msgheader) and that one view is what every check reads: author
// rules, sender authentication, DKIM signing, subject. The 250 reply goes
// out only once the queue has the message on disk.
func (s *session) Data(r io.Reader) error {
	if !s.hasFrom || len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Need MAIL and RCPT first"}
	}
	// One budget for the whole DATA phase, so a client cannot trickle a
	// message forever one byte per command timeout.
	_ = s.conn.Conn().SetReadDeadline(time.Now().Add(s.cfg.DataTimeout))
	mem := s.srv.newBudget(s.outsider())
	defer mem.release()
	// go-smtp renews the read deadline for every BDAT command, so the
	// whole-phase limit is also checked on every read.
	body, err := mem.readBody(&deadlineReader{r: r, deadline: time.Now().Add(s.cfg.DataTimeout)})
	if err != nil {
		return s.dataReadError(err)
	}
	// Bare CR and bare LF become CRLF now, before any check: what is
	// checked, signed, stored and sent are the same lines. (A bare CR in a
	// header would otherwise be one line to our parser and two to the next
	// hop, after relaying normalises it.)
	// The normalised message is what is stored and sent, so it is what
	// the size limit applies to; its size is known, checked and reserved
	// before the copy is made.
	if n := mimeconv.NormalizedLen(body); n != len(body) {
		if limit := s.cfg.MaxMessageBytes; limit > 0 && int64(n) > limit {
			return s.dataReadError(smtp.ErrDataTooLarge)
		}
		if !mem.take(int64(n)) {
			return s.dataReadError(errBodyBudget)
		}
		norm := mimeconv.NormalizeCRLF(body)
		mem.give(int64(len(body)))
		body = norm
	}
	hdr, err := msgheader.Parse(body, msgheader.Limits{})
	if err != nil {
		return s.reject("data", metrics.ReasonHeader, "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Malformed message header: " + err.Error()})
	}
	if n := hdr.Count("Received"); n >= s.cfg.MaxReceived {
		return s.reject("data", metrics.ReasonLoop, "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6},
			Message: fmt.Sprintf("Too many Received headers (%d): mail loop", n)})
	}
	subject := decodeSubject(hdr.Get("Subject"))
	// RFC 5322 section 3.6: exactly one From, at most one Sender. Anything
	// else is refused, not guessed at: two readers of an ambiguous header
	// can disagree about who wrote the message.
	authors, err := hdr.Authors()
	if err != nil {
		return s.reject("data", metrics.ReasonAuthor, "", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: err.Error()})
	}
	if s.user != "" {
		if e := s.checkAuthors(authors); e != nil {
			if g := s.cfg.Guard; g != nil {
				g.Message(guard.Message{Sender: s.sender(), Rcpts: s.rcpts, Foreign: s.foreignRcpts(),
					Subject: subject, HeaderFromMismatch: true})
			}
			return s.reject("data", metrics.ReasonAuthor, hdr.Get("From"), e)
		}
	}
	origin := queue.OriginInbound
	switch {
	case s.user != "":
		origin = queue.OriginSubmitted
	case s.trusted:
		origin = queue.OriginTrusted
	}
	// Content first (attachment policy, virus scan): its verdict is also a
	// signal for the guard — a PC that suddenly mails executables is a worm.
	// What the check may hold (decoded parts, held archive entries) is
	// reserved from the scan pool first, waiting for other checks if need
	// be: they always finish.
	cv := content.Verdict{Action: content.Accept}
	if cf := s.cfg.Content; cf != nil {
		var err error
		if cv, err = s.checkContent(cf, body); err != nil {
			return s.dataReadError(err)
		}
		if cv.Action == content.Defer {
			return s.reject("data", metrics.ReasonScanner, string(cv.Rule), &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
				Message: "Content scanner unavailable, try again later"})
		}
	}
	hit := ""
	if cv.Action == content.Reject || cv.Action == content.Hold {
		hit = string(cv.Rule)
	}
	var av AuthVerdict
	var drop []msgheader.Field
	if origin == queue.OriginInbound {
		drop = ourAuthResults(hdr, s.cfg.Hostname)
		av = s.verify(hdr, authors, body)
	}
	state, rule, heldBy := queue.StateActive, "", ""
	if g := s.cfg.Guard; g != nil {
		gd := g.Message(guard.Message{Sender: s.sender(), Rcpts: s.rcpts, Foreign: s.foreignRcpts(), Subject: subject, ContentHit: hit, AuthFail: av.Fail})
		switch gd.Verdict {
		case guard.Accept:
		case guard.Hold:
			state, rule, heldBy = queue.StateHeld, gd.Rule, metrics.HeldGuard
		default:
			return s.guardRefusal("data", "", gd)
		}
	}
	switch cv.Action {
	case 0, content.Accept:
	case content.Hold:
		if state != queue.StateHeld { // an isolated sender's rule stays the first reason
			state, rule, heldBy = queue.StateHeld, string(cv.Rule), metrics.HeldContent
		}
	default:
		return s.reject("data", metrics.ReasonContent, string(cv.Rule), &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Message refused: " + cv.Reason})
	}
	if len(av.Unsigned) > 0 && av.UnsignedTemp {
		return s.reject("data", metrics.ReasonOwnDomain, "own-domain", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "Could not verify the DKIM signature of " + av.Unsigned[0] + " now, try again later"})
	}
	if len(av.Unsigned) > 0 {
		return s.reject("data", metrics.ReasonOwnDomain, "own-domain", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Header From uses our domain %s, but this message comes from outside without a valid DKIM signature of that domain; our users must log in to send", av.Unsigned[0])})
	}
	if av.Reject {
		return s.reject("data", metrics.ReasonDMARC, "dmarc", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Rejected by the sender domain's DMARC policy: " + av.Reason})
	}
	var sigs []byte
	if origin != queue.OriginInbound && s.cfg.Sign != nil {
		sigs = s.cfg.Sign(authors.Domains(), body)
	}
	// The queue writes the parts from these buffers: no copy of the
	// message is made for it.
	parts := [][]byte{s.receivedHeader(), []byte(av.Header), sigs}
	parts = append(parts, withoutFields(body, drop)...)
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	m, err := s.srv.spool.Enqueue(queue.Meta{
		From:     s.from,
		Rcpts:    rcptList(s.rcpts),
		ClientIP: s.ip.String(),
		Helo:     s.helo,
		User:     s.user,
		Origin:   origin,
		Subject:  subject,
		Size:     int64(size),
		State:    state,
		Rule:     rule,
	}, parts...)
	if err != nil {
		if errors.Is(err, queue.ErrFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return s.reject("data", metrics.ReasonResources, "", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Queue full, try again later"})
		}
		s.log.Error("enqueue failed", "err", err.Error())
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error while queueing, try again later"}
	}
	s.noteQueued(m.ID, m.From, s.rcpts, subject, string(state), rule)
	s.cfg.Metrics.MessageAccepted(string(origin))
	if heldBy != "" {
		s.cfg.Metrics.MessageHeld(heldBy)
	}
	s.log.Info("queued", "queue_id", m.ID, "from", m.From, "rcpts", len(m.Rcpts), "size", m.Size, "user", s.user,
		"origin", string(origin), "state", string(state), "rule", rule)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + m.ID}
}

// dataReadError turns a failure while receiving or holding the message
// into a reply. Only a message that can never be accepted gets a 5xx;
// time-outs and broken connections are temporary and say nothing about
// our internals.
func (s *session) dataReadError(err error) error {
	switch {
	case errors.Is(err, errBodyBudget):
		s.log.Warn("data refused: in-flight message memory budget exhausted", "budget", s.cfg.MaxInflightBytes)
		return s.reject("data", metrics.ReasonResources, "", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
			Message: "Insufficient system resources, try again later"})
	case errors.Is(err, smtp.ErrDataTooLarge):
		return s.reject("data", metrics.ReasonSize, "", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message exceeds the size limit of %d bytes", s.cfg.MaxMessageBytes)})
	case admit.IsTimeout(err):
		s.log.Info("data timeout", "limit", s.cfg.DataTimeout.String())
		s.endSoon()
		return s.reject("data", metrics.ReasonTimeout, "", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
			Message: s.cfg.Hostname + " Timeout while receiving the message, closing connection"})
	}
	s.log.Info("data aborted", "err", err.Error())
	s.endSoon()
	return s.reject("data", metrics.ReasonAborted, "", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0},
		Message: s.cfg.Hostname + " Error while receiving the message, closing connection"})
}

// endSoon makes the session end right after the current reply: go-smtp
// writes it, its next read fails, and it closes the connection.
func (s *session) endSoon() {
	_ = s.conn.Conn().SetReadDeadline(time.Now().Add(50 * time.Millisecond))
}

// verify runs sender authentication on an inbound message. Authors in our
// own domains need a valid DKIM signature aligned with that domain,
// whatever SPF or DMARC say: our users submit authenticated, so such mail
// from outside is forged unless it is signed.
func (s *session) verify(hdr *msgheader.Header, authors msgheader.Authors, body []byte) AuthVerdict {
	var local []string
	for _, d := range authors.Domains() {
		if s.srv.dir.IsLocalDomain(d) {
			local = append(local, d)
		}
	}
	if s.cfg.Verify == nil {
		return AuthVerdict{Unsigned: local, Fail: len(local) > 0}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.cfg.Verify(ctx, VerifyRequest{IP: s.ip, Helo: s.helo, MailFrom: s.from,
		Header: hdr, Authors: authors.Domains(), Local: local, Msg: body})
}

// checkAuthors applies the sender login map to the header: an
// authenticated user may only put addresses it owns in every From mailbox
// and in Sender.
func (s *session) checkAuthors(a msgheader.Authors) *smtp.SMTPError {
	for _, m := range a.Mailboxes() {
		pa, err := policy.ParseAddress(m.Address)
		if err != nil || !s.srv.dir.Owns(s.user, pa.String()) {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
				Message: fmt.Sprintf("Header address <%s> not owned by user %s", msgheader.Printable(m.Address), s.user)}
		}
	}
	return nil
}

// deadlineReader fails once its deadline has passed, whatever the
// connection's own read deadline says.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, os.ErrDeadlineExceeded
	}
	return d.r.Read(p)
}

// scanWait bounds how long a message waits for room in the scan pool: the
// client is waiting for its reply, and one that gives up and retries
// would get the message twice if we queued it afterwards.
const scanWait = time.Minute

// checkContent runs the content check of body with what it may hold
// reserved from the scan pool first. The wait for room is bounded
// (errBodyBudget: 452, try again), and the check then gets its own full
// time, not what the wait left of it.
func (s *session) checkContent(cf func(context.Context, guard.Sender, []string, []byte) content.Verdict, body []byte) (content.Verdict, error) {
	need := min(s.cfg.ContentMemory(len(body)), s.srv.scanLimit)
	wctx, wcancel := context.WithTimeout(context.Background(), min(scanWait, s.cfg.DataTimeout))
	err := s.srv.scanMem.Acquire(wctx, need)
	wcancel()
	if err != nil {
		return content.Verdict{}, errBodyBudget
	}
	defer s.srv.scanMem.Release(need) // what the check held is garbage after it
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DataTimeout)
	defer cancel()
	return cf(ctx, s.sender(), s.rcpts, body), nil
}
