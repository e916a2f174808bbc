package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/testutil"
)

const hostname = "mx.example.test"

// pair is a certificate with its key, as PEM.
type pair struct {
	cert, key []byte
	serial    *big.Int
}

// issue makes a certificate for names signed by ca (self-signed when ca
// is nil), valid from notBefore for life.
func issue(t *testing.T, ca *pair, names []string, notBefore time.Time, life time.Duration) *pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(life),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := tmpl, any(key)
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		b, _ := pem.Decode(ca.cert)
		parent, _ = x509.ParseCertificate(b.Bytes)
		kb, _ := pem.Decode(ca.key)
		signer, _ = x509.ParseECPrivateKey(kb.Bytes)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return &pair{
		cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		serial: sn,
	}
}

// syncBuffer is a log sink tests read while the manager writes.
type syncBuffer = testutil.SyncBuffer

// setup writes a [tls] pair (self-signed, as init does) and returns a
// config using it; acme turns ACME on, with a CA directory nothing
// listens on (so only the cache can provide a certificate).
func setup(t *testing.T, acme bool) (*config.Config, *pair) {
	t.Helper()
	dir := t.TempDir()
	p := issue(t, nil, []string{hostname}, time.Now().Add(-time.Hour), 24*time.Hour)
	c := config.Defaults()
	c.Hostname = hostname
	c.DataDir = filepath.Join(dir, "data")
	c.TLS.Cert, c.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, &c, p)
	if acme {
		c.TLS.ACME = true
		c.TLS.ACMENames = []string{"imap.example.test"}
		c.TLS.ACMEListen = "127.0.0.1:0"
		dead, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.TLS.ACMEDirectory = "https://" + dead.Addr().String() + "/directory"
		dead.Close()
	}
	return &c, p
}

func writePair(t *testing.T, c *config.Config, p *pair) {
	t.Helper()
	if err := os.WriteFile(c.TLS.Cert, p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.TLS.Key, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
}

// served returns the serial of the leaf a TLS client gets from a listener
// using cfg, with sni as its ServerName ("" sends none).
func served(t *testing.T, cfg *tls.Config, sni string) *big.Int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, cfg)
		if tc.Handshake() == nil {
			io.Copy(io.Discard, tc)
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake (sni %q): %v", sni, err)
	}
	defer conn.Close()
	if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x", v)
	}
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestNoTLS(t *testing.T) {
	c, _ := setup(t, false)
	c.TLS.Cert, c.TLS.Key = "", ""
	m, err := New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if m.TLSConfig() != nil {
		t.Error("TLSConfig without a pair or ACME is not nil")
	}
	if err := m.Listen(); err != nil {
		t.Error(err)
	}
	m.Start(context.Background())
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

func TestNewRefusesBadPair(t *testing.T) {
	c, _ := setup(t, false)
	if err := os.WriteFile(c.TLS.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), c.TLS.Key) {
		t.Errorf("err = %v, want it to name %s", err, c.TLS.Key)
	}
}

// TestFallbackBeforeIssuance: with ACME on and no certificate obtainable
// yet (the CA is unreachable), every handshake — SNI ours, none, foreign
// — gets the [tls] pair, and the failure is logged.
func TestFallbackBeforeIssuance(t *testing.T) {
	c, p := setup(t, true)
	var logs syncBuffer
	opt := defaultOptions()
	opt.retryMin = time.Hour
	m, err := newManager(c, slog.New(slog.NewTextHandler(&logs, nil)), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Listen(); err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	cfg := m.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 || cfg.GetCertificate == nil {
		t.Fatalf("TLSConfig: min %x, GetCertificate set %v", cfg.MinVersion, cfg.GetCertificate != nil)
	}
	for _, sni := range []string{hostname, "", "other.example", "imap.example.test"} {
		if got := served(t, cfg, sni); got.Cmp(p.serial) != 0 {
			t.Errorf("sni %q: serial %x, want the [tls] pair's %x", sni, got, p.serial)
		}
	}
	waitLog(t, &logs, "obtaining a certificate failed")
	if st, err := os.Stat(filepath.Join(c.DataDir, "acme")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data_dir/acme: %v, %v; want a 0700 directory", st, err)
	}
}

// TestServesCachedCertificate: a certificate in data_dir/acme (as after a
// restart) is served for hostname, for handshakes without SNI and for
// foreign names; a name of ours with none yet gets hostname's too.
func TestServesCachedCertificate(t *testing.T) {
	c, p := setup(t, true)
	ca := issue(t, nil, []string{"Test CA"}, time.Now().Add(-time.Hour), 48*time.Hour)
	acmeCert := issue(t, ca, []string{hostname}, time.Now().Add(-time.Hour), 90*24*time.Hour)
	dir := filepath.Join(c.DataDir, "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// autocert's cache format: the key, then the chain.
	entry := append(append(append([]byte{}, acmeCert.key...), acmeCert.cert...), ca.cert...)
	if err := os.WriteFile(filepath.Join(dir, hostname), entry, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	opt := defaultOptions()
	opt.retryMin = time.Hour
	m, err := newManager(c, slog.New(slog.NewTextHandler(&logs, nil)), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Start(context.Background()) // binds the listener itself
	if m.addr() == "" {
		t.Fatal("Start did not bind the challenge listener")
	}
	cfg := m.TLSConfig()
	deadline := time.Now().Add(10 * time.Second)
	for served(t, cfg, hostname).Cmp(acmeCert.serial) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("cached certificate not served; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, sni := range []string{"", "MX.example.test.", "other.example", "imap.example.test"} {
		if got := served(t, cfg, sni); got.Cmp(acmeCert.serial) != 0 {
			t.Errorf("sni %q: serial %x, want the ACME certificate's %x (not the pair's %x)", sni, got, acmeCert.serial, p.serial)
		}
	}
	// The metric: days left of both the ACME certificate and the pair.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+" "+strings.Join(labels, ",")] = s.GetGauge().GetValue()
		}
	}
	for series, want := range map[string]float64{
		"mamori_tls_certificate_days_left name=" + hostname + ",source=acme": 90 - 1.0/24,
		"mamori_tls_certificate_days_left name=" + hostname + ",source=file": 1 - 1.0/24,
	} {
		if d, ok := got[series]; !ok || d < want-0.01 || d > want+0.01 {
			t.Errorf("%s = %v (present %v), want %.2f; all: %v", series, d, ok, want, got)
		}
	}
	if !strings.Contains(logs.String(), "acme certificate in use") {
		t.Errorf("no log of the certificate in use:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a private key was logged")
	}
}

// TestOverdueRenewalIsLogged: a cached certificate past its renewal time
// whose renewal fails (the CA is unreachable) keeps being served, and the
// overdue renewal is logged as an error.
func TestOverdueRenewalIsLogged(t *testing.T) {
	c, _ := setup(t, true)
	ca := issue(t, nil, []string{"Test CA"}, time.Now().Add(-100*24*time.Hour), 200*24*time.Hour)
	old := issue(t, ca, []string{hostname}, time.Now().Add(-80*24*time.Hour), 90*24*time.Hour)
	dir := filepath.Join(c.DataDir, "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	entry := append(append(append([]byte{}, old.key...), old.cert...), ca.cert...)
	if err := os.WriteFile(filepath.Join(dir, hostname), entry, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	opt := defaultOptions()
	opt.retryMin, opt.checkEvery = time.Hour, 10*time.Millisecond
	m, err := newManager(c, slog.New(slog.NewTextHandler(&logs, nil)), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Start(context.Background())
	waitLog(t, &logs, "renewal is overdue")
	if got := served(t, m.TLSConfig(), ""); got.Cmp(old.serial) != 0 {
		t.Errorf("serial %x, want the old certificate's %x until a renewal succeeds", got, old.serial)
	}
}

// TestReload: a good pair replaces the served one at the next handshake;
// a bad file leaves the old one serving and is reported.
func TestReload(t *testing.T) {
	c, p1 := setup(t, false)
	m, err := New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.TLSConfig()
	if got := served(t, cfg, hostname); got.Cmp(p1.serial) != 0 {
		t.Fatalf("serial %x, want %x", got, p1.serial)
	}
	p2 := issue(t, nil, []string{hostname}, time.Now().Add(-time.Hour), 24*time.Hour)
	writePair(t, c, p2)
	if err := m.Reload(c); err != nil {
		t.Fatal(err)
	}
	if got := served(t, cfg, ""); got.Cmp(p2.serial) != 0 {
		t.Fatalf("after reload: serial %x, want %x", got, p2.serial)
	}
	for name, breakIt := range map[string]func(){
		"garbage key":     func() { os.WriteFile(c.TLS.Key, []byte("garbage"), 0o600) },
		"missing cert":    func() { os.Remove(c.TLS.Cert) },
		"mismatched key":  func() { writePair(t, c, &pair{cert: p1.cert, key: p2.key}) },
		"cert unset":      func() { c.TLS.Cert, c.TLS.Key = "", "" },
		"only key is set": func() { c.TLS.Cert = "" },
	} {
		t.Run(name, func(t *testing.T) {
			writePair(t, c, p2)
			saved := *c
			defer func() { *c = saved }()
			breakIt()
			if err := m.Reload(c); err == nil {
				t.Fatal("Reload accepted a broken pair")
			}
			if got := served(t, cfg, hostname); got.Cmp(p2.serial) != 0 {
				t.Fatalf("serial %x, want the old %x", got, p2.serial)
			}
		})
	}
}

func TestRenewalOverdue(t *testing.T) {
	day := 24 * time.Hour
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		life        time.Duration
		renewBefore time.Duration
		at          time.Duration // after NotBefore
		want        bool
	}{
		{"90 days, fresh", 90 * day, 0, day, false},
		{"90 days, renewal window just opened", 90 * day, 0, 60*day + time.Hour, false},
		{"90 days, hours past the window", 90 * day, 0, 60*day + 4*time.Hour, true},
		{"6 days, in time", 6 * day, 0, 4 * day, false},
		{"6 days, overdue", 6 * day, 0, 4*day + 12*time.Hour, true},
		{"renew_before 10 days, not yet", 90 * day, 10 * day, 79 * day, false},
		{"renew_before 10 days, overdue", 90 * day, 10 * day, 80*day + 4*time.Hour, true},
		{"expired", 90 * day, 0, 91 * day, true},
	}
	for _, tc := range tests {
		leaf := &x509.Certificate{NotBefore: start, NotAfter: start.Add(tc.life)}
		if got := renewalOverdue(leaf, tc.renewBefore, start.Add(tc.at)); got != tc.want {
			t.Errorf("%s: overdue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCertName(t *testing.T) {
	for _, tc := range []struct {
		key, name string
		ok        bool
	}{
		{"mx.example.test", "mx.example.test", true},
		{"mx.example.test+rsa", "mx.example.test", true},
		{"mx.example.test+token", "", false},
		{"acme_account+key", "", false},
		{"acme_account.key", "", false},
		{"abcdef+http-01", "", false},
	} {
		name, ok := certName(tc.key)
		if ok != tc.ok || (ok && name != tc.name) {
			t.Errorf("certName(%q) = %q, %v; want %q, %v", tc.key, name, ok, tc.name, tc.ok)
		}
	}
}

func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
