// Package ipnet parses the "IP or CIDR" arguments that appear all over
// mamori (trusted networks, queue filters, bans, incident filters) the same
// way everywhere: an IP becomes a single-address prefix, IPv4-mapped IPv6
// is unmapped so 10.0.0.1 and ::ffff:10.0.0.1 are one client, and a CIDR is
// masked to its network.
package ipnet

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefix accepts "10.0.0.1", "[2001:db8::1]", "10.0.0.0/8" or
// "::ffff:10.0.0.0/104" and returns the canonical, masked prefix. Anything
// else — a prefix length out of range ("10.0.0.0/33"), a mapped prefix
// shorter than /96, a zone on a CIDR — is an error, never a zero prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
		}
		if a := p.Addr(); a.Is4In6() {
			// Clients are compared unmapped, so a mapped prefix only
			// makes sense as an IPv4 one; a shorter one would silently
			// cover unrelated IPv6 space instead.
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix must be /96 or longer (write the IPv4 CIDR)", s)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Contains reports whether ip is in any of prefixes.
func Contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
