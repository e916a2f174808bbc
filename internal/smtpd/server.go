// Package smtpd is mamori's receiving stage: the MX (25), submission (587,
// STARTTLS before AUTH) and submissions (465, implicit TLS) listeners.
//
// The SMTP protocol itself (command parsing, PIPELINING, CHUNKING, dot
// unstuffing, size and line limits, STARTTLS, the AUTH exchange) is
// github.com/emersion/go-smtp: a small, well-kept server whose Backend /
// Session seam lets this package be only policy. Each SMTP verb is handed to
// a decision function (internal/policy for relay and sender rules, the
// mailbox Directory for recipients and logins) and the accepted message goes
// to the durable queue, which fsyncs it before the 250 reply.
//
// go-smtp strips source routes before the Session sees a path; the route is
// ignored and the relay decision made on the final mailbox (RFC 5321
// appendix C). go-smtp is used from a copy with one patch (third_party/
// go-smtp/MAMORI.md): the command line limit does not apply to message
// lines. github.com/emersion/go-sasl supplies the PLAIN server; LOGIN,
// which it only offers as a client, is implemented here (sasl.go).
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sync/semaphore"

	"github.com/mamori-mail/mamori/internal/admit"
	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/msgheader"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Kind says which listener a connection came in on.
type Kind int

const (
	// KindMX is port 25: mail from the Internet; AUTH is not offered.
	KindMX Kind = iota
	// KindSubmission is port 587: STARTTLS, then AUTH, then mail.
	KindSubmission
	// KindSubmissions is port 465: implicit TLS, then AUTH, then mail.
	KindSubmissions
)

func (k Kind) String() string {
	switch k {
	case KindMX:
		return "smtp"
	case KindSubmission:
		return "submission"
	case KindSubmissions:
		return "submissions"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Directory answers the questions a session asks about local users.
// *mailbox.Directory implements it.
type Directory interface {
	IsLocalDomain(domain string) bool
	// Lookup expands a local address to final mailboxes or foreign
	// addresses (aliases, catch-all); ok=false means no such recipient.
	Lookup(addr string) (targets []string, ok bool)
	Authenticate(username, password string) error
	// Owns reports whether user may use addr as a sender address.
	Owns(user, addr string) bool
	// RecordLogin notes a successful login (for stale-account reports).
	RecordLogin(addr string, when time.Time)
}

// Spool is where accepted mail goes; Enqueue returns once the message is
// on disk. *queue.Queue implements it.
type Spool interface {
	Enqueue(m queue.Meta, parts ...[]byte) (queue.Meta, error)
}

// Config holds the receiving limits and identity.
type Config struct {
	Hostname string
	Domain   string      // the primary local domain: "RCPT TO:<postmaster>" means postmaster@Domain
	TLS      *tls.Config // nil: no STARTTLS, no submission
	Trusted  []netip.Prefix
	// Peers are the other nodes of a cluster ([store] peers): trusted,
	// and their mail is not counted again by the guard (guard.Sender.Peer).
	Peers           []netip.Prefix
	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	CommandTimeout  time.Duration
	DataTimeout     time.Duration
	MaxReceived     int // Received headers allowed before "mail loop"
	// MaxInflightBytes bounds the message bytes all sessions together may
	// hold in memory while receiving DATA (default 256 MiB); past it, new
	// data is refused with 452 4.3.1 instead of growing without bound.
	MaxInflightBytes int64
	// Storage, when set, says whether a message of the given size still
	// fits (queue size cap, free disk); an error means 452 4.3.1 at MAIL.
	Storage func(size int64) error
	// Content, when set, inspects every message at the end of DATA
	// (attachment policy, virus scanner) before it is queued.
	Content func(ctx context.Context, s guard.Sender, rcpts []string, msg []byte) content.Verdict
	// Login checks SMTP AUTH logins, shared with IMAP and POP3; nil
	// builds one from the directory and Guard.
	Login *login.Checker
	// Sessions, if set, registers every authenticated session, so that a
	// revoked credential closes its connection at once (a message whose
	// DATA is not finished is not accepted).
	Sessions *login.Sessions
	// OverQuota, when set, reports a local mailbox at or over its quota:
	// a recipient whose mailboxes all are gets 452 4.2.2 at RCPT.
	OverQuota func(addr string) bool
	// ContentMemory is the most memory one Content call may hold for a
	// message of n bytes, on top of the message itself (for the content
	// package, DomainPolicies.MemoryBound). nil means n.
	ContentMemory func(n int) int64
	// Verify checks sender authentication of inbound mail (not from users
	// or trusted networks): SPF, DKIM and DMARC when configured, and in any
	// case DKIM for authors in our own domains (VerifyRequest.Local). nil
	// means nothing can be verified: mail from outside that names one of
	// our domains as its author is then refused.
	Verify func(ctx context.Context, req VerifyRequest) AuthVerdict
	// Sign, when set, returns the DKIM-Signature fields to prepend to mail
	// of users and trusted clients, one per author domain it holds a key
	// for (none when it holds no key).
	Sign func(authorDomains []string, msg []byte) []byte
	// Recorder, when set, gets a summary of every session that queued,
	// refused or failed something (evidence for incident export).
	Recorder Recorder
	LocalIPs func(netip.Addr) bool // our own addresses, for [ip] literal recipients

	Guard          Guard         // nil: no limits (unit tests only)
	DNSBL          DNSBL         // nil: no blocklist lookups
	PregreetDelay  time.Duration // MX, untrusted: wait this long for a client that talks first
	MaxSessionTime time.Duration // a session is cut after this long, whatever it does

	// Metrics counts sessions, accepted mail and refusals; nil: none.
	Metrics *metrics.Metrics
}

// VerifyRequest is one inbound message to authenticate.
type VerifyRequest struct {
	IP       netip.Addr
	Helo     string
	MailFrom string
	Header   *msgheader.Header // Msg's parsed header
	Authors  []string          // author domains (msgheader.Authors.Domains)
	Local    []string          // the author domains that are ours
	Msg      []byte
}

// AuthVerdict is the sender-authentication answer for one inbound message.
type AuthVerdict struct {
	Header string // the Authentication-Results header line(s), CRLF-terminated
	Fail   bool   // SPF or DMARC failed: a signal for the guard
	Reject bool   // DMARC policy says reject (and the config honours it)
	Reason string
	// Unsigned lists the local author domains (of VerifyRequest.Local)
	// without a valid DKIM signature of exactly that domain; UnsignedTemp
	// says one of their signatures failed for a temporary reason (DNS).
	Unsigned     []string
	UnsignedTemp bool
}

// Guard is the abuse-defence engine as the SMTP stage sees it.
// *guard.Guard implements it.
type Guard interface {
	ConnectTo(pool guard.Pool, ip netip.Addr, trusted bool) (guard.Decision, func())
	AuthCheck(ip netip.Addr, user string) guard.Decision
	AuthResult(ip netip.Addr, user string, ok bool) guard.Decision
	Rcpt(s guard.Sender, rcpt string, accepted bool) guard.Decision
	Message(m guard.Message) guard.Decision
}

// DNSBL looks a client up in DNS blocklists within its own time budget.
type DNSBL interface {
	Listed(ctx context.Context, ip netip.Addr) (zone, reason string, listed bool)
}

// Server runs the SMTP listeners.
type Server struct {
	cfg   atomic.Pointer[Config] // replaced whole by SetConfig
	dir   Directory
	spool Spool
	log   *slog.Logger

	nextSID   atomic.Uint64
	bodyBytes atomic.Int64 // message bytes held by sessions in DATA

	// The in-flight budget is split in two (see memoryPlan): receiveLimit
	// bounds bodyBytes; scanMem is what content checks hold while they run.
	receiveLimit int64
	scanMem      *semaphore.Weighted
	scanLimit    int64

	pgMu     sync.Mutex
	pgPassed map[netip.Addr]time.Time // clients that waited for the greeting

	mu      sync.Mutex
	servers []*smtp.Server
	closed  bool
}

// New returns a Server; call Serve for each listener.
func New(cfg Config, dir Directory, spool Spool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.fillDefaults()
	receive, scan, err := cfg.memoryPlan()
	if err != nil {
		// Validate reports this before New; a caller that skipped it
		// still gets a working (if tighter) split.
		log.Error("smtpd: " + err.Error())
		receive, scan = cfg.MaxInflightBytes/2, cfg.MaxInflightBytes/2
	}
	s := &Server{dir: dir, spool: spool, log: log,
		receiveLimit: receive, scanMem: semaphore.NewWeighted(scan), scanLimit: scan}
	s.cfg.Store(&cfg)
	return s
}

func (c *Config) fillDefaults() {
	if c.MaxReceived == 0 {
		c.MaxReceived = 50
	}
	if c.DataTimeout == 0 {
		c.DataTimeout = 10 * time.Minute
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = 256 << 20
	}
	if c.ContentMemory == nil {
		c.ContentMemory = func(n int) int64 { return int64(n) }
	}
}

// conf is the configuration in force for new sessions.
func (s *Server) conf() *Config { return s.cfg.Load() }

// SetConfig puts cfg in force for sessions that begin from now on;
// sessions in flight finish under the configuration they began with. The
// memory budget (MaxInflightBytes, ContentMemory) is sized at New and
// kept; so are the DNSBL and metrics wiring. An invalid cfg is refused
// and the old one stays.
func (s *Server) SetConfig(cfg Config) error {
	c, err := s.CheckConfig(cfg)
	if err != nil {
		return err
	}
	s.cfg.Store(&c)
	return nil
}

// CheckConfig returns cfg as SetConfig would put it in force (with the
// memory budget and wiring kept from New), or why it cannot be.
func (s *Server) CheckConfig(cfg Config) (Config, error) {
	old := s.conf()
	cfg.MaxInflightBytes, cfg.ContentMemory = old.MaxInflightBytes, old.ContentMemory
	cfg.DNSBL, cfg.Metrics = old.DNSBL, old.Metrics
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	cfg.fillDefaults()
	return cfg, nil
}

// Validate reports a configuration whose in-flight budget cannot hold
// the largest message it allows while that message is received and
// checked.
func (c Config) Validate() error {
	if c.MaxInflightBytes == 0 {
		return nil // New's default is sized for its default message size
	}
	if c.ContentMemory == nil {
		c.ContentMemory = func(n int) int64 { return int64(n) }
	}
	_, _, err := c.memoryPlan()
	return err
}

// memoryPlan splits MaxInflightBytes into what message bodies may occupy
// while they are received (receive) and what content checks may hold
// while they run (scan). Two pools, not one, because a check starts only
// after its body is received: in one shared pool, sessions holding
// received bodies could leave too little for any check to start, and
// each would wait for the others forever. A check waits only for other
// checks, which hold nothing else and always finish.
//
// scan is what checking one message of the largest allowed size needs,
// so that message is always checkable; receive is the rest, and must let
// an outsider's share hold that message twice (chunks and the joined
// copy while reading).
func (c Config) memoryPlan() (receive, scan int64, err error) {
	switch {
	case c.Content == nil:
		return c.MaxInflightBytes, 0, nil
	case c.MaxMessageBytes <= 0: // no size limit: no size to plan for
		return c.MaxInflightBytes / 2, c.MaxInflightBytes / 2, nil
	}
	scan = c.ContentMemory(int(c.MaxMessageBytes))
	receive = c.MaxInflightBytes - scan
	need := 2 * c.MaxMessageBytes
	if receive/4*outsiderShare < need {
		least := scan + (need*4+outsiderShare-1)/outsiderShare
		return 0, 0, fmt.Errorf("max_inflight_bytes %d is too small for max_message_size %d: receiving one such message from outside and checking it needs at least %d",
			c.MaxInflightBytes, c.MaxMessageBytes, least)
	}
	return receive, scan, nil
}

// SetDNSBL enables blocklist lookups for untrusted MX clients. Call it
// before Serve.
func (s *Server) SetDNSBL(d DNSBL) {
	c := *s.conf()
	c.DNSBL = d
	s.cfg.Store(&c)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpd: server closed")

// Serve accepts connections of the given kind on l until Shutdown.
func (s *Server) Serve(kind Kind, l net.Listener) error {
	cfg := s.conf()
	if kind != KindMX && cfg.TLS == nil {
		return fmt.Errorf("smtpd: %s listener needs a TLS configuration", kind)
	}
	srv := smtp.NewServer(&backend{srv: s, kind: kind})
	srv.Domain = cfg.Hostname
	// Each connection takes the limits in force when it is accepted.
	srv.ConnLimits = func() smtp.ConnLimits {
		c := s.conf()
		l := smtp.ConnLimits{MaxRecipients: c.MaxRecipients, MaxMessageBytes: c.MaxMessageBytes,
			MaxLineLength: 2000, ReadTimeout: c.CommandTimeout, WriteTimeout: c.CommandTimeout}
		if c.MaxLineLength > 0 {
			l.MaxLineLength = c.MaxLineLength
		}
		return l
	}
	srv.EnableSMTPUTF8 = true
	srv.TLSConfig = cfg.TLS
	srv.AllowInsecureAuth = false
	srv.ErrorLog = slogAdapter{s.log}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()

	err := srv.Serve(admit.Listen(l, s.admission(kind)))
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting, then waits for sessions to end until ctx
// expires, after which it closes the rest. A session in the middle of DATA
// either completes its fsync and gets its 250 or never got one, so nothing
// acknowledged is lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	srvs := s.servers
	s.mu.Unlock()
	var errs []error
	for _, srv := range srvs {
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				srv.Close()
				continue
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isTrusted: a trusted network's client, or a peer node, may relay.
func (s *Server) isTrusted(ip netip.Addr) bool {
	c := s.conf()
	return ipnet.Contains(c.Trusted, ip) || ipnet.Contains(c.Peers, ip)
}

func (s *Server) isPeer(ip netip.Addr) bool { return ipnet.Contains(s.conf().Peers, ip) }

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...interface{}) {
	a.l.Warn("smtp", "msg", fmt.Sprintf(format, v...))
}
func (a slogAdapter) Println(v ...interface{}) { a.l.Warn("smtp", "msg", fmt.Sprint(v...)) }
