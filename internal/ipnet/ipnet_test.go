package ipnet

import "testing"

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.1", "10.0.0.1/32"},
		{" 10.0.0.1 ", "10.0.0.1/32"},
		{"::ffff:10.0.0.1", "10.0.0.1/32"},
		{"[2001:db8::1]", "2001:db8::1/128"},
		{"fe80::1%eth0", "fe80::1/128"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"2001:db8::/32", "2001:db8::/32"},
	}
	for _, tc := range tests {
		p, err := ParsePrefix(tc.in)
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	for _, bad := range []string{"", "bogus", "10.0.0.0/33", "300.1.1.1", "10.0.0.1/", "::ffff:0:0/95", "::ffff:10.0.0.0/33", "fe80::%eth0/64", "10.0.0.0/-1", "::/129"} {
		if _, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", bad)
		}
	}
}

func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::ffff:1.2.3.4/120", "[::1]", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if p != p.Masked() || p.Addr().Is4In6() {
			t.Fatalf("%q → %v: not canonical", s, p)
		}
		again, err := ParsePrefix(p.String())
		if err != nil || again != p {
			t.Fatalf("%q → %v does not re-parse (%v, %v)", s, p, again, err)
		}
	})
}
