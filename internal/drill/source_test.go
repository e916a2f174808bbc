package drill

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// siblings returns the prefixes that, together, cover all of within except
// the single address a.
func siblings(within netip.Prefix, a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for bits := within.Bits() + 1; bits <= a.BitLen(); bits++ {
		p := netip.PrefixFrom(a, bits).Masked()
		b := p.Addr().AsSlice()
		b[(bits-1)/8] ^= 0x80 >> ((bits - 1) % 8)
		s, _ := netip.AddrFromSlice(b)
		out = append(out, netip.PrefixFrom(s, bits))
	}
	return out
}

func TestPickSource(t *testing.T) {
	only := netip.MustParseAddr("127.5.6.7")
	tests := []struct {
		name    string
		within  netip.Prefix
		exclude []netip.Prefix
		want    netip.Prefix // the result must lie in it
		wantOK  bool
	}{
		{name: "nothing trusted", within: Loopback, want: Loopback, wantOK: true},
		{name: "127.0.0.1 trusted", within: Loopback, exclude: pfx("127.0.0.1/32"), want: Loopback, wantOK: true},
		{name: "all loopback trusted", within: Loopback, exclude: pfx("127.0.0.0/8"), wantOK: false},
		{name: "wider than loopback trusted", within: Loopback, exclude: pfx("96.0.0.0/3"), wantOK: false},
		{name: "two halves cover it", within: Loopback, exclude: pfx("127.0.0.0/9", "127.128.0.0/9"), wantOK: false},
		{name: "lower half trusted", within: Loopback, exclude: pfx("127.0.0.0/9"), want: netip.MustParsePrefix("127.128.0.0/9"), wantOK: true},
		{name: "other networks ignored", within: Loopback, exclude: pfx("10.0.0.0/8", "192.168.0.0/16", "::1/128"), want: Loopback, wantOK: true},
		{name: "one address left", within: Loopback, exclude: siblings(Loopback, only), want: netip.PrefixFrom(only, 32), wantOK: true},
		{name: "one address left, also excluded", within: Loopback, exclude: append(siblings(Loopback, only), netip.PrefixFrom(only, 32)), wantOK: false},
		{name: "sub-range", within: netip.MustParsePrefix("127.128.0.0/9"), exclude: pfx("127.0.0.0/24", "127.200.0.0/16"), want: netip.MustParsePrefix("127.128.0.0/9"), wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 200; i++ {
				a, ok := PickSource(tt.within, tt.exclude, rnd)
				if ok != tt.wantOK {
					t.Fatalf("PickSource = %v, %v; want ok=%v", a, ok, tt.wantOK)
				}
				if !ok {
					return
				}
				if !tt.want.Contains(a) {
					t.Fatalf("PickSource = %v, not in %v", a, tt.want)
				}
				for _, e := range tt.exclude {
					if e.Contains(a) {
						t.Fatalf("PickSource = %v, inside excluded %v", a, e)
					}
				}
				if tt.want.Bits() < 31 {
					if b := a.As4(); b[3] == 0 || b[3] == 255 {
						t.Fatalf("PickSource = %v: ends in .0 or .255", a)
					}
				}
			}
		})
	}
}

func TestPickSourceSpreads(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	seen := map[netip.Prefix]bool{}
	for i := 0; i < 50; i++ {
		a, ok := PickSource(authSources, nil, rnd)
		if !ok {
			t.Fatal("no source")
		}
		seen[netip.PrefixFrom(a, 24).Masked()] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 picks fell in only %d distinct /24s", len(seen))
	}
}

func TestCheckTarget(t *testing.T) {
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "loop.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
		case "mixed.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1")}, nil
		case "mx.example.test":
			return []netip.Addr{netip.MustParseAddr("192.0.2.25")}, nil
		}
		return nil, errors.New("no such host")
	}
	tests := []struct {
		addr    string
		remote  bool
		wantErr string
	}{
		{addr: "127.0.0.1:25"},
		{addr: "127.9.9.9:2525"},
		{addr: "[::1]:587"},
		{addr: "[::ffff:127.0.0.1]:25"},
		{addr: "loop.test:25"},
		{addr: "192.0.2.1:25", wantErr: "not a loopback"},
		{addr: "[2001:db8::1]:25", wantErr: "not a loopback"},
		{addr: "0.0.0.0:25", wantErr: "not a loopback"},
		{addr: "mx.example.test:25", wantErr: "--allow-remote"},
		{addr: "mixed.test:25", wantErr: "192.0.2.1"},
		{addr: "nowhere.test:25", wantErr: "no such host"},
		{addr: "192.0.2.1:25", remote: true},
		{addr: "mx.example.test:25", remote: true},
		{addr: "127.0.0.1", wantErr: "HOST:PORT"},
		{addr: ":25", wantErr: "HOST:PORT"},
		{addr: "127.0.0.1:", wantErr: "HOST:PORT"},
	}
	for _, tt := range tests {
		err := CheckTarget(context.Background(), tt.addr, tt.remote, resolve)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("CheckTarget(%q, remote=%v) = %v", tt.addr, tt.remote, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("CheckTarget(%q, remote=%v) = %v, want an error containing %q", tt.addr, tt.remote, err, tt.wantErr)
		}
	}
}

func TestCheckOptions(t *testing.T) {
	ok := Options{Target: "127.0.0.1:25", Submission: "localhost:587", User: " Drill@Ours.Test ", Password: "pw"}
	tests := []struct {
		name    string
		edit    func(*Options)
		wantErr string
		check   func(t *testing.T, o Options)
	}{
		{name: "defaults", check: func(t *testing.T, o Options) {
			if o.Burst != DefaultBurst || o.AuthTries != DefaultAuthTries || o.Timeout != DefaultTimeout {
				t.Errorf("burst %d tries %d timeout %v", o.Burst, o.AuthTries, o.Timeout)
			}
			if o.User != "drill@ours.test" || o.LocalDomain != "ours.test" {
				t.Errorf("user %q domain %q", o.User, o.LocalDomain)
			}
			if o.Submission != "127.0.0.1:587" {
				t.Errorf("localhost not made numeric: %q", o.Submission)
			}
		}},
		{name: "burst follows a raised limit", edit: func(o *Options) { o.Server = &Server{MsgsPerMinute: 100, AuthFails: 20} },
			check: func(t *testing.T, o Options) {
				if o.Burst != 110 || o.AuthTries != 22 {
					t.Errorf("burst %d tries %d, want 110 and 22", o.Burst, o.AuthTries)
				}
			}},
		{name: "explicit burst kept", edit: func(o *Options) { o.Burst = 7 }, check: func(t *testing.T, o Options) {
			if o.Burst != 7 {
				t.Errorf("burst %d", o.Burst)
			}
		}},
		{name: "no target", edit: func(o *Options) { o.Target = "" }, wantErr: "--target"},
		{name: "no submission", edit: func(o *Options) { o.Submission = "" }, wantErr: "--submission"},
		{name: "remote target", edit: func(o *Options) { o.Target = "192.0.2.1:25" }, wantErr: "--allow-remote"},
		{name: "remote submission", edit: func(o *Options) { o.Submission = "192.0.2.1:587" }, wantErr: "--allow-remote"},
		{name: "remote allowed", edit: func(o *Options) { o.Target, o.AllowRemote = "192.0.2.1:25", true }},
		{name: "user without domain", edit: func(o *Options) { o.User = "drill" }, wantErr: "--user"},
		{name: "user with space", edit: func(o *Options) { o.User = "a b@ours.test" }, wantErr: "--user"},
		{name: "no password", edit: func(o *Options) { o.Password = "" }, wantErr: "password"},
		{name: "negative burst", edit: func(o *Options) { o.Burst = -1 }, wantErr: "--burst"},
		{name: "huge burst", edit: func(o *Options) { o.Burst = maxBurst + 1 }, wantErr: "--burst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			if tt.edit != nil {
				tt.edit(&o)
			}
			got, err := Check(context.Background(), o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrUsage) {
					t.Fatalf("Check = %v, want ErrUsage containing %q", err, tt.wantErr)
				}
				// Run must refuse the same options before sending anything.
				if _, err := Run(context.Background(), o); !errors.Is(err, ErrUsage) {
					t.Fatalf("Run = %v, want ErrUsage", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}
