// Package server assembles mamori's stages — receive (smtpd), queue,
// deliver (delivery, mailbox) and manage (admin) — from one config, and
// runs them until the context ends. It is the only place that knows all of
// them; each stage sees the others only through the small interfaces it
// declares.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/certs"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/delivery"
	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/metrics"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/smtpd"
	"github.com/mamori-mail/mamori/internal/store"
)

// NewLogger builds the structured logger the config asks for.
func NewLogger(c *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// StorePath is where the embedded state database lives.
func StorePath(c *config.Config) string { return filepath.Join(c.DataDir, "mamori.db") }

// QueueDir is where the spool lives.
func QueueDir(c *config.Config) string { return filepath.Join(c.DataDir, "queue") }

// JournalDir is where the evidence journal (JSON Lines) lives.
func JournalDir(c *config.Config) string { return filepath.Join(c.DataDir, "journal") }

// MailDir is the root of local Maildirs.
func MailDir(c *config.Config) string { return filepath.Join(c.DataDir, "mail") }

// ReadToken reads the admin token file.
func ReadToken(c *config.Config) (string, error) {
	b, err := os.ReadFile(c.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin token in %s is too short", c.Admin.TokenFile)
	}
	return t, nil
}

// Options tune a run (tests use them).
type Options struct {
	// Ready, if set, is called once every listener is bound.
	Ready func(addrs map[string]string)
	// Reload, when it receives, makes the server re-read its config
	// (SIGHUP). A nil channel never does.
	Reload <-chan struct{}
}

// Run serves until ctx is cancelled, then shuts down cleanly: listeners
// stop, in-flight SMTP sessions get a grace period, delivery attempts
// finish, and the queue and store are closed.
func Run(ctx context.Context, c *config.Config, log *slog.Logger, opt Options) error {
	setMemoryLimit(c, log)
	// Every TLS listener takes its certificate from one manager: the [tls]
	// pair, or ACME's once issued, renewed and reloaded without a restart.
	// Its challenge listener may need a privileged port: bound here.
	certMgr, err := certs.New(c, log.With("stage", "certs"))
	if err != nil {
		return err
	}
	defer certMgr.Close()
	if err := certMgr.Listen(); err != nil {
		return err
	}
	tlsCfg := certMgr.TLSConfig()
	// Bind everything first so a port conflict fails fast, before any
	// stage starts working.
	type lst struct {
		name string
		kind smtpd.Kind
		l    net.Listener
	}
	var smtpLs []lst
	closeAll := func() {
		for _, x := range smtpLs {
			x.l.Close()
		}
	}
	addrs := map[string]string{}
	for _, x := range []struct {
		name, addr string
		kind       smtpd.Kind
	}{
		{"smtp", c.Listen.SMTP, smtpd.KindMX},
		{"submission", c.Listen.Submission, smtpd.KindSubmission},
		{"submissions", c.Listen.Submissions, smtpd.KindSubmissions},
	} {
		if x.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen %s: %w", x.name, err)
		}
		smtpLs = append(smtpLs, lst{x.name, x.kind, l})
		addrs[x.name] = l.Addr().String()
	}
	mailLs, err := bindMailAccess(c, addrs)
	if err != nil {
		closeAll()
		return err
	}
	prevClose := closeAll
	closeAll = func() {
		prevClose()
		for _, x := range mailLs {
			x.l.Close()
		}
	}
	var adminL net.Listener
	var token string
	if c.Listen.Admin != "" {
		if token, err = ReadToken(c); err != nil {
			closeAll()
			return err
		}
		if c.Admin.TLS && tlsCfg == nil {
			closeAll()
			return errors.New("admin.tls: [tls] cert and key are required")
		}
		if adminL, err = net.Listen("tcp", c.Listen.Admin); err != nil {
			closeAll()
			return fmt.Errorf("listen admin: %w", err)
		}
		addrs["admin"] = adminL.Addr().String()
	}

	// Root, if we have it, is needed only until here: the key and the
	// token are read and every port is bound. Then the process becomes
	// [server] user before it touches any data.
	defer closeAll() // on an early error; a second Close after Shutdown is harmless
	if adminL != nil {
		defer adminL.Close()
	}
	if err := BecomeServiceUser(c, log); err != nil {
		return err
	}
	for _, d := range []string{c.DataDir, QueueDir(c), MailDir(c)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	st, err := store.Open(StorePath(c), store.Options{LockTimeout: 2 * time.Second, Node: c.Store.Node})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	cl, err := openCluster(ctx, c, st, log) // [store]: the directory's store, shared or not
	if err != nil {
		return err
	}
	defer cl.close()
	dir, err := cl.openDirectory(st, c.Domains, log)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	// The evidence journal is opened first and closed last, so every stage
	// can record until the end.
	jrn, err := journal.Open(JournalDir(c), journal.Options{})
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	defer jrn.Close()
	q, err := queue.Open(QueueDir(c), queue.Options{MaxMessages: c.Queue.MaxMessages, Logger: log.With("stage", "queue")})
	if err != nil {
		return fmt.Errorf("open queue: %w", err)
	}
	defer q.Close()

	trusted, err := c.TrustedPrefixes()
	if err != nil {
		return err
	}
	res, err := resolver.New(c.DNS.Resolver, c.DNS.Timeout.Duration)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	mt := metrics.New() // one event path for /metrics and the live view's traffic
	mt.Registry().MustRegister(certMgr)
	// The defences run until the very end, after the listeners and
	// delivery have stopped, so their last state is saved.
	gctx, gcancel := context.WithCancel(context.Background())
	defer gcancel()
	// DKIM keys (reloadable): smtpd signs what users submit, delivery its
	// DSNs, the guard its alerts.
	keys := &keyHolder{log: log.With("stage", "auth")}
	keys.k.Store(loadKeyring(c, keys.log))
	def, err := startDefences(gctx, c, st, cl, q, res, jrn, keys.signOwn, mt, log)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	cl.run(gctx, def.guard, dir, log)
	defer def.alert.Close()
	defer def.guard.Close()
	instrument(mt, q, def.guard, res)

	// mstore is the one owner of the Maildir tree: local delivery, IMAP and
	// POP3 all go through it.
	perm, err := mailboxPerm(c)
	if err != nil {
		return err
	}
	if err := mailbox.EnsurePerm(MailDir(c), perm); err != nil {
		return fmt.Errorf("mailbox group and mode: %w", err)
	}
	mstore := mailbox.NewStore(MailDir(c), mailbox.StoreOptions{
		Perm:      perm,
		Quota:     func(addr string) int64 { return dir.QuotaOf(addr, c.Mailbox.Quota) },
		SyncBatch: mt.SyncBatch,
	})
	defer mstore.Close()

	// One login check for SMTP AUTH, IMAP and POP3.
	// A password changed, an account disabled or deleted — here or on
	// another node — ends that user's open sessions on every protocol.
	lc := &login.Checker{Dir: dir, Guard: def.guard, Log: log.With("stage", "login"),
		Disabled: func(err error) bool { return errors.Is(err, mailbox.ErrDisabled) }, Metrics: mt,
		Sessions: def.sessions}
	dir.SetRevokeHook(func(addr string) {
		if n := lc.Sessions.Revoke(addr); n > 0 {
			log.Info("credentials revoked: ending the user's sessions", "user", addr, "sessions", n)
		}
	})
	smtpConfig := func(c *config.Config, k *msgauth.Keyring) smtpd.Config {
		pols := contentPolicies(c)
		trusted, _ := c.TrustedPrefixes() // c is validated
		peers, _ := c.Store.PeerPrefixes()
		return smtpd.Config{
			Hostname:         c.Hostname,
			Domain:           c.Domains[0],
			TLS:              tlsCfg,
			Trusted:          trusted,
			Peers:            peers,
			MaxMessageBytes:  c.Limits.MaxMessageSize,
			MaxRecipients:    c.Limits.MaxRecipients,
			MaxLineLength:    c.Limits.MaxLineLength,
			CommandTimeout:   c.Limits.CommandTimeout.Duration,
			DataTimeout:      c.Limits.DataTimeout.Duration,
			MaxReceived:      c.Limits.MaxReceived,
			MaxInflightBytes: c.Limits.MaxInflight,
			LocalIPs:         localIPs(),
			Guard:            def.guard,
			Storage:          q.Space(c.Queue.MaxBytes, c.Queue.MinFreeBytes).Check,
			OverQuota:        mstore.OverQuota,
			Login:            lc,
			Sessions:         lc.Sessions,
			Recorder:         sessionRecorder{jrn},
			Content:          contentChecker(c, pols, mt, log.With("stage", "content")),
			ContentMemory:    pols.MemoryBound,
			Verify:           inboundVerifier(c, res, log.With("stage", "auth")),
			Sign:             headerSigner(k, log.With("stage", "auth")),
			PregreetDelay:    c.Guard.PregreetDelay.Duration,
			MaxSessionTime:   c.Guard.MaxSessionTime.Duration,
			Metrics:          mt,
		}
	}
	smtpCfg := smtpConfig(c, keys.k.Load())
	if err := smtpCfg.Validate(); err != nil {
		closeAll()
		return fmt.Errorf("limits: %w", err)
	}
	smtpSrv := smtpd.New(smtpCfg, dir, q, log.With("stage", "smtpd"))
	if def.dnsbl != nil {
		smtpSrv.SetDNSBL(dnsblAdapter{def.dnsbl})
	}

	sched := delivery.NewScheduler(delivery.Config{
		Hostname:    c.Hostname,
		Port:        c.Delivery.Port,
		Routes:      c.Delivery.Routes,
		Relayhost:   c.Delivery.Relayhost,
		Concurrency: c.Delivery.Concurrency,
		PerDomain:   c.Delivery.PerDomainConcurrency,
		MaxLifetime: c.Delivery.MaxLifetime.Duration,
		MinBackoff:  c.Delivery.MinBackoff.Duration,
		MaxBackoff:  c.Delivery.MaxBackoff.Duration,
		TLSVerify:   c.Delivery.TLSVerify,
		Postmaster:  postmaster(c),
		Paused:      def.paused,
		Sign:        keys.signOwn,
		Metrics:     mt,
	}, spool{q}, &localDelivery{dir: dir, store: mstore, started: time.Now()}, res, log.With("stage", "delivery"))

	var wg sync.WaitGroup
	errc := make(chan error, len(smtpLs)+len(mailLs)+2)
	for _, x := range smtpLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := smtpSrv.Serve(x.kind, x.l); err != nil && !errors.Is(err, smtpd.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", x.name, err)
			}
		}()
	}
	mailTrusted := &atomic.Pointer[[]netip.Prefix]{}
	mailTrusted.Store(&trusted)
	mail := startMailAccess(c, mailLs, tlsCfg, mstore, lc, def.guard, mailTrusted, mt, log, errc)
	dctx, dcancel := context.WithCancel(context.Background())
	defer dcancel()
	var dwg sync.WaitGroup
	dwg.Add(1)
	go func() {
		defer dwg.Done()
		if err := sched.Run(dctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("delivery: %w", err)
		}
	}()
	rl := &reloader{cur: c, log: log.With("stage", "reload"), certs: certMgr, keys: keys, guard: def.guard, smtp: smtpSrv, smtpConfig: smtpConfig, mailTrusted: mailTrusted,
		imap: mail.imap}
	go func() {
		for range opt.Reload {
			rl.reload()
		}
	}()
	var httpSrv *http.Server
	if adminL != nil {
		api := admin.NewServer(admin.Local{Dir: dir, Store: mstore, DefaultQuota: c.Mailbox.Quota}, q, token, log.With("stage", "admin"))
		api.SetGuard(def.guard, smtpPorts(addrs))
		api.SetLive(newLive(def, q, metricsTraffic{mt}))
		api.SetIncident(q, jrn)
		api.SetMetrics(mt.Handler())
		api.SetReload(rl.reload)
		api.OnQueueOp(func(op, filter string, n int, remote string) {
			if op == "hold" {
				mt.MessagesHeld(metrics.HeldAdmin, n)
			}
			queueEvent(jrn, op, filter, "admin API from "+remote, n)
		})
		httpSrv = admin.NewHTTPServer(api, log.With("stage", "admin"))
		l := admin.LimitListener(adminL)
		if c.Admin.TLS { // [admin] tls: HTTPS with the [tls] certificate
			l = tls.NewListener(l, tlsCfg)
		}
		go func() {
			if err := httpSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin listener: %w", err)
			}
		}()
	}
	certMgr.Start(gctx)
	go disableStale(gctx, c, dir, def.alert.Alert, log.With("stage", "guard"))
	go dir.PersistLogins(gctx, mailbox.LoginPersistInterval)
	go q.ExpireHeld(gctx, c.Queue.HeldRetention.Duration, func(n int) {
		queueEvent(jrn, "expire", "state=held older_than="+c.Queue.HeldRetention.Duration.String(), "retention policy", n)
	}, log.With("stage", "queue"))
	log.Info("started", "hostname", c.Hostname, "domains", strings.Join(dir.Domains(), ","),
		"smtp", addrs["smtp"], "submission", addrs["submission"], "submissions", addrs["submissions"],
		"imap", addrs["imap"], "imaps", addrs["imaps"], "pop3", addrs["pop3"], "pop3s", addrs["pop3s"], "admin", addrs["admin"],
		"queued", q.Count(queue.Filter{}))
	if opt.Ready != nil {
		opt.Ready(addrs)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("stopping after error", "err", runErr.Error())
	}
	log.Info("stopping")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := smtpSrv.Shutdown(sctx); err != nil {
		log.Warn("smtp shutdown", "err", err.Error())
	}
	mail.shutdown(sctx, log)
	wg.Wait()
	if httpSrv != nil {
		httpSrv.Shutdown(sctx)
	}
	dcancel()
	dwg.Wait()
	if err := dir.Flush(); err != nil {
		log.Warn("directory flush", "err", err.Error())
	}
	log.Info("stopped")
	return runErr
}

// setMemoryLimit derives the Go memory limit from [limits]
// max_inflight_bytes: the runtime collects garbage before its memory
// passes about twice what messages in flight may hold (SMTP's budget, and
// IMAP APPEND's half of it again when IMAP is served), plus the
// collector's headroom, instead of letting the heap double past what is
// live (GOGC). GOMEMLIMIT, when set, wins.
func setMemoryLimit(c *config.Config, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" || c.Limits.MaxInflight <= 0 {
		return
	}
	inflight := c.Limits.MaxInflight
	if c.Listen.IMAP != "" || c.Listen.IMAPS != "" {
		inflight += appendMemory(c)
	}
	limit := 2*inflight + memoryBaseline
	debug.SetMemoryLimit(limit)
	log.Info("memory limit", "bytes", limit, "max_inflight_bytes", c.Limits.MaxInflight)
}

// memoryBaseline is what the process needs besides messages in flight
// (code, queue index, guard state of a typical site).
const memoryBaseline = 32 << 20

func postmaster(c *config.Config) string {
	if c.Postmaster != "" {
		return c.Postmaster
	}
	return "postmaster@" + c.Domains[0]
}

// localIPs returns a predicate for the host's own addresses (for [ip]
// literal recipients).
func localIPs() func(netip.Addr) bool {
	set := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				set[p.Addr().Unmap()] = true
			}
		}
	}
	return func(ip netip.Addr) bool { return set[ip.Unmap()] }
}

// localDelivery adapts the mailbox package to the delivery stage.
type localDelivery struct {
	dir     *mailbox.Directory
	store   *mailbox.Store
	started time.Time
}

func (l *localDelivery) IsLocalDomain(d string) bool { return l.dir.IsLocalDomain(d) }

func (l *localDelivery) DeliverLocal(ctx context.Context, rcpt string, m queue.Meta, body []byte) error {
	// A message queued before this process started may have reached the
	// mailbox just before a crash, without its status being recorded.
	err := l.store.DeliverOnce(rcpt, m.ID, m.From, body, m.Received.Before(l.started))
	if errors.Is(err, mailbox.ErrOverQuota) {
		// Not permanent: the scheduler defers it, and the status text
		// makes the deferral (and a final bounce) say 4.2.2.
		return fmt.Errorf("4.2.2 mailbox full: %w", err)
	}
	return err
}

// spool adapts *queue.Queue to the delivery stage's Spool, which names its
// own Lease and Attempt so that package does not depend on queue internals.
type spool struct{ q *queue.Queue }

type lease struct{ l *queue.Lease }

func (l lease) Message() queue.Meta { return l.l.Meta }
func (l lease) Revoked() bool       { return l.l.Revoked() }
func (l lease) BeginSend() bool     { return l.l.BeginSend() }
func (l lease) Recovered() bool     { return l.l.Recovered }

func (s spool) Next(ctx context.Context) (delivery.Lease, error) {
	l, err := s.q.Next(ctx)
	if err != nil {
		return nil, err
	}
	return lease{l}, nil
}

func (s spool) Finish(l delivery.Lease, a delivery.Attempt) error {
	ql, ok := l.(lease)
	if !ok {
		return fmt.Errorf("finish: foreign lease %T", l)
	}
	return s.q.Finish(ql.l, queue.Attempt(a))
}

func (s spool) Body(id string) ([]byte, error) { return s.q.Body(id) }

func (s spool) Enqueue(m queue.Meta, b []byte) (queue.Meta, error) { return s.q.Enqueue(m, b) }
