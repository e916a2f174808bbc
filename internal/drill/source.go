package drill

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
)

// Loopback is IPv4 loopback: on Linux every address in it can be bound
// without configuration, so the drill can play several hosts.
var Loopback = netip.MustParsePrefix("127.0.0.0/8")

// Resolver looks up the addresses of a host name (net.DefaultResolver's
// LookupNetIP has this shape).
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// CheckTarget verifies that addr is HOST:PORT and, unless allowRemote, that
// every address HOST stands for is a loopback address. The drill sends
// wrong passwords and bursts of mail, which is only fair against a server
// one runs; loopback is the safe default.
func CheckTarget(ctx context.Context, addr string, allowRemote bool, resolve Resolver) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %w", addr, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q is not HOST:PORT", addr)
	}
	if allowRemote {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Unmap().IsLoopback() {
			return fmt.Errorf("%s is not a loopback address; use --allow-remote to drill a server you run elsewhere", host)
		}
		return nil
	}
	if resolve == nil {
		resolve = defaultResolve
	}
	addrs, err := resolve(ctx, host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%s has no address", host)
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return fmt.Errorf("%s resolves to %s, which is not a loopback address; use --allow-remote to drill a server you run elsewhere", host, a)
		}
	}
	return nil
}

// numericLocalhost replaces the host "localhost" by 127.0.0.1, so that the
// drill reaches the server over IPv4 loopback where it can choose its
// source addresses.
func numericLocalhost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && strings.EqualFold(host, "localhost") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// targetIP returns the IP literal of a HOST:PORT; the zero Addr for a name.
func targetIP(addr string) netip.Addr {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// canBind reports whether the drill can pick its own source addresses to
// reach addr: only for an IPv4 loopback target, where all of 127.0.0.0/8
// is local.
func canBind(addr string) bool {
	a := targetIP(addr)
	return a.IsValid() && Loopback.Contains(a)
}

// PickSource returns a random address in within that lies in none of the
// excluded prefixes, or false when every address of within is excluded.
// IPv4 addresses ending in .0 or .255 are avoided when the free range
// allows it. It explores only the halves of within that still have free
// addresses, so it is exact and cheap (at most 2 × bits steps per
// excluded prefix), whatever the exclusions.
func PickSource(within netip.Prefix, exclude []netip.Prefix, rnd *rand.Rand) (netip.Addr, bool) {
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	within = within.Masked()
	var ex []netip.Prefix
	for _, p := range exclude {
		if p.IsValid() && p.Addr().Is4() == within.Addr().Is4() && p.Overlaps(within) {
			ex = append(ex, p.Masked())
		}
	}
	return pickIn(within, ex, rnd)
}

func pickIn(p netip.Prefix, ex []netip.Prefix, rnd *rand.Rand) (netip.Addr, bool) {
	var overlapping []netip.Prefix
	for _, e := range ex {
		if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
			return netip.Addr{}, false // all of p is excluded
		}
		if e.Overlaps(p) {
			overlapping = append(overlapping, e)
		}
	}
	if len(overlapping) == 0 {
		return randomIn(p, rnd), true
	}
	// Some of p is excluded: try its two halves, in random order.
	lo, hi := halves(p)
	if rnd.IntN(2) == 0 {
		lo, hi = hi, lo
	}
	if a, ok := pickIn(lo, overlapping, rnd); ok {
		return a, true
	}
	return pickIn(hi, overlapping, rnd)
}

// halves splits p (not a single address) into its two sub-prefixes.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	b[(bits-1)/8] |= 0x80 >> ((bits - 1) % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}

// randomIn returns a random address of p, avoiding .0 and .255 for IPv4
// when p has other addresses.
func randomIn(p netip.Prefix, rnd *rand.Rand) netip.Addr {
	base := p.Addr().AsSlice()
	hostBits := len(base)*8 - p.Bits()
	var a netip.Addr
	for try := 0; try < 16; try++ {
		b := append([]byte(nil), base...)
		for i := len(b) - 1; i >= 0 && (len(b)-1-i)*8 < hostBits; i-- {
			n := min(hostBits-(len(b)-1-i)*8, 8)
			mask := byte(1<<n - 1)
			b[i] |= byte(rnd.UintN(256)) & mask
		}
		a, _ = netip.AddrFromSlice(b)
		if !a.Is4() || hostBits < 2 || (b[3] != 0 && b[3] != 255) {
			return a
		}
	}
	return a
}
