package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-mail/mamori/internal/admit"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/imapd"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/pop3d"
)

// mailAccess serves the users' mailboxes over IMAP and POP3. Every
// listener goes through the same admission as SMTP (internal/admit: bans,
// per-listener budgets, session time) and every login through the same
// checker (internal/login), so a ban made for failures on one protocol
// holds on all.
type mailAccess struct {
	imap *imapd.Server
	pop3 *pop3d.Server
	ls   []accessListener
	wg   sync.WaitGroup
}

type accessListener struct {
	name string
	l    net.Listener
}

// bindMailAccess binds the configured IMAP and POP3 listeners.
func bindMailAccess(c *config.Config, addrs map[string]string) ([]accessListener, error) {
	var ls []accessListener
	for _, x := range []struct{ name, addr string }{
		{"imap", c.Listen.IMAP}, {"imaps", c.Listen.IMAPS}, {"pop3", c.Listen.POP3}, {"pop3s", c.Listen.POP3S},
	} {
		if x.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			for _, b := range ls {
				b.l.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", x.name, err)
		}
		ls = append(ls, accessListener{x.name, l})
		addrs[x.name] = l.Addr().String()
	}
	return ls, nil
}

// startMailAccess serves the bound listeners; errors go to errc.
func startMailAccess(c *config.Config, ls []accessListener, tlsCfg *tls.Config, ms *mailbox.Store, lc *login.Checker,
	g *guard.Guard, trusted *atomic.Pointer[[]netip.Prefix], mt *metrics.Metrics, log *slog.Logger, errc chan<- error) *mailAccess {
	ma := &mailAccess{ls: ls}
	// trusted is [relay] trusted_networks, replaced whole by a reload.
	isTrusted := func(ip netip.Addr) bool { return ipnet.Contains(*trusted.Load(), ip) }
	for _, x := range ls {
		imap := x.name == "imap" || x.name == "imaps"
		ac := admit.Config{
			Name:           x.name,
			Guard:          g,
			Trusted:        isTrusted,
			MaxSessionTime: mailSessionTime,
			LoginTime:      mailLoginTime,
			Log:            log.With("stage", x.name),
			Metrics:        mt,
		}
		if imap {
			ac.Refuse = func(w io.Writer, r admit.Refusal) { fmt.Fprintf(w, "* BYE %s\r\n", r.Text) }
		} else {
			ac.Refuse = func(w io.Writer, r admit.Refusal) { fmt.Fprintf(w, "-ERR [SYS/TEMP] %s\r\n", r.Text) }
		}
		if x.name == "imaps" || x.name == "pop3s" {
			ac.TLS = tlsCfg
		}
		al := admit.Listen(x.l, ac)
		var serve func(net.Listener) error
		if imap {
			if ma.imap == nil {
				ma.imap = imapd.New(imapd.Config{Hostname: c.Hostname, TLS: tlsCfg, Store: ms, Login: lc, Sessions: lc.Sessions,
					AppendLimit: c.Limits.MaxMessageSize, AppendMemory: appendMemory(c), ReadMemory: appendMemory(c), Log: log.With("stage", "imap")})
			}
			serve = ma.imap.Serve
		} else {
			if ma.pop3 == nil {
				ma.pop3 = pop3d.New(pop3d.Config{Hostname: c.Hostname, TLS: tlsCfg, Store: ms, Login: lc, Sessions: lc.Sessions,
					Log: log.With("stage", "pop3")})
			}
			serve = ma.pop3.Serve
		}
		ma.wg.Add(1)
		go func(name string) {
			defer ma.wg.Done()
			if err := serve(al); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, pop3d.ErrServerClosed) {
				select {
				case errc <- fmt.Errorf("%s listener: %w", name, err):
				default:
				}
			}
		}(x.name)
	}
	return ma
}

// mailSessionTime caps one IMAP or POP3 connection: long enough for IDLE
// clients (which reconnect anyway), short enough that a forgotten session
// does not hold a slot for ever.
const mailSessionTime = 24 * time.Hour

// mailLoginTime is how long an IMAP or POP3 client may stay connected
// without logging in: mail clients log in at once, and an idle or
// chattering anonymous connection only holds a slot.
const mailLoginTime = 2 * time.Minute

// shutdown stops the servers and waits for their sessions or ctx.
func (ma *mailAccess) shutdown(ctx context.Context, log *slog.Logger) {
	if ma == nil {
		return
	}
	if ma.imap != nil {
		if err := ma.imap.Shutdown(ctx); err != nil {
			log.Warn("imap shutdown", "err", err.Error())
		}
	}
	if ma.pop3 != nil {
		if err := ma.pop3.Shutdown(ctx); err != nil {
			log.Warn("pop3 shutdown", "err", err.Error())
		}
	}
	for _, x := range ma.ls {
		x.l.Close()
	}
	ma.wg.Wait()
}

// appendMemory is what all IMAP APPENDs together may hold: half the SMTP
// in-flight budget again (imapd raises it to two messages if less).
func appendMemory(c *config.Config) int64 { return c.Limits.MaxInflight / 2 }
