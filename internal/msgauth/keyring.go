package msgauth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mamori-mail/mamori/internal/msgheader"
	"github.com/mamori-mail/mamori/internal/policy"
)

// Keyring holds the DKIM signing keys of the local domains, one per
// domain, loaded from data_dir/dkim/DOMAIN.SELECTOR.key.
type Keyring struct {
	selector string
	signers  map[string]*Signer // by canonical domain
}

// LoadKeyring reads every DOMAIN.SELECTOR.key in dir. A missing dir is an
// empty keyring; a key that does not load is reported in the returned
// warnings and skipped, so one bad file does not stop signing for the
// other domains.
func LoadKeyring(dir, selector string) (*Keyring, []error, error) {
	k := &Keyring{selector: selector, signers: map[string]*Signer{}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dkim keys: %w", err)
	}
	var warns []error
	suffix := "." + selector + ".key"
	for _, e := range ents {
		dom, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || e.IsDir() {
			continue
		}
		s, err := LoadSigner(dom, selector, filepath.Join(dir, e.Name()))
		if err != nil {
			warns = append(warns, err)
			continue
		}
		k.signers[policy.CanonicalDomain(dom)] = s
	}
	return k, warns, nil
}

// Domains lists the domains the keyring signs for.
func (k *Keyring) Domains() []string {
	if k == nil {
		return nil
	}
	out := make([]string, 0, len(k.signers))
	for d := range k.signers {
		out = append(out, d)
	}
	return out
}

// Len is the number of keys.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.signers)
}

// Signatures returns one DKIM-Signature field per distinct author domain
// the keyring holds a key for, concatenated, to prepend to msg. Signing
// for every author domain keeps each of them DMARC-aligned at the
// receiver. Domains without a key are skipped; the first signing error is
// returned with whatever was signed before it.
func (k *Keyring) Signatures(authorDomains []string, msg []byte) ([]byte, error) {
	if k == nil {
		return nil, nil
	}
	var out []byte
	done := map[string]bool{}
	for _, d := range authorDomains {
		d = policy.CanonicalDomain(d)
		s := k.signers[d]
		if s == nil || done[d] {
			continue
		}
		done[d] = true
		sig, err := s.Signature(msg)
		if err != nil {
			return out, err
		}
		out = append(out, sig...)
	}
	return out, nil
}

// SignMessage signs a message mamori writes itself (a DSN, an alert):
// it reads the authors from msg's header and returns msg with the
// signatures prepended, or msg unchanged when there is no key for them or
// the header cannot be read.
func (k *Keyring) SignMessage(msg []byte) ([]byte, error) {
	if k.Len() == 0 {
		return msg, nil
	}
	msg = toCRLF(msg)
	h, err := msgheader.Parse(msg, msgheader.Limits{})
	if err != nil {
		return msg, fmt.Errorf("dkim sign: %w", err)
	}
	a, err := h.Authors()
	if err != nil {
		return msg, fmt.Errorf("dkim sign: %w", err)
	}
	sigs, err := k.Signatures(a.Domains(), msg)
	if err != nil || len(sigs) == 0 {
		return msg, err
	}
	out := make([]byte, 0, len(sigs)+len(msg))
	return append(append(out, sigs...), msg...), nil
}
