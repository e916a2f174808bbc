// Package msgauth authenticates inbound mail (SPF, DKIM, DMARC) and signs
// outbound mail (DKIM).
//
// It exists so that the SMTP server can hand one message to one function and
// get back both the verdicts it needs for policy (DMARC p=reject, guard
// signals) and the Authentication-Results header it records for the user,
// and so that outbound mail is signed with the domain's key in one place.
//
// Dependencies and why:
//   - blitiri.com.ar/go/spf evaluates SPF records (RFC 7208). SPF has many
//     corner cases (macros, lookup and void-lookup limits, include/redirect)
//     that a well-tested library gets right.
//   - github.com/emersion/go-msgauth provides DKIM signing and verification
//     (RFC 6376, RFC 8463 ed25519), DMARC record parsing (RFC 7489) and the
//     Authentication-Results format (RFC 8601).
//   - golang.org/x/net/publicsuffix finds the organisational domain needed
//     for DMARC relaxed alignment and the DMARC policy fallback.
//
// All DNS goes through the caller's Resolver (normally
// *resolver.Resolver), never the system resolver, so lookups share the
// server's cache, timeouts and context, and tests can point it at a local
// test DNS server.
package msgauth

import (
	"context"
	"net/netip"

	"github.com/mamori-mail/mamori/internal/resolver"
)

// Resolver is the DNS interface msgauth needs. *resolver.Resolver
// implements it; errors must wrap resolver.ErrNotFound for "no such record"
// and resolver.ErrTemporary for failures worth retrying.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, domain string) ([]resolver.MX, error)
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
}

var _ Resolver = (*resolver.Resolver)(nil)
