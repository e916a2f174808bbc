package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testdns"
)

// pebbleVersion is the ACME test server the certificate test runs
// against: Let's Encrypt's Pebble, built from the Go module proxy (never a
// dependency in go.mod). .ci/run builds the same version and sets
// MAMORI_PEBBLE.
const pebbleVersion = "v2.10.3"

// pebbleValidity is the lifetime of the certificates the test CA issues.
// autocert renews when a third of it is left (plus up to a tenth of that
// as jitter), so a renewal comes 30 to 31.5 s after each issuance.
const pebbleValidity = 45

// pebbleBin returns a Pebble binary: $MAMORI_PEBBLE, else one built
// earlier under ${TMPDIR:-/tmp}/mamori-pebble/, else one built now with
// go install. A failed build skips the test, or fails it in CI
// (MAMORI_REQUIRE_TOOLS).
func pebbleBin(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format+" (run .ci/run to build it)", args...)
	}
	if p := os.Getenv("MAMORI_PEBBLE"); p != "" {
		if _, err := os.Stat(p); err != nil {
			unavailable("MAMORI_PEBBLE: %v", err)
		}
		return p
	}
	dir := filepath.Join(os.TempDir(), "mamori-pebble", pebbleVersion)
	bin := filepath.Join(dir, "pebble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	// Built into a fresh folder and renamed into place, so a concurrent
	// run never sees half a binary.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		unavailable("pebble: %v", err)
	}
	tmp, err := os.MkdirTemp(dir, "build")
	if err != nil {
		unavailable("pebble: %v", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable("building pebble %s: %v\n%s", pebbleVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "pebble"), bin); err != nil {
		unavailable("pebble: %v", err)
	}
	return bin
}

// testCA is a throwaway CA and a certificate it signed for 127.0.0.1 and
// localhost: Pebble's HTTPS (directory and management) is served with it,
// and mamori trusts the CA through [tls] acme_ca.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mamori test CA for Pebble"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return write("ca.pem", "CERTIFICATE", caDER), write("pebble-cert.pem", "CERTIFICATE", der), write("pebble-key.pem", "EC PRIVATE KEY", kder)
}

// pebble is a running Pebble.
type pebble struct {
	directory string         // ACME directory URL
	roots     *x509.CertPool // Pebble's issuing root, from its management API
	log       string         // its output file
}

// startPebble runs Pebble validating challenges on tlsPort (tls-alpn-01)
// and httpPort (http-01) of the address dnsAddr resolves names to.
func startPebble(t *testing.T, dnsAddr string, tlsPort, httpPort int) (*pebble, string) {
	t.Helper()
	bin := pebbleBin(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir)
	port, mgmt := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", port),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":            "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "short-lived, to see renewals", "validityPeriod": pebbleValidity}},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "pebble.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		lf.Close()
	})
	pb := &pebble{directory: fmt.Sprintf("https://127.0.0.1:%d/dir", port), log: logFile}
	caPEM, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			pb.roots = x509.NewCertPool()
			if resp.StatusCode == 200 && pb.roots.AppendCertsFromPEM(body) {
				break
			}
			t.Fatalf("pebble /roots/0: %s\n%s", resp.Status, body)
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("pebble did not come up: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return pb, caFile
}

// peer is what a TLS client saw of the server.
type peer struct {
	chain []*x509.Certificate
}

func (p peer) serial() string { return fmt.Sprintf("%x", p.chain[0].SerialNumber) }

// verify checks the chain against roots for name, as a client that
// connected by IP address (so sent no SNI) and knows the name would.
func (p peer) verify(roots *x509.CertPool, name string) error {
	inter := x509.NewCertPool()
	for _, c := range p.chain[1:] {
		inter.AddCert(c)
	}
	_, err := p.chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
	return err
}

// tlsPeer connects to a listener the way its clients do (kind "starttls"
// for SMTP's STARTTLS, "tls" for implicit TLS), without SNI, and returns
// the certificates it was shown.
func tlsPeer(t *testing.T, kind, addr string) (peer, error) {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true} // verified by the caller, against the CA it expects
	switch kind {
	case "starttls":
		c, err := smtp.Dial(addr)
		if err != nil {
			return peer{}, err
		}
		defer c.Close()
		if err := c.StartTLS(cfg); err != nil {
			return peer{}, err
		}
		st, _ := c.TLSConnectionState()
		return peer{st.PeerCertificates}, nil
	default:
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return peer{}, err
		}
		defer conn.Close()
		return peer{conn.ConnectionState().PeerCertificates}, nil
	}
}

// TestACMEIssuanceAndRenewal runs mamori with [tls] acme = true against
// Pebble doing real TLS-ALPN-01 validation on loopback (names resolved by
// the in-process test DNS): the self-signed pair is served until the first
// issuance; then SMTP (25, 587 STARTTLS; 465) and IMAP (993) serve a
// certificate that verifies against Pebble's root for the hostname, to
// clients without SNI; and a renewal replaces it while IMAP and SMTP
// sessions opened before it go on.
func TestACMEIssuanceAndRenewal(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	challengePort := freePort(t)
	pb, caFile := startPebble(t, dns.Addr, challengePort, freePort(t))

	const domain = "acme.test"
	host := "mx." + domain
	in := newInstance(t, domain, func(cfg string) string {
		cfg = setKey(cfg, "acme", "true")
		cfg = setKey(cfg, "acme_email", strconv.Quote("postmaster@"+domain))
		cfg = setKey(cfg, "acme_directory", strconv.Quote(pb.directory))
		cfg = setKey(cfg, "acme_listen", strconv.Quote(fmt.Sprintf("127.0.0.1:%d", challengePort)))
		return setKey(cfg, "acme_ca", strconv.Quote(caFile))
	})
	in.addUser("alice@"+domain, "correct horse battery")
	in.start()
	pebbleLog := func() string { b, _ := os.ReadFile(pb.log); return string(b) }

	// Before issuance: the self-signed pair init wrote. The hostname does
	// not resolve yet, so Pebble's validation fails and nothing is issued.
	selfSigned, err := os.ReadFile(filepath.Join(in.dir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(selfSigned)
	p, err := tlsPeer(t, "starttls", in.smtp)
	if err != nil {
		t.Fatalf("STARTTLS before issuance: %v\n%s", err, in.logTail(20))
	}
	if string(p.chain[0].Raw) != string(blk.Bytes) {
		t.Fatalf("before issuance port 25 served %q (serial %s), not the self-signed pair", p.chain[0].Subject, p.serial())
	}
	acmeWait(t, 30*time.Second, "a failed first attempt in mamori's log", func() bool {
		return strings.Contains(in.log(), "obtaining a certificate failed")
	}, func() string { return in.logTail(20) + "\n--- pebble:\n" + pebbleLog() })
	if p, err := tlsPeer(t, "starttls", in.smtp); err != nil || string(p.chain[0].Raw) != string(blk.Bytes) {
		t.Fatalf("after a failed attempt port 25 must still serve the self-signed pair (err %v)", err)
	}

	// Publish the name: the next attempt is validated and issued.
	if err := dns.Add(host + ". 60 IN A 127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	var first peer
	acmeWait(t, 60*time.Second, "an ACME certificate on port 25", func() bool {
		p, err := tlsPeer(t, "starttls", in.smtp)
		if err == nil && p.verify(pb.roots, host) == nil {
			first = p
			return true
		}
		return false
	}, func() string { return acmeLines(in.log()) + "\n--- pebble:\n" + pebbleLog() })
	t.Logf("issued: serial %s, %s to %s", first.serial(), first.chain[0].NotBefore, first.chain[0].NotAfter)

	// Every listener serves it (or a renewal of it), verified for the
	// hostname; 587 also to a client that sends SNI and verifies itself.
	for _, l := range []struct{ name, kind, addr string }{
		{"smtp", "starttls", in.smtp}, {"submission", "starttls", in.submission},
		{"submissions", "tls", in.submissions}, {"imaps", "tls", in.imaps},
	} {
		p, err := tlsPeer(t, l.kind, l.addr)
		if err != nil {
			t.Fatalf("%s: %v", l.name, err)
		}
		if err := p.verify(pb.roots, host); err != nil {
			t.Errorf("%s: certificate (serial %s, subject %q) does not verify for %s against Pebble's root: %v",
				l.name, p.serial(), p.chain[0].Subject, host, err)
		}
	}
	strict := &tls.Config{ServerName: host, RootCAs: pb.roots}
	subConn, err := net.Dial("tcp", in.submission)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := smtp.NewClient(subConn, host) // AUTH is for host, not 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.StartTLS(strict); err != nil {
		t.Fatalf("submission STARTTLS with SNI %s and Pebble's root: %v", host, err)
	}

	// Sessions held across the renewal: this SMTP submission session
	// (authenticated) and an IMAP one over implicit TLS.
	if err := sub.Auth(smtp.PlainAuth("", "alice@"+domain, "correct horse battery", host)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	imapConn, err := tls.Dial("tcp", in.imaps, strict)
	if err != nil {
		t.Fatalf("imaps with SNI %s and Pebble's root: %v", host, err)
	}
	defer imapConn.Close()
	imap := bufio.NewReader(imapConn)
	imapCmd := func(tag, cmd string) string {
		t.Helper()
		imapConn.SetDeadline(time.Now().Add(10 * time.Second))
		if cmd != "" {
			fmt.Fprintf(imapConn, "%s %s\r\n", tag, cmd)
		}
		for {
			line, err := imap.ReadString('\n')
			if err != nil {
				t.Fatalf("imap %s: %v", cmd, err)
			}
			if strings.HasPrefix(line, tag+" ") {
				return line
			}
		}
	}
	if l := imapCmd("*", ""); !strings.Contains(l, "OK") {
		t.Fatalf("imap greeting %q", l)
	}
	if l := imapCmd("a1", `LOGIN "alice@`+domain+`" "correct horse battery"`); !strings.HasPrefix(l, "a1 OK") {
		t.Fatalf("imap login: %q", l)
	}
	held := fmt.Sprintf("%x", imapConn.ConnectionState().PeerCertificates[0].SerialNumber)

	// The renewal: a new certificate, served to new connections without a
	// restart.
	var renewed peer
	acmeWait(t, 60*time.Second, "a renewed certificate on port 465", func() bool {
		p, err := tlsPeer(t, "tls", in.submissions)
		if err == nil && p.serial() != held && p.verify(pb.roots, host) == nil {
			renewed = p
			return true
		}
		return false
	}, func() string { return acmeLines(in.log()) })
	t.Logf("renewed: serial %s (held sessions have %s)", renewed.serial(), held)
	if !renewed.chain[0].NotBefore.After(first.chain[0].NotBefore.Add(-time.Second)) {
		t.Errorf("renewed certificate (from %s) is not newer than the first (from %s)", renewed.chain[0].NotBefore, first.chain[0].NotBefore)
	}
	if p, err := tlsPeer(t, "starttls", in.smtp); err != nil || p.verify(pb.roots, host) != nil || p.serial() == held {
		t.Errorf("port 25 after the renewal: err %v, serial %s (held %s)", err, p.serial(), held)
	}

	// The sessions opened before it were not dropped.
	if l := imapCmd("a2", "NOOP"); !strings.HasPrefix(l, "a2 OK") {
		t.Errorf("held IMAP session after renewal: %q", l)
	}
	if l := imapCmd("a3", "SELECT INBOX"); !strings.HasPrefix(l, "a3 OK") {
		t.Errorf("held IMAP session after renewal: %q", l)
	}
	if err := sub.Noop(); err != nil {
		t.Errorf("held SMTP session after renewal: %v", err)
	}
	if err := sub.Mail("alice@" + domain); err != nil {
		t.Errorf("held SMTP session after renewal: MAIL: %v", err)
	}
	if err := sub.Rcpt("alice@" + domain); err != nil {
		t.Errorf("held SMTP session after renewal: RCPT: %v", err)
	}
	w, err := sub.Data()
	if err != nil {
		t.Fatalf("held SMTP session after renewal: DATA: %v", err)
	}
	fmt.Fprintf(w, "From: alice@%s\r\nTo: alice@%s\r\nSubject: sent across a renewal\r\n\r\nhello\r\n", domain, domain)
	if err := w.Close(); err != nil {
		t.Errorf("held SMTP session after renewal: end of DATA: %v", err)
	}
	sub.Quit()
	// Delivered: in new/, or in cur/ once the held IMAP session saw it.
	box := filepath.Dir(in.maildirNew("alice@" + domain))
	acmeWait(t, 30*time.Second, "delivery of the message sent across the renewal", func() bool {
		return len(readMaildir(filepath.Join(box, "new")))+len(readMaildir(filepath.Join(box, "cur"))) == 1
	}, func() string { return in.logTail(10) })

	// /metrics: days left of the ACME certificate (45 s: well under a day)
	// and of the self-signed pair (years).
	mx := scrape(t, in)
	if d, ok := mx[`mamori_tls_certificate_days_left{name="`+host+`",source="acme"}`]; !ok || d <= 0 || d > 1 {
		t.Errorf("metrics: ACME certificate days left %v (present %v), want a fraction of a day", d, ok)
	}
	if d, ok := mx[`mamori_tls_certificate_days_left{name="`+host+`",source="file"}`]; !ok || d < 365 {
		t.Errorf("metrics: [tls] pair days left %v (present %v), want years", d, ok)
	}

	log := in.log()
	for _, want := range []string{"acme certificate issued", "acme certificate renewed", "acme certificate in use"} {
		if !strings.Contains(log, want) {
			t.Errorf("mamori's log lacks %q", want)
		}
	}
	if strings.Contains(log, "PRIVATE KEY") {
		t.Error("mamori logged a private key")
	}
	if st, err := os.Stat(filepath.Join(in.dir, "data", "acme")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data_dir/acme: %v %v, want mode 0700", st, err)
	}
}

// acmeWait polls cond every second (the guard limits connections per
// minute from one IP) until it holds or timeout passes; then
// the test fails naming what, with context's text.
func acmeWait(t *testing.T, timeout time.Duration, what string, cond func() bool, context func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v:\n%s", what, timeout, context())
		}
		time.Sleep(time.Second)
	}
}

// acmeLines are the lines of a log about certificates.
func acmeLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"stage":"certs"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestACMEHTTP01 obtains the certificate with the http-01 challenge
// instead (port 80's stand-in on loopback). autocert tries tls-alpn-01
// first; nothing answers on Pebble's TLS port, so that fails and http-01
// is validated. The challenge listener answers nothing but challenges.
func TestACMEHTTP01(t *testing.T) {
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	httpPort := freePort(t)
	pb, caFile := startPebble(t, dns.Addr, freePort(t), httpPort) // nothing listens on the TLS port

	const domain = "acme-http.test"
	host := "mx." + domain
	if err := dns.Add(host + ". 60 IN A 127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, domain, func(cfg string) string {
		cfg = setKey(cfg, "acme", "true")
		cfg = setKey(cfg, "acme_challenge", strconv.Quote("http-01"))
		cfg = setKey(cfg, "acme_directory", strconv.Quote(pb.directory))
		cfg = setKey(cfg, "acme_listen", strconv.Quote(fmt.Sprintf("127.0.0.1:%d", httpPort)))
		return setKey(cfg, "acme_ca", strconv.Quote(caFile))
	})
	in.start()
	pebbleLog := func() string { b, _ := os.ReadFile(pb.log); return string(b) }
	acmeWait(t, 60*time.Second, "an ACME certificate on port 465", func() bool {
		p, err := tlsPeer(t, "tls", in.submissions)
		return err == nil && p.verify(pb.roots, host) == nil
	}, func() string { return acmeLines(in.log()) + "\n--- pebble:\n" + pebbleLog() })
	if !strings.Contains(pebbleLog(), "validate w/ HTTP: http://"+host) {
		t.Errorf("Pebble's log does not show an http-01 validation:\n%s", pebbleLog())
	}
	for _, path := range []string{"/", "/.well-known/acme-challenge/not-a-token"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("challenge listener %s: %s, want 404", path, resp.Status)
		}
	}
}
