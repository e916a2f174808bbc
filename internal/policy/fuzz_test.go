package policy

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	"user@ours.test", "User@OURS.Test.", "user%other.test@ours.test",
	"other.test!user@ours.test", "user@other.test@ours.test", "user@other.test",
	"user@[192.0.2.10]", "user@[IPv6:2001:db8::10]", "user@[IPv6:::ffff:192.0.2.10]",
	"user@[192.0.2.300]", "josé@bücher.test", "postmaster@ours.test", "", "@", "a@.",
	"a@[", "a@[]", "user@ours.test..", "us er@ours.test", "user@xn--bcher-kva.test",
	strings.Repeat("a", 64) + "@ours.test",
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		if a.Local == "" || a.Domain == "" {
			t.Fatalf("empty part in %+v from %q", a, s)
		}
		if len(a.Local) > MaxLocalLen || len(a.Domain) > MaxDomainLen || len(a.String()) > MaxAddressLen {
			t.Fatalf("length limit exceeded: %+v", a)
		}
		if strings.Contains(a.Domain, "@") || strings.HasSuffix(a.Domain, ".") {
			t.Fatalf("domain not canonical: %q", a.Domain)
		}
		if !utf8.ValidString(a.Local) || strings.ContainsAny(a.Local, " \t\r\n\x00<>") {
			t.Fatalf("bad local part accepted: %q", a.Local)
		}
		if CanonicalDomain(a.Domain) != a.Domain {
			t.Fatalf("CanonicalDomain not idempotent on %q: %q", a.Domain, CanonicalDomain(a.Domain))
		}
		again, err := ParseAddress(a.String())
		if err != nil {
			t.Fatalf("%q parsed to %+v, whose String() does not re-parse: %v", s, a, err)
		}
		if again != a {
			t.Fatalf("round trip %q: %+v != %+v", s, again, a)
		}
	})
}

func FuzzCheckRcpt(f *testing.F) {
	for _, s := range fuzzSeeds {
		for flags := range uint8(8) {
			f.Add(s, flags)
		}
	}
	f.Fuzz(func(t *testing.T, rcpt string, flags uint8) {
		in := RcptInput{
			Rcpt:          rcpt,
			SourceRouted:  flags&1 != 0,
			Authenticated: flags&2 != 0,
			Trusted:       flags&4 != 0,
			IsLocalDomain: isLocalDomain,
			LocalIPs:      isLocalIP,
		}
		d := CheckRcpt(in)
		if d.Reject != nil {
			if d.Local {
				t.Fatalf("%q: rejected but Local", rcpt)
			}
			if d.Reject.Code < 400 || d.Reject.Code > 599 || d.Reject.Enhanced[0] != d.Reject.Code/100 {
				t.Fatalf("%q: inconsistent reply %v", rcpt, d.Reject)
			}
			return
		}
		if in.SourceRouted {
			t.Fatalf("%q: source-routed recipient accepted", rcpt)
		}
		if !d.Local && !in.Authenticated && !in.Trusted {
			t.Fatalf("OPEN RELAY: %q accepted for an untrusted, unauthenticated client: %+v", rcpt, d)
		}
		if d.Local {
			ip, isLit := d.Addr.IP()
			switch {
			case isLit && !isLocalIP(ip.Unmap()):
				t.Fatalf("%q: Local with a foreign literal %v", rcpt, ip)
			case !isLit && !isLocalDomain(d.Addr.Domain):
				t.Fatalf("%q: Local with a foreign domain %q", rcpt, d.Addr.Domain)
			}
			if strings.ContainsAny(d.Addr.Local, "%!@") {
				t.Fatalf("%q: local delivery with routing characters in %q", rcpt, d.Addr.Local)
			}
		}
		if again, err := ParseAddress(d.Addr.String()); err != nil || again != d.Addr {
			t.Fatalf("%q: accepted address %+v does not round-trip: %+v, %v", rcpt, d.Addr, again, err)
		}
	})
}
