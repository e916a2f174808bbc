// Package guard is mamori's abuse-defence engine. It sits on the hot path
// of every connection, AUTH, RCPT and end of DATA and answers, in memory and
// in O(1): accept, hold, defer (4xx), reject (5xx) or drop — with the rule
// that decided.
//
// Limits apply to everyone, the trusted network included: Postfix exempts
// $mynetworks from its rate limits, and that is exactly how a worm on a
// staff PC gets out. A local sender (a trusted-network IP, or an
// authenticated user) that trips a rule is isolated: its mail is still
// accepted, but into the held state, never delivered, kept as evidence.
// An account that looks hijacked is suspended: AUTH is refused (but from
// the owner's own networks) and its queued mail held. A login name under
// distributed guessing is throttled for the networks it never used, and a
// refused login answers the same for a right and a wrong password (see
// auth.go). Outsiders that abuse the server are deferred or banned; they
// are counted per IPv4 address or IPv6 /64, and per /24 or /48.
//
// How it stays O(1) and bounded: every rate is a fixed-bucket counter with
// the previous bucket weighted (a sliding-window approximation, 16 bytes
// per window); state about outsiders, whose keys an attacker picks, lives
// in size-bounded LRU tables; bans are found by probing only the prefix
// lengths in use. One mutex guards the state; every hot-path call holds it
// for a few map operations and logs after releasing it. Hook calls
// (holding queued mail, alerts) and persistence happen on Run's goroutine,
// never on the SMTP path.
//
// Mail of a local sender is counted against its identity: an
// authenticated user's own counters, or, for a trusted unauthenticated
// client, its IP and its envelope sender. The sender that trips a rule is
// isolated: the user if authenticated, else the IP.
//
// In a cluster ([store] backend = "redis") the decisions — bans,
// isolations, suspensions and their lifting — travel to the other nodes
// through a Replicator (share.go, internal/guard/share) and come back
// through ApplyShared, off the hot path. Local senders' rate windows are
// also counted cluster-wide through Counters (counters.go): one round trip
// after the local decision, never under the lock, local limits when the
// shared store does not answer.
//
// Dependencies: the standard library only (net/netip for allocation-free
// addresses and prefixes as map keys, hash/maphash for recipient hashes,
// encoding/json for the saved state, log/slog for logs).
package guard

import (
	"net/netip"
	"time"
)

// Verdict is what the guard decided.
type Verdict int

const (
	Accept Verdict = iota // go on
	Hold                  // accept the message into the held state (isolated sender)
	Defer                 // 4xx: try later
	Reject                // 5xx: refused
	Drop                  // close the connection after the reply (bans, floods)
)

// Decision is a verdict plus the SMTP reply for it and the rule that fired.
// For Accept, Code is 0.
type Decision struct {
	Verdict  Verdict
	Code     int    // SMTP reply code for Defer/Reject/Drop (421, 451, 454, 535, 554…)
	Enhanced [3]int // enhanced status code, e.g. {4,7,1}
	Text     string // human-readable reply text, safe to send
	Rule     string // stable rule name, e.g. "rate.msgs_per_minute", "auth.bruteforce", "ban"
}

// Sender identifies who is sending a message. Local senders (Trusted or
// User != "") can be isolated; others can only be deferred or banned.
type Sender struct {
	IP      netip.Addr
	User    string // authenticated login, "" if none
	From    string // envelope sender
	Trusted bool   // IP in [relay] trusted_networks (or a peer)
	// Peer: the IP is another node of this cluster ([store] peers). It
	// checked this mail and counted it against the shared counters, so
	// the guard does not count it again (Rcpt accepts; Message accepts
	// mail for our own domains, and judges mail to other domains as any
	// trusted sender's).
	Peer bool
}

// Local reports whether s is one of ours (and so may be isolated).
func (s Sender) Local() bool { return s.Trusted || s.User != "" }

// Message is what the guard sees at the end of DATA.
type Message struct {
	Sender
	Rcpts              []string // final recipients
	Foreign            int      // how many of Rcpts are outside our domains
	Subject            string
	HeaderFromMismatch bool   // header From not owned by the login (already refused by smtpd; a signal)
	ContentHit         string // content rule that refused or held this message ("" = clean): a signal
	AuthFail           bool   // inbound message failing SPF or DMARC: a signal against spoofing sources
}

// Alert is raised when a sender is isolated, an account suspended, an IP
// banned, or the server's own IP found listed.
type Alert struct {
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"` // "isolated", "suspended", "banned", "throttled", "own_ip_listed", "released"
	IP       string            `json:"ip,omitempty"`
	User     string            `json:"user,omitempty"`
	Sender   string            `json:"sender,omitempty"`
	Rule     string            `json:"rule"`
	Counts   map[string]int    `json:"counts,omitempty"`   // the counters that tripped, e.g. {"msgs_per_minute": 31}
	Subjects []string          `json:"subjects,omitempty"` // up to 5 sample subjects
	Rcpts    []string          `json:"rcpts,omitempty"`    // up to 5 sample recipients
	Detail   string            `json:"detail,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// Isolation describes an isolated local sender (DESIGN.md: guard list --json).
type Isolation struct {
	IP     string         `json:"ip"`
	Sender string         `json:"sender"`
	User   string         `json:"user"`
	Rule   string         `json:"rule"`
	Counts map[string]int `json:"counts"`
	Since  time.Time      `json:"since"`
	Held   int            `json:"held"`           // messages accepted into held since isolation
	Node   string         `json:"node,omitempty"` // the node that decided it
}

// Suspension describes a suspended account.
type Suspension struct {
	User  string    `json:"user"`
	Rule  string    `json:"rule"`
	Since time.Time `json:"since"`
	Node  string    `json:"node,omitempty"` // the node that decided it
}

// Ban is a banned IP or network.
type Ban struct {
	CIDR    string    `json:"cidr"`
	Expires time.Time `json:"expires"`
	Rule    string    `json:"rule"`
	Strikes int       `json:"strikes"`        // how many times banned (backoff grows with it)
	Node    string    `json:"node,omitempty"` // the node that decided it
}

// Throttle is a login name refused from sources it does not trust,
// after distributed guessing (the owner's hosts and networks still work).
type Throttle struct {
	User     string    `json:"user"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Failures int       `json:"failures"` // in the last 15 minutes
}

// Snapshot is what `mamori guard list --json` prints.
type Snapshot struct {
	Isolated  []Isolation  `json:"isolated"`
	Suspended []Suspension `json:"suspended"`
	Bans      []Ban        `json:"bans"`
	Throttled []Throttle   `json:"throttled,omitempty"` // at most maxListedThrottles, most recent first
	// Shared is the state of cluster-wide counting; nil on one node.
	Shared *SharedStatus `json:"shared,omitempty"`
}

// Hooks are how the guard acts outside itself. All are called without the
// guard's locks held and may be slow; the guard calls them from its own
// goroutine, never on the SMTP hot path.
type Hooks interface {
	// HoldQueued holds mail of an isolated sender or suspended account that
	// is still queued but not yet delivered. ip or user is set.
	HoldQueued(ip netip.Addr, user, rule string) (int, error)
	// Alert tells the administrator (log, postmaster message, webhook).
	Alert(a Alert)
}

// SessionEnder may be implemented by Hooks: EndSessions ends the
// logged-in sessions of a suspended account on this node, whether this
// node or another suspended it (which ones is the implementation's
// choice: the server ends mailbox access and lets SMTP go on, its mail
// held). New logins are refused anyway (except from the owner's own
// networks, for an automatic suspension).
type SessionEnder interface {
	EndSessions(user string)
}

// Persister stores the guard's state so it survives a restart.
type Persister interface {
	LoadGuardState() ([]byte, error) // nil, nil when there is none
	SaveGuardState([]byte) error
}
