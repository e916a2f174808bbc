package msgauth

import (
	"context"
	"errors"
	"net"

	"github.com/mamori-mail/mamori/internal/resolver"
)

// dnsError converts a resolver error into the *net.DNSError that the SPF,
// DKIM and DMARC libraries inspect: they tell "not found" from "temporary"
// only through IsNotFound and Temporary(). Anything that is neither is
// reported as temporary too: an unknown DNS failure must not turn into a
// permanent verdict against the sender.
func dnsError(name string, err error) error {
	if err == nil {
		return nil
	}
	de := &net.DNSError{Err: err.Error(), Name: name}
	switch {
	case errors.Is(err, resolver.ErrNotFound), errors.Is(err, resolver.ErrNullMX):
		de.IsNotFound = true
	default:
		de.IsTemporary = true
	}
	return de
}

// spfResolver adapts a Resolver to spf.DNSResolver.
type spfResolver struct {
	r Resolver
}

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := s.r.LookupTXT(ctx, name)
	return txts, dnsError(name, err)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := s.r.LookupMX(ctx, name)
	if err != nil {
		return nil, dnsError(name, err)
	}
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		out = append(out, &net.MX{Host: mx.Host, Pref: mx.Pref})
	}
	return out, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := s.r.LookupIP(ctx, host)
	if err != nil {
		return nil, dnsError(host, err)
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: net.IP(ip.Unmap().AsSlice())})
	}
	return out, nil
}

// LookupAddr is only used by the SPF "ptr" mechanism, which RFC 7208
// section 5.5 says SHOULD NOT be used. Our resolver has no PTR lookup, so
// "ptr" never matches (the record's other mechanisms still apply).
func (s spfResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "PTR lookups are not supported", Name: addr, IsNotFound: true}
}

// txtLookup returns a LookupTXT function for go-msgauth (which has no
// context parameter) bound to ctx.
func txtLookup(ctx context.Context, r Resolver) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		txts, err := r.LookupTXT(ctx, name)
		return txts, dnsError(name, err)
	}
}
