package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/certs"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/imapd"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/smtpd"
)

// keyHolder holds the DKIM keyring in force.
type keyHolder struct {
	k   atomic.Pointer[msgauth.Keyring]
	log *slog.Logger
}

// signOwn signs what mamori writes itself (DSNs, alerts) with the keys in
// force; without a key for the From domain the message is unchanged.
func (h *keyHolder) signOwn(msg []byte) []byte {
	if f := dkimSigner(h.k.Load(), h.log); f != nil {
		return f(msg)
	}
	return msg
}

// reloader applies a re-read config to the running server: SIGHUP and
// POST /api/v1/reload (mamori reload). Everything is built and checked
// before anything is applied, so an invalid config leaves the old one in
// force. Sessions in flight keep the settings they began with.
type reloader struct {
	mu    sync.Mutex
	cur   *config.Config
	log   *slog.Logger
	certs *certs.Manager
	keys  *keyHolder
	guard *guard.Guard
	smtp  *smtpd.Server
	// mailTrusted is [relay] trusted_networks for IMAP and POP3.
	mailTrusted *atomic.Pointer[[]netip.Prefix]
	// smtpConfig builds the SMTP configuration of c with the keys given.
	smtpConfig func(c *config.Config, keys *msgauth.Keyring) smtpd.Config
	// imap is the IMAP server, if one listens (its APPEND limit follows
	// [limits] max_message_size).
	imap *imapd.Server
}

// reload re-reads the config file and applies what can change while
// running: [limits] (but max_inflight_bytes), [relay], [guard] limits,
// [content], [auth], DKIM keys and the TLS files. Other changed sections
// are named in NeedRestart.
func (r *reloader) reload() (admin.ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := config.Load(r.cur.Path)
	if err != nil {
		r.log.Error("reload refused: the old configuration stays in force", "err", err.Error())
		return admin.ReloadResult{}, err
	}
	fail := func(err error) (admin.ReloadResult, error) {
		r.log.Error("reload refused: the old configuration stays in force", "err", err.Error())
		return admin.ReloadResult{}, err
	}
	// The TLS pair is checked first. One that cannot be read (a key only
	// root may read, after the switch to [server] user) keeps the pair in
	// force and is reported; the rest of the reload still applies.
	tlsOK := true
	if c.TLS.Cert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
			tlsOK = false
			r.log.Warn("reload: the TLS pair cannot be read, the one in force stays (make the key readable by the service user's group)", "err", err.Error())
		}
	}
	keys := loadKeyring(c, r.log.With("stage", "auth"))
	sc := r.smtpConfig(c, keys)
	if _, err := r.smtp.CheckConfig(sc); err != nil {
		return fail(fmt.Errorf("limits: %w", err))
	}
	if err := r.guard.SetConfig(guardConfig(c)); err != nil {
		return fail(err)
	}
	// Nothing below can fail: sc was validated.
	if err := r.smtp.SetConfig(sc); err != nil {
		return fail(err)
	}
	if tlsOK {
		if err := r.certs.Reload(c); err != nil {
			// Only if the files changed again since the check above.
			r.log.Error("reload: tls files", "err", err.Error())
		}
	}
	r.keys.k.Store(keys)
	if trusted, err := c.TrustedPrefixes(); err == nil && r.mailTrusted != nil {
		r.mailTrusted.Store(&trusted)
	}
	if r.imap != nil {
		if got := r.imap.SetAppendLimit(c.Limits.MaxMessageSize); got < c.Limits.MaxMessageSize {
			r.log.Warn("reload: IMAP APPEND limit lowered to what the APPEND memory budget (half of max_inflight_bytes at start) holds; restart to raise it",
				"max_message_size", c.Limits.MaxMessageSize, "append_limit", got)
		}
	}
	res := admin.ReloadResult{NeedRestart: needRestart(r.cur, c)}
	r.cur = c
	r.log.Info("reloaded", "config", c.Path, "need_restart", res.NeedRestart)
	return res, nil
}

// needRestart names the settings that differ between old and new but are
// only read at start.
func needRestart(old, new *config.Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	diff("hostname", old.Hostname, new.Hostname)
	diff("data_dir", old.DataDir, new.DataDir)
	// [store] peers apply at once (the SMTP settings are rebuilt); the
	// rest of [store] is read at start.
	diff("store", []any{old.Store.Backend, old.Store.URL, old.Store.Node}, []any{new.Store.Backend, new.Store.URL, new.Store.Node})
	diff("tls (acme)", []any{old.TLS.ACME, old.TLS.ACMEEmail, old.TLS.ACMEDirectory, old.TLS.ACMENames, old.TLS.ACMEChallenge, old.TLS.ACMEListen, old.TLS.ACMECA},
		[]any{new.TLS.ACME, new.TLS.ACMEEmail, new.TLS.ACMEDirectory, new.TLS.ACMENames, new.TLS.ACMEChallenge, new.TLS.ACMEListen, new.TLS.ACMECA})
	diff("tls (turning TLS on or off)", old.TLS.Cert == "", new.TLS.Cert == "")
	diff("domains", old.Domains, new.Domains)
	diff("postmaster", old.Postmaster, new.Postmaster)
	diff("listen", old.Listen, new.Listen)
	diff("admin", old.Admin, new.Admin)
	diff("server", old.Server, new.Server)
	diff("mailbox", old.Mailbox, new.Mailbox)
	diff("queue.max_messages", old.Queue.MaxMessages, new.Queue.MaxMessages)
	diff("queue.held_retention", old.Queue.HeldRetention, new.Queue.HeldRetention)
	diff("delivery", old.Delivery, new.Delivery)
	diff("dns", old.DNS, new.DNS)
	diff("log", old.Log, new.Log)
	diff("limits.max_inflight_bytes", old.Limits.MaxInflight, new.Limits.MaxInflight)
	og, ng := old.Guard, new.Guard
	diff("guard (dnsbl, public_ips, webhook, notify, stale accounts)",
		[]any{og.DNSBLZones, og.DNSBLBudget, og.PublicIPs, og.CheckInterval, og.PauseOutboundWhenListed, og.Webhook, og.Notify, og.StaleDays, og.DisableStale},
		[]any{ng.DNSBLZones, ng.DNSBLBudget, ng.PublicIPs, ng.CheckInterval, ng.PauseOutboundWhenListed, ng.Webhook, ng.Notify, ng.StaleDays, ng.DisableStale})
	return out
}
