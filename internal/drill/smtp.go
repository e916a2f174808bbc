package drill

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// client is one SMTP connection to the submission listener.
type client struct {
	c    *smtp.Client
	conn *capConn
}

// capConn bounds every wait on the connection by the drill's timeout and
// ends it when the drill's context ends. go-smtp allows 5 minutes per
// command and none between commands; a drill against a server that stops
// answering should give up after seconds.
type capConn struct {
	net.Conn
	ctx     context.Context
	timeout time.Duration
}

func (c *capConn) SetDeadline(t time.Time) error {
	lim := time.Now().Add(c.timeout)
	if c.ctx.Err() != nil {
		lim = time.Unix(1, 0)
	}
	if t.IsZero() || t.After(lim) {
		t = lim
	}
	return c.Conn.SetDeadline(t)
}

// dialSubmission connects to addr from src (zero: the system's choice),
// says EHLO and starts TLS. The drill proves defences, not certificates,
// so it does not verify the server's.
func dialSubmission(ctx context.Context, addr string, src netip.Addr, timeout time.Duration) (*client, error) {
	d := net.Dialer{Timeout: timeout}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: net.IP(src.AsSlice())}
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := &capConn{Conn: raw, ctx: ctx, timeout: timeout}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = conn.SetDeadline(time.Time{})
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err != nil {
		raw.Close()
		return nil, err
	}
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	return &client{c: c, conn: conn}, nil
}

// watch ends a blocked exchange when ctx ends; call the result when done.
func (cl *client) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { _ = cl.conn.Conn.SetDeadline(time.Unix(1, 0)) })
}

// auth runs AUTH PLAIN.
func (cl *client) auth(ctx context.Context, user, password string) error {
	defer cl.watch(ctx)()
	return cl.c.Auth(sasl.NewPlainClient("", user, password))
}

// send submits one message; the error is the server's refusal, if any.
func (cl *client) send(ctx context.Context, from, to string, msg []byte) error {
	defer cl.watch(ctx)()
	if err := cl.c.Mail(from, nil); err != nil {
		_ = cl.c.Reset()
		return err
	}
	if err := cl.c.Rcpt(to, nil); err != nil {
		_ = cl.c.Reset()
		return err
	}
	w, err := cl.c.Data()
	if err != nil {
		_ = cl.c.Reset()
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// close says QUIT (briefly) and closes the connection.
func (cl *client) close() {
	cl.conn.timeout = min(cl.conn.timeout, 2*time.Second)
	_ = cl.c.Quit()
	_ = cl.c.Close()
}

// replyOf returns the SMTP reply code and text carried by err (0 when err
// is not a server reply).
func replyOf(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		enh := ""
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			enh = fmt.Sprintf("%d.%d.%d ", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return se.Code, fmt.Sprintf("%d %s%s", se.Code, enh, oneLine(se.Message))
	}
	return 0, ""
}

// connectionGone reports whether err means the server refused or closed
// the connection (rather than answering).
func connectionGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// describe turns a failed exchange into a short phrase for the report.
func describe(err error) string {
	if code, text := replyOf(err); code != 0 {
		return text
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case connectionGone(err):
		return "connection closed"
	}
	return oneLine(err.Error())
}

// oneLine makes server-controlled text safe to print on one line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " / ")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
