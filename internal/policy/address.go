// Package policy holds mamori's address parsing and its relay decisions as
// pure functions: no I/O, no clocks, no globals that change.
//
// Why a separate package: "mamori is never an open relay" is the product's
// first promise, and the decision that keeps it must be small enough to read
// in one sitting and testable exhaustively (table-driven tests and fuzzing)
// without a network, a store or an SMTP session. The SMTP layer calls
// CheckMail and CheckRcpt and turns a non-nil *Reply into the SMTP reply
// verbatim; nothing else in mamori decides whether a recipient is local.
//
// The inputs are what github.com/emersion/go-smtp hands the session: the
// path with its angle brackets removed, a quoted local part already unquoted
// (`"a@b"@ours` arrives as `a@b@ours`), and a source route stripped (the
// session reports it separately as SourceRouted). Addresses are therefore
// split at the LAST '@', so whatever is left of it, '@' included, is the
// local part.
//
// Dependencies: golang.org/x/net/idna converts internationalised domain
// names to their ASCII (A-label) form so that "bücher.test" and
// "xn--bcher-kva.test" are the same domain when deciding locality; the
// standard library has no IDNA implementation.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Length limits from RFC 5321 section 4.5.3.1, counted in octets. The whole
// address limit is the 256-octet path limit minus the two angle brackets.
const (
	MaxLocalLen   = 64
	MaxDomainLen  = 255
	MaxAddressLen = 254
	maxLabelLen   = 63
)

// ErrSyntax is wrapped by every error ParseAddress returns.
var ErrSyntax = errors.New("address syntax")

// Address is a parsed mailbox. Domain is canonical: lower-case, no trailing
// dot, IDNs in A-label form, IP literals as "[1.2.3.4]" or "[IPv6:addr]"
// (the "IPv6:" tag is the one exception to lower-case, as RFC 5321 spells
// it). Local keeps its case: local parts are case-sensitive per RFC 5321,
// even though mamori's directory folds them.
type Address struct{ Local, Domain string }

// String returns Local@Domain, or "" for the null address. The result
// re-parses to the same Address. It is not an SMTP path: a local part that
// needs quoting is not quoted.
func (a Address) String() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return a.Local + "@" + a.Domain
}

// IsNull reports whether a is the null reverse-path (MAIL FROM:<>).
func (a Address) IsNull() bool { return a.Local == "" && a.Domain == "" }

// IsPostmaster reports whether the local part is "postmaster" in any case
// (RFC 5321 section 4.5.1 makes it case-insensitive).
func (a Address) IsPostmaster() bool { return strings.EqualFold(a.Local, "postmaster") }

// IP returns the address of a domain literal ("[192.0.2.1]",
// "[IPv6:2001:db8::1]") and true, or false when Domain is a name.
func (a Address) IP() (netip.Addr, bool) {
	if !strings.HasPrefix(a.Domain, "[") {
		return netip.Addr{}, false
	}
	ip, err := parseLiteral(a.Domain)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip, true
}

// ParseAddress parses a mailbox as go-smtp delivers it: no angle brackets,
// quotes already removed. It splits at the last '@', so "a@b@ours" has the
// local part "a@b". It enforces the RFC 5321 length limits (local part 64
// octets, domain 255, whole address 254), requires both parts to be
// non-empty and valid UTF-8, and refuses control characters, white space
// and the characters '"', '\\', '<' and '>' in the local part (they cannot
// be passed on safely in a path). UTF-8 local parts and IDN domains
// (SMTPUTF8) are accepted; domains are returned in canonical form.
// Domain literals must be "[IPv4]" or "[IPv6:IPv6]".
func ParseAddress(s string) (Address, error) {
	// A cheap bound before any work; the canonical limits are checked below.
	if len(s) > 2*MaxAddressLen {
		return Address{}, fmt.Errorf("%w: address longer than %d octets", ErrSyntax, MaxAddressLen)
	}
	if !utf8.ValidString(s) {
		return Address{}, fmt.Errorf("%w: address is not valid UTF-8", ErrSyntax)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, fmt.Errorf("%w: %q has no '@'", ErrSyntax, s)
	}
	local, rawDomain := s[:at], s[at+1:]
	if err := checkLocal(local); err != nil {
		return Address{}, err
	}
	domain, err := canonicalDomain(rawDomain)
	if err != nil {
		return Address{}, err
	}
	a := Address{Local: local, Domain: domain}
	if n := len(local) + 1 + len(domain); n > MaxAddressLen {
		return Address{}, fmt.Errorf("%w: address is %d octets, limit %d", ErrSyntax, n, MaxAddressLen)
	}
	return a, nil
}

func checkLocal(local string) error {
	if local == "" {
		return fmt.Errorf("%w: empty local part", ErrSyntax)
	}
	if len(local) > MaxLocalLen {
		return fmt.Errorf("%w: local part is %d octets, limit %d", ErrSyntax, len(local), MaxLocalLen)
	}
	for _, r := range local {
		switch {
		case unicode.IsControl(r), unicode.IsSpace(r), r == utf8.RuneError:
			return fmt.Errorf("%w: control or space character %U in local part", ErrSyntax, r)
		case r == '"', r == '\\', r == '<', r == '>':
			return fmt.Errorf("%w: character %q not allowed in local part", ErrSyntax, r)
		}
	}
	return nil
}

// CanonicalDomain returns d lower-cased (ASCII and Unicode) with one
// trailing dot removed, and converted to its A-label (xn--) form when it
// contains non-ASCII characters. Domain literals are normalised
// ("[IPv6:0:0::1]" → "[IPv6:::1]"). It never fails: input that cannot be
// converted is returned lower-cased and trimmed, which compares equal to no
// valid canonical domain.
func CanonicalDomain(d string) string {
	c, err := canonicalDomain(d)
	if err != nil {
		return strings.TrimSuffix(strings.ToLower(d), ".")
	}
	return c
}

// canonicalDomain is CanonicalDomain plus validation: RFC 5321 domain
// syntax (LDH labels of 1 to 63 octets, no leading or trailing hyphen) or a
// well-formed address literal.
func canonicalDomain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", fmt.Errorf("%w: empty domain", ErrSyntax)
	}
	if len(d) > 2*MaxDomainLen {
		return "", fmt.Errorf("%w: domain longer than %d octets", ErrSyntax, MaxDomainLen)
	}
	if strings.HasPrefix(d, "[") {
		ip, err := parseLiteral(d)
		if err != nil {
			return "", err
		}
		return formatLiteral(ip), nil
	}
	d = strings.ToLower(d)
	if !isASCII(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("%w: internationalised domain %q: %w", ErrSyntax, d, err)
		}
		d = strings.TrimSuffix(a, ".")
	}
	if err := checkDomainName(d); err != nil {
		return "", err
	}
	return d, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// checkDomainName validates a lower-case ASCII domain name.
func checkDomainName(d string) error {
	if d == "" {
		return fmt.Errorf("%w: empty domain", ErrSyntax)
	}
	if len(d) > MaxDomainLen {
		return fmt.Errorf("%w: domain is %d octets, limit %d", ErrSyntax, len(d), MaxDomainLen)
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return fmt.Errorf("%w: empty label in domain %q", ErrSyntax, d)
		}
		if len(label) > maxLabelLen {
			return fmt.Errorf("%w: domain label longer than %d octets", ErrSyntax, maxLabelLen)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: domain label %q starts or ends with '-'", ErrSyntax, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: character %q not allowed in domain %q", ErrSyntax, c, d)
			}
		}
	}
	return nil
}

// parseLiteral parses "[1.2.3.4]" or "[IPv6:...]" (tag in any case). The
// general "[tag:content]" form of RFC 5321 is not supported.
func parseLiteral(d string) (netip.Addr, error) {
	if len(d) < 2 || d[0] != '[' || d[len(d)-1] != ']' {
		return netip.Addr{}, fmt.Errorf("%w: malformed address literal %q", ErrSyntax, d)
	}
	inner := d[1 : len(d)-1]
	const tag = "ipv6:"
	if len(inner) >= len(tag) && strings.EqualFold(inner[:len(tag)], tag) {
		ip, err := netip.ParseAddr(inner[len(tag):])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%w: malformed IPv6 address literal %q", ErrSyntax, d)
		}
		return ip, nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: malformed address literal %q", ErrSyntax, d)
	}
	return ip, nil
}

func formatLiteral(ip netip.Addr) string {
	if ip.Is4() {
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}
