package server

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/mamori-mail/mamori/internal/alert"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/dnsbl"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/store"
)

func guardLimits(l config.GuardLimits) guard.Limits {
	return guard.Limits{
		MsgsPerMinute:     l.MsgsPerMinute,
		RcptsPerMinute:    l.RcptsPerMinute,
		RcptsPerHour:      l.RcptsPerHour,
		RcptsPerDay:       l.RcptsPerDay,
		NewRcptsPerMinute: l.NewRcptsPerMinute,
	}
}

// guardConfig maps the [guard] section onto the engine's config; zero
// values mean the engine's defaults.
func guardConfig(c *config.Config) guard.Config {
	g := c.Guard
	gc := guard.Config{
		Local:                 guardLimits(g.GuardLimits),
		HoldCap:               g.HoldCap,
		UnknownRcptRatio:      g.UnknownRcptRatio,
		InboundMsgsPerMinute:  g.InboundMsgsPerMinute,
		InboundRcptsPerMinute: g.InboundRcptsPerMinute,
		InboundAuthFails:      g.InboundAuthFails,
		MaxConnections:        g.MaxConnections,
		MaxConnsPerIP:         g.MaxConnsPerIP,
		MaxConnsPerNet:        g.MaxConnsPerNet,
		ConnsPerMinute:        g.ConnsPerMinute,
		AuthFailsPerPair:      g.AuthFailsPerPair,
		AuthFailsPerIP:        g.AuthFailsPerIP,
		AuthUsersPerNet:       g.AuthUsersPerNet,
		BanBase:               g.BanBase.Duration,
		BanMax:                g.BanMax.Duration,
		LoginNetworks:         g.LoginNetworks,
		AuthFailsPerAccount:   g.AuthFailsPerAccount,
		AccountThrottle:       g.AccountThrottle.Duration,
		HistoryFactor:         g.HistoryFactor,
		// Mail clients hold several connections per account (Thunderbird:
		// up to 5), and an office NAT has many accounts.
		PoolConnFactor: map[guard.Pool]int{"imap": mailClientConnFactor, "imaps": mailClientConnFactor,
			"pop3": mailClientConnFactor, "pop3s": mailClientConnFactor},
	}
	if len(g.Overrides) > 0 {
		gc.Overrides = make(map[string]guard.Limits, len(g.Overrides))
		for k, v := range g.Overrides {
			gc.Overrides[k] = guardLimits(v)
		}
	}
	return gc
}

// mailClientConnFactor multiplies the per-IP and per-network connection
// caps on the IMAP and POP3 listeners.
const mailClientConnFactor = 5

// guardHooks let the guard act on the queue and tell the administrator.
type guardHooks struct {
	q        *queue.Queue
	alert    *alert.Notifier
	journal  *journal.Journal
	metrics  *metrics.Metrics
	sessions *login.Sessions
	log      *slog.Logger
}

// EndSessions ends a suspended account's mailbox sessions (IMAP, POP3):
// whoever holds them stops reading its mail (password-reset messages
// included). Its SMTP sessions go on: what they send is held, as evidence,
// and the sender is not told.
func (h *guardHooks) EndSessions(user string) {
	if n := h.sessions.Revoke(user, "imap", "pop3"); n > 0 {
		h.log.Warn("account suspended: its IMAP/POP3 sessions ended", "user", user, "sessions", n)
	}
}

func (h *guardHooks) HoldQueued(ip netip.Addr, user, rule string) (int, error) {
	f := queue.Filter{User: user}
	if user == "" {
		f.ClientIP = ip.String()
	}
	n, err := h.q.Hold(f, rule)
	h.metrics.MessagesHeld(metrics.HeldQueued, n)
	ipStr := ""
	if ip.IsValid() {
		ipStr = ip.String()
	}
	h.log.Info("guard held queued mail", "client_ip", ipStr, "user", user, "rule", rule, "count", n)
	return n, err
}

func (h *guardHooks) Alert(a guard.Alert) {
	guardEvent(h.journal, a)
	h.metrics.GuardEvent(a.Kind)
	h.alert.Alert(a)
}

// storePersister keeps the guard's state in the embedded store.
type storePersister struct{ st *store.Store }

func (p storePersister) LoadGuardState() ([]byte, error) { return p.st.Get("guard", "state") }
func (p storePersister) SaveGuardState(b []byte) error   { return p.st.Put("guard", "state", b) }

// dnsblAdapter gives smtpd the one question it asks.
type dnsblAdapter struct{ c *dnsbl.Checker }

func (d dnsblAdapter) Listed(ctx context.Context, ip netip.Addr) (string, string, bool) {
	r := d.c.Check(ctx, ip)
	return r.Zone, r.Reason, r.Listed
}

// defences are the guard and what it works with, started by startDefences.
type defences struct {
	guard  *guard.Guard
	alert  *alert.Notifier
	dnsbl  *dnsbl.Checker
	self   *dnsbl.SelfMonitor
	paused func() bool
	// sessions are the logged-in sessions of every protocol: ended when
	// the guard suspends their account or the directory revokes it.
	sessions *login.Sessions
}

func startDefences(ctx context.Context, c *config.Config, st *store.Store, cl *cluster, q *queue.Queue, res *resolver.Resolver, jrn *journal.Journal, sign func([]byte) []byte, mt *metrics.Metrics, log *slog.Logger) (*defences, error) {
	d := &defences{paused: func() bool { return false }, sessions: &login.Sessions{}}
	d.alert = alert.New(alert.Config{
		Hostname:   c.Hostname,
		Postmaster: postmaster(c),
		Webhook:    c.Guard.Webhook,
		Notify:     c.Guard.Notify,
		From:       "postmaster@" + c.Domains[0],
		Sign:       sign,
	}, q, log.With("stage", "alert"))
	gc := guardConfig(c)
	gc.OnDecision = guardDecisions(mt)
	cl.guardConfig(&gc)
	g, err := guard.New(gc, &guardHooks{q: q, alert: d.alert, journal: jrn, metrics: mt, sessions: d.sessions, log: log.With("stage", "guard")},
		storePersister{st}, log.With("stage", "guard"))
	if err != nil {
		return nil, err
	}
	d.guard = g
	go g.Run(ctx)
	if len(c.Guard.DNSBLZones) > 0 {
		d.dnsbl = dnsbl.New(res, c.Guard.DNSBLZones, c.Guard.DNSBLBudget.Duration, log.With("stage", "dnsbl"))
		var ips []netip.Addr
		for _, s := range c.Guard.PublicIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, a)
			}
		}
		if len(ips) > 0 {
			d.self = dnsbl.NewSelfMonitor(d.dnsbl, ips, c.Guard.CheckInterval.Duration, func(listed bool, rs []dnsbl.Result) {
				a := guard.Alert{Time: time.Now(), Kind: "own_ip_listed", Rule: "dnsbl.self"}
				if !listed {
					a.Kind, a.Detail = "own_ip_delisted", "our sending IPs are no longer listed; outbound delivery resumes"
				} else {
					for _, r := range rs {
						if r.Listed {
							a.Detail += r.Zone + " " + r.Reason + "; "
						}
					}
					if c.Guard.PauseOutboundWhenListed {
						a.Detail += "outbound delivery to other domains is paused until delisted"
					}
				}
				d.alert.Alert(a)
			}, log.With("stage", "dnsbl"))
			go d.self.Run(ctx)
			if c.Guard.PauseOutboundWhenListed {
				d.paused = d.self.Listed
			}
		}
	}
	return d, nil
}

// disableStale disables accounts unused for stale_days, once an hour.
func disableStale(ctx context.Context, c *config.Config, dir *mailbox.Directory, notify func(guard.Alert), log *slog.Logger) {
	if !c.Guard.DisableStale || c.Guard.StaleDays <= 0 {
		return
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		for _, u := range mailbox.Stale(dir.Users(), time.Duration(c.Guard.StaleDays)*24*time.Hour, time.Now()) {
			if u.Disabled {
				continue
			}
			if err := dir.SetDisabled(u.Address, true); err != nil {
				log.Warn("disable stale account", "user", u.Address, "err", err.Error())
				continue
			}
			log.Info("stale account disabled", "user", u.Address, "last_login", u.LastLogin)
			notify(guard.Alert{Time: time.Now(), Kind: "disabled", User: u.Address, Rule: "stale",
				Detail: "no login for " + strconv.Itoa(c.Guard.StaleDays) + " days"})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// smtpPorts are the mail listener ports (SMTP, IMAP, POP3), for the
// nftables export: a ban holds on every door.
func smtpPorts(addrs map[string]string) []int {
	var out []int
	for _, k := range []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"} {
		if _, p, err := net.SplitHostPort(addrs[k]); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
