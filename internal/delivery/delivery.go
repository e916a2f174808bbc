// Package delivery moves queued mail to where it is going: local mailboxes,
// or other mail servers over SMTP, with retries, expiry and bounces.
//
// Why it exists as its own stage (as Postfix's qmgr+smtp): accepting mail and
// delivering it have opposite needs. The receiving side must answer fast and
// stay bounded under abuse; delivery must be patient (remote servers are slow,
// greylist or fail for hours) yet bounded too, so a worm's backlog or one slow
// domain cannot exhaust connections. The Scheduler leases due messages from
// the spool, delivers each recipient group with a bounded number of workers
// overall and per destination, records per-recipient outcomes, schedules
// retries with exponential backoff, and fails recipients permanently after
// the maximum lifetime — sending an RFC 3464 DSN only for mail that came from
// our own users (never for unauthenticated inbound mail: no backscatter).
//
// Dependencies and why:
//   - github.com/emersion/go-smtp: the SMTP client (the same library serves
//     our listeners, so both ends speak one dialect and are tested together)
//     for EHLO, DATA (with its dot-stuffing), RSET and QUIT. Its Mail and
//     Rcpt are not used: they wait for each reply before the next command
//     (no PIPELINING), and Mail always adds BODY=8BITMIME when offered. We
//     send MAIL and the RCPTs ourselves, in one write when the server offers
//     PIPELINING (RFC 2920), with BODY=8BITMIME only for 8-bit content and
//     SMTPUTF8 whenever an address or header needs it (see envelope).
//   - internal/mimeconv: every relayed message is fitted to the receiving
//     server per session: line ends normalised to CRLF (no SMTP smuggling
//     through us), lines over 998 octets folded or re-encoded, 8-bit
//     content converted to quoted-printable/base64 for a server without
//     8BITMIME, 8-bit headers RFC 2047-encoded for one without SMTPUTF8;
//     what cannot be converted (a UTF-8 address) bounces with 5.6.7. The
//     queue does not record whether a message arrived with SMTPUTF8 or
//     BODY=8BITMIME, so the need is read from the envelope and the content.
//   - internal/resolver (github.com/miekg/dns underneath): MX and address
//     lookups that distinguish NXDOMAIN, null MX and SERVFAIL, which decide
//     between bouncing and retrying (RFC 5321 §5.1, RFC 7505).
//   - internal/queue: only its data types (Meta, Rcpt); the spool itself is
//     reached through the Spool interface so this package can be built and
//     tested on its own.
package delivery

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Config controls delivery. Zero values get the defaults documented on each
// field.
type Config struct {
	// Hostname is our EHLO name and the DSN Reporting-MTA. Default: the
	// host's name.
	Hostname string
	// Port is the TCP port for MX- and A-based delivery. Default 25.
	Port int
	// Routes maps a recipient domain to "host:port" (host: a name, looked
	// up with A/AAAA and never MX, or an IP literal). Matching is
	// case-insensitive; a key "*.example.com" matches every subdomain of
	// example.com (not example.com itself). The exact domain wins over
	// wildcards, the longest wildcard over shorter ones. A missing port
	// means Port.
	Routes map[string]string
	// Relayhost ("host:port") receives all non-local mail whose domain no
	// route matched. Empty: deliver by MX.
	Relayhost string
	// Concurrency bounds simultaneous deliveries (SMTP sessions plus local
	// deliveries) and messages in progress. Default 20.
	Concurrency int
	// PerDomain bounds simultaneous SMTP sessions per destination: the
	// recipient domain for MX delivery, the route or relayhost for routed
	// mail. Default 5.
	PerDomain int
	// MaxLifetime: once a message is older than this, recipients still
	// failing temporarily fail permanently (4.4.7). Default 5 days.
	MaxLifetime time.Duration
	// MinBackoff and MaxBackoff bound the exponential retry delay.
	// Defaults 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// ConnectTimeout bounds the TCP connect (default 30 s), CommandTimeout
	// each command reply, the greeting and each block of message data
	// (default 5 min, RFC 5321 §4.5.3.2), DataTimeout the reply to the
	// final "." (default 10 min).
	ConnectTimeout, CommandTimeout, DataTimeout time.Duration
	// TLSVerify: when a server offers STARTTLS, require a certificate valid
	// for its name and do not fall back to plain text when the handshake
	// fails. Default false: opportunistic TLS (RFC 7435), any certificate,
	// plain text when TLS fails. Servers that do not offer STARTTLS get
	// plain text either way.
	TLSVerify bool
	// Postmaster is the DSN From address. Default postmaster@Hostname.
	Postmaster string
	// Paused, when set and true, holds back every non-local delivery (the
	// recipients are deferred) — e.g. while our own IP is on a blocklist,
	// so a breach does not get the whole organisation blocked. Local
	// delivery goes on.
	Paused func() bool
	// Sign, when set, DKIM-signs the messages delivery writes itself
	// (DSNs) with the key of their From domain (our postmaster's), so that
	// they pass DMARC at receivers with p=reject. It returns the message
	// unchanged when it has no key for that domain.
	Sign func(msg []byte) []byte
	// Metrics counts outcomes per recipient and times attempts; nil: none.
	Metrics *metrics.Metrics
}

// Defaults.
const (
	DefaultPort           = 25
	DefaultConcurrency    = 20
	DefaultPerDomain      = 5
	DefaultMaxLifetime    = 5 * 24 * time.Hour
	DefaultMinBackoff     = time.Minute
	DefaultMaxBackoff     = time.Hour
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
)

// Lease is one message handed out by the spool for a delivery attempt.
type Lease interface {
	// Message is the message as it was when leased.
	Message() queue.Meta
	// Revoked reports that a hold or delete arrived: no further send may
	// start for this message.
	Revoked() bool
	// BeginSend is called right before the message is handed to a mailbox
	// or a remote server (each transaction); false means a hold or delete
	// took it and nothing may be sent. After true, a hold or delete waits
	// for this attempt's Finish.
	BeginSend() bool
}

// Attempt is the outcome of one delivery attempt, given back to the spool.
type Attempt struct {
	// Rcpts is the full recipient list with updated Status and Diag.
	Rcpts []queue.Rcpt
	// NextAttempt: when to try the pending recipients again.
	NextAttempt time.Time
	// LastError: the first temporary error of this attempt, "" if none.
	LastError string
}

// Spool is what delivery needs from the queue. *queue.Queue satisfies it
// through a thin adapter (its Next returns *queue.Lease).
type Spool interface {
	// Next blocks until a message is due and leases it.
	Next(ctx context.Context) (Lease, error)
	// Finish records the attempt: with no pending recipient left the
	// message is removed, else deferred until a.NextAttempt.
	Finish(l Lease, a Attempt) error
	// Body returns the message's bytes (header and body).
	Body(id string) ([]byte, error)
	// Enqueue adds a new message (used for DSNs).
	Enqueue(m queue.Meta, body []byte) (queue.Meta, error)
}

// LocalDeliverer stores mail for local domains. Aliases are expanded before
// queueing: every recipient handed to DeliverLocal is a real mailbox.
type LocalDeliverer interface {
	IsLocalDomain(domain string) bool
	// DeliverLocal stores one copy. An error wrapped with Permanent (or
	// wrapping ErrPermanent) fails the recipient for good; any other error
	// is retried later.
	DeliverLocal(ctx context.Context, rcpt string, m queue.Meta, body []byte) error
}

// ErrPermanent marks a delivery error that retrying cannot fix.
var ErrPermanent = errors.New("permanent failure")

// Permanent marks err as permanent: errors.Is(Permanent(err), ErrPermanent)
// is true and the original chain is kept. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err is marked permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// withDefaults returns cfg with zero (or nonsensical) fields replaced by
// defaults and routes normalised (lower case, no trailing dot).
func (cfg Config) withDefaults() Config {
	if cfg.Hostname == "" {
		cfg.Hostname = defaultHostname()
	}
	cfg.Hostname = strings.TrimSuffix(cfg.Hostname, ".")
	if cfg.Port <= 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PerDomain <= 0 {
		cfg.PerDomain = DefaultPerDomain
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = DefaultDataTimeout
	}
	if cfg.Postmaster == "" {
		cfg.Postmaster = "postmaster@" + cfg.Hostname
	}
	routes := make(map[string]string, len(cfg.Routes))
	for domain, target := range cfg.Routes {
		routes[normDomain(domain)] = target
	}
	cfg.Routes = routes
	return cfg
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}
