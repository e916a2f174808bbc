package doctor

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/testdns"
)

const (
	testDomain = "example.test"
	testHost   = "mail.example.test"
	testIP     = "192.0.2.10"
)

// fakeServer is a loopback server that greets like an SMTP, IMAP or POP3
// server. As SMTP it refuses every RCPT, or (openRelay) accepts every one.
type fakeServer struct {
	ln        net.Listener
	proto     string
	openRelay bool
	wg        sync.WaitGroup
}

func startFake(t *testing.T, proto string, openRelay bool) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, proto: proto, openRelay: openRelay}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

func (f *fakeServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	switch f.proto {
	case "imap":
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1] fake ready\r\n"))
	case "pop3":
		c.Write([]byte("+OK fake ready\r\n"))
	default:
		c.Write([]byte("220 " + testHost + " ESMTP fake\r\n"))
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := strings.ToUpper(sc.Text())
		if f.proto != "smtp" {
			c.Write([]byte("+OK bye\r\n"))
			return
		}
		reply := "500 5.5.2 what?"
		switch {
		case strings.HasPrefix(line, "EHLO"), strings.HasPrefix(line, "HELO"):
			reply = "250 " + testHost
		case strings.HasPrefix(line, "MAIL"), strings.HasPrefix(line, "RSET"), strings.HasPrefix(line, "NOOP"):
			reply = "250 2.0.0 OK"
		case strings.HasPrefix(line, "RCPT"):
			reply = "554 5.7.1 relay denied"
			if f.openRelay {
				reply = "250 2.1.5 OK"
			}
		case strings.HasPrefix(line, "QUIT"):
			c.Write([]byte("221 2.0.0 bye\r\n"))
			return
		}
		c.Write([]byte(reply + "\r\n"))
	}
}

// certs makes a test CA and a leaf certificate for names valid from
// notBefore to notAfter, writes the leaf (with its chain) and key to dir and
// returns their paths and a pool holding the CA.
func certs(t *testing.T, dir string, names []string, notBefore, notAfter time.Time) (certPath, keyPath string, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "doctor test CA"},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pemOut := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := os.WriteFile(certPath, pemOut, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return certPath, keyPath, roots
}

// fixture is a correct setup that a test case may break before Run.
type fixture struct {
	t         *testing.T
	zone      []string
	cfg       *config.Config
	opt       Options
	dkimValue string // the correct DKIM TXT value
	openRelay bool
	noServer  bool     // no listener runs
	smtpDown  bool     // only the SMTP listener is down
	slow      []string // names the DNS server answers only after 10 s
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	c := config.Defaults()
	c.Path = filepath.Join(dir, "mamori.toml")
	c.Hostname = testHost
	c.DataDir = dir
	c.Domains = []string{testDomain}
	c.Listen = config.Listen{}
	c.Guard.PublicIPs = []string{testIP}
	c.Guard.DNSBLZones = []string{"bl.test"}
	c.Server.User = "nobody" // exists on any Linux
	certPath, keyPath, roots := certs(t, dir, []string{testHost}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.TLS = config.TLS{Cert: certPath, Key: keyPath}
	_, name, value, err := msgauth.Keygen(testDomain, "mamori", "ed25519", filepath.Join(dir, "dkim"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, cfg: &c, dkimValue: value}
	f.zone = []string{
		testDomain + ". 60 IN MX 10 " + testHost + ".",
		testHost + ". 60 IN A " + testIP,
		"10.2.0.192.in-addr.arpa. 60 IN PTR " + testHost + ".",
		testDomain + `. 60 IN TXT "v=spf1 mx ip4:` + testIP + ` -all"`,
		name + " 60 IN TXT " + msgauth.TXTStrings(value),
		"_dmarc." + testDomain + `. 60 IN TXT "v=DMARC1; p=reject; rua=mailto:postmaster@example.test"`,
		"_mta-sts." + testDomain + `. 60 IN TXT "v=STSv1; id=20260101"`,
		"_smtp._tls." + testDomain + `. 60 IN TXT "v=TLSRPTv1; rua=mailto:tls@example.test"`,
		"sink.test. 60 IN A 127.0.0.1",
	}
	f.opt = Options{Config: &c, Roots: roots, Timeout: 5 * time.Second, Deadline: 30 * time.Second}
	return f
}

// drop removes the zone records that start with prefix.
func (f *fixture) drop(prefix string) {
	f.t.Helper()
	n := len(f.zone)
	f.zone = slices.DeleteFunc(f.zone, func(rr string) bool { return strings.HasPrefix(rr, prefix) })
	if len(f.zone) == n {
		f.t.Fatalf("no record starts with %q", prefix)
	}
}

func (f *fixture) run() Report {
	t := f.t
	t.Helper()
	dns, err := testdns.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	for _, rr := range f.zone {
		if err := dns.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range f.slow {
		dns.SetDelay(name, 10*time.Second)
	}
	f.opt.Resolver, err = resolver.New(dns.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sink := startFake(t, "smtp", false)
	if f.opt.Probe == "" {
		_, port, _ := net.SplitHostPort(sink.addr())
		f.opt.Probe = "sink.test:" + port
	}
	if !f.noServer {
		f.cfg.Listen.IMAP = startFake(t, "imap", false).addr()
		f.cfg.Listen.POP3 = startFake(t, "pop3", false).addr()
		smtp := startFake(t, "smtp", f.openRelay)
		f.cfg.Listen.SMTP = smtp.addr()
		if f.smtpDown {
			smtp.ln.Close()
		}
	} else {
		for _, p := range []*string{&f.cfg.Listen.SMTP, &f.cfg.Listen.IMAP} {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			*p = ln.Addr().String()
			ln.Close()
		}
	}
	rep, err := Run(context.Background(), f.opt)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// failed lists the names of the failed checks, sorted and without repeats.
func failed(r Report) []string {
	var out []string
	for _, c := range r.Checks {
		if c.Status == StatusFail && !slices.Contains(out, c.Name) {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

func statusOf(r Report, name string) []Status {
	var out []Status
	for _, c := range r.Checks {
		if c.Name == name {
			out = append(out, c.Status)
		}
	}
	return out
}

func dump(t *testing.T, r Report) {
	t.Helper()
	var b strings.Builder
	r.WriteText(&b)
	t.Log("\n" + b.String())
}

func TestCorrectSetupAllOK(t *testing.T) {
	rep := newFixture(t).run()
	want := []string{"mx", "a", "ptr", "fcrdns", "spf", "dkim", "dmarc", "mta-sts", "tls-rpt", "certificate",
		"listeners", "listeners", "listeners", "relay", "dnsbl", "outbound25", "privileges"}
	var got []string
	for _, c := range rep.Checks {
		got = append(got, c.Name)
		if c.Status != StatusOK {
			t.Errorf("%s %s: %s: %s", c.Name, c.Subject, c.Status, c.Detail)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("checks in order %v, want %v", got, want)
	}
	if !rep.OK {
		t.Error("report not OK")
	}
	if t.Failed() {
		dump(t, rep)
	}
}

func TestEachBrokenRecordFailsItsCheck(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(f *fixture)
		wantFail []string          // sorted names of the failed checks
		want     map[string]Status // other statuses to check
	}{
		{name: "MX missing", breakIt: func(f *fixture) { f.drop(testDomain + ". 60 IN MX") }, wantFail: []string{"mx"}},
		{name: "service user missing", breakIt: func(f *fixture) { f.cfg.Server.User = "no-such-user-mamori" }, wantFail: []string{"privileges"}},
		{name: "service user unset", breakIt: func(f *fixture) { f.cfg.Server.User = "" },
			want: map[string]Status{"privileges": StatusWarn}},
		{name: "MX elsewhere", breakIt: func(f *fixture) {
			f.drop(testDomain + ". 60 IN MX")
			f.zone = append(f.zone, testDomain+". 60 IN MX 10 mx.elsewhere.test.", "mx.elsewhere.test. 60 IN A 198.51.100.7")
		}, wantFail: []string{"mx"}},
		{name: "MX at another name of ours", breakIt: func(f *fixture) {
			f.drop(testDomain + ". 60 IN MX")
			f.zone = append(f.zone, testDomain+". 60 IN MX 10 mx2.example.test.", "mx2.example.test. 60 IN A "+testIP)
		}, want: map[string]Status{"mx": StatusOK}},
		// The PTR names the host name, so without its A record the
		// address cannot be forward-confirmed either.
		{name: "A missing", breakIt: func(f *fixture) { f.drop(testHost + ". 60 IN A") }, wantFail: []string{"a", "fcrdns"}},
		{name: "A lacks a public IP", breakIt: func(f *fixture) {
			f.cfg.Guard.PublicIPs = append(f.cfg.Guard.PublicIPs, "2001:db8::25")
			f.zone = append(f.zone, "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 60 IN PTR "+testHost+".")
			f.drop(testDomain + ". 60 IN TXT")
			f.zone = append(f.zone, testDomain+`. 60 IN TXT "v=spf1 mx ip4:`+testIP+` ip6:2001:db8::25 -all"`)
		}, wantFail: []string{"a", "fcrdns"}},
		{name: "PTR missing", breakIt: func(f *fixture) { f.drop("10.2.0.192.in-addr.arpa.") }, wantFail: []string{"ptr"},
			want: map[string]Status{"fcrdns": StatusSkip}},
		{name: "PTR not forward-confirming", breakIt: func(f *fixture) {
			f.drop("10.2.0.192.in-addr.arpa.")
			f.zone = append(f.zone, "10.2.0.192.in-addr.arpa. 60 IN PTR host.isp.test.")
		}, wantFail: []string{"fcrdns"}, want: map[string]Status{"ptr": StatusWarn}},
		{name: "PTR other name, confirming", breakIt: func(f *fixture) {
			f.drop("10.2.0.192.in-addr.arpa.")
			f.zone = append(f.zone, "10.2.0.192.in-addr.arpa. 60 IN PTR host.isp.test.", "host.isp.test. 60 IN A "+testIP)
		}, want: map[string]Status{"ptr": StatusWarn, "fcrdns": StatusOK}},
		{name: "SPF missing", breakIt: func(f *fixture) { f.drop(testDomain + ". 60 IN TXT") }, wantFail: []string{"spf"}},
		{name: "SPF not covering our IP", breakIt: func(f *fixture) {
			f.drop(testDomain + ". 60 IN TXT")
			f.zone = append(f.zone, testDomain+`. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"`)
		}, wantFail: []string{"spf"}},
		{name: "two SPF records", breakIt: func(f *fixture) {
			f.zone = append(f.zone, testDomain+`. 60 IN TXT "v=spf1 a -all"`)
		}, wantFail: []string{"spf"}},
		{name: "SPF +all", breakIt: func(f *fixture) {
			f.drop(testDomain + ". 60 IN TXT")
			f.zone = append(f.zone, testDomain+`. 60 IN TXT "v=spf1 +all"`)
		}, wantFail: []string{"spf"}},
		{name: "DKIM key mismatch", breakIt: func(f *fixture) {
			f.drop("mamori._domainkey.")
			_, name, value, err := msgauth.Keygen(testDomain, "mamori", "ed25519", f.t.TempDir())
			if err != nil {
				f.t.Fatal(err)
			}
			f.zone = append(f.zone, name+" 60 IN TXT "+msgauth.TXTStrings(value))
		}, wantFail: []string{"dkim"}},
		{name: "DKIM missing", breakIt: func(f *fixture) { f.drop("mamori._domainkey.") }, wantFail: []string{"dkim"}},
		{name: "DKIM no local key", breakIt: func(f *fixture) {
			os.RemoveAll(filepath.Join(f.cfg.DataDir, "dkim"))
		}, want: map[string]Status{"dkim": StatusWarn}},
		{name: "DMARC missing", breakIt: func(f *fixture) { f.drop("_dmarc.") }, wantFail: []string{"dmarc"}},
		{name: "DMARC p=none", breakIt: func(f *fixture) {
			f.drop("_dmarc.")
			f.zone = append(f.zone, "_dmarc."+testDomain+`. 60 IN TXT "v=DMARC1; p=none"`)
		}, want: map[string]Status{"dmarc": StatusWarn}},
		{name: "MTA-STS and TLS-RPT missing", breakIt: func(f *fixture) {
			f.drop("_mta-sts.")
			f.drop("_smtp._tls.")
		}, want: map[string]Status{"mta-sts": StatusSkip, "tls-rpt": StatusSkip}},
		{name: "cert expired", breakIt: func(f *fixture) {
			f.cfg.TLS.Cert, f.cfg.TLS.Key, f.opt.Roots = certs(f.t, f.t.TempDir(), []string{testHost}, time.Now().Add(-100*24*time.Hour), time.Now().Add(-time.Hour))
		}, wantFail: []string{"certificate"}},
		{name: "cert expires in 3 days", breakIt: func(f *fixture) {
			f.cfg.TLS.Cert, f.cfg.TLS.Key, f.opt.Roots = certs(f.t, f.t.TempDir(), []string{testHost}, time.Now().Add(-time.Hour), time.Now().Add(3*24*time.Hour))
		}, wantFail: []string{"certificate"}},
		{name: "cert expires in 14 days", breakIt: func(f *fixture) {
			f.cfg.TLS.Cert, f.cfg.TLS.Key, f.opt.Roots = certs(f.t, f.t.TempDir(), []string{testHost}, time.Now().Add(-time.Hour), time.Now().Add(14*24*time.Hour))
		}, want: map[string]Status{"certificate": StatusWarn}},
		{name: "cert wrong name", breakIt: func(f *fixture) {
			f.cfg.TLS.Cert, f.cfg.TLS.Key, f.opt.Roots = certs(f.t, f.t.TempDir(), []string{"other.example.test"}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
		}, wantFail: []string{"certificate"}},
		{name: "cert from an unknown CA", breakIt: func(f *fixture) {
			_, _, f.opt.Roots = certs(f.t, f.t.TempDir(), []string{testHost}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
		}, wantFail: []string{"certificate"}},
		{name: "open relay", breakIt: func(f *fixture) { f.openRelay = true }, wantFail: []string{"relay"}},
		{name: "listed in a DNSBL", breakIt: func(f *fixture) {
			f.zone = append(f.zone, "10.2.0.192.bl.test. 60 IN A 127.0.0.2", `10.2.0.192.bl.test. 60 IN TXT "listed for spam"`)
		}, wantFail: []string{"dnsbl"}},
		{name: "outbound 25 blocked", breakIt: func(f *fixture) {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			ln.Close()
			f.opt.Probe = "sink.test:" + port
		}, wantFail: []string{"outbound25"}},
		{name: "server not running", breakIt: func(f *fixture) { f.noServer = true },
			want: map[string]Status{"listeners": StatusSkip, "relay": StatusSkip}},
		// A check whose DNS does not answer fails within its timeout and
		// does not hold up the others.
		{name: "DNS too slow", breakIt: func(f *fixture) {
			f.slow = []string{"_dmarc." + testDomain}
			f.opt.Timeout = time.Second
		}, wantFail: []string{"dmarc"}},
		{name: "SMTP listener down", breakIt: func(f *fixture) { f.smtpDown = true }, wantFail: []string{"listeners", "relay"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			tc.breakIt(f)
			start := time.Now()
			rep := f.run()
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("Run took %v", d)
			}
			if got := failed(rep); !slices.Equal(got, tc.wantFail) {
				t.Errorf("failed checks %v, want %v", got, tc.wantFail)
			}
			if rep.OK != (len(tc.wantFail) == 0) {
				t.Errorf("OK = %v with failures %v", rep.OK, tc.wantFail)
			}
			for name, want := range tc.want {
				for _, got := range statusOf(rep, name) {
					if got != want {
						t.Errorf("%s: status %s, want %s", name, got, want)
					}
				}
			}
			for _, c := range rep.Checks {
				if c.Status == StatusFail && c.Fix == "" && c.Name != "relay" && c.Name != "listeners" {
					t.Errorf("%s %s failed without a fix", c.Name, c.Subject)
				}
			}
			if t.Failed() {
				dump(t, rep)
			}
		})
	}
}

func TestSelfSignedCertWarns(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	opt := config.InitOptions{Dir: dir, Domain: testDomain, Hostname: testHost}
	if _, err := config.Init(opt); err != nil {
		t.Fatal(err)
	}
	f.cfg.TLS = config.TLS{Cert: filepath.Join(dir, "tls", "cert.pem"), Key: filepath.Join(dir, "tls", "key.pem")}
	d := &doctor{opt: Options{Now: time.Now, Roots: x509.NewCertPool()}, cfg: f.cfg}
	cs := d.checkCertificates(context.Background())
	if len(cs) != 1 || cs[0].Status != StatusWarn || !strings.Contains(cs[0].Detail, "self-signed; enable [tls] acme") {
		t.Errorf("self-signed cert: %+v", cs)
	}
	// An ACME certificate under data_dir/acme is checked as well.
	if err := os.MkdirAll(filepath.Join(f.cfg.DataDir, "acme"), 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(f.cfg.TLS.Cert)
	keyPEM, _ := os.ReadFile(f.cfg.TLS.Key)
	if err := os.WriteFile(filepath.Join(f.cfg.DataDir, "acme", testHost), append(keyPEM, certPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	cs = d.checkCertificates(context.Background())
	if len(cs) != 2 || cs[1].Subject != filepath.Join(f.cfg.DataDir, "acme", testHost) || cs[1].Status != StatusWarn {
		t.Errorf("with an ACME cert: %+v", cs)
	}
}
