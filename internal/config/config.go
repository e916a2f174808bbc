// Package config loads, validates and writes mamori's single TOML
// configuration file.
//
// Validation is where "closed relay by construction" starts: a config that
// would let the whole Internet relay (a trusted network such as 0.0.0.0/0 or
// a public range) is refused, not warned about. Relative paths are resolved
// against the directory of the config file, so a data folder can be moved
// with its config.
//
// github.com/BurntSushi/toml is used because it reports undecoded (misspelt)
// keys, which lets check-config refuse a typo instead of silently ignoring it.
package config

import (
	"errors"
	"fmt"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. Field tags are the TOML keys of the
// interface contract in DESIGN.md; keep them stable.
type Config struct {
	Hostname   string   `toml:"hostname"`
	DataDir    string   `toml:"data_dir"`
	Domains    []string `toml:"domains"`
	Postmaster string   `toml:"postmaster"`

	Listen   Listen   `toml:"listen"`
	TLS      TLS      `toml:"tls"`
	Admin    Admin    `toml:"admin"`
	Relay    Relay    `toml:"relay"`
	Limits   Limits   `toml:"limits"`
	Queue    Queue    `toml:"queue"`
	Delivery Delivery `toml:"delivery"`
	DNS      DNS      `toml:"dns"`
	Log      Log      `toml:"log"`
	Guard    Guard    `toml:"guard"`
	Content  Content  `toml:"content"`
	Auth     Auth     `toml:"auth"`
	Mailbox  Mailbox  `toml:"mailbox"`
	Server   Server   `toml:"server"`
	Store    Store    `toml:"store"`

	// Path is the file this config was loaded from (not a TOML key).
	Path string `toml:"-"`
}

// Listen holds "HOST:PORT" addresses; an empty value disables the listener.
type Listen struct {
	SMTP        string `toml:"smtp"`
	Submission  string `toml:"submission"`
	Submissions string `toml:"submissions"`
	IMAP        string `toml:"imap"`  // STARTTLS required before LOGIN
	IMAPS       string `toml:"imaps"` // implicit TLS
	POP3        string `toml:"pop3"`  // STLS required before USER/PASS
	POP3S       string `toml:"pop3s"` // implicit TLS
	Admin       string `toml:"admin"`
}

// Mailbox configures the users' mail store.
type Mailbox struct {
	// Quota is each user's default quota in bytes over all folders; 0
	// means none. `mamori user quota` sets one per user.
	Quota int64 `toml:"quota"`
	// Group owns every Maildir file and directory (directories setgid),
	// so a reader in that group (Dovecot, a backup agent) can be let in
	// without root. Empty: the server's own group.
	Group string `toml:"group"`
	// Mode of the Maildir files, octal ("0640" lets the group read);
	// directories get the matching search bits. Empty: "0600".
	Mode string `toml:"mode"`
}

// FileMode returns [mailbox] mode (0 when unset), refusing modes that
// lock the owner out, let anyone but the owner write, or are executable.
func (m Mailbox) FileMode() (fs.FileMode, error) {
	if m.Mode == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(m.Mode, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("mailbox.mode %q: want an octal file mode such as \"0640\"", m.Mode)
	}
	mode := fs.FileMode(v)
	switch {
	case mode&0o600 != 0o600:
		return 0, fmt.Errorf("mailbox.mode %q: the owner must be able to read and write", m.Mode)
	case mode&0o022 != 0:
		return 0, fmt.Errorf("mailbox.mode %q: group or others may not write mail files", m.Mode)
	case mode&0o111 != 0:
		return 0, fmt.Errorf("mailbox.mode %q: mail files are not executable", m.Mode)
	}
	return mode, nil
}

// Server says whom the server runs as.
type Server struct {
	// User and Group: started as root, serve binds its ports and then
	// runs as this user (and group, default the user's own) before it
	// touches any data. Empty: run as whoever started it.
	User  string `toml:"user"`
	Group string `toml:"group"`
}

// Store chooses where the directory (users, domains, aliases) and the
// guard's decisions (bans, isolations, suspensions) live.
type Store struct {
	// Backend is "embedded" (data_dir/mamori.db, this node only) or
	// "redis" (shared by every node with the same URL: clustered mode).
	Backend string `toml:"backend"`
	// URL of the Redis server: redis://, rediss://, redis+sentinel://,
	// redis+cluster:// (see internal/store/redisstore).
	URL string `toml:"url"`
	// Node names this node in the cluster (in guard list, in logs); it
	// must be unique among the nodes. Default: the machine's host name.
	Node string `toml:"node"`
	// Peers are the addresses (one IP each) of the other nodes. Mail
	// a peer passes on was checked and counted there — against the
	// cluster-wide counters — so it is trusted like [relay]
	// trusted_networks but not counted again as a local sender's (which
	// would isolate an outside sender that mails many users through it).
	Peers []string `toml:"peers"`
}

// StoreBackends are the values [store] backend takes.
var StoreBackends = []string{"embedded", "redis"}

// storeSchemes are the URL schemes of [store] url.
var storeSchemes = []string{"redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}

func (s *Store) validate() []error {
	var errs []error
	if !slices.Contains(StoreBackends, s.Backend) {
		errs = append(errs, fmt.Errorf("store.backend %q: want %q or %q", s.Backend, "embedded", "redis"))
	}
	if s.Backend == "redis" {
		scheme, _, ok := strings.Cut(s.URL, "://")
		switch {
		case s.URL == "":
			errs = append(errs, errors.New(`store.url is required with backend = "redis" (e.g. "redis://10.0.0.9:6379/0")`))
		case !ok || !slices.Contains(storeSchemes, scheme):
			errs = append(errs, fmt.Errorf("store.url: want a URL starting with one of %s://", strings.Join(storeSchemes, "://, ")))
		}
	}
	if len(s.Peers) > 0 && s.Backend != "redis" {
		errs = append(errs, errors.New(`store.peers: only with backend = "redis" (the peers share its counters)`))
	}
	if _, err := s.PeerPrefixes(); err != nil {
		errs = append(errs, err)
	}
	if s.Node == "" {
		errs = append(errs, errors.New("store.node is empty and the host name is unknown: set it"))
	} else if len(s.Node) > 64 || strings.ContainsFunc(s.Node, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
	}) {
		errs = append(errs, fmt.Errorf("store.node %q: at most 64 letters, digits, '.', '-' or '_'", s.Node))
	}
	return errs
}

// TLS names the certificate and key used by STARTTLS and implicit TLS,
// and configures automatic certificates (ACME, see internal/certs).
type TLS struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	// ACME obtains and renews certificates for hostname and ACMENames from
	// an ACME CA (Let's Encrypt by default). Until the first one is issued,
	// the cert/key pair above is served.
	ACME          bool     `toml:"acme"`
	ACMEEmail     string   `toml:"acme_email"`     // contact for the CA account (optional)
	ACMEDirectory string   `toml:"acme_directory"` // the CA's directory URL
	ACMENames     []string `toml:"acme_names"`     // names besides hostname
	// ACMEChallenge is "tls-alpn-01" (on port 443) or "http-01" (on port 80).
	ACMEChallenge string `toml:"acme_challenge"`
	// ACMEListen is where the challenge listener binds; empty: ":443" for
	// tls-alpn-01, ":80" for http-01 (see ChallengeListen).
	ACMEListen string `toml:"acme_listen"`
	// ACMECA is a PEM file of extra roots to trust for the directory's
	// HTTPS (a private or test CA such as Pebble); empty: the system's.
	ACMECA string `toml:"acme_ca"`
}

// Let's Encrypt's production directory, the default acme_directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// The ACME challenge types mamori answers.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// ChallengeListen is the address the ACME challenge listener binds:
// acme_listen, or the port the CA connects to for the challenge type.
func (t TLS) ChallengeListen() string {
	switch {
	case t.ACMEListen != "":
		return t.ACMEListen
	case t.ACMEChallenge == ChallengeHTTP:
		return ":80"
	default:
		return ":443"
	}
}

// ACMEHosts is hostname followed by acme_names, lower case, without
// trailing dots or repeats: the names certificates are obtained for.
func (c *Config) ACMEHosts() []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range append([]string{c.Hostname}, c.TLS.ACMENames...) {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// Admin configures the authenticated HTTP admin API.
type Admin struct {
	// TokenFile holds the bearer token (written by init, mode 0600).
	TokenFile string `toml:"token_file"`
	// TLS serves the admin listener (API, dashboard, metrics) over HTTPS
	// with the [tls] certificate. Required before listen.admin may name
	// an address other than loopback.
	TLS bool `toml:"tls"`
}

// Relay lists who may relay without authenticating.
type Relay struct {
	TrustedNetworks []string `toml:"trusted_networks"`
}

// Limits bound what one SMTP session may cost.
type Limits struct {
	MaxMessageSize int64    `toml:"max_message_size"` // bytes
	MaxRecipients  int      `toml:"max_recipients"`   // per message
	MaxLineLength  int      `toml:"max_line_length"`  // command and data lines
	CommandTimeout Duration `toml:"command_timeout"`  // idle time allowed between commands
	DataTimeout    Duration `toml:"data_timeout"`     // time allowed for a whole DATA phase
	MaxReceived    int      `toml:"max_received"`     // Received headers before a loop is declared
	// MaxInflight bounds the message bytes all SMTP sessions together hold
	// in memory while receiving, checking and queueing (every copy
	// counted); past it DATA gets 452 4.3.1. The process also sets its Go
	// memory limit from it (see README).
	MaxInflight int64 `toml:"max_inflight_bytes"`
}

// Queue bounds the spool.
type Queue struct {
	MaxMessages int `toml:"max_messages"` // beyond it, new mail gets 452 4.3.1
	// MaxBytes caps what the queue holds on disk; MinFreeBytes is the free
	// space the queue's filesystem must keep. Past either, MAIL gets
	// 452 4.3.1 (never a corrupted queue).
	MaxBytes     int64 `toml:"max_bytes"`
	MinFreeBytes int64 `toml:"min_free_bytes"`
	// HeldRetention: held (isolated, quarantined) mail older than this is
	// deleted, and the deletion logged. Export it first if it is evidence.
	HeldRetention Duration `toml:"held_retention"`
}

// Delivery configures outbound and local delivery.
type Delivery struct {
	Port                 int               `toml:"port"`
	Concurrency          int               `toml:"concurrency"`
	PerDomainConcurrency int               `toml:"per_domain_concurrency"`
	Relayhost            string            `toml:"relayhost"`
	Routes               map[string]string `toml:"routes"`
	MaxLifetime          Duration          `toml:"max_lifetime"`
	MinBackoff           Duration          `toml:"min_backoff"`
	MaxBackoff           Duration          `toml:"max_backoff"`
	TLSVerify            bool              `toml:"tls_verify"`
}

// DNS names the resolver used for MX lookups (and later DNSBL, SPF).
type DNS struct {
	Resolver string   `toml:"resolver"` // "host:port"; empty = /etc/resolv.conf
	Timeout  Duration `toml:"timeout"`
}

// GuardLimits are per-sender rate limits; zero means the default.
type GuardLimits struct {
	MsgsPerMinute     int `toml:"msgs_per_minute"`
	RcptsPerMinute    int `toml:"rcpts_per_minute"`
	RcptsPerHour      int `toml:"rcpts_per_hour"`
	RcptsPerDay       int `toml:"rcpts_per_day"`
	NewRcptsPerMinute int `toml:"new_rcpts_per_minute"`
}

// Guard configures the abuse-defence engine. Every limit is on by
// default, for the trusted network too.
type Guard struct {
	GuardLimits
	// Overrides raise (or lower) the limits of known bulk senders, keyed by
	// user address or IP/CIDR.
	Overrides             map[string]GuardLimits `toml:"overrides"`
	HoldCap               int                    `toml:"hold_cap"`
	UnknownRcptRatio      float64                `toml:"unknown_rcpt_ratio"`
	InboundMsgsPerMinute  int                    `toml:"inbound_msgs_per_minute"`
	InboundRcptsPerMinute int                    `toml:"inbound_rcpts_per_minute"`
	InboundAuthFails      int                    `toml:"inbound_auth_fails"` // per outside IP in 10 min failing SPF/DMARC before 451
	MaxConnections        int                    `toml:"max_connections"`
	MaxConnsPerIP         int                    `toml:"max_conns_per_ip"`
	MaxConnsPerNet        int                    `toml:"max_conns_per_net"`
	ConnsPerMinute        int                    `toml:"conns_per_minute"`
	AuthFailsPerPair      int                    `toml:"auth_fails_per_pair"`
	AuthFailsPerIP        int                    `toml:"auth_fails_per_ip"`
	AuthUsersPerNet       int                    `toml:"auth_users_per_net"`
	BanBase               Duration               `toml:"ban_base"`
	BanMax                Duration               `toml:"ban_max"`
	LoginNetworks         int                    `toml:"login_networks"`
	AuthFailsPerAccount   int                    `toml:"auth_fails_per_account"` // failures per login name in 15 min before sources the account does not trust are refused 454
	AccountThrottle       Duration               `toml:"account_throttle"`       // how long such a throttle lasts
	HistoryFactor         float64                `toml:"history_factor"`

	PregreetDelay  Duration `toml:"pregreet_delay"`   // port 25, untrusted: wait this long for a client that talks first
	MaxSessionTime Duration `toml:"max_session_time"` // whole SMTP session

	DNSBLZones  []string `toml:"dnsbl_zones"`
	DNSBLBudget Duration `toml:"dnsbl_budget"`

	// Own reputation: these public sending IPs are looked up in
	// dnsbl_zones every check_interval; when listed, an alert goes out and,
	// with pause_outbound_when_listed, mail to other domains waits.
	PublicIPs               []string `toml:"public_ips"`
	CheckInterval           Duration `toml:"check_interval"`
	PauseOutboundWhenListed bool     `toml:"pause_outbound_when_listed"`

	Webhook string `toml:"webhook"`
	// Notify: user address → where to tell that user about a suspension
	// (an address that is not the hijacked one).
	Notify map[string]string `toml:"notify"`

	StaleDays    int  `toml:"stale_days"`    // accounts unused this long are stale
	DisableStale bool `toml:"disable_stale"` // and are disabled automatically
}

// checkNonNegative refuses negative guard limits (0 means the default).
func (g Guard) checkNonNegative() error {
	lims := map[string]GuardLimits{"guard": g.GuardLimits}
	for k, v := range g.Overrides {
		lims["guard.overrides."+k] = v
	}
	for where, l := range lims {
		for name, v := range map[string]int{"msgs_per_minute": l.MsgsPerMinute, "rcpts_per_minute": l.RcptsPerMinute,
			"rcpts_per_hour": l.RcptsPerHour, "rcpts_per_day": l.RcptsPerDay, "new_rcpts_per_minute": l.NewRcptsPerMinute} {
			if v < 0 {
				return fmt.Errorf("%s.%s = %d: a limit cannot be negative (0 means the default)", where, name, v)
			}
		}
	}
	for name, v := range map[string]int{"hold_cap": g.HoldCap, "inbound_msgs_per_minute": g.InboundMsgsPerMinute,
		"inbound_rcpts_per_minute": g.InboundRcptsPerMinute, "inbound_auth_fails": g.InboundAuthFails,
		"max_connections": g.MaxConnections, "max_conns_per_ip": g.MaxConnsPerIP, "max_conns_per_net": g.MaxConnsPerNet,
		"conns_per_minute": g.ConnsPerMinute, "auth_fails_per_pair": g.AuthFailsPerPair, "auth_fails_per_ip": g.AuthFailsPerIP,
		"auth_users_per_net": g.AuthUsersPerNet, "login_networks": g.LoginNetworks, "auth_fails_per_account": g.AuthFailsPerAccount} {
		if v < 0 {
			return fmt.Errorf("guard.%s = %d: a limit cannot be negative (0 means the default)", name, v)
		}
	}
	return nil
}

// Auth configures sender authentication: SPF, DKIM and DMARC checks of
// inbound mail and DKIM signing of outbound mail.
type Auth struct {
	// VerifyInbound adds an Authentication-Results header to mail from
	// outside (SPF, DKIM, DMARC through [dns] resolver).
	VerifyInbound bool `toml:"verify_inbound"`
	// DMARCReject refuses inbound mail whose From domain publishes
	// p=reject and fails DMARC (550 5.7.1).
	DMARCReject bool `toml:"dmarc_reject"`
	// Outbound mail is signed with data_dir/dkim/DOMAIN.SELECTOR.key (made
	// by mamori dkim keygen) for the domain of its From header.
	DKIMSelector string `toml:"dkim_selector"`
	// Timeout bounds the whole check of one message (all its DNS lookups);
	// past it the results are temperror and the message goes on, so a DNS
	// outage never stalls inbound mail for long.
	Timeout Duration `toml:"timeout"`
}

// Content configures the attachment policy and the virus scanner.
type Content struct {
	// Action for a blocked attachment: "reject" (550 5.7.1 at end of DATA,
	// naming the part) or "hold" (quarantine in the queue).
	Action          string   `toml:"action"`
	BlockExtensions []string `toml:"block_extensions"` // added to the built-in list
	AllowExtensions []string `toml:"allow_extensions"` // removed from it
	// Clamd is "unix:/path/clamd.ctl" or "host:port"; empty: no scanning.
	Clamd        string   `toml:"clamd"`
	ClamdTimeout Duration `toml:"clamd_timeout"`
	// ClamdFail: when clamd cannot answer, "closed" defers the message
	// (451) and "open" accepts it unscanned (logged).
	ClamdFail   string `toml:"clamd_fail"`
	VirusAction string `toml:"virus_action"` // "reject" or "hold"
	// Uninspectable is what an archive the scanner cannot see into does
	// (encrypted, 7z/rar, unsupported method, corrupt, over the
	// decompression limits): "" (the same as action), "reject", "hold",
	// or "accept" (only the names of its entries are checked).
	Uninspectable string `toml:"uninspectable"`
	// Domains overrides the attachment policy for mail to a local domain:
	// its own action and list changes. A message to several domains gets
	// the strictest verdict.
	Domains map[string]ContentDomain `toml:"domains"`
}

// ContentDomain is one domain's attachment policy override.
type ContentDomain struct {
	Action          string   `toml:"action"`        // "" = the global action
	Uninspectable   string   `toml:"uninspectable"` // "" = the global setting
	BlockExtensions []string `toml:"block_extensions"`
	AllowExtensions []string `toml:"allow_extensions"`
}

// Log chooses the structured log format.
type Log struct {
	Format string `toml:"format"` // "json" (default) or "logfmt"
	Level  string `toml:"level"`  // debug, info (default), warn, error
}

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// defaultAdminPort is the admin API's port (init's --admin-port default).
const defaultAdminPort = 8025

// Defaults returns a config with every optional value filled in. It is the
// one place where mamori's configuration defaults are written: Load starts
// from it and init renders the config it writes from it.
func Defaults() Config {
	return Config{
		Listen:  Listen{Admin: net.JoinHostPort("127.0.0.1", strconv.Itoa(defaultAdminPort))},
		Mailbox: Mailbox{Quota: 2 << 30},
		Limits: Limits{
			MaxMessageSize: 25 << 20,
			MaxRecipients:  100,
			MaxLineLength:  2000,
			CommandTimeout: Duration{5 * time.Minute},
			DataTimeout:    Duration{10 * time.Minute},
			MaxReceived:    50,
			MaxInflight:    256 << 20,
		},
		Queue: Queue{MaxMessages: 200000, MaxBytes: 8 << 30, MinFreeBytes: 256 << 20, HeldRetention: Duration{30 * 24 * time.Hour}},
		Delivery: Delivery{
			Port:                 25,
			Concurrency:          20,
			PerDomainConcurrency: 5,
			MaxLifetime:          Duration{5 * 24 * time.Hour},
			MinBackoff:           Duration{time.Minute},
			MaxBackoff:           Duration{time.Hour},
		},
		TLS:     TLS{ACMEDirectory: LetsEncryptDirectory, ACMEChallenge: ChallengeTLSALPN},
		DNS:     DNS{Timeout: Duration{5 * time.Second}},
		Log:     Log{Format: "json", Level: "info"},
		Store:   Store{Backend: "embedded"},
		Auth:    Auth{VerifyInbound: true, DMARCReject: true, DKIMSelector: "mamori", Timeout: Duration{4 * time.Second}},
		Content: Content{Action: "reject", VirusAction: "reject", ClamdFail: "closed", ClamdTimeout: Duration{30 * time.Second}},
		Guard: Guard{
			PregreetDelay:           Duration{500 * time.Millisecond},
			MaxSessionTime:          Duration{30 * time.Minute},
			DNSBLBudget:             Duration{1500 * time.Millisecond},
			CheckInterval:           Duration{time.Hour},
			PauseOutboundWhenListed: true,
			StaleDays:               90,
			// The guard's own limits default in the guard (0 = its default).
		},
	}
}

// Load reads, fills defaults into, resolves and validates a config file.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := Defaults()
	md, err := toml.Decode(string(raw), &c)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown key(s): %s", path, strings.Join(keys, ", "))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config path: %w", err)
	}
	c.Path = abs
	c.resolvePaths(filepath.Dir(abs))
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) resolvePaths(base string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.DataDir = abs(c.DataDir)
	c.TLS.Cert = abs(c.TLS.Cert)
	c.TLS.Key = abs(c.TLS.Key)
	c.TLS.ACMECA = abs(c.TLS.ACMECA)
	c.Admin.TokenFile = abs(c.Admin.TokenFile)
}

// Validate reports the first problem that would make the server unsafe or
// unable to start. It also canonicalises domains (lower case, no trailing dot).
func (c *Config) Validate() error {
	var errs []error
	if c.Hostname == "" {
		errs = append(errs, errors.New("hostname is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	if len(c.Domains) == 0 {
		errs = append(errs, errors.New("domains: at least one local domain is required"))
	}
	seen := map[string]bool{}
	for i, d := range c.Domains {
		cd := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if cd == "" || strings.ContainsAny(cd, " @/\\") {
			errs = append(errs, fmt.Errorf("domains: %q is not a domain name", d))
			continue
		}
		if seen[cd] {
			errs = append(errs, fmt.Errorf("domains: %q listed twice", d))
		}
		seen[cd] = true
		c.Domains[i] = cd
	}
	for name, addr := range map[string]string{
		"listen.smtp": c.Listen.SMTP, "listen.submission": c.Listen.Submission,
		"listen.submissions": c.Listen.Submissions, "listen.admin": c.Listen.Admin,
		"listen.imap": c.Listen.IMAP, "listen.imaps": c.Listen.IMAPS, "listen.pop3": c.Listen.POP3, "listen.pop3s": c.Listen.POP3S,
	} {
		if addr == "" || name == "listen.admin" { // admin: checkAdminAddr below
			continue
		}
		if _, err := ParseListenAddr(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if c.Listen.SMTP == "" && c.Listen.Submission == "" && c.Listen.Submissions == "" {
		errs = append(errs, errors.New("listen: no SMTP listener configured"))
	}
	noTLS := (c.TLS.Cert == "" || c.TLS.Key == "") && !c.TLS.ACME
	if (c.Listen.Submission != "" || c.Listen.Submissions != "") && noTLS {
		errs = append(errs, errors.New("tls: cert and key (or acme = true) are required for submission (AUTH is only offered over TLS)"))
	}
	if (c.Listen.IMAP != "" || c.Listen.IMAPS != "" || c.Listen.POP3 != "" || c.Listen.POP3S != "") && noTLS {
		errs = append(errs, errors.New("tls: cert and key (or acme = true) are required for IMAP and POP3 (logins are only accepted over TLS)"))
	}
	// Route keys are domains: matched in lower case, without a final dot
	// ("Example.org" would otherwise never match).
	if len(c.Delivery.Routes) > 0 {
		routes := make(map[string]string, len(c.Delivery.Routes))
		for k, v := range c.Delivery.Routes {
			nk := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(k)), ".")
			if _, dup := routes[nk]; dup {
				errs = append(errs, fmt.Errorf("delivery.routes: %q listed twice", nk))
			}
			routes[nk] = v
		}
		c.Delivery.Routes = routes
	}
	if err := c.Guard.checkNonNegative(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.Mailbox.FileMode(); err != nil {
		errs = append(errs, err)
	}
	if c.Server.Group != "" && c.Server.User == "" {
		errs = append(errs, errors.New("server.group needs server.user"))
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs = append(errs, errors.New("tls: cert and key go together: set both or neither"))
	}
	errs = append(errs, c.validateACME()...)
	if c.Store.Node == "" {
		c.Store.Node, _ = os.Hostname()
	}
	errs = append(errs, c.Store.validate()...)
	if c.Mailbox.Quota < 0 {
		errs = append(errs, fmt.Errorf("mailbox.quota %d: want a size in bytes, 0 for none", c.Mailbox.Quota))
	}
	if c.Listen.Admin != "" {
		if err := checkAdminAddr(c.Listen.Admin, c.Admin.TLS); err != nil {
			errs = append(errs, err)
		}
		if c.Admin.TLS && noTLS {
			errs = append(errs, errors.New("admin.tls: [tls] cert and key (or acme = true) are required to serve the admin listener over HTTPS"))
		}
		if c.Admin.TokenFile == "" {
			errs = append(errs, errors.New("admin.token_file is required when listen.admin is set"))
		}
	}
	if _, err := c.TrustedPrefixes(); err != nil {
		errs = append(errs, err)
	}
	if c.Limits.MaxMessageSize < 1024 {
		errs = append(errs, fmt.Errorf("limits.max_message_size %d is too small", c.Limits.MaxMessageSize))
	}
	if c.Limits.MaxInflight < c.Limits.MaxMessageSize {
		errs = append(errs, fmt.Errorf("limits.max_inflight_bytes %d is below max_message_size %d: no message could be received", c.Limits.MaxInflight, c.Limits.MaxMessageSize))
	}
	if c.Limits.MaxRecipients < 1 || c.Limits.MaxRecipients > 10000 {
		errs = append(errs, fmt.Errorf("limits.max_recipients %d out of range 1..10000", c.Limits.MaxRecipients))
	}
	if c.Limits.MaxLineLength < 1000 {
		errs = append(errs, fmt.Errorf("limits.max_line_length %d is below RFC 5321's 1000", c.Limits.MaxLineLength))
	}
	if c.Delivery.Port < 1 || c.Delivery.Port > 65535 {
		errs = append(errs, fmt.Errorf("delivery.port %d out of range", c.Delivery.Port))
	}
	if c.Delivery.Concurrency < 1 || c.Delivery.PerDomainConcurrency < 1 {
		errs = append(errs, errors.New("delivery.concurrency and per_domain_concurrency must be at least 1"))
	}
	for dom, hp := range c.Delivery.Routes {
		if _, _, err := net.SplitHostPort(hp); err != nil {
			errs = append(errs, fmt.Errorf("delivery.routes.%q: %q is not HOST:PORT", dom, hp))
		}
	}
	if c.Delivery.Relayhost != "" {
		if _, _, err := net.SplitHostPort(c.Delivery.Relayhost); err != nil {
			errs = append(errs, fmt.Errorf("delivery.relayhost: %q is not HOST:PORT", c.Delivery.Relayhost))
		}
	}
	if c.DNS.Resolver != "" {
		if _, _, err := net.SplitHostPort(c.DNS.Resolver); err != nil {
			errs = append(errs, fmt.Errorf("dns.resolver: %q is not HOST:PORT", c.DNS.Resolver))
		}
	}
	for _, ip := range c.Guard.PublicIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			errs = append(errs, fmt.Errorf("guard.public_ips: %q is not an IP address", ip))
		}
	}
	for k := range c.Guard.Overrides {
		if !strings.Contains(k, "@") {
			if _, err := ipnet.ParsePrefix(k); err != nil {
				errs = append(errs, fmt.Errorf("guard.overrides: %q is neither a user address nor an IP/CIDR", k))
			}
		}
	}
	for _, z := range c.Guard.DNSBLZones {
		if z == "" || strings.ContainsAny(z, " /@") {
			errs = append(errs, fmt.Errorf("guard.dnsbl_zones: %q is not a DNS zone", z))
		}
	}
	// Each default lives in Defaults above. Where another package would
	// quietly substitute a different value (or none) for a zero, a zero is
	// refused here instead, so the value in effect is always the config's.
	for key, d := range map[string]time.Duration{
		"limits.command_timeout": c.Limits.CommandTimeout.Duration, // 0 would mean no idle timeout at all
		"limits.data_timeout":    c.Limits.DataTimeout.Duration,
		"auth.timeout":           c.Auth.Timeout.Duration, // 0 would fall back to msgauth's 30s
		"dns.timeout":            c.DNS.Timeout.Duration,
		"content.clamd_timeout":  c.Content.ClamdTimeout.Duration,
		"delivery.max_lifetime":  c.Delivery.MaxLifetime.Duration,
		"delivery.min_backoff":   c.Delivery.MinBackoff.Duration,
		"delivery.max_backoff":   c.Delivery.MaxBackoff.Duration,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be more than 0 (leave it out for the default)", key, d))
		}
	}
	for key, d := range map[string]time.Duration{
		"queue.held_retention": c.Queue.HeldRetention.Duration, // 0 keeps held mail until deleted by hand
		"guard.pregreet_delay": c.Guard.PregreetDelay.Duration, // 0 turns the pre-greeting test off
		"guard.dnsbl_budget":   c.Guard.DNSBLBudget.Duration,
		"guard.check_interval": c.Guard.CheckInterval.Duration,
		"guard.ban_base":       c.Guard.BanBase.Duration,
		"guard.ban_max":        c.Guard.BanMax.Duration,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", key, d))
		}
	}
	if c.Queue.MaxMessages < 1 || c.Queue.MaxBytes < 1 || c.Queue.MinFreeBytes < 0 {
		errs = append(errs, fmt.Errorf("queue.max_messages %d and max_bytes %d must be at least 1 (the queue is always bounded), min_free_bytes %d not negative",
			c.Queue.MaxMessages, c.Queue.MaxBytes, c.Queue.MinFreeBytes))
	}
	if c.Guard.StaleDays < 0 || (c.Guard.DisableStale && c.Guard.StaleDays < 1) {
		errs = append(errs, fmt.Errorf("guard.stale_days %d: must be at least 1 with disable_stale", c.Guard.StaleDays))
	}
	if c.Guard.MaxSessionTime.Duration < 5*time.Second {
		errs = append(errs, errors.New("guard.max_session_time must be at least 5s"))
	}
	for key, v := range map[string]string{"content.action": c.Content.Action, "content.virus_action": c.Content.VirusAction} {
		if v != "reject" && v != "hold" {
			errs = append(errs, fmt.Errorf("%s %q: want reject or hold", key, v))
		}
	}
	for d, o := range c.Content.Domains {
		if o.Action != "" && o.Action != "reject" && o.Action != "hold" {
			errs = append(errs, fmt.Errorf("content.domains.%q.action %q: want reject or hold", d, o.Action))
		}
		if o.Uninspectable != "" && o.Uninspectable != "reject" && o.Uninspectable != "hold" && o.Uninspectable != "accept" {
			errs = append(errs, fmt.Errorf("content.domains.%q.uninspectable %q: want reject, hold or accept", d, o.Uninspectable))
		}
	}
	if u := c.Content.Uninspectable; u != "" && u != "reject" && u != "hold" && u != "accept" {
		errs = append(errs, fmt.Errorf("content.uninspectable %q: want reject, hold or accept", u))
	}
	if c.Content.ClamdFail != "open" && c.Content.ClamdFail != "closed" {
		errs = append(errs, fmt.Errorf("content.clamd_fail %q: want open or closed", c.Content.ClamdFail))
	}
	switch c.Log.Format {
	case "json", "logfmt", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want json or logfmt", c.Log.Format))
	}
	return errors.Join(errs...)
}

// ListenAddr is a parsed "HOST:PORT" listen address.
type ListenAddr struct {
	// Addr is the IP to bind, unmapped, without a zone; the zero Addr when
	// the host is a name (Name) or empty (every interface).
	Addr netip.Addr
	Name string // a host name, lower case, without a trailing dot
	Port uint16
}

// Everywhere reports whether the address binds every interface: an empty
// host (":8025") or an unspecified address in any spelling ("0.0.0.0",
// "[::]", "[::0]", "[::ffff:0.0.0.0]").
func (l ListenAddr) Everywhere() bool {
	return l.Name == "" && (!l.Addr.IsValid() || l.Addr.IsUnspecified())
}

// Loopback reports whether the address binds loopback only: a loopback IP
// in any spelling ("127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "[::1%lo]")
// or the name localhost, which RFC 6761 reserves for loopback.
func (l ListenAddr) Loopback() bool {
	if l.Name != "" {
		return l.Name == "localhost"
	}
	return l.Addr.IsValid() && l.Addr.IsLoopback()
}

// ParseListenAddr reads a "HOST:PORT" listen address. Addresses are compared
// as addresses, never as strings: the host is parsed with net/netip and
// unmapped, so every spelling of one address means the same.
func ParseListenAddr(s string) (ListenAddr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return ListenAddr{}, fmt.Errorf("%q is not HOST:PORT: %v", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return ListenAddr{}, fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	l := ListenAddr{Port: uint16(n)}
	if host == "" {
		return l, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		l.Addr = a.Unmap().WithZone("")
		return l, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if name == "" || strings.ContainsAny(name, " /@%[]\\") || strings.IndexFunc(name, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return ListenAddr{}, fmt.Errorf("%q: host %q is neither an IP address nor a host name", s, host)
	}
	l.Name = name
	return l, nil
}

// checkAdminAddr decides where the admin listener may bind. The admin
// token (and the dashboard's session cookie) is its only protection, so:
// loopback always; another specific IP address only when the listener
// speaks TLS ([admin] tls = true), so neither crosses a network in clear;
// never every interface (a wildcard would also offer it on interfaces
// nobody meant), and never a host name other than localhost (what it
// resolves to, a wildcard included, is not known here). Addresses are
// compared parsed, so "[::0]", ":8025" and "[::ffff:0.0.0.0]" are all seen
// as "every interface".
func checkAdminAddr(addr string, tls bool) error {
	l, err := ParseListenAddr(addr)
	if err != nil {
		return fmt.Errorf("listen.admin: %w", err)
	}
	switch {
	case l.Everywhere():
		return fmt.Errorf("listen.admin: %q listens on every address; bind a loopback address such as 127.0.0.1:%d (or, with [admin] tls = true, one LAN address)", addr, l.Port)
	case l.Loopback():
		return nil
	case l.Name != "":
		return fmt.Errorf("listen.admin: %q: name an IP address (e.g. 127.0.0.1), not a host name that could resolve to another one", addr)
	case tls:
		return nil
	default:
		return fmt.Errorf("listen.admin: %q is not a loopback address; over plain HTTP the admin listener may only bind loopback, e.g. 127.0.0.1:%d; set [admin] tls = true to bind a LAN address", addr, l.Port)
	}
}

// The widest trusted network accepted is an IPv4 /8 or an IPv6 /32.
// Anything wider is an open relay in all but name.
const (
	minTrustedBits4 = 8
	minTrustedBits6 = 32
)

// PeerPrefixes parses [store] peers. A peer is trusted to relay, so the
// same limits as for trusted_networks apply.
// Each peer is one address: a whole network would exempt every host in
// it from the guard.
func (s *Store) PeerPrefixes() ([]netip.Prefix, error) {
	ps, err := trustedList("store.peers", s.Peers)
	for i, p := range ps {
		if !p.IsSingleIP() {
			return nil, fmt.Errorf("store.peers: %s: name each node's address, not a network", s.Peers[i])
		}
	}
	return ps, err
}

// TrustedPrefixes parses [relay] trusted_networks. It refuses networks that
// would make the server an open relay: wider than /8 (IPv4) or /32 (IPv6),
// and any that covers public address space beyond a /16 (IPv4) or /48 (IPv6).
func (c *Config) TrustedPrefixes() ([]netip.Prefix, error) {
	return trustedList("relay.trusted_networks", c.Relay.TrustedNetworks)
}

// trustedList parses the networks of config key, each allowed to relay.
func trustedList(key string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := ipnet.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if err := checkTrusted(p); err != nil {
			return nil, fmt.Errorf("%s: %s would make this server an open relay: %w", key, s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// translated are IPv6 ranges whose addresses stand for other hosts: the
// IPv4 Internet behind a NAT64 gateway (RFC 6052, RFC 8215), 6to4 relays
// (RFC 3056), Teredo (RFC 4380), and IPv4-mapped and IPv4-compatible
// addresses. Trusting any part of them trusts whoever a gateway or relay
// forwards for, so a trusted network may not overlap them. (A mapped
// network written as ::ffff:a.b.c.d/N, N >= 96, is unmapped by
// ipnet.ParsePrefix first and then judged as the IPv4 network it is.)
var translated = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 (64:ff9b::/96)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"},
	{netip.MustParsePrefix("2002::/16"), "6to4 (2002::/16)"},
	{netip.MustParsePrefix("2001::/32"), "Teredo (2001::/32)"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped (::ffff:0:0/96)"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (::/96)"},
}

func checkTrusted(p netip.Prefix) error {
	a := p.Addr()
	if !a.Is4() && p != netip.PrefixFrom(netip.IPv6Loopback(), 128) {
		for _, t := range translated {
			if p.Overlaps(t.p) {
				return fmt.Errorf("it overlaps %s, whose addresses stand for hosts elsewhere", t.what)
			}
		}
	}
	if a.Is4() && p.Bits() < minTrustedBits4 {
		return fmt.Errorf("wider than /%d", minTrustedBits4)
	}
	if !a.Is4() && p.Bits() < minTrustedBits6 {
		return fmt.Errorf("wider than /%d", minTrustedBits6)
	}
	private := a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || isCGNAT(a)
	if !private {
		if a.Is4() && p.Bits() < 16 {
			return errors.New("a public IPv4 network wider than /16")
		}
		if !a.Is4() && p.Bits() < 48 {
			return errors.New("a public IPv6 network wider than /48")
		}
	}
	return nil
}

func isCGNAT(a netip.Addr) bool {
	return netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}

// RouteDomains returns the routed domains sorted, for stable logs.
func (c *Config) RouteDomains() []string {
	out := make([]string, 0, len(c.Delivery.Routes))
	for d := range c.Delivery.Routes {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Marshal renders the config as TOML (used by init).
func (c *Config) Marshal() ([]byte, error) {
	var b strings.Builder
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return []byte(b.String()), nil
}

// SystemPath is the config file used when neither --config nor
// $MAMORI_CONFIG names one.
const SystemPath = "/etc/mamori/mamori.toml"

// Locate picks the config file: the --config value when given, else
// $MAMORI_CONFIG, else SystemPath. It also says where the choice came from
// ("--config", "$MAMORI_CONFIG" or "default"), for error messages.
func Locate(flagValue string, getenv func(string) string) (path, from string) {
	if flagValue != "" {
		return flagValue, "--config"
	}
	if p := getenv("MAMORI_CONFIG"); p != "" {
		return p, "$MAMORI_CONFIG"
	}
	return SystemPath, "default"
}
