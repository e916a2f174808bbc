package policy

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	localDomains = map[string]bool{"ours.test": true, "xn--bcher-kva.test": true}
	localIPs     = map[netip.Addr]bool{
		netip.MustParseAddr("192.0.2.10"):   true,
		netip.MustParseAddr("2001:db8::10"): true,
	}
)

func isLocalDomain(d string) bool  { return localDomains[d] }
func isLocalIP(ip netip.Addr) bool { return localIPs[ip] }

// mode is who is asking.
type mode int

const (
	untrusted mode = iota
	trusted
	authenticated
)

func (m mode) String() string { return [...]string{"untrusted", "trusted", "authenticated"}[m] }

// outcome is what CheckRcpt should answer. code 0 means accepted; Local
// then tells local delivery from relay.
type outcome struct {
	local bool
	code  int
	enh   [3]int
}

var (
	local     = outcome{local: true}
	relay     = outcome{}
	syntax    = outcome{code: 501, enh: [3]int{5, 1, 3}}
	denied    = outcome{code: 554, enh: [3]int{5, 7, 1}}
	forbidden = outcome{code: 550, enh: [3]int{5, 7, 1}} // local-part routing, source routes
	badDest   = outcome{code: 550, enh: [3]int{5, 1, 2}}
)

// all is the same outcome for untrusted, trusted and authenticated.
func all(o outcome) [3]outcome { return [3]outcome{o, o, o} }

// foreign is the relay rule: refused unless trusted or authenticated.
var foreign = [3]outcome{denied, relay, relay}

func TestCheckRcpt(t *testing.T) {
	tests := []struct {
		name     string
		rcpt     string
		routed   bool
		want     [3]outcome // indexed by mode
		wantAddr Address    // checked when the address parses
	}{
		// Local recipients: accepted for everyone.
		{"local", "user@ours.test", false, all(local), Address{"user", "ours.test"}},
		{"local mixed case", "User@OuRs.TeSt", false, all(local), Address{"User", "ours.test"}},
		{"local trailing dot", "user@OURS.test.", false, all(local), Address{"user", "ours.test"}},
		{"local two trailing dots", "user@ours.test..", false, all(syntax), Address{}},
		{"postmaster", "postmaster@ours.test", false, all(local), Address{"postmaster", "ours.test"}},
		{"postmaster any case", "PostMaster@OURS.TEST", false, all(local), Address{"PostMaster", "ours.test"}},
		{"utf8 local part", "josé@ours.test", false, all(local), Address{"josé", "ours.test"}},
		{"idn local domain", "用户@bücher.test", false, all(local), Address{"用户", "xn--bcher-kva.test"}},
		{"idn local domain upper", "user@BÜCHER.test.", false, all(local), Address{"user", "xn--bcher-kva.test"}},
		{"A-label local domain", "user@xn--bcher-kva.test", false, all(local), Address{"user", "xn--bcher-kva.test"}},
		{"local 64 octet local part", strings.Repeat("a", 64) + "@ours.test", false, all(local), Address{strings.Repeat("a", 64), "ours.test"}},

		// Plain foreign recipients: the relay rule.
		{"foreign", "user@other.test", false, foreign, Address{"user", "other.test"}},
		{"foreign trailing dot", "user@other.test.", false, foreign, Address{"user", "other.test"}},
		{"foreign mixed case", "User@OTHER.Test", false, foreign, Address{"User", "other.test"}},
		{"foreign utf8 local", "josé@other.test", false, foreign, Address{"josé", "other.test"}},
		{"foreign idn", "user@bücher.example", false, foreign, Address{"user", "xn--bcher-kva.example"}},
		{"suffix of local domain", "user@evilours.test", false, foreign, Address{"user", "evilours.test"}},
		{"subdomain of local domain", "user@sub.ours.test", false, foreign, Address{"user", "sub.ours.test"}},
		{"local domain as subdomain", "user@ours.test.other.test", false, foreign, Address{"user", "ours.test.other.test"}},

		// Relay hacks on a local domain: refused for everyone.
		{"percent hack", "user%other.test@ours.test", false, all(forbidden), Address{"user%other.test", "ours.test"}},
		{"percent hack mixed case", "user%other.test@OURS.Test.", false, all(forbidden), Address{"user%other.test", "ours.test"}},
		{"quoted percent", "user%other.test@ours.test", false, all(forbidden), Address{"user%other.test", "ours.test"}}, // "user%other.test"@ours.test
		{"double percent", "user%other.test%ours.test@ours.test", false, all(forbidden), Address{"user%other.test%ours.test", "ours.test"}},
		{"bang path", "other.test!user@ours.test", false, all(forbidden), Address{"other.test!user", "ours.test"}},
		{"quoted at", "user@other.test@ours.test", false, all(forbidden), Address{"user@other.test", "ours.test"}}, // "user@other.test"@ours.test
		{"quoted at idn", "user@other.test@bücher.test", false, all(forbidden), Address{"user@other.test", "xn--bcher-kva.test"}},
		{"percent on local literal", "user%other.test@[192.0.2.10]", false, all(forbidden), Address{"user%other.test", "[192.0.2.10]"}},
		{"bang on local literal", "other.test!user@[IPv6:2001:db8::10]", false, all(forbidden), Address{"other.test!user", "[IPv6:2001:db8::10]"}},

		// The same characters towards a foreign domain: just the relay rule.
		{"percent to foreign", "user%x.test@other.test", false, foreign, Address{"user%x.test", "other.test"}},
		{"quoted at to foreign", "user@x.test@other.test", false, foreign, Address{"user@x.test", "other.test"}},
		{"bang to foreign", "x.test!user@other.test", false, foreign, Address{"x.test!user", "other.test"}},

		// Source routes: refused for everyone, whatever the final mailbox.
		{"source route to foreign", "user@other.test", true, all(forbidden), Address{"user", "other.test"}},
		{"source route to local", "user@ours.test", true, all(forbidden), Address{"user", "ours.test"}},
		{"source route unparsable", "bad", true, all(forbidden), Address{}},

		// IP literals.
		{"our ipv4 literal", "user@[192.0.2.10]", false, all(local), Address{"user", "[192.0.2.10]"}},
		{"our ipv6 literal", "user@[IPv6:2001:DB8::10]", false, all(local), Address{"user", "[IPv6:2001:db8::10]"}},
		{"our ipv4 as mapped ipv6", "user@[IPv6:::ffff:192.0.2.10]", false, all(local), Address{"user", "[IPv6:::ffff:192.0.2.10]"}},
		{"postmaster at our literal", "Postmaster@[192.0.2.10]", false, all(local), Address{"Postmaster", "[192.0.2.10]"}},
		{"foreign ipv4 literal", "user@[198.51.100.7]", false, foreign, Address{"user", "[198.51.100.7]"}},
		{"foreign ipv6 literal", "user@[IPv6:2001:db8::99]", false, foreign, Address{"user", "[IPv6:2001:db8::99]"}},
		{"loopback literal not ours", "user@[127.0.0.1]", false, all(badDest), Address{"user", "[127.0.0.1]"}},
		{"ipv6 loopback literal", "user@[IPv6:::1]", false, all(badDest), Address{"user", "[IPv6:::1]"}},
		{"unspecified literal", "user@[0.0.0.0]", false, all(badDest), Address{"user", "[0.0.0.0]"}},
		{"broadcast literal", "user@[255.255.255.255]", false, all(badDest), Address{"user", "[255.255.255.255]"}},
		{"multicast literal", "user@[224.0.0.1]", false, all(badDest), Address{"user", "[224.0.0.1]"}},
		{"mapped loopback literal", "user@[IPv6:::ffff:127.0.0.1]", false, all(badDest), Address{"user", "[IPv6:::ffff:127.0.0.1]"}},
		{"malformed literal octet", "user@[192.0.2.256]", false, all(syntax), Address{}},
		{"malformed literal unclosed", "user@[192.0.2.10", false, all(syntax), Address{}},
		{"malformed literal v6 no tag", "user@[2001:db8::10]", false, all(syntax), Address{}},
		{"malformed literal zone", "user@[IPv6:fe80::1%eth0]", false, all(syntax), Address{}},
		{"malformed literal hostname", "user@[ours.test]", false, all(syntax), Address{}},

		// Syntax errors: refused for everyone.
		{"empty", "", false, all(syntax), Address{}},
		{"no domain", "postmaster", false, all(syntax), Address{}},
		{"bang without at", "other.test!user", false, all(syntax), Address{}},
		{"empty local", "@ours.test", false, all(syntax), Address{}},
		{"local 65 octets", strings.Repeat("a", 65) + "@ours.test", false, all(syntax), Address{}},
		{"domain label 64 octets", "user@" + strings.Repeat("a", 64) + ".test", false, all(syntax), Address{}},
		{"whole over 254", strings.Repeat("a", 64) + "@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + "test", false, all(syntax), Address{}},
		{"space", "us er@ours.test", false, all(syntax), Address{}},
		{"control", "us\x01er@ours.test", false, all(syntax), Address{}},
		{"invalid utf8", "\xc3(@ours.test", false, all(syntax), Address{}},
		{"junk domain", "user@ours.test,other.test", false, all(syntax), Address{}},
	}
	for _, tt := range tests {
		for m := untrusted; m <= authenticated; m++ {
			t.Run(tt.name+"/"+m.String(), func(t *testing.T) {
				in := RcptInput{
					Rcpt:          tt.rcpt,
					SourceRouted:  tt.routed,
					Authenticated: m == authenticated,
					Trusted:       m == trusted,
					IsLocalDomain: isLocalDomain,
					LocalIPs:      isLocalIP,
				}
				got := CheckRcpt(in)
				want := tt.want[m]
				if want.code == 0 {
					if got.Reject != nil {
						t.Fatalf("CheckRcpt(%q) rejected: %v", tt.rcpt, got.Reject)
					}
					if got.Local != want.local {
						t.Fatalf("CheckRcpt(%q).Local = %v, want %v", tt.rcpt, got.Local, want.local)
					}
				} else {
					if got.Reject == nil {
						t.Fatalf("CheckRcpt(%q) accepted (Local=%v), want %d %v", tt.rcpt, got.Local, want.code, want.enh)
					}
					if got.Reject.Code != want.code || got.Reject.Enhanced != want.enh {
						t.Fatalf("CheckRcpt(%q) = %v, want %d %v", tt.rcpt, got.Reject, want.code, want.enh)
					}
					if got.Local {
						t.Errorf("rejected decision has Local=true")
					}
					if got.Reject.Text == "" {
						t.Errorf("reject without text")
					}
				}
				if got.Addr != tt.wantAddr {
					t.Errorf("Addr = %+v, want %+v", got.Addr, tt.wantAddr)
				}
			})
		}
	}
}

func TestCheckRcptNilCallbacks(t *testing.T) {
	// Without IsLocalDomain and LocalIPs nothing is local, so an untrusted
	// client can relay nowhere.
	for _, rcpt := range []string{"user@ours.test", "user@[192.0.2.10]", "postmaster@ours.test"} {
		d := CheckRcpt(RcptInput{Rcpt: rcpt})
		if d.Reject == nil || d.Reject.Code != 554 || d.Local {
			t.Errorf("CheckRcpt(%q) with nil callbacks = %+v, want 554 relay denied", rcpt, d)
		}
	}
	// A local literal needs LocalIPs even when the domain callback is set.
	d := CheckRcpt(RcptInput{Rcpt: "user@[192.0.2.10]", IsLocalDomain: func(string) bool { return true }})
	if d.Reject == nil || d.Reject.Code != 554 {
		t.Errorf("literal without LocalIPs = %+v, want relay denied", d)
	}
}

func TestCheckRcptCanonicalDomainPassed(t *testing.T) {
	var seen []string
	CheckRcpt(RcptInput{
		Rcpt: "u@BÜCHER.Test.",
		IsLocalDomain: func(d string) bool {
			seen = append(seen, d)
			return false
		},
	})
	if len(seen) != 1 || seen[0] != "xn--bcher-kva.test" {
		t.Errorf("IsLocalDomain called with %q, want [xn--bcher-kva.test]", seen)
	}
}

func TestCheckMail(t *testing.T) {
	owned := map[string][]string{
		"alice@ours.test": {"alice@ours.test", "sales@ours.test", "alice@other.test"},
	}
	owns := func(user, addr string) bool {
		for _, a := range owned[user] {
			if strings.EqualFold(a, addr) {
				return true
			}
		}
		return false
	}
	ok := outcome{}
	notOwned := outcome{code: 553, enh: [3]int{5, 7, 1}}
	localSender := outcome{code: 553, enh: [3]int{5, 7, 1}}
	bad := outcome{code: 501, enh: [3]int{5, 1, 7}}

	tests := []struct {
		name     string
		from     string
		routed   bool
		want     [3]outcome // untrusted, trusted, authenticated as alice
		wantAddr Address
	}{
		{"null sender", "", false, all(ok), Address{}},
		{"own address", "alice@ours.test", false, [3]outcome{localSender, ok, ok}, Address{"alice", "ours.test"}},
		{"own alias", "sales@ours.test", false, [3]outcome{localSender, ok, ok}, Address{"sales", "ours.test"}},
		{"own address mixed case", "Alice@OURS.test.", false, [3]outcome{localSender, ok, ok}, Address{"Alice", "ours.test"}},
		{"own foreign address", "alice@other.test", false, [3]outcome{ok, ok, ok}, Address{"alice", "other.test"}},
		{"someone else's local address", "bob@ours.test", false, [3]outcome{localSender, ok, notOwned}, Address{"bob", "ours.test"}},
		{"unregistered local address", "nobody@ours.test", false, [3]outcome{localSender, ok, notOwned}, Address{"nobody", "ours.test"}},
		{"other local domain", "x@bücher.test", false, [3]outcome{localSender, ok, notOwned}, Address{"x", "xn--bcher-kva.test"}},
		{"foreign sender", "someone@other.test", false, [3]outcome{ok, ok, notOwned}, Address{"someone", "other.test"}},
		{"source-routed foreign sender", "someone@other.test", true, [3]outcome{ok, ok, notOwned}, Address{"someone", "other.test"}},
		{"source-routed local sender", "alice@ours.test", true, [3]outcome{localSender, ok, ok}, Address{"alice", "ours.test"}},
		{"bad syntax", "a b@other.test", false, all(bad), Address{}},
		{"no domain", "alice", false, all(bad), Address{}},
		{"over-long local", strings.Repeat("a", 65) + "@other.test", false, all(bad), Address{}},
	}
	for _, tt := range tests {
		for m := untrusted; m <= authenticated; m++ {
			t.Run(tt.name+"/"+m.String(), func(t *testing.T) {
				in := MailInput{
					From:          tt.from,
					SourceRouted:  tt.routed,
					Authenticated: m == authenticated,
					Trusted:       m == trusted,
					IsLocalDomain: isLocalDomain,
					Owns:          owns,
				}
				if m == authenticated {
					in.User = "alice@ours.test"
				}
				addr, rep := CheckMail(in)
				want := tt.want[m]
				switch {
				case want.code == 0 && rep != nil:
					t.Fatalf("CheckMail(%q) = %v, want accepted", tt.from, rep)
				case want.code != 0 && rep == nil:
					t.Fatalf("CheckMail(%q) accepted, want %d %v", tt.from, want.code, want.enh)
				case want.code != 0 && (rep.Code != want.code || rep.Enhanced != want.enh):
					t.Fatalf("CheckMail(%q) = %v, want %d %v", tt.from, rep, want.code, want.enh)
				}
				if addr != tt.wantAddr {
					t.Errorf("address = %+v, want %+v", addr, tt.wantAddr)
				}
			})
		}
	}
}

func TestCheckMailTrustedAndAuthenticated(t *testing.T) {
	// Authentication wins: a trusted host that logged in is held to its login.
	_, rep := CheckMail(MailInput{
		From: "bob@ours.test", Authenticated: true, Trusted: true, User: "alice@ours.test",
		IsLocalDomain: isLocalDomain, Owns: func(string, string) bool { return false },
	})
	if rep == nil || rep.Code != 553 {
		t.Fatalf("got %v, want 553", rep)
	}
	// Authenticated with no Owns function owns nothing.
	_, rep = CheckMail(MailInput{From: "alice@ours.test", Authenticated: true, User: "alice@ours.test"})
	if rep == nil || rep.Code != 553 {
		t.Fatalf("nil Owns: got %v, want 553", rep)
	}
}

func TestCheckMailReplyTextIsSafe(t *testing.T) {
	_, rep := CheckMail(MailInput{
		From: "josé@other.test", Authenticated: true, User: "mallory\r\n250 ok",
		Owns: func(string, string) bool { return false },
	})
	if rep == nil {
		t.Fatal("accepted")
	}
	for _, r := range rep.Text {
		if r < 0x20 || r > 0x7e {
			t.Fatalf("reply text %q contains %U", rep.Text, r)
		}
	}
	if !strings.Contains(rep.Text, "mallory") {
		t.Errorf("reply text %q does not name the user", rep.Text)
	}
}

func TestReplyError(t *testing.T) {
	r := &Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Relay access denied"}
	if got, want := r.Error(), "554 5.7.1 Relay access denied"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
