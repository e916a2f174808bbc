package smtpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
)

// admitListener runs the connection-time defences before go-smtp sees a
// connection: bans and connection limits (guard), DNS blocklists and the
// pre-greeting test (MX, untrusted clients only). Those checks take time
// (the pre-greet wait, DNS), so each runs in its own goroutine and only
// admitted connections are handed to Accept; a slow client never delays
// another's greeting.
type admitListener struct {
	net.Listener
	srv  *Server
	kind Kind

	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error
}

func newAdmitListener(l net.Listener, s *Server, kind Kind) *admitListener {
	al := &admitListener{Listener: l, srv: s, kind: kind, ready: make(chan net.Conn), done: make(chan struct{})}
	go al.acceptLoop()
	return al
}

func (l *admitListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Out of file descriptors and the like: wait and go on, as
			// net/http does, rather than stopping the listener.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || isTimeout(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.srv.log.Warn("accept", "err", err.Error(), "retry_in", backoff.String())
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Accept returns the next admitted connection.
func (l *admitListener) Accept() (net.Conn, error) {
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

func (l *admitListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// admit runs the checks for one connection and hands it on, or refuses it.
func (l *admitListener) admit(c net.Conn) {
	s := l.srv
	ip := remoteIP(c)
	trusted := s.isTrusted(ip)
	implicitTLS := l.kind == KindSubmissions
	release := func() {}
	refuse := func(code int, enh [3]int, text, rule string) {
		s.log.Info("rejected", "stage", "connect", "listener", l.kind.String(), "client_ip", ip.String(),
			"code", code, "status", fmt.Sprintf("%d.%d.%d", enh[0], enh[1], enh[2]), "reason", text, "rule", rule)
		if !implicitTLS { // a plaintext reply inside a TLS handshake would be noise
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", code, enh[0], enh[1], enh[2], text)
		}
		c.Close()
		release()
	}
	if s.cfg.Guard != nil {
		d, rel := s.cfg.Guard.ConnectTo(guard.Pool(l.kind.String()), ip, trusted)
		if d.Verdict != guard.Accept {
			refuse(d.Code, d.Enhanced, d.Text, d.Rule)
			return
		}
		release = rel
	}
	if l.kind == KindMX && !trusted {
		if s.cfg.DNSBL != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			zone, reason, listed := s.cfg.DNSBL.Listed(ctx, ip)
			cancel()
			if listed {
				text := fmt.Sprintf("Service unavailable; client [%s] blocked using %s", ip, zone)
				if reason != "" {
					text += "; " + reason
				}
				refuse(554, [3]int{5, 7, 1}, text, "dnsbl")
				return
			}
		}
		if d := s.cfg.PregreetDelay; d > 0 && !s.pregreetPassed(ip) {
			_ = c.SetReadDeadline(time.Now().Add(d))
			var b [1]byte
			n, err := c.Read(b[:])
			_ = c.SetReadDeadline(time.Time{})
			switch {
			case n > 0:
				refuse(554, [3]int{5, 5, 1}, "Protocol error: you talked before my greeting", "pregreet")
				return
			case err != nil && !isTimeout(err):
				c.Close() // the client left
				release()
				return
			}
			s.markPregreetPassed(ip)
		}
	}
	t := &sessionConn{Conn: c, onClose: release}
	if d := s.cfg.MaxSessionTime; d > 0 {
		t.timer = time.AfterFunc(d, func() {
			s.log.Info("session time limit", "listener", l.kind.String(), "client_ip", ip.String(), "limit", d.String())
			t.Close()
		})
	}
	var conn net.Conn = t
	if implicitTLS {
		conn = tlsServer(t, s.cfg.TLS)
	}
	select {
	case l.ready <- conn:
	case <-l.done:
		conn.Close()
	}
}

// pregreetCacheMax bounds the memory of clients that passed the test.
const pregreetCacheMax = 100000

func (s *Server) pregreetPassed(ip netip.Addr) bool {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	t, ok := s.pgPassed[ip]
	return ok && time.Since(t) < 24*time.Hour
}

func (s *Server) markPregreetPassed(ip netip.Addr) {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	if s.pgPassed == nil || len(s.pgPassed) >= pregreetCacheMax {
		s.pgPassed = make(map[netip.Addr]time.Time)
	}
	s.pgPassed[ip] = time.Now()
}
