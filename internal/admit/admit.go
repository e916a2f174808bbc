// Package admit runs the connection-time defences of every listener —
// SMTP, IMAP, POP3 — before the protocol library sees a connection.
//
// It exists so that the guard's admission is one piece every door uses,
// not SMTP-only code: bans (made by any protocol's login failures) and
// the per-listener, per-class connection budgets hold on every port, a
// session's total time is capped, and implicit TLS is started only for
// admitted clients. Checks take time (a pre-greeting wait, DNS), so each
// connection is admitted in its own goroutine and only admitted ones are
// handed to Accept: a slow client never delays another's greeting.
package admit

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
)

// Refusal is why a connection was refused, in SMTP terms (the guard's
// decisions are written that way); each protocol words it its own way.
type Refusal struct {
	Code     int
	Enhanced [3]int
	Text     string
	Rule     string
}

// Connector is the guard's connection admission.
type Connector interface {
	ConnectTo(pool guard.Pool, ip netip.Addr, trusted bool) (guard.Decision, func())
}

// Config configures one listener's admission.
type Config struct {
	// Name is the listener's name ("smtp", "imaps", ...): the guard pool
	// its connections count against, and the log's listener field.
	Name  string
	Guard Connector // nil: no connection limits (tests)
	// Trusted reports whether ip is in the trusted networks (its own
	// connection class); nil: nobody is.
	Trusted func(ip netip.Addr) bool
	// Check runs listener-specific checks after the guard admitted the
	// connection (port 25: DNS blocklists, the pre-greeting test). A nil
	// Refusal admits; close=true means the client left: close silently.
	Check func(c net.Conn, ip netip.Addr, trusted bool) (r *Refusal, closed bool)
	// Refuse writes the protocol's refusal line before the connection is
	// closed; nil closes silently. Never called on implicit-TLS listeners
	// (a plaintext line inside a TLS handshake is noise).
	Refuse func(w io.Writer, r Refusal)
	// TLS, when set, starts implicit TLS on admitted connections: Accept
	// then returns *tls.Conn.
	TLS *tls.Config
	// MaxSessionTime closes a connection after this long, whatever the
	// client does; 0 means no limit.
	MaxSessionTime time.Duration
	// SessionTime, when set, gives MaxSessionTime for each connection as
	// it is admitted (a reloaded setting applies to new sessions).
	SessionTime func() time.Duration
	// LoginTime, when set, closes a connection that has not logged in
	// (MarkAuthenticated) this long after it was admitted: mailbox
	// protocols, where nothing but logging in is any use to a client.
	LoginTime time.Duration
	// HandshakeTimeout bounds an implicit-TLS handshake (default 30 s).
	HandshakeTimeout time.Duration
	Log              *slog.Logger
	// Metrics counts connections by result and open sessions; nil: none.
	Metrics *metrics.Metrics
}

// Listener wraps a net.Listener with admission.
type Listener struct {
	net.Listener
	cfg Config

	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error
}

// Listen starts admitting connections from l.
func Listen(l net.Listener, cfg Config) *Listener {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	al := &Listener{Listener: l, cfg: cfg, ready: make(chan net.Conn), done: make(chan struct{})}
	go al.acceptLoop()
	return al
}

func (l *Listener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Out of file descriptors and the like: wait and go on, as
			// net/http does, rather than stopping the listener.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || IsTimeout(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.cfg.Log.Warn("accept", "listener", l.cfg.Name, "err", err.Error(), "retry_in", backoff.String())
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.Close()
			return
		}
		backoff = 0
		go l.admit(c)
	}
}

// IsTimeout reports a network time-out.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Accept returns the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// RemoteIP is a connection's client address.
func RemoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit runs the checks for one connection and hands it on, or refuses it.
func (l *Listener) admit(c net.Conn) {
	ip := RemoteIP(c)
	trusted := l.cfg.Trusted != nil && l.cfg.Trusted(ip)
	release := func() {}
	refuse := func(r Refusal) {
		l.cfg.Log.Info("rejected", "stage", "connect", "listener", l.cfg.Name, "client_ip", ip.String(),
			"code", r.Code, "reason", r.Text, "rule", r.Rule)
		l.cfg.Metrics.ConnectionRefused(l.cfg.Name, r.Rule)
		if l.cfg.TLS == nil && l.cfg.Refuse != nil {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			l.cfg.Refuse(c, r)
		}
		c.Close()
		release()
	}
	if l.cfg.Guard != nil {
		d, rel := l.cfg.Guard.ConnectTo(guard.Pool(l.cfg.Name), ip, trusted)
		if d.Verdict != guard.Accept {
			refuse(Refusal{Code: d.Code, Enhanced: d.Enhanced, Text: d.Text, Rule: d.Rule})
			return
		}
		release = rel
	}
	if l.cfg.Check != nil {
		r, closed := l.cfg.Check(c, ip, trusted)
		if closed {
			l.cfg.Metrics.ConnectionClosed(l.cfg.Name)
			c.Close()
			release()
			return
		}
		if r != nil {
			refuse(*r)
			return
		}
	}
	l.cfg.Metrics.SessionOpened(l.cfg.Name)
	sc := &sessionConn{Conn: c, onClose: func() {
		release()
		l.cfg.Metrics.SessionClosed(l.cfg.Name)
	}}
	sc.mu.Lock()
	d := l.cfg.MaxSessionTime
	if l.cfg.SessionTime != nil {
		d = l.cfg.SessionTime()
	}
	if d > 0 {
		sc.timer = time.AfterFunc(d, func() {
			l.cfg.Log.Info("session time limit", "listener", l.cfg.Name, "client_ip", ip.String(), "limit", d.String())
			sc.Close()
		})
	}
	if d := l.cfg.LoginTime; d > 0 {
		sc.loginTimer = time.AfterFunc(d, func() {
			l.cfg.Log.Info("no login in time", "listener", l.cfg.Name, "client_ip", ip.String(), "limit", d.String())
			sc.Close()
		})
	}
	sc.mu.Unlock()
	var conn net.Conn = sc
	if l.cfg.TLS != nil {
		// The handshake runs here, under a deadline: a client that never
		// sends its ClientHello must not hold a connection slot (the
		// protocol libraries would start it lazily, with no read
		// deadline of their own).
		tc := tls.Server(sc, l.cfg.TLS)
		_ = tc.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
		if err := tc.Handshake(); err != nil {
			l.cfg.Log.Debug("tls handshake failed", "listener", l.cfg.Name, "client_ip", ip.String(), "err", err.Error())
			tc.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		conn = tc
	}
	select {
	case l.ready <- conn:
	case <-l.done:
		conn.Close()
	}
}

// sessionConn is an admitted connection with the limits that outlive any
// one command: it releases the guard's connection slot when closed and
// ends the session when its time limit passes, whatever the client does.
// It never looks at the bytes: every protocol decision is the protocol
// library's parse.
type sessionConn struct {
	net.Conn

	onClose   func() // releases the guard's connection slot
	closeOnce sync.Once

	mu         sync.Mutex
	timer      *time.Timer // session time limit
	loginTimer *time.Timer // Config.LoginTime; stopped by MarkAuthenticated
}

// MarkAuthenticated tells the admission of c (a connection Accept
// returned, or a *tls.Conn over one) that its client has logged in, which
// stops its Config.LoginTime limit. Other connections are ignored.
func MarkAuthenticated(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if sc, ok := c.(*sessionConn); ok {
		sc.mu.Lock()
		if sc.loginTimer != nil {
			sc.loginTimer.Stop()
		}
		sc.mu.Unlock()
	}
}

// Close closes the connection once, stopping the session timer and
// releasing the connection slot.
func (c *sessionConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		if c.loginTimer != nil {
			c.loginTimer.Stop()
		}
		c.mu.Unlock()
		err = c.Conn.Close()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}
