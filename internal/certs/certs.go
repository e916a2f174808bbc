// Package certs owns the certificate every TLS listener of mamori serves
// (SMTP STARTTLS and 465, IMAP/POP3 STARTTLS and implicit TLS, the admin
// listener): the [tls] cert/key pair from the config (the self-signed pair
// init writes, or the admin's own), and, with [tls] acme = true,
// certificates obtained and renewed automatically from an ACME CA such as
// Let's Encrypt.
//
// Why a manager rather than a *tls.Config built once: every listener gets
// the same GetCertificate-based config, so a certificate that is issued,
// renewed or reloaded (SIGHUP) is served on the next handshake, without a
// restart and without touching sessions already open.
//
// What is served: until the first ACME certificate is issued (and whenever
// ACME is off) the [tls] pair; then the ACME certificate of the name in
// the client's SNI when it is one of ours, else (no SNI, as with clients
// that connect by IP address, or a foreign name) the certificate of
// hostname. A handshake never triggers issuance: certificates are obtained
// in the background by Start, for hostname and [tls] acme_names only (a
// HostPolicy whitelist), so nobody can make the server ask the CA for
// arbitrary names or burn its rate limits.
//
// ACME library: golang.org/x/crypto/acme/autocert. x/crypto was already a
// dependency, the package is small and maintained by the Go team, answers
// both TLS-ALPN-01 and HTTP-01, keeps certificates and the account key in
// a plain directory (DirCache, data_dir/acme, mode 0700) and renews them
// itself (by default when a third of the lifetime is left, at most 30
// days before expiry, which suits both 90-day and short-lived
// certificates). caddyserver/certmagic was the alternative: more features
// (DNS-01, OCSP stapling, cluster-wide storage and locking), but a much
// bigger dependency tree, and mamori's nodes each hold their own
// certificate, so its cluster storage buys nothing here.
//
// Two autocert behaviours are worked around here. A failed first issuance
// leaves autocert refusing that name for a minute; Start retries with a
// fresh autocert.Manager (same cache, same account) on its own backoff.
// And autocert does not log; issuance and renewals are logged from the
// cache (every new certificate is written there), and a renewal that has
// not happened well after it was due is logged by a periodic check.
//
// The Manager is also a Prometheus collector (metrics.go: days left per
// certificate), with the client library the rest of mamori's metrics use.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/netutil"

	"github.com/mamori-mail/mamori/internal/config"
)

// Manager serves the certificates of every TLS listener and, with ACME
// on, obtains and renews them.
type Manager struct {
	log      *slog.Logger
	opt      options
	hostname string
	tlsCfg   *tls.Config // nil: no TLS at all (no [tls] pair, ACME off)

	fallback atomic.Pointer[tls.Certificate] // the [tls] cert/key pair

	// ACME; hosts is nil when it is off.
	hosts      map[string]*host // by name; hostname is always in it
	order      []*host          // hostname first
	challenge  string
	listenAddr string
	email      string
	directory  string
	httpClient *http.Client
	cacheDir   string // data_dir/acme: certificates and the account key
	cache      autocert.Cache

	mu      sync.Mutex // guards ln, started, closed
	ln      net.Listener
	started bool
	closed  bool
	ctx     context.Context // ends at Close; set in New
	stop    context.CancelFunc
	wg      sync.WaitGroup // the challenge listener and its connections
}

// host is one name certificates are obtained for.
type host struct {
	name   string
	iss    atomic.Pointer[issuer]
	issued atomic.Bool // a certificate was obtained: serve it
}

// issuer is one autocert.Manager and, for http-01, its handler.
type issuer struct {
	m    *autocert.Manager
	http http.Handler
}

// options are the Manager's timings; tests shorten them.
type options struct {
	// renewBefore is autocert's RenewBefore: 0 leaves autocert's default
	// (a third of the certificate's lifetime, at most 30 days).
	renewBefore time.Duration
	// retryMin and retryMax bound the backoff between attempts at a
	// first certificate.
	retryMin, retryMax time.Duration
	// checkEvery is how often overdue renewals are looked for.
	checkEvery time.Duration
}

func defaultOptions() options {
	return options{retryMin: 10 * time.Second, retryMax: time.Hour, checkEvery: 10 * time.Minute}
}

// Challenge connections served at once on the tls-alpn-01 listener; more
// are closed at once (a CA needs a handful).
const maxChallengeConns = 32

// New loads the [tls] cert/key pair, if any, and prepares ACME when
// [tls] acme = true. It binds nothing (see Listen), writes nothing and
// contacts nobody (see Start).
func New(c *config.Config, log *slog.Logger) (*Manager, error) {
	return newManager(c, log, defaultOptions())
}

func newManager(c *config.Config, log *slog.Logger, opt options) (*Manager, error) {
	m := &Manager{log: log, opt: opt, hostname: normalize(c.Hostname)}
	m.ctx, m.stop = context.WithCancel(context.Background())
	if c.TLS.Cert != "" || c.TLS.Key != "" {
		cert, err := loadPair(c.TLS.Cert, c.TLS.Key)
		if err != nil {
			m.stop()
			return nil, err
		}
		m.fallback.Store(cert)
		if time.Now().After(cert.Leaf.NotAfter) {
			log.Warn("tls certificate has expired", "file", c.TLS.Cert, "not_after", cert.Leaf.NotAfter)
		}
	}
	if !c.TLS.ACME && m.fallback.Load() == nil {
		return m, nil // no TLS: TLSConfig is nil
	}
	m.tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: m.getCertificate}
	if !c.TLS.ACME {
		return m, nil
	}
	if err := m.setupACME(c); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

func (m *Manager) setupACME(c *config.Config) error {
	m.challenge = c.TLS.ACMEChallenge
	m.listenAddr = c.TLS.ChallengeListen()
	m.email = c.TLS.ACMEEmail
	m.directory = c.TLS.ACMEDirectory
	if m.directory == "" {
		m.directory = config.LetsEncryptDirectory
	}
	// Created by Start, which runs after privileges are dropped, so the
	// directory belongs to the user that writes it.
	m.cacheDir = filepath.Join(c.DataDir, "acme")
	m.cache = loggingCache{Cache: autocert.DirCache(m.cacheDir), m: m}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.TLS.ACMECA != "" {
		caPEM, err := os.ReadFile(c.TLS.ACMECA)
		if err != nil {
			return fmt.Errorf("acme: tls.acme_ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(caPEM) {
			return fmt.Errorf("acme: tls.acme_ca %s: no PEM certificate in it", c.TLS.ACMECA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	m.httpClient = &http.Client{Transport: closingTransport{base: tr, ctx: m.ctx}, Timeout: time.Minute}

	names := c.ACMEHosts()
	m.hosts = map[string]*host{}
	for _, n := range names {
		h := &host{name: n}
		h.iss.Store(m.newIssuer(names))
		m.hosts[n] = h
		m.order = append(m.order, h)
	}
	return nil
}

// newIssuer builds an autocert.Manager for names (all of ours: the
// whitelist is the same for each).
func (m *Manager) newIssuer(names []string) *issuer {
	am := &autocert.Manager{
		// Setting [tls] acme = true is the admin's acceptance of the CA's
		// terms of service (the README says so).
		Prompt:      autocert.AcceptTOS,
		Cache:       m.cache,
		HostPolicy:  autocert.HostWhitelist(names...),
		RenewBefore: m.opt.renewBefore,
		Email:       m.email,
		Client:      &acme.Client{DirectoryURL: m.directory, HTTPClient: m.httpClient, UserAgent: "mamori"},
	}
	iss := &issuer{m: am}
	if m.challenge == config.ChallengeHTTP {
		// autocert tries tls-alpn-01 first whatever this says, then
		// http-01 (which HTTPHandler turns on).
		iss.http = am.HTTPHandler(http.NotFoundHandler())
	}
	return iss
}

// TLSConfig is the configuration every TLS listener uses: TLS 1.2 or
// later, the certificate chosen per handshake. Each call returns a copy
// that the caller may change. It is nil when the server has no TLS ([tls]
// cert/key unset and ACME off).
func (m *Manager) TLSConfig() *tls.Config {
	if m.tlsCfg == nil {
		return nil
	}
	return m.tlsCfg.Clone()
}

// getCertificate is every listener's tls.Config.GetCertificate. It never
// starts an issuance.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if h := m.hostFor(hello.ServerName); h != nil {
		cert, err := h.cert()
		if err == nil {
			return cert, nil
		}
		m.log.Debug("acme certificate unavailable, serving the [tls] pair", "name", h.name, "err", err.Error())
	}
	if c := m.fallback.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("certs: no certificate yet (ACME has not issued one)")
}

// hostFor picks the issued ACME host to serve for an SNI name: that name
// when it is ours and issued, else hostname when issued, else nil.
func (m *Manager) hostFor(sni string) *host {
	if m.hosts == nil {
		return nil
	}
	if h := m.hosts[normalize(sni)]; h != nil && h.issued.Load() {
		return h
	}
	if h := m.hosts[m.hostname]; h != nil && h.issued.Load() {
		return h
	}
	return nil
}

// ecdsaHello is the ClientHello autocert is asked with: ECDSA P-256 keys,
// which every TLS 1.2+ client supports (autocert would otherwise pick RSA
// for a hello that lists no suites, and obtain a second certificate).
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{ServerName: name, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
}

// cert is h's current certificate from autocert's memory (renewals
// replace it there). Called only once h is issued, so it never waits on
// an issuance.
func (h *host) cert() (*tls.Certificate, error) {
	return h.iss.Load().m.GetCertificate(ecdsaHello(h.name))
}

// Listen binds the ACME challenge listener (acme_listen: :443 for
// tls-alpn-01, :80 for http-01). It may be a privileged port, so it is
// called before privileges are dropped. Without ACME it does nothing.
func (m *Manager) Listen() error {
	if m.hosts == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln != nil {
		return nil
	}
	if m.closed {
		return errors.New("acme: manager closed")
	}
	ln, err := net.Listen("tcp", m.listenAddr)
	if err != nil {
		return fmt.Errorf("acme: listen for %s challenges: %w", m.challenge, err)
	}
	m.ln = ln
	return nil
}

// addr is where the challenge listener is bound ("" when it is not).
func (m *Manager) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// Start creates data_dir/acme (mode 0700), serves ACME challenges,
// obtains the first certificates in the background and watches renewals;
// it returns at once. It is meant to run after privileges are dropped.
// Until a name's first certificate is issued the [tls] pair is served for
// it. Without ACME it does nothing.
func (m *Manager) Start(ctx context.Context) {
	if m.hosts == nil {
		return
	}
	if err := m.Listen(); err != nil {
		m.log.Error("acme: no challenge listener, certificates cannot be obtained", "err", err.Error())
		return
	}
	m.mu.Lock()
	if m.closed || m.started {
		m.mu.Unlock()
		return
	}
	m.started = true
	ctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(m.ctx, cancel) // Close ends it too
	ln := m.ln
	m.mu.Unlock()

	if err := os.MkdirAll(m.cacheDir, 0o700); err != nil {
		m.log.Error("acme: certificate directory", "err", err.Error())
	} else if err := os.Chmod(m.cacheDir, 0o700); err != nil { // it holds private keys
		m.log.Error("acme: certificate directory", "err", err.Error())
	}
	m.log.Info("acme: starting", "names", strings.Join(m.names(), ","), "challenge", m.challenge,
		"listen", ln.Addr().String(), "directory", m.directory)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if m.challenge == config.ChallengeHTTP {
			m.serveHTTP(ctx, ln)
		} else {
			m.serveALPN(ctx, ln)
		}
	}()
	for _, h := range m.order {
		go m.obtain(ctx, h)
	}
	go m.watch(ctx)
}

func (m *Manager) names() []string {
	out := make([]string, len(m.order))
	for i, h := range m.order {
		out[i] = h.name
	}
	return out
}

// obtain gets h's first certificate (from the cache when one is there),
// retrying with backoff until it succeeds or ctx ends. autocert renews it
// from then on.
func (m *Manager) obtain(ctx context.Context, h *host) {
	wait := m.opt.retryMin
	for {
		start := time.Now()
		cert, err := h.iss.Load().m.GetCertificate(ecdsaHello(h.name))
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			h.issued.Store(true)
			m.log.Info("acme certificate in use", "name", h.name, "serial", serial(cert.Leaf.SerialNumber),
				"not_after", cert.Leaf.NotAfter.UTC(), "issuer", cert.Leaf.Issuer.CommonName)
			return
		}
		m.log.Warn("acme: obtaining a certificate failed; serving the [tls] pair meanwhile", "name", h.name,
			"err", err.Error(), "took", time.Since(start).Round(time.Millisecond), "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		// autocert refuses a name for a minute after a failed attempt; a
		// fresh Manager (same cache and account) follows our backoff.
		h.iss.Store(m.newIssuer(m.names()))
		wait = min(2*wait, m.opt.retryMax)
	}
}

// watch logs certificates whose renewal is overdue (autocert retries a
// failed renewal on its own, silently).
func (m *Manager) watch(ctx context.Context) {
	t := time.NewTicker(m.opt.checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, h := range m.order {
				if !h.issued.Load() {
					continue
				}
				cert, err := h.cert()
				if err != nil || cert.Leaf == nil {
					continue
				}
				if renewalOverdue(cert.Leaf, m.opt.renewBefore, now) {
					m.log.Error("acme: certificate renewal is overdue (the CA or the challenge listener may be unreachable)",
						"name", h.name, "serial", serial(cert.Leaf.SerialNumber), "not_after", cert.Leaf.NotAfter.UTC(),
						"hours_left", int(cert.Leaf.NotAfter.Sub(now).Hours()))
				}
			}
		}
	}
}

// renewalOverdue reports whether autocert should have renewed leaf by now:
// past the renewal time it computes (RenewBefore, or a third of the
// lifetime, at most 30 days, before expiry, plus its jitter) by a grace of
// about one failed attempt and its retry.
func renewalOverdue(leaf *x509.Certificate, renewBefore time.Duration, now time.Time) bool {
	threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
	if renewBefore > 0 {
		threshold = min(renewBefore, 30*24*time.Hour)
	}
	jitter := min(threshold/10, time.Hour)
	due := leaf.NotAfter.Add(-threshold + jitter)
	return now.After(due.Add(2 * jitter))
}

// serveALPN answers tls-alpn-01 challenges: a TLS handshake offering only
// the acme-tls/1 protocol gets the challenge certificate; any other
// handshake gets the regular certificate (never starting an issuance), and
// every connection is closed after its handshake.
func (m *Manager) serveALPN(ctx context.Context, ln net.Listener) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{acme.ALPNProto},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
				h := m.hosts[normalize(hello.ServerName)]
				if h == nil {
					return nil, fmt.Errorf("acme: challenge for a name not ours: %q", hello.ServerName)
				}
				return h.iss.Load().m.GetCertificate(hello)
			}
			return m.getCertificate(hello)
		},
	}
	sem := make(chan struct{}, maxChallengeConns)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("acme: challenge listener", "err", err.Error())
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			conn.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer func() { <-sem }()
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				m.log.Debug("acme: challenge handshake", "remote", conn.RemoteAddr().String(), "err", err.Error())
			}
		}()
	}
}

// serveHTTP answers http-01 challenges for our names; anything else is 404.
func (m *Manager) serveHTTP(ctx context.Context, ln net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			h := m.hosts[normalize(host)]
			if h == nil {
				http.NotFound(w, r)
				return
			}
			// autocert checks the Host header against its whitelist as
			// it is; on a port other than 80 that includes the port.
			r.Host = h.name
			h.iss.Load().http.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	// As many connections at once as the TLS-ALPN-01 listener takes: port
	// 80 faces the whole Internet.
	if err := srv.Serve(netutil.LimitListener(ln, maxChallengeConns)); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
		m.log.Error("acme: challenge listener stopped", "err", err.Error())
	}
}

// Reload re-reads the [tls] cert/key files named in c (for SIGHUP). On
// an error the certificate in use stays and the error is returned. ACME
// settings are read by New only: changing them needs a restart.
func (m *Manager) Reload(c *config.Config) error {
	if c.TLS.Cert == "" && c.TLS.Key == "" {
		if m.fallback.Load() != nil {
			return errors.New("tls: removing [tls] cert and key needs a restart; the loaded pair stays in use")
		}
		return nil
	}
	if m.tlsCfg == nil {
		return errors.New("tls: the server started without TLS; adding [tls] cert and key needs a restart")
	}
	cert, err := loadPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		return fmt.Errorf("%w; the loaded pair stays in use", err)
	}
	m.fallback.Store(cert)
	m.log.Info("tls certificate reloaded", "file", c.TLS.Cert, "serial", serial(cert.Leaf.SerialNumber),
		"not_after", cert.Leaf.NotAfter.UTC())
	return nil
}

// Close stops the challenge listener and the background work. An
// issuance in flight ends at its next request to the CA; autocert's
// renewal timers die with the process.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.stop()
	var err error
	if m.ln != nil {
		err = m.ln.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("acme: close challenge listener: %w", err)
	}
	return nil
}

// loadPair reads a certificate chain and its key.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: cert and key must both be set")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// normalize is a name as the certificates know it: lower case, no
// trailing dot.
func normalize(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

func serial(n *big.Int) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf("%x", n)
}

// loggingCache logs every certificate autocert stores: each issuance and
// renewal is written to the cache. Keys, the account key included, are
// never logged.
type loggingCache struct {
	autocert.Cache
	m *Manager
}

func (c loggingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	name, ok := certName(key)
	if !ok {
		return err
	}
	if err != nil {
		c.m.log.Error("acme: storing a new certificate failed", "name", name, "err", err.Error())
		return err
	}
	leaf := firstCert(data)
	if leaf == nil {
		return nil
	}
	event := "acme certificate issued"
	if h := c.m.hosts[name]; h != nil && h.issued.Load() {
		event = "acme certificate renewed"
	}
	c.m.log.Info(event, "name", name, "serial", serial(leaf.SerialNumber), "not_before", leaf.NotBefore.UTC(),
		"not_after", leaf.NotAfter.UTC(), "issuer", leaf.Issuer.CommonName)
	return nil
}

// certName reports whether a cache key is a certificate's ("NAME", or
// "NAME+rsa") rather than the account key's or a challenge token's.
func certName(key string) (string, bool) {
	name, kind, found := strings.Cut(key, "+")
	if !found || kind == "rsa" {
		return name, !strings.Contains(name, "acme_account")
	}
	return "", false
}

// firstCert parses the first CERTIFICATE block of a cache entry (autocert
// writes the private key, then the chain); other blocks are skipped
// unread.
func firstCert(data []byte) *x509.Certificate {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return c
		}
	}
}

// closingTransport fails the ACME client's requests once the Manager is
// closed, so an issuance in flight stops at its next request.
type closingTransport struct {
	base http.RoundTripper
	ctx  context.Context
}

func (t closingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, fmt.Errorf("acme: manager closed: %w", err)
	}
	return t.base.RoundTrip(r)
}
