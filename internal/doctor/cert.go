package doctor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate lifetimes below which the certificate check warns or fails.
const (
	certFailDays = 7
	certWarnDays = 21
)

// checkCertificates checks the [tls] certificate and, when there is one,
// the certificate ACME stored under data_dir/acme (autocert's DirCache
// names its file after the host name and keeps key and chain in it, PEM).
func (d *doctor) checkCertificates(context.Context) []Check {
	var out []Check
	if d.cfg.TLS.Cert == "" {
		out = append(out, Check{Name: CheckCertificate, Subject: "[tls] cert", Status: StatusSkip, Detail: "no [tls] cert configured"})
	} else {
		c := d.checkCertFile(d.cfg.TLS.Cert)
		if c.Status != StatusFail && d.cfg.TLS.Key != "" {
			if _, err := tls.LoadX509KeyPair(d.cfg.TLS.Cert, d.cfg.TLS.Key); err != nil {
				c.Status, c.Detail = StatusFail, fmt.Sprintf("%s; does not match [tls] key %s: %v", c.Detail, d.cfg.TLS.Key, err)
			}
		}
		out = append(out, c)
	}
	acme := filepath.Join(d.cfg.DataDir, "acme", strings.ToLower(d.cfg.Hostname))
	if _, err := os.Stat(acme); err == nil {
		out = append(out, d.checkCertFile(acme))
	}
	return out
}

// checkCertFile checks the PEM certificate chain in path (other PEM
// blocks, such as a key, are ignored).
func (d *doctor) checkCertFile(path string) Check {
	c := Check{Name: CheckCertificate, Subject: path}
	data, err := os.ReadFile(path)
	if err != nil {
		c.Status, c.Detail = StatusFail, err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			c.Fix = "enable [tls] acme = true, or point [tls] cert and key at a certificate for " + d.cfg.Hostname
		}
		return c
	}
	var chain []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			c.Status, c.Detail = StatusFail, fmt.Sprintf("parse certificate: %v", err)
			return c
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		c.Status, c.Detail = StatusFail, "no PEM CERTIFICATE in the file"
		return c
	}
	c.Status, c.Detail = certStatus(chain, d.cfg.Hostname, d.opt.Now(), d.opt.Roots)
	if c.Status != StatusOK {
		c.Fix = "enable [tls] acme = true, or install a CA-signed certificate for " + d.cfg.Hostname + " in [tls] cert and key"
	}
	return c
}

// certStatus judges a leaf-first chain for host at now: names, validity,
// chain to roots (nil: the system's) and days left.
func certStatus(chain []*x509.Certificate, host string, now time.Time, roots *x509.CertPool) (Status, string) {
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	st := StatusOK
	var notes []string
	add := func(s Status, note string) {
		st = worst(st, s)
		notes = append(notes, note)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		add(StatusFail, fmt.Sprintf("does not cover %s (names: %s)", host, strings.Join(leaf.DNSNames, ", ")))
	} else {
		notes = append(notes, "covers "+host)
	}
	left := leaf.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	switch {
	case now.Before(leaf.NotBefore):
		add(StatusFail, "not valid before "+leaf.NotBefore.UTC().Format(time.DateOnly))
	case left <= 0:
		add(StatusFail, "expired on "+leaf.NotAfter.UTC().Format(time.DateOnly))
	case days < certFailDays:
		add(StatusFail, fmt.Sprintf("expires in %d days", days))
	case days < certWarnDays:
		add(StatusWarn, fmt.Sprintf("expires in %d days", days))
	default:
		notes = append(notes, fmt.Sprintf("%d days left", days))
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	switch {
	case err == nil:
		notes = append(notes, "chain verifies")
	case selfSigned(leaf):
		add(StatusWarn, "self-signed; enable [tls] acme")
	case isExpiry(err):
		// Already reported above.
	default:
		add(StatusFail, "chain does not verify: "+err.Error())
	}
	return st, strings.Join(notes, "; ")
}

func selfSigned(c *x509.Certificate) bool {
	// Not CheckSignatureFrom: it insists on a CA certificate, and a
	// self-signed server certificate usually is not one.
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func isExpiry(err error) bool {
	var ci x509.CertificateInvalidError
	return errors.As(err, &ci) && ci.Reason == x509.Expired
}
