package admin

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// NewTLSClient returns a client for an admin listener served over TLS
// ([admin] tls) with the certificate in certFile ([tls] cert). The CLI runs
// where the server runs, so it trusts exactly that certificate (the first
// in the file), whatever names or addresses it carries: a self-signed
// certificate works. With acmeName set ([tls] acme), a certificate for
// that name that chains to roots (nil: the system's) is accepted too: once
// ACME has issued one, the listener serves it instead of the file's.
func NewTLSClient(addr, token, certFile, acmeName string, roots *x509.CertPool) (*Client, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("admin API over TLS: %w", err)
	}
	var leaf []byte
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type == "CERTIFICATE" {
			leaf = blk.Bytes
			break
		}
	}
	if leaf == nil {
		return nil, fmt.Errorf("admin API over TLS: no certificate in %s", certFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not checked against the system roots; the server's
		// certificate must instead be the very one in certFile.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the admin listener sent no certificate")
			}
			if bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return nil
			}
			if acmeName != "" {
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: acmeName, Roots: roots, Intermediates: inter})
				if err == nil {
					return nil
				}
				return fmt.Errorf("the admin listener's certificate is neither the one in [tls] cert nor a valid one for %s: %w", acmeName, err)
			}
			return errors.New("the admin listener's certificate is not the one in [tls] cert")
		},
	}
	return &Client{
		Base:  "https://" + addr,
		Token: token,
		HTTP:  &http.Client{Timeout: 5 * time.Minute, Transport: tr},
	}, nil
}
