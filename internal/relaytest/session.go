package relaytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Bounds on what a server may send back, so a hostile or broken target
// cannot make the client allocate without limit.
const (
	maxReplyLine  = 2048 // octets, CRLF included (RFC 5321 says 512)
	maxReplyLines = 100
	quitTimeout   = 2 * time.Second
)

// reply is one SMTP reply: its code and its raw lines without CRLF.
type reply struct {
	code  int
	lines []string
}

func (r reply) String() string { return strings.Join(r.lines, "\n") }

// firstWord returns the first word of the first line's text, e.g. the host
// name in "220 mx.example.org ESMTP".
func (r reply) firstWord() string {
	if len(r.lines) == 0 || len(r.lines[0]) < 5 {
		return ""
	}
	f := strings.Fields(r.lines[0][4:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// session is one SMTP connection to the target, past EHLO.
type session struct {
	conn      net.Conn
	r         *bufio.Reader
	w         *textproto.Writer
	timeout   time.Duration
	stop      func() bool // unregisters the context watcher
	remoteIP  netip.Addr
	greetName string // first word of the 220 greeting
	ehloName  string // first word of the EHLO reply
	probes    int    // probes run on this connection
	broken    bool   // the connection must not be used again
}

// dial connects, reads the greeting and says EHLO (HELO if EHLO is refused).
func dial(ctx context.Context, opt Options) (*session, error) {
	d := net.Dialer{Timeout: opt.Timeout}
	if opt.LocalAddr != "" {
		// Checked by withDefaults.
		d.LocalAddr = &net.TCPAddr{IP: net.IP(netip.MustParseAddr(opt.LocalAddr).AsSlice())}
	}
	conn, err := d.DialContext(ctx, "tcp", opt.Addr)
	if err != nil {
		return nil, err
	}
	s := &session{
		conn:    conn,
		r:       bufio.NewReaderSize(conn, maxReplyLine),
		w:       textproto.NewWriter(bufio.NewWriter(conn)),
		timeout: opt.Timeout,
	}
	// Cancelling ctx unblocks any read or write in progress.
	s.stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		s.remoteIP = ap.Addr().Unmap()
	}
	if err := s.arm(ctx); err != nil {
		s.close()
		return nil, err
	}

	greet, err := s.readReply()
	if err != nil {
		s.close()
		return nil, fmt.Errorf("reading greeting: %w", err)
	}
	if greet.code != 220 {
		s.close()
		return nil, fmt.Errorf("server refused the session: %s", oneLine(greet.String()))
	}
	s.greetName = greet.firstWord()

	hello, err := s.cmd("EHLO %s", opt.HeloName)
	if err == nil && hello.code != 250 {
		hello, err = s.cmd("HELO %s", opt.HeloName)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if hello.code != 250 {
		s.close()
		return nil, fmt.Errorf("EHLO and HELO refused: %s", oneLine(hello.String()))
	}
	s.ehloName = hello.firstWord()
	return s, nil
}

// arm gives the next exchange opt.Timeout, unless ctx is already done.
func (s *session) arm(ctx context.Context) error {
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	// Checked after SetDeadline: a cancellation racing with it has either
	// been seen here or its watcher runs after and wins.
	return ctx.Err()
}

// probe runs one MAIL/RCPT(/DATA)/RSET exchange. An error means the
// outcome is unknown (the connection failed before RCPT was answered);
// s.broken then says the connection is unusable.
func (s *session) probe(ctx context.Context, opt Options, spec probeSpec) (Probe, error) {
	var p Probe
	s.probes++
	if err := s.arm(ctx); err != nil {
		s.broken = true
		return p, err
	}
	mail, err := s.cmd("MAIL FROM:<%s>", spec.from)
	if err != nil {
		s.broken = true
		return p, fmt.Errorf("MAIL: %w", err)
	}
	if mail.code/100 != 2 {
		p.Stage, p.Reply, p.Code = "MAIL", mail.String(), mail.code
		s.reset(mail)
		return p, nil
	}
	rcpt, err := s.cmd("RCPT TO:<%s>", spec.rcpt)
	if err != nil {
		s.broken = true
		return p, fmt.Errorf("RCPT: %w", err)
	}
	p.Stage, p.Reply, p.Code = "RCPT", rcpt.String(), rcpt.code
	if rcpt.code/100 == 2 && !spec.control {
		p.Relayed = true
		if opt.SendData {
			p.DataReply, p.Relayed = s.data(spec)
		}
	}
	s.reset(rcpt)
	return p, nil
}

// data sends a small test message after an accepted RCPT. It reports the
// final reply and whether the server accepted the message. When the
// exchange fails the recipient stays counted as relayed: the server
// already accepted it.
func (s *session) data(spec probeSpec) (string, bool) {
	r, err := s.cmd("DATA")
	if err != nil {
		s.broken = true
		return "no reply to DATA: " + err.Error(), true
	}
	if r.code != 354 {
		return r.String(), false
	}
	dw := s.w.DotWriter()
	from := spec.from
	if from == "" {
		from = "MAILER-DAEMON"
	}
	_, err = fmt.Fprintf(dw, "From: <%s>\r\nTo: <%s>\r\nSubject: mamori relaytest probe %s\r\n"+
		"Date: %s\r\nMessage-ID: <relaytest.%d@%s>\r\n\r\n"+
		"This message was sent by mamori relaytest, an open-relay check.\r\n"+
		"If it was delivered, the server that received it relays mail for anyone.\r\n",
		from, spec.rcpt, spec.name, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), defaultForeign)
	if err == nil {
		err = dw.Close()
	}
	if err != nil {
		s.broken = true
		return "sending message: " + err.Error(), true
	}
	final, err := s.readReply()
	if err != nil {
		s.broken = true
		return "no reply after message: " + err.Error(), true
	}
	return final.String(), final.code/100 == 2
}

// reset ends the transaction with RSET; after a 421, or when RSET is not
// answered 250, the connection is marked broken instead.
func (s *session) reset(last reply) {
	if last.code == 421 {
		s.broken = true
		return
	}
	r, err := s.cmd("RSET")
	if err != nil || r.code != 250 {
		s.broken = true
	}
}

// cmd sends one command line and reads its reply.
func (s *session) cmd(format string, args ...any) (reply, error) {
	if err := s.w.PrintfLine(format, args...); err != nil {
		return reply{}, fmt.Errorf("sending command: %w", err)
	}
	return s.readReply()
}

// readReply reads one possibly multi-line reply ("250-a", "250 b").
func (s *session) readReply() (reply, error) {
	var r reply
	for {
		if len(r.lines) >= maxReplyLines {
			return reply{}, fmt.Errorf("reply longer than %d lines", maxReplyLines)
		}
		raw, err := s.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return reply{}, fmt.Errorf("reply line longer than %d octets", maxReplyLine)
		case errors.Is(err, io.EOF):
			return reply{}, fmt.Errorf("connection closed by server: %w", io.ErrUnexpectedEOF)
		case err != nil:
			return reply{}, fmt.Errorf("reading reply: %w", err)
		}
		line := strings.TrimRight(string(raw), "\r\n")
		if len(line) < 3 {
			return reply{}, fmt.Errorf("malformed reply line %q", oneLine(line))
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 100 || code > 599 || line[0] == '+' || line[0] == '-' {
			return reply{}, fmt.Errorf("malformed reply code in %q", oneLine(line))
		}
		if r.code != 0 && code != r.code {
			return reply{}, fmt.Errorf("reply code changed within a multi-line reply: %q", oneLine(line))
		}
		r.code = code
		r.lines = append(r.lines, line)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
		if line[3] != '-' {
			return reply{}, fmt.Errorf("malformed reply line %q", oneLine(line))
		}
	}
}

// quit says QUIT, briefly waits for the answer, and closes.
// When the context is already done it only closes.
func (s *session) quit() {
	if s.stop() && !s.broken {
		_ = s.conn.SetDeadline(time.Now().Add(min(s.timeout, quitTimeout)))
		_, _ = s.cmd("QUIT")
	}
	_ = s.conn.Close()
}

func (s *session) close() {
	s.stop()
	_ = s.conn.Close()
}
