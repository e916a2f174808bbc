package msgauth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// SignedHeaders are the header fields a Signer signs. From is listed twice
// (oversigned) so that a second From added in transit breaks the
// signature; fields the message lacks are signed as absent, so they cannot
// be added either.
var SignedHeaders = []string{
	"From", "From", "To", "Subject", "Date", "Message-ID", "Cc", "Reply-To",
	"MIME-Version", "Content-Type",
}

// rsaKeyBits is the size of generated RSA keys (RFC 8301 asks for at
// least 1024 and recommends 2048).
const rsaKeyBits = 2048

// minRSABits is the smallest RSA key LoadSigner accepts.
const minRSABits = 1024

// Signer DKIM-signs outbound mail for one domain.
type Signer struct {
	Domain   string
	Selector string
	Key      crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// LoadSigner reads a PEM private key (PKCS #8, or PKCS #1 "RSA PRIVATE
// KEY") for signing as domain with selector.
func LoadSigner(domain, selector, keyPEMPath string) (*Signer, error) {
	if err := checkName(domain, selector); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(keyPEMPath)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", keyPEMPath, err)
	}
	return &Signer{Domain: strings.ToLower(domain), Selector: strings.ToLower(selector), Key: key}, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key has %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
}

// Sign returns msg with a DKIM-Signature header field prepended
// (see Signature); the returned message has CRLF line ends.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	msg = toCRLF(msg)
	sig, err := s.Signature(msg)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(sig)+len(msg))
	out = append(out, sig...)
	return append(out, msg...), nil
}

// Signature returns the DKIM-Signature header field (ending in CRLF) for
// msg: relaxed/relaxed canonicalization, rsa-sha256 or ed25519-sha256 by
// key type, the fields in SignedHeaders. The signature covers the message
// as sent over SMTP, so bare LF line ends count as CRLF. msg is not
// copied unless it has bare LFs or lacks the header/body separator.
func (s *Signer) Signature(msg []byte) ([]byte, error) {
	if s == nil || s.Key == nil {
		return nil, errors.New("dkim sign: no key")
	}
	msg = toCRLF(msg)
	signer, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 s.Domain,
		Selector:               s.Selector,
		Signer:                 s.Key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             SignedHeaders,
	})
	if err != nil {
		return nil, fmt.Errorf("dkim sign %s: %w", s.Domain, err)
	}
	if _, err := signer.Write(msg); err != nil {
		signer.Close()
		return nil, fmt.Errorf("dkim sign %s: %w", s.Domain, err)
	}
	if !bytes.Contains(msg, []byte("\r\n\r\n")) && !bytes.HasPrefix(msg, []byte("\r\n")) {
		// A message without a body: DKIM needs the header/body separator.
		sep := "\r\n"
		if !bytes.HasSuffix(msg, []byte("\r\n")) {
			sep = "\r\n\r\n"
		}
		if _, err := signer.Write([]byte(sep)); err != nil {
			signer.Close()
			return nil, fmt.Errorf("dkim sign %s: %w", s.Domain, err)
		}
	}
	if err := signer.Close(); err != nil {
		return nil, fmt.Errorf("dkim sign %s: %w", s.Domain, err)
	}
	return []byte(signer.Signature()), nil
}

// Keygen creates a DKIM key for domain and selector: algo "rsa" (2048
// bits) or "ed25519". It writes the PKCS #8 PEM private key to
// dir/DOMAIN.SELECTOR.key with mode 0600, creating dir (0700) if needed,
// and never overwrites an existing file. It returns the key's path and the
// DNS TXT record to publish: its owner name (with the trailing dot) and
// its value as one string (see TXTStrings for zone-file quoting).
func Keygen(domain, selector, algo, dir string) (keyPath, txtName, txtValue string, err error) {
	domain, selector = strings.ToLower(strings.TrimSuffix(domain, ".")), strings.ToLower(selector)
	if err := checkName(domain, selector); err != nil {
		return "", "", "", err
	}
	var key crypto.Signer
	switch algo {
	case "rsa", "":
		rk, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
		if err != nil {
			return "", "", "", fmt.Errorf("dkim keygen: %w", err)
		}
		key = rk
	case "ed25519":
		_, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", "", "", fmt.Errorf("dkim keygen: %w", err)
		}
		key = ek
	default:
		return "", "", "", fmt.Errorf("dkim keygen: unknown algorithm %q (want rsa or ed25519)", algo)
	}
	txtValue, err = DKIMRecord(key)
	if err != nil {
		return "", "", "", fmt.Errorf("dkim keygen: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", "", fmt.Errorf("dkim keygen: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("dkim keygen: %w", err)
	}
	keyPath = filepath.Join(dir, domain+"."+selector+".key")
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return "", "", "", fmt.Errorf("dkim keygen: %w", err)
	}
	txtName = selector + "._domainkey." + domain + "."
	return keyPath, txtName, txtValue, nil
}

// DKIMRecord returns the value of the DNS TXT record that publishes the
// public half of key (*rsa.PrivateKey or ed25519.PrivateKey):
// "v=DKIM1; k=rsa; p=BASE64". For RSA p= is the SubjectPublicKeyInfo
// (RFC 6376 section 3.6.1), for Ed25519 the raw 32-byte key (RFC 8463).
func DKIMRecord(key crypto.Signer) (string, error) {
	var pub []byte
	var k string
	switch pk := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pk)
		if err != nil {
			return "", fmt.Errorf("dkim record: %w", err)
		}
		pub, k = der, "rsa"
	case ed25519.PublicKey:
		pub, k = pk, "ed25519"
	default:
		return "", fmt.Errorf("dkim record: unsupported key type %T", pk)
	}
	return "v=DKIM1; k=" + k + "; p=" + base64.StdEncoding.EncodeToString(pub), nil
}

// writeNew writes data to a new file at path (0600), failing if the path
// exists; the file is synced before it is closed.
func writeNew(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close key file: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync key file: %w", err)
	}
	return nil
}

// TXTStrings splits a TXT record value into character strings of at most
// 255 bytes each (the DNS limit) and returns them quoted and separated by
// spaces, as a zone file wants them: "part1" "part2".
func TXTStrings(value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return strings.Join(parts, " ")
}

// checkName validates the domain and selector: they become a DNS name and a
// file name, so only letters, digits, hyphens and dots (no "..", no leading
// or trailing dot) are allowed.
func checkName(domain, selector string) error {
	for _, n := range []struct{ what, v string }{{"domain", domain}, {"selector", selector}} {
		if n.v == "" || len(n.v) > 253 || strings.HasPrefix(n.v, ".") || strings.HasSuffix(n.v, ".") || strings.Contains(n.v, "..") {
			return fmt.Errorf("dkim: invalid %s %q", n.what, n.v)
		}
		for _, c := range n.v {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return fmt.Errorf("dkim: invalid %s %q", n.what, n.v)
			}
		}
	}
	if !strings.Contains(domain, ".") {
		return fmt.Errorf("dkim: invalid domain %q: want a fully qualified name", domain)
	}
	return nil
}
