// Package doctor checks what decides whether a mamori server is safe and
// whether the rest of the Internet accepts its mail: the DNS records of its
// domains and host name (MX, A/AAAA, PTR, SPF, DKIM, DMARC, MTA-STS,
// TLS-RPT), its certificate, its listeners, the relay battery against
// itself, its IPs on DNS blocklists and outbound port 25.
//
// Why it exists: most of these live outside mamori (in a DNS zone, at the
// hosting provider, in a firewall), so mamori cannot enforce them; a new
// server fails quietly when one is wrong (mail lands in spam or bounces
// days later). `mamori doctor` finds each problem at once and prints the
// exact record or command that fixes it.
//
// Each check is a typed value (Check) with a stable name, so scripts and
// tests can rely on `--json`. Checks run concurrently, each bounded by its
// own timeout and all by one deadline, but are reported in a fixed order.
// All DNS goes through the configured [dns] resolver (internal/resolver),
// never the system's, so tests run against internal/testdns.
package doctor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/user"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/resolver"
)

// Status is the outcome of one check.
type Status string

// Statuses. Only StatusFail makes the report fail; a warning is something
// to look at, a skip a check that did not apply or could not run.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Check names. They are stable: scripts match on them.
const (
	CheckMX          = "mx"
	CheckA           = "a"
	CheckPTR         = "ptr"
	CheckFCrDNS      = "fcrdns"
	CheckSPF         = "spf"
	CheckDKIM        = "dkim"
	CheckDMARC       = "dmarc"
	CheckMTASTS      = "mta-sts"
	CheckTLSRPT      = "tls-rpt"
	CheckCertificate = "certificate"
	CheckListeners   = "listeners"
	CheckRelay       = "relay"
	CheckDNSBL       = "dnsbl"
	CheckOutbound25  = "outbound25"
	CheckPrivileges  = "privileges"
)

// Check is the result of one check on one subject (a domain, an IP, a
// listener, a file).
type Check struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Status  Status `json:"status"`
	Detail  string `json:"detail"`
	// Fix is the exact DNS record (zone-file syntax) or command that
	// fixes the problem; empty when there is nothing to do.
	Fix string `json:"fix"`
}

// Report is the result of Run: the checks in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
	OK     bool    `json:"ok"` // no check failed
}

// Defaults of Options.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultDeadline    = 2 * time.Minute
	DefaultProbeDomain = "gmail.com"
)

// Options configures Run.
type Options struct {
	Config   *config.Config     // required
	Resolver *resolver.Resolver // required: the [dns] resolver
	// ProbeDomain's first MX, port 25, is where outbound25 tries to
	// connect; Probe ("HOST:PORT", HOST a name or an IP) overrides it.
	ProbeDomain string
	Probe       string
	Timeout     time.Duration  // per check; <= 0 means DefaultTimeout
	Deadline    time.Duration  // whole run; <= 0 means DefaultDeadline
	Roots       *x509.CertPool // certificate roots; nil means the system's
	Now         func() time.Time
	Logger      *slog.Logger
}

// Run runs every check and returns the report. It returns an error only
// for unusable Options; every problem found is a Check.
func Run(ctx context.Context, opt Options) (Report, error) {
	if opt.Config == nil || opt.Resolver == nil {
		return Report{}, errors.New("doctor: Config and Resolver are required")
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Deadline <= 0 {
		opt.Deadline = DefaultDeadline
	}
	if opt.ProbeDomain == "" {
		opt.ProbeDomain = DefaultProbeDomain
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, opt.Deadline)
	defer cancel()

	d := &doctor{opt: opt, cfg: opt.Config, res: opt.Resolver, log: opt.Logger, up: make(chan struct{})}
	// The order of this list is the order of the report.
	groups := []func(context.Context) []Check{
		d.checkMX,
		d.checkA,
		d.checkPTR,
		d.checkSPF,
		d.checkDKIM,
		d.checkDMARC,
		d.checkMTASTS,
		d.checkTLSRPT,
		d.checkCertificates,
		d.checkListeners,
		d.checkRelay,
		d.checkDNSBL,
		d.checkOutbound25,
		d.checkPrivileges,
	}
	results := make([][]Check, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() {
			results[i] = g(ctx)
		})
	}
	wg.Wait()

	rep := Report{OK: true}
	for _, cs := range results {
		for _, c := range cs {
			if c.Status == StatusFail {
				rep.OK = false
			}
			opt.Logger.Debug("doctor check", "name", c.Name, "subject", c.Subject, "status", string(c.Status), "detail", c.Detail)
			rep.Checks = append(rep.Checks, c)
		}
	}
	return rep, nil
}

// doctor is the state of one Run shared by the checks.
type doctor struct {
	opt Options
	cfg *config.Config
	res *resolver.Resolver
	log *slog.Logger

	ipsOnce  sync.Once
	ips      []netip.Addr
	ipsNote  string // where ips came from
	ipsFixed bool   // ips are [guard] public_ips

	// up is closed by checkListeners once it knows whether the server
	// runs; serverUp is valid after that.
	up       chan struct{}
	serverUp bool
}

// withTimeout bounds one check.
func (d *doctor) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.opt.Timeout)
}

// ourIPs returns the server's public addresses: [guard] public_ips when
// set, else what the host name resolves to (which then has to be trusted).
func (d *doctor) ourIPs(ctx context.Context) []netip.Addr {
	d.ipsOnce.Do(func() {
		for _, s := range d.cfg.Guard.PublicIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				d.ips = append(d.ips, a.Unmap())
			}
		}
		if len(d.ips) > 0 {
			d.ipsFixed = true
			d.ipsNote = "[guard] public_ips"
			return
		}
		ctx, cancel := d.withTimeout(ctx)
		defer cancel()
		ips, err := d.res.LookupIP(ctx, d.cfg.Hostname)
		if err != nil {
			d.ipsNote = "no [guard] public_ips and the host name does not resolve"
			return
		}
		d.ips = ips
		d.ipsNote = fmt.Sprintf("the addresses of %s ([guard] public_ips not set)", d.cfg.Hostname)
	})
	return d.ips
}

// dnsProblem words a lookup error for a Detail.
func dnsProblem(err error) string {
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return "null MX: the domain says it accepts no mail"
	case errors.Is(err, resolver.ErrNXDomain):
		return "no such name (NXDOMAIN)"
	case errors.Is(err, resolver.ErrNotFound):
		return "no record"
	}
	return "DNS lookup failed: " + err.Error()
}

// worst returns the more serious of two statuses.
func worst(a, b Status) Status {
	rank := map[Status]int{StatusSkip: 0, StatusOK: 1, StatusWarn: 2, StatusFail: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// checkPrivileges: serve should not keep root. [server] user unset is a
// warning (serve then runs as whoever starts it: fine under the systemd
// unit, which starts it unprivileged); a user that does not exist fails.
func (d *doctor) checkPrivileges(context.Context) []Check {
	c := Check{Name: CheckPrivileges, Subject: "[server] user"}
	name := d.cfg.Server.User
	if name == "" {
		c.Status = StatusWarn
		c.Detail = "not set: started as root, serve keeps root (fine if a service manager starts it as an unprivileged user)"
		c.Fix = "useradd --system --home-dir " + d.cfg.DataDir + " --shell /usr/sbin/nologin mamori; then in the config: [server] user = \"mamori\""
		return []Check{c}
	}
	if _, err := user.Lookup(name); err != nil {
		c.Status = StatusFail
		c.Detail = fmt.Sprintf("user %q does not exist: serve would refuse to start as root", name)
		c.Fix = "useradd --system --home-dir " + d.cfg.DataDir + " --shell /usr/sbin/nologin " + name
		return []Check{c}
	}
	c.Status = StatusOK
	c.Detail = fmt.Sprintf("serve drops root to %q after binding its ports", name)
	return []Check{c}
}
