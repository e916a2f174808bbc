package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Reply is an SMTP refusal: a reply code, an RFC 3463 enhanced status code
// and a human-readable text, e.g. 554 5.7.1 "Relay access denied".
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// Error formats the reply as it appears on the wire, without CRLF:
// "554 5.7.1 Relay access denied".
func (r *Reply) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
}

func reply(code, class, subject, detail int, text string) *Reply {
	return &Reply{Code: code, Enhanced: [3]int{class, subject, detail}, Text: text}
}

// RcptInput is everything CheckRcpt needs to decide on one RCPT TO.
type RcptInput struct {
	Rcpt          string                   // as received from go-smtp
	SourceRouted  bool                     // the raw path had an @route: prefix
	Authenticated bool                     // AUTH succeeded in this session
	Trusted       bool                     // client IP in [relay] trusted_networks
	IsLocalDomain func(domain string) bool // canonical domain in, answer out; nil: no local domains
	LocalIPs      func(ip netip.Addr) bool // the server's own addresses, for [ip] literals; may be nil
}

// Decision is the outcome of CheckRcpt. Exactly one of Local, Reject != nil
// or "relay allowed" (Local == false, Reject == nil) holds.
type Decision struct {
	Addr   Address
	Local  bool   // deliver locally (caller still checks the user exists → 550 5.1.1)
	Reject *Reply // non-nil: refuse with this reply
}

// CheckRcpt decides whether a recipient is local, may be relayed, or must
// be refused. The rules, in order:
//
//   - a source-routed path (`@hop:user@dom`) is refused for everyone;
//   - an unparsable address is a syntax error (501 5.1.3);
//   - a domain is local when IsLocalDomain says so for its canonical form
//     (case and one trailing dot do not matter); an IP literal is local only
//     when LocalIPs says the address is one of ours;
//   - a local recipient whose local part contains '%', '!' or '@' (the
//     percent hack, bang paths and `"user@other"@ours`) is refused for
//     everyone: mamori never routes on the local part;
//   - any other local recipient (postmaster included, in any case) is
//     local;
//   - a foreign IP literal that can only loop (loopback, unspecified,
//     multicast, limited broadcast) is refused as a bad destination;
//   - any other foreign recipient is relayed only for an authenticated or
//     trusted client, otherwise 554 5.7.1 "Relay access denied".
func CheckRcpt(in RcptInput) Decision {
	if in.SourceRouted {
		a, _ := ParseAddress(in.Rcpt)
		return Decision{Addr: a, Reject: reply(550, 5, 7, 1, "Source routes are not accepted")}
	}
	a, err := ParseAddress(in.Rcpt)
	if err != nil {
		return Decision{Reject: reply(501, 5, 1, 3, "Bad recipient address syntax")}
	}
	if isLocal(a, in.IsLocalDomain, in.LocalIPs) {
		if strings.ContainsAny(a.Local, "%!@") {
			return Decision{Addr: a, Reject: reply(550, 5, 7, 1,
				"Routing in the local part ('%', '!' or '@') is not permitted")}
		}
		return Decision{Addr: a, Local: true}
	}
	if ip, ok := a.IP(); ok && !routable(ip) {
		return Decision{Addr: a, Reject: reply(550, 5, 1, 2, "Bad destination address literal")}
	}
	if in.Authenticated || in.Trusted {
		return Decision{Addr: a}
	}
	return Decision{Addr: a, Reject: reply(554, 5, 7, 1, "Relay access denied")}
}

func isLocal(a Address, isLocalDomain func(string) bool, localIPs func(netip.Addr) bool) bool {
	if ip, ok := a.IP(); ok {
		return localIPs != nil && localIPs(ip.Unmap())
	}
	return isLocalDomain != nil && isLocalDomain(a.Domain)
}

// routable reports whether mail to this literal could leave the host at
// all; the others would only loop back or go nowhere.
func routable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsMulticast() &&
		ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// MailInput is everything CheckMail needs to decide on one MAIL FROM.
type MailInput struct {
	From          string // "" = null sender
	SourceRouted  bool
	Authenticated bool
	User          string // login, when Authenticated
	Trusted       bool
	IsLocalDomain func(string) bool            // nil: no local domains
	Owns          func(user, addr string) bool // sender login map (user may send as addr); nil: owns nothing
}

// CheckMail validates the envelope sender and decides whether this client
// may use it:
//
//   - the null sender is always accepted (bounces must get through);
//   - otherwise the address must parse (501 5.1.7);
//   - an authenticated client may only use addresses its login owns
//     (553 5.7.1, like Postfix's reject_sender_login_mismatch), whether or
//     not it is also trusted;
//   - a trusted, unauthenticated client may use any sender;
//   - an untrusted, unauthenticated client may not use a local domain
//     (553 5.7.1).
//
// A source-routed MAIL FROM is not refused: RFC 5321 says to ignore the
// route, and the final mailbox is what go-smtp hands over.
func CheckMail(in MailInput) (Address, *Reply) {
	if in.From == "" {
		return Address{}, nil
	}
	a, err := ParseAddress(in.From)
	if err != nil {
		return Address{}, reply(501, 5, 1, 7, "Bad sender address syntax")
	}
	switch {
	case in.Authenticated:
		if in.Owns == nil || !in.Owns(in.User, a.String()) {
			return a, reply(553, 5, 7, 1, fmt.Sprintf("Sender address %s not owned by user %s",
				printable(a.String()), printable(in.User)))
		}
	case in.Trusted:
	case in.IsLocalDomain != nil && in.IsLocalDomain(a.Domain):
		return a, reply(553, 5, 7, 1, fmt.Sprintf(
			"Sender address %s is in a local domain: authentication required", printable(a.String())))
	}
	return a, nil
}

// printable makes client-supplied text safe to echo in a reply line.
func printable(s string) string {
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}
