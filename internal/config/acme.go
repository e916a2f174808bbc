package config

import (
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
)

// validateACME checks the [tls] acme_* keys. Their formats are checked
// whenever they are set; what ACME needs (a hostname a CA can validate) only
// when acme = true.
func (c *Config) validateACME() []error {
	t := c.TLS
	var errs []error
	if t.ACMEEmail != "" {
		if err := checkEmail(t.ACMEEmail); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme_email: %w", err))
		}
	}
	// Defaults fill acme_directory and acme_challenge; empty ones matter
	// only when ACME is on.
	if t.ACMEDirectory != "" || t.ACME {
		if u, err := url.Parse(t.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("tls.acme_directory %q: want the CA's https:// directory URL (default %s)", t.ACMEDirectory, LetsEncryptDirectory))
		}
	}
	if (t.ACMEChallenge != "" || t.ACME) && t.ACMEChallenge != ChallengeTLSALPN && t.ACMEChallenge != ChallengeHTTP {
		errs = append(errs, fmt.Errorf("tls.acme_challenge %q: want %q (port 443) or %q (port 80)", t.ACMEChallenge, ChallengeTLSALPN, ChallengeHTTP))
	}
	if t.ACMEListen != "" {
		if _, err := ParseListenAddr(t.ACMEListen); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme_listen: %w", err))
		}
	}
	for _, n := range t.ACMENames {
		if err := checkCertName(n); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme_names: %w", err))
		}
	}
	if !t.ACME {
		return errs
	}
	if c.Hostname != "" {
		if err := checkCertName(c.Hostname); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme needs hostname to be the server's public DNS name: %w", err))
		}
	}
	return errs
}

// checkCertName accepts a fully qualified DNS name a public CA can issue
// for: no IP address, no wildcard, at least two labels, letters, digits and
// hyphens (IDNs in their xn-- form).
func checkCertName(name string) error {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if _, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
		return fmt.Errorf("%q is an IP address; certificates are issued for DNS names", name)
	}
	if strings.HasPrefix(n, "*.") {
		return fmt.Errorf("%q: wildcard names need a DNS-01 challenge, which mamori does not answer", name)
	}
	if len(n) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", name)
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%q is not a fully qualified domain name (e.g. mail.example.org)", name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a DNS name (empty, over-long or hyphen-edged label %q)", name, l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%q is not a DNS name (character %q; write IDNs as xn--…)", name, r)
			}
		}
	}
	return nil
}

// checkEmail accepts a bare address (no display name, no angle brackets)
// whose domain has a dot.
func checkEmail(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return fmt.Errorf("%q is not a plain e-mail address (like admin@example.org)", s)
	}
	_, dom, _ := strings.Cut(a.Address, "@")
	if !strings.Contains(dom, ".") || strings.HasPrefix(dom, "[") {
		return errors.New(s + ": the domain must be a DNS name with a dot")
	}
	return nil
}
