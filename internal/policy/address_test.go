package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	local64 := strings.Repeat("a", 64)
	label63 := strings.Repeat("b", 63)
	// 64 + 1 + 189 = 254 octets: the longest valid address.
	domain189 := strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("e", 61)

	tests := []struct {
		name    string
		in      string
		want    Address
		wantErr bool
	}{
		{"plain", "user@ours.test", Address{"user", "ours.test"}, false},
		{"local case kept, domain folded", "User.Name@OURS.Test", Address{"User.Name", "ours.test"}, false},
		{"one trailing dot trimmed", "user@ours.test.", Address{"user", "ours.test"}, false},
		{"two trailing dots", "user@ours.test..", Address{}, true},
		{"split at last at", "user@other.test@ours.test", Address{"user@other.test", "ours.test"}, false},
		{"percent kept in local", "user%other.test@ours.test", Address{"user%other.test", "ours.test"}, false},
		{"bang kept in local", "other.test!user@ours.test", Address{"other.test!user", "ours.test"}, false},
		{"utf8 local", "josé@ours.test", Address{"josé", "ours.test"}, false},
		{"idn domain to A-label", "user@bücher.test", Address{"user", "xn--bcher-kva.test"}, false},
		{"idn upper case", "user@BÜCHER.TEST", Address{"user", "xn--bcher-kva.test"}, false},
		{"A-label kept", "user@xn--bcher-kva.test", Address{"user", "xn--bcher-kva.test"}, false},
		{"single label domain", "root@localhost", Address{"root", "localhost"}, false},
		{"ipv4 literal", "user@[192.0.2.1]", Address{"user", "[192.0.2.1]"}, false},
		{"ipv6 literal normalised", "user@[ipv6:2001:DB8:0::1]", Address{"user", "[IPv6:2001:db8::1]"}, false},
		{"ipv4-mapped ipv6 literal", "user@[IPv6:::ffff:192.0.2.1]", Address{"user", "[IPv6:::ffff:192.0.2.1]"}, false},
		{"local 64 octets", local64 + "@ours.test", Address{local64, "ours.test"}, false},
		{"label 63 octets", "u@" + label63 + ".test", Address{"u", label63 + ".test"}, false},
		{"whole 254 octets", local64 + "@" + domain189, Address{local64, domain189}, false},

		{"empty", "", Address{}, true},
		{"no at", "user", Address{}, true},
		{"empty local", "@ours.test", Address{}, true},
		{"empty domain", "user@", Address{}, true},
		{"only dot domain", "user@.", Address{}, true},
		{"local 65 octets", local64 + "a@ours.test", Address{}, true},
		{"utf8 local 65 octets", strings.Repeat("é", 32) + "a@ours.test", Address{}, true},
		{"label 64 octets", "u@" + label63 + "b.test", Address{}, true},
		{"whole 255 octets", local64 + "@" + domain189 + "e", Address{}, true},
		{"domain over 255", "u@" + strings.Repeat(label63+".", 4) + "test", Address{}, true},
		{"huge input", strings.Repeat("a", 100000) + "@ours.test", Address{}, true},
		{"space in local", "us er@ours.test", Address{}, true},
		{"tab in local", "us\ter@ours.test", Address{}, true},
		{"nul in local", "us\x00er@ours.test", Address{}, true},
		{"crlf in local", "user\r\nRCPT TO:<x@y>@ours.test", Address{}, true},
		{"del in local", "us\x7fer@ours.test", Address{}, true},
		{"c1 control in local", "us\u0085er@ours.test", Address{}, true},
		{"unicode space in local", "us\u3000er@ours.test", Address{}, true},
		{"angle bracket in local", "a>b@ours.test", Address{}, true},
		{"quote in local", `a"b@ours.test`, Address{}, true},
		{"backslash in local", `a\b@ours.test`, Address{}, true},
		{"invalid utf8", "us\xffer@ours.test", Address{}, true},
		{"space in domain", "user@ours .test", Address{}, true},
		{"underscore in domain", "user@ours_test.example", Address{}, true},
		{"empty label", "user@ours..test", Address{}, true},
		{"leading dot domain", "user@.ours.test", Address{}, true},
		{"hyphen edge", "user@-ours.test", Address{}, true},
		{"domain with bracket junk", "user@ours.test>x", Address{}, true},
		{"domain with colon", "user@ours.test:25", Address{}, true},
		{"literal bad octet", "user@[192.0.2.300]", Address{}, true},
		{"literal leading zero", "user@[192.0.2.01]", Address{}, true},
		{"literal unterminated", "user@[192.0.2.1", Address{}, true},
		{"literal empty", "user@[]", Address{}, true},
		{"literal v6 without tag", "user@[2001:db8::1]", Address{}, true},
		{"literal v4 with v6 tag", "user@[IPv6:192.0.2.1]", Address{}, true},
		{"literal with zone", "user@[IPv6:fe80::1%eth0]", Address{}, true},
		{"literal general tag", "user@[x400:foo]", Address{}, true},
		{"literal trailing junk", "user@[192.0.2.1]x", Address{}, true},
		{"invalid idn", "user@bü--cher\u200d.test", Address{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAddress(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseAddress(%q) = %+v, want error", tt.in, got)
				}
				if !errors.Is(err, ErrSyntax) {
					t.Errorf("error %v does not wrap ErrSyntax", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAddress(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseAddress(got.String())
			if err != nil || again != got {
				t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestCanonicalDomain(t *testing.T) {
	tests := []struct{ in, want string }{
		{"OURS.Test", "ours.test"},
		{"ours.test.", "ours.test"},
		{"ours.test..", "ours.test."}, // only one dot trimmed, even when invalid
		{"Bücher.Test", "xn--bcher-kva.test"},
		{"BÜCHER.TEST.", "xn--bcher-kva.test"},
		{"ΑΒΓ.test", "xn--mxacd.test"},
		{"[IPv6:2001:DB8:0:0::1]", "[IPv6:2001:db8::1]"},
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := CanonicalDomain(tt.in); got != tt.want {
			t.Errorf("CanonicalDomain(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAddressHelpers(t *testing.T) {
	if s := (Address{}).String(); s != "" {
		t.Errorf("null address String() = %q", s)
	}
	if !(Address{}).IsNull() || (Address{"a", "b"}).IsNull() {
		t.Error("IsNull wrong")
	}
	for _, l := range []string{"postmaster", "PostMaster", "POSTMASTER"} {
		if !(Address{l, "ours.test"}).IsPostmaster() {
			t.Errorf("%q not postmaster", l)
		}
	}
	if (Address{"postmaster2", "ours.test"}).IsPostmaster() {
		t.Error("postmaster2 is postmaster")
	}
	ip, ok := Address{"u", "[IPv6:2001:db8::1]"}.IP()
	if !ok || ip != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("IP() = %v, %v", ip, ok)
	}
	if _, ok := (Address{"u", "ours.test"}).IP(); ok {
		t.Error("IP() of a name reported a literal")
	}
}
