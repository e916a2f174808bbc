package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// Limits of a session.
const (
	// DefaultIdleTimeout is the autologout timer: RFC 1939 section 3 asks
	// for at least 10 minutes.
	DefaultIdleTimeout = 10 * time.Minute
	// handshakeTimeout bounds a TLS handshake (pop3s or after STLS).
	handshakeTimeout = 30 * time.Second
	// maxCommandLine is RFC 2449 section 4's limit, CRLF included.
	maxCommandLine = 255
	// maxSASLLine bounds a response line of the AUTH exchange; RFC 5034
	// lets it be longer than a command.
	maxSASLLine = 2048
	// maxDiscard is how much of a too-long line is skipped before the
	// connection is closed instead.
	maxDiscard = 64 << 10
	// maxBadCommands closes a connection that keeps sending garbage.
	maxBadCommands = 10
	// maxFailedLogins closes a connection after that many refusals.
	maxFailedLogins = 3
	// maxAuthCommands bounds the commands before a login.
	maxAuthCommands = 25
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("pop3d: server closed")

// Authenticator checks a password login: login.Authenticator, the one
// login check of every protocol.
type Authenticator = login.Authenticator

// Config configures a Server.
type Config struct {
	// Hostname is named in the greeting.
	Hostname string
	// TLS is used for STLS on plain connections. Without it a plain
	// connection can never log in.
	TLS *tls.Config
	// Store holds the maildrops (each user's INBOX).
	Store *mailbox.Store
	// Login checks passwords (through the guard).
	Login Authenticator
	// Sessions, if set, registers every logged-in session, so that a
	// revoked credential ends it at once (nothing is deleted: no QUIT).
	Sessions *login.Sessions
	// Log receives session events; nil discards them.
	Log *slog.Logger
	// IdleTimeout closes a connection idle that long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Server serves POP3 on any number of listeners.
type Server struct {
	cfg      Config
	log      *slog.Logger
	openDrop func(user string) (maildrop, error)
	locks    lockTable
	// ctx ends at Shutdown; it interrupts TLS handshakes.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.openDrop = func(user string) (maildrop, error) { return openInbox(cfg.Store, user) }
	return s
}

// Serve accepts connections on l and serves each until it ends. The
// connections are taken as admitted; those that are *tls.Conn (pop3s)
// count as secure from the start. Serve returns ErrServerClosed after
// Shutdown, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("pop3d: accept: %w", err)
			}
			// Out of file descriptors and the like: back off and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("pop3 accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		_, secure := c.(*tls.Conn)
		ss := s.register(c, secure)
		if ss == nil {
			_ = c.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			ss.serve()
		}()
	}
}

// register makes a session for c, or returns nil once shutting down.
func (s *Server) register(c net.Conn, secure bool) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	ss := newSession(s, c, secure)
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	return ss
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops the listeners and ends every session: one waiting for a
// command is told the server is going away and closed (deleting
// nothing), one in a command finishes it first (a QUIT finishes its
// expunge). When ctx ends first, the remaining connections are closed
// and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.cancel()
	for l := range s.listeners {
		_ = l.Close()
	}
	for ss := range s.sessions {
		ss.interruptLocked()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for ss := range s.sessions {
			_ = ss.conn.Close()
		}
		s.mu.Unlock()
		return fmt.Errorf("pop3d: shutdown: %w", ctx.Err())
	}
}

// lockTable is RFC 1939's exclusive-access lock on a maildrop, keyed by
// the canonical login.
type lockTable struct {
	mu   sync.Mutex
	held map[string]struct{}
}

// acquire takes user's lock; ok is false when another session holds it.
func (t *lockTable) acquire(user string) (release func(), ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, busy := t.held[user]; busy {
		return nil, false
	}
	if t.held == nil {
		t.held = make(map[string]struct{})
	}
	t.held[user] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.held, user)
			t.mu.Unlock()
		})
	}, true
}
