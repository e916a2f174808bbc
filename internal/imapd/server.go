package imapd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-mail/mamori/internal/admit"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"golang.org/x/sync/semaphore"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// Authenticator checks a password login: login.Authenticator, the one
// login check of every protocol.
type Authenticator = login.Authenticator

// Config configures a Server.
type Config struct {
	Hostname string
	// TLS is required: STARTTLS on plain listeners, and LOGIN and
	// AUTHENTICATE are refused before TLS (LOGINDISABLED).
	TLS   *tls.Config
	Store *mailbox.Store
	Login Authenticator
	// Sessions, if set, registers every logged-in session, so that a
	// revoked credential ends it (BYE) at once.
	Sessions *login.Sessions
	// AppendLimit is the largest message APPEND takes (APPENDLIMIT);
	// 0 means defaultAppendLimit.
	AppendLimit int64
	// AppendMemory bounds what all APPENDs together hold in memory (each
	// holds up to twice its message while it is read and stored); an
	// APPEND waits up to appendWait for room, then gets NO [LIMIT].
	// 0 means 4 × AppendLimit; less than 2 × AppendLimit is raised to it.
	AppendMemory int64
	// ReadMemory bounds what all FETCH and SEARCH commands together hold
	// in memory while they take messages apart (BODY[section], BINARY,
	// BODYSTRUCTURE, SEARCH BODY/TEXT); BODY[] is streamed and costs
	// nothing. A command waits up to readWait for room, then gets
	// NO [LIMIT]. 0 means AppendMemory.
	ReadMemory int64
	Log        *slog.Logger
}

// defaultAppendLimit is go-imap's own default.
const defaultAppendLimit = 100 << 20

// idleRescan is how often an idling session looks at the disk for
// changes made by other processes; changes made through the store in
// this process wake it at once (Folder.Changed).
const idleRescan = 3 * time.Second

// dropDelay lets the tagged reply to a refused login go out before the
// BYE that ends a connection the guard dropped.
const dropDelay = 50 * time.Millisecond

// caps are the capabilities the server advertises on top of those
// imapserver adds by itself (SASL-IR, LITERAL-, STARTTLS, AUTH=PLAIN or
// LOGINDISABLED, UNSELECT, ENABLE, IDLE, UTF8=ACCEPT, APPENDLIMIT=N).
var caps = imap.CapSet{
	imap.CapIMAP4rev1:    {},
	imap.CapIMAP4rev2:    {},
	imap.CapNamespace:    {},
	imap.CapUIDPlus:      {},
	imap.CapESearch:      {},
	imap.CapListExtended: {},
	imap.CapListStatus:   {},
	imap.CapMove:         {},
	imap.CapStatusSize:   {},
	imap.CapBinary:       {},
	imap.CapChildren:     {},
	imap.CapSpecialUse:   {},
	imap.CapLiteralPlus:  {},
	imap.CapID:           {},
}

// Server is the IMAP server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	imap   *imapserver.Server
	recent *recentTracker
	// appendMem is the APPEND memory budget (Config.AppendMemory).
	appendMem *semaphore.Weighted
	// readMem is the FETCH/SEARCH memory budget (Config.ReadMemory).
	readMem *semaphore.Weighted
	// appendLimit is the APPENDLIMIT in force (Config.AppendLimit, then
	// SetAppendLimit).
	appendLimit atomic.Int64

	mu       sync.Mutex
	closed   bool
	sessions sync.WaitGroup
}

// SetAppendLimit changes the largest message APPEND takes, for sessions
// that begin afterwards and commands after it (a reload). The memory
// budgets were sized at New: a limit above half the APPEND budget is
// lowered to it, and the limit in force is returned.
func (s *Server) SetAppendLimit(n int64) int64 {
	if n <= 0 || n > 1<<32-1 {
		n = defaultAppendLimit
	}
	n = min(n, s.cfg.AppendMemory/2)
	s.appendLimit.Store(n)
	return n
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	return newServer(cfg, false)
}

// newServer is New; insecureAuth lets clients log in without TLS, which
// only tests use (the fuzz target skips TLS to stay fast).
func newServer(cfg Config, insecureAuth bool) *Server {
	if cfg.AppendLimit <= 0 || cfg.AppendLimit > 1<<32-1 {
		cfg.AppendLimit = defaultAppendLimit
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.AppendMemory <= 0:
		cfg.AppendMemory = 4 * cfg.AppendLimit
	case cfg.AppendMemory < 2*cfg.AppendLimit:
		cfg.AppendMemory = 2 * cfg.AppendLimit
	}
	if cfg.ReadMemory <= 0 {
		cfg.ReadMemory = cfg.AppendMemory
	}
	// Room to take one message of the largest size apart (three times
	// its size) without taking the whole budget.
	cfg.ReadMemory = max(cfg.ReadMemory, 4*cfg.AppendLimit)
	s := &Server{cfg: cfg, log: log, recent: newRecentTracker(), appendMem: semaphore.NewWeighted(cfg.AppendMemory),
		readMem: semaphore.NewWeighted(cfg.ReadMemory)}
	s.appendLimit.Store(cfg.AppendLimit)
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         caps,
		Logger:       libLogger{log},
		TLSConfig:    cfg.TLS,
		InsecureAuth: insecureAuth,
	})
	return s
}

// Serve serves the connections l yields (already admitted by the
// caller). For an imaps listener they are *tls.Conn (implicit TLS).
func (s *Server) Serve(l net.Listener) error {
	if err := s.imap.Serve(l); err != nil {
		return fmt.Errorf("imapd: %w", err)
	}
	return nil
}

// Shutdown stops accepting, closes every session and waits for them to
// end, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		if !already {
			// Close closes the listeners and every connection; it may
			// wait on a TLS close_notify behind a stuck write.
			_ = s.imap.Close()
		}
		s.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("imapd: shutdown: %w", ctx.Err())
	}
}

func (s *Server) newSession(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.sessions.Add(1)
	ip := admit.RemoteIP(conn.NetConn())
	return &session{
		srv:  s,
		conn: conn,
		ip:   ip,
		log:  s.log.With("client_ip", ip.String()),
	}, nil, nil
}

// libLogger sends imapserver's own messages to slog: read errors and
// closed connections are routine (debug), panics are not.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "panic") {
		l.log.Error("imap library", "error", msg)
		return
	}
	l.log.Debug("imap library", "error", msg)
}

// recentTracker implements \Recent (IMAP4rev1) within this process: a
// message is recent to the first session that selects its folder
// read-write (or sees it arrive) after it was added. Like Dovecot, the
// first session to see a message claims it.
type recentTracker struct {
	mu   sync.Mutex
	last map[string]uint32 // folder key → highest UID claimed
}

func newRecentTracker() *recentTracker {
	return &recentTracker{last: make(map[string]uint32)}
}

func recentKey(user, folder string, uidValidity uint32) string {
	return fmt.Sprintf("%s\x00%s\x00%d", user, folder, uidValidity)
}

// claim marks every UID up to uid as seen and returns the highest UID
// claimed before: UIDs above it are recent to the caller.
func (t *recentTracker) claim(key string, uid uint32) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.last[key]
	if uid > prev {
		t.last[key] = uid
	}
	return prev
}

// peek returns the highest UID claimed so far.
func (t *recentTracker) peek(key string) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[key]
}
