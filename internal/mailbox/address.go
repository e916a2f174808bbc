package mailbox

import (
	"errors"
	"fmt"
	"strings"
)

// errInvalidAddress is wrapped by every address or domain syntax error.
var errInvalidAddress = errors.New("invalid address")

const (
	maxLocalLen  = 64  // RFC 5321 4.5.3.1.1
	maxDomainLen = 253 // RFC 1035 presentation form without the trailing dot
	maxLabelLen  = 63
)

// CanonicalDomain returns domain lower-cased, without one trailing dot, after
// checking that it is a plain ASCII host name (letters, digits, hyphens; no
// IP literal, no all-numeric top label). Internationalised names must be given
// in their xn-- form.
func CanonicalDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if d == "" {
		return "", fmt.Errorf("empty domain: %w", errInvalidAddress)
	}
	if len(d) > maxDomainLen {
		return "", fmt.Errorf("domain longer than %d characters: %w", maxDomainLen, errInvalidAddress)
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen {
			return "", fmt.Errorf("domain %q: bad label length: %w", domain, errInvalidAddress)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("domain %q: label starts or ends with '-': %w", domain, errInvalidAddress)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("domain %q: character %q not allowed: %w", domain, c, errInvalidAddress)
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return "", fmt.Errorf("domain %q: numeric top-level label: %w", domain, errInvalidAddress)
	}
	return d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// splitAddress splits addr at its last '@'.
func splitAddress(addr string) (local, domain string, err error) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "", "", fmt.Errorf("%q has no '@': %w", addr, errInvalidAddress)
	}
	return addr[:i], addr[i+1:], nil
}

// Local parts of mailboxes and aliases that mamori owns are restricted to a
// conservative subset of RFC 5322 dot-atom: no quoting, and none of the
// characters that serve old relay tricks or file-system paths ('%', '!', '/',
// '|', '@', '\\'). Such names become Maildir directory names.
const ownLocalSpecials = "-_+=.'&#~"

// Foreign local parts (alias targets elsewhere) may use any RFC 5322 atext.
const atextSpecials = "!#$%&'*+-/=?^_`{|}~."

func validLocal(local, specials string) bool {
	if local == "" || len(local) > maxLocalLen {
		return false
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(specials, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// canonicalAddress returns the canonical form of an address that mamori may
// own: lower-cased local part from the restricted set, canonical domain.
func canonicalAddress(addr string) (string, error) {
	local, domain, err := splitAddress(addr)
	if err != nil {
		return "", err
	}
	if !validLocal(local, ownLocalSpecials) {
		return "", fmt.Errorf("%q: local part not allowed: %w", addr, errInvalidAddress)
	}
	d, err := CanonicalDomain(domain)
	if err != nil {
		return "", fmt.Errorf("%q: %w", addr, err)
	}
	return strings.ToLower(local) + "@" + d, nil
}

// domainOf returns the part after the last '@' of a canonical address.
func domainOf(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}

// localOf returns the part before the last '@' of a canonical address.
func localOf(addr string) string {
	return addr[:strings.LastIndexByte(addr, '@')]
}
