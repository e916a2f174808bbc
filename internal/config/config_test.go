package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTrustedNetworks(t *testing.T) {
	tests := []struct {
		nets []string
		ok   bool
	}{
		{nil, true},
		{[]string{"192.168.1.0/24", "10.0.0.0/8", "127.0.0.1", "fd00::/48"}, true},
		{[]string{"203.0.113.0/24"}, true},
		{[]string{"0.0.0.0/0"}, false},
		{[]string{"::/0"}, false},
		{[]string{"10.0.0.0/7"}, false},
		{[]string{"8.0.0.0/8"}, false},     // public and wide
		{[]string{"2001:db8::/32"}, false}, // public IPv6 wider than /48
		{[]string{"bogus"}, false},
		{[]string{"300.1.1.1"}, false},
	}
	for _, tc := range tests {
		c := Config{Relay: Relay{TrustedNetworks: tc.nets}}
		_, err := c.TrustedPrefixes()
		if (err == nil) != tc.ok {
			t.Errorf("%v: err=%v, want ok=%v", tc.nets, err, tc.ok)
		}
	}
}

func TestInitWritesLoadableConfig(t *testing.T) {
	dir := t.TempDir()
	res, err := Init(InitOptions{Dir: dir, Domain: "Example.TEST.", ListenHost: "127.0.0.1", SMTPPort: 2525, AdminPort: 9025})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Domains[0] != "example.test" || c.Hostname != "mail.example.test" {
		t.Errorf("domains %v hostname %q", c.Domains, c.Hostname)
	}
	if c.Listen.SMTP != "127.0.0.1:2525" || c.Listen.Admin != "127.0.0.1:9025" || c.Listen.Submission != "127.0.0.1:587" {
		t.Errorf("listen %+v", c.Listen)
	}
	if len(c.Relay.TrustedNetworks) != 0 {
		t.Errorf("trusted networks not empty by default: %v", c.Relay.TrustedNetworks)
	}
	tok, _ := os.ReadFile(res.TokenFile)
	if strings.TrimSpace(string(tok)) != res.Token || len(res.Token) != 64 {
		t.Errorf("token file %q vs %q", tok, res.Token)
	}
	for _, p := range []string{res.TokenFile, res.ConfigPath, filepath.Join(dir, "tls", "key.pem")} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v err %v: secrets must be 0600", p, st.Mode(), err)
		}
	}
	if _, err := Init(InitOptions{Dir: dir, Domain: "other.test"}); err == nil {
		t.Error("second init overwrote the config")
	}
}

func TestInitAdminOnLoopbackWhenListeningEverywhere(t *testing.T) {
	res, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.SMTP != "0.0.0.0:25" || c.Listen.Admin != "127.0.0.1:8025" {
		t.Errorf("listen %+v", c.Listen)
	}
}

func TestLoadRejects(t *testing.T) {
	base := `hostname = "mx.example.test"
data_dir = "data"
domains = ["example.test"]
[listen]
smtp = "127.0.0.1:2525"
admin = "127.0.0.1:8025"
[admin]
token_file = "tok"
`
	tests := []struct{ name, extra, want string }{
		{"unknown key", "bogus = 1\n", "unknown key"},
		{"open relay", "[relay]\ntrusted_networks = [\"0.0.0.0/0\"]\n", "open relay"},
		{"admin everywhere", "", ""},
		{"bad duration", "[limits]\ncommand_timeout = \"soon\"\n", "duration"},
		{"bad route", "[delivery.routes]\n\"x.test\" = \"nohostport\"\n", "routes"},
		{"tiny size", "[limits]\nmax_message_size = 10\n", "max_message_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base + tc.extra
			if tc.name == "admin everywhere" {
				cfg = strings.Replace(cfg, `admin = "127.0.0.1:8025"`, `admin = "0.0.0.0:8025"`, 1)
				tc.want = "every address"
			}
			p := filepath.Join(t.TempDir(), "m.toml")
			os.WriteFile(p, []byte(cfg), 0o600)
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "m.toml")
	os.WriteFile(p, []byte(base), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.DataDir) || filepath.Dir(c.DataDir) != filepath.Dir(p) {
		t.Errorf("data_dir not resolved against the config dir: %s", c.DataDir)
	}
}

func TestTrustedNetworksTranslation(t *testing.T) {
	tests := []struct {
		net string
		ok  bool
	}{
		{"64:ff9b::/96", false},          // NAT64: the whole IPv4 Internet
		{"64:ff9b::10.0.0.1/128", false}, // one translated host is still translated
		{"64:ff9b:1::/48", false},        // local-use NAT64
		{"64:ff9b:1:2::/64", false},      // inside it
		{"2002::/16", false},             // 6to4
		{"2002:c000:201::/48", false},    // one 6to4 site
		{"2001::/32", false},             // Teredo
		{"2001:0:4136:e378::/64", false}, // inside Teredo
		{"::ffff:0:0/96", false},         // all of IPv4, mapped
		{"::ffff:0:0/90", false},         // a mapped prefix shorter than /96
		{"::/96", false},                 // IPv4-compatible
		{"::/64", false},                 // covers the mapped range
		{"::ffff:10.0.0.1", true},        // unmapped: 10.0.0.1/32
		{"::ffff:10.0.0.0/104", true},    // unmapped: 10.0.0.0/8
		{"::ffff:8.8.8.0/120", true},     // unmapped: 8.8.8.0/24, a small public v4 net
		{"::1", true},                    // loopback
		{"2001:db8:1::/48", true},        // not Teredo (2001:db8 is not 2001:0)
		{"fd12:3456:789a::/48", true},    // ULA
	}
	for _, tc := range tests {
		c := Config{Relay: Relay{TrustedNetworks: []string{tc.net}}}
		_, err := c.TrustedPrefixes()
		if (err == nil) != tc.ok {
			t.Errorf("%s: err=%v, want ok=%v", tc.net, err, tc.ok)
		}
	}
}

// TestAdminListenAddr: the admin listener binds loopback; another specific
// IP address only with [admin] tls = true; never every interface, never a
// host name other than localhost, whatever tls says.
func TestAdminListenAddr(t *testing.T) {
	tests := []struct {
		addr string
		tls  bool
		ok   bool
		want string // part of the error
	}{
		{"127.0.0.1:8025", false, true, ""},
		{"127.0.0.1:8025", true, true, ""},
		{"127.0.0.2:9000", false, true, ""},
		{"[::1]:8025", false, true, ""},
		{"[::ffff:127.0.0.1]:8025", false, true, ""},
		{"[::1%lo]:8025", false, true, ""},
		{"localhost:8025", false, true, ""},
		{"LocalHost.:8025", false, true, ""},
		// Every interface: refused with or without TLS.
		{"0.0.0.0:8025", false, false, "every address"},
		{"0.0.0.0:8025", true, false, "every address"},
		{":8025", false, false, "every address"},
		{":8025", true, false, "every address"},
		{"[::]:8025", false, false, "every address"},
		{"[::]:8025", true, false, "every address"},
		{"[::0]:8025", true, false, "every address"},
		{"[0:0:0:0:0:0:0:0]:8025", true, false, "every address"},
		{"[::ffff:0.0.0.0]:8025", true, false, "every address"},
		{"[::ffff:0:0]:8025", true, false, "every address"},
		// A LAN (or any specific) address: only with TLS.
		{"192.0.2.10:8025", false, false, "tls = true"},
		{"192.0.2.10:8025", true, true, ""},
		{"10.0.0.1:8025", false, false, "loopback"},
		{"10.0.0.1:8025", true, true, ""},
		{"[fe80::1%eth0]:8025", false, false, "loopback"},
		{"[fe80::1%eth0]:8025", true, true, ""},
		{"[2001:db8::8]:8025", true, true, ""},
		{"[::ffff:192.0.2.10]:8025", false, false, "loopback"},
		{"[::ffff:192.0.2.10]:8025", true, true, ""},
		// A host name could resolve to anything, a wildcard included.
		{"admin.example.test:8025", false, false, "host name"},
		{"admin.example.test:8025", true, false, "host name"},
		{"127.0.0.1:http", false, false, "port"},
		{"127.0.0.1:70000", true, false, "port"},
		{"127.0.0.1", false, false, "HOST:PORT"},
	}
	for _, tc := range tests {
		err := checkAdminAddr(tc.addr, tc.tls)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s tls=%v: err=%v, want ok=%v mentioning %q", tc.addr, tc.tls, err, tc.ok, tc.want)
		}
	}
}

// TestAdminTLSNeedsCertificate: [admin] tls serves the [tls] pair, so it
// needs one; a LAN admin address passes Validate with it.
func TestAdminTLSNeedsCertificate(t *testing.T) {
	res, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.TLS {
		t.Fatal("init turned admin.tls on")
	}
	c.Listen.Admin = "192.0.2.10:8025"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tls = true") {
		t.Errorf("LAN admin address without TLS: %v", err)
	}
	c.Admin.TLS = true
	if err := c.Validate(); err != nil {
		t.Errorf("LAN admin address with TLS: %v", err)
	}
	c.Listen.Submission, c.Listen.Submissions = "", ""
	c.Listen.IMAP, c.Listen.IMAPS, c.Listen.POP3, c.Listen.POP3S = "", "", "", ""
	c.TLS = TLS{}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "admin.tls") {
		t.Errorf("admin.tls without a certificate: %v", err)
	}
}

func TestParseListenAddr(t *testing.T) {
	for _, s := range []string{"0.0.0.0:25", "[::]:25", ":25", "[::ffff:0.0.0.0]:25"} {
		l, err := ParseListenAddr(s)
		if err != nil || !l.Everywhere() || l.Loopback() {
			t.Errorf("%s: %+v %v, want every interface", s, l, err)
		}
	}
	for _, s := range []string{"mx.example.test:25", "192.0.2.1:25", "[2001:db8::1]:587"} {
		l, err := ParseListenAddr(s)
		if err != nil || l.Everywhere() || l.Loopback() {
			t.Errorf("%s: %+v %v, want a specific non-loopback address", s, l, err)
		}
	}
	for _, s := range []string{"x", "1.2.3.4:", "1.2.3.4:-1", "[::1]:99999", "bad host:25", "a/b:25"} {
		if _, err := ParseListenAddr(s); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}

func FuzzParseListenAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:25", "[::ffff:0.0.0.0]:1", ":8025", "localhost:1", "[fe80::1%eth0]:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseListenAddr(s)
		if err != nil {
			return
		}
		if l.Everywhere() && l.Loopback() {
			t.Fatalf("%q: both every interface and loopback", s)
		}
		if l.Addr.IsValid() && (l.Addr.Is4In6() || l.Addr.Zone() != "") {
			t.Fatalf("%q: address %v not canonical", s, l.Addr)
		}
		if checkAdminAddr(s, false) == nil && !l.Loopback() {
			t.Fatalf("%q: admin accepted a non-loopback address without TLS", s)
		}
		if checkAdminAddr(s, true) == nil && (l.Everywhere() || (l.Name != "" && !l.Loopback())) {
			t.Fatalf("%q: admin accepted every interface or a host name with TLS", s)
		}
	})
}

func TestInitKeepsAdminOnLoopback(t *testing.T) {
	tests := []struct{ host, smtp, admin string }{
		{"203.0.113.5", "203.0.113.5:25", "127.0.0.1:8025"},
		{"2001:db8::25", "[2001:db8::25]:25", "127.0.0.1:8025"},
		{"::", "[::]:25", "127.0.0.1:8025"},
		{"::0", "[::]:25", "127.0.0.1:8025"},
		{"::ffff:0.0.0.0", "[::ffff:0.0.0.0]:25", "127.0.0.1:8025"},
		{"127.0.0.3", "127.0.0.3:25", "127.0.0.3:8025"},
		{"::1", "[::1]:25", "[::1]:8025"},
		{"[::1]", "[::1]:25", "[::1]:8025"},
	}
	for _, tc := range tests {
		res, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test", ListenHost: tc.host})
		if err != nil {
			t.Errorf("%s: %v", tc.host, err)
			continue
		}
		c, err := Load(res.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if c.Listen.SMTP != tc.smtp || c.Listen.Admin != tc.admin {
			t.Errorf("--listen-host %s: smtp %s admin %s, want %s and %s", tc.host, c.Listen.SMTP, c.Listen.Admin, tc.smtp, tc.admin)
		}
	}
	for _, bad := range []string{"mail.example.test", "10.0.0.0/8", "300.1.1.1"} {
		if _, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test", ListenHost: bad}); err == nil || !strings.Contains(err.Error(), "listen-host") {
			t.Errorf("--listen-host %q: err = %v", bad, err)
		}
	}
}

// TestInitWritesDefaults: the config init writes holds the values of
// Defaults, the one place they are written.
func TestInitWritesDefaults(t *testing.T) {
	res, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	d.Delivery.Routes = c.Delivery.Routes
	for _, cmp := range []struct {
		name      string
		got, want any
	}{
		{"limits", c.Limits, d.Limits},
		{"queue", c.Queue, d.Queue},
		{"delivery", c.Delivery, d.Delivery},
		{"auth", c.Auth, d.Auth},
		{"log", c.Log, d.Log},
		{"content action", c.Content.Action + c.Content.ClamdFail + c.Content.VirusAction, d.Content.Action + d.Content.ClamdFail + d.Content.VirusAction},
		{"guard", [4]any{c.Guard.PregreetDelay, c.Guard.MaxSessionTime, c.Guard.StaleDays, c.Guard.PauseOutboundWhenListed},
			[4]any{d.Guard.PregreetDelay, d.Guard.MaxSessionTime, d.Guard.StaleDays, d.Guard.PauseOutboundWhenListed}},
		{"admin", c.Listen.Admin, d.Listen.Admin},
		{"store", c.Store.Backend, d.Store.Backend},
	} {
		if fmt.Sprint(cmp.got) != fmt.Sprint(cmp.want) {
			t.Errorf("%s: init wrote %v, Defaults has %v", cmp.name, cmp.got, cmp.want)
		}
	}
}

// TestLoadRefusesZeroFallbacks: a zero that another package would replace
// with a different value (or with none) is refused, so the value in effect
// is always the config's.
func TestLoadRefusesZeroFallbacks(t *testing.T) {
	base := `hostname = "mx.example.test"
data_dir = "data"
domains = ["example.test"]
[admin]
token_file = "tok"
[listen]
smtp = "127.0.0.1:2525"
`
	p := filepath.Join(t.TempDir(), "m.toml")
	os.WriteFile(p, []byte(base), 0o600)
	if _, err := Load(p); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tc := range []struct{ extra, want string }{
		{"[limits]\ncommand_timeout = \"0s\"\n", "limits.command_timeout"},
		{"[auth]\ntimeout = \"0s\"\n", "auth.timeout"},
		{"[delivery]\nmin_backoff = \"-1m\"\n", "delivery.min_backoff"},
		{"[queue]\nmax_messages = 0\n", "queue.max_messages"},
		{"[queue]\nmax_bytes = 0\n", "max_bytes"},
		{"[queue]\nheld_retention = \"-1h\"\n", "queue.held_retention"},
		{"[guard]\ndisable_stale = true\nstale_days = 0\n", "guard.stale_days"},
	} {
		p := filepath.Join(t.TempDir(), "m.toml")
		os.WriteFile(p, []byte(base+tc.extra), 0o600)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to name %s", tc.extra, err, tc.want)
		}
	}
}

func TestLocate(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "MAMORI_CONFIG" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		flag, env, want, from string
	}{
		{"/a.toml", "/b.toml", "/a.toml", "--config"},
		{"", "/b.toml", "/b.toml", "$MAMORI_CONFIG"},
		{"", "", SystemPath, "default"},
	} {
		got, from := Locate(tc.flag, env(tc.env))
		if got != tc.want || from != tc.from {
			t.Errorf("Locate(%q, env %q) = %q, %q; want %q, %q", tc.flag, tc.env, got, from, tc.want, tc.from)
		}
	}
}

func TestMailboxFileMode(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want fs.FileMode
		ok   bool
	}{
		{"", 0, true}, {"0600", 0o600, true}, {"0640", 0o640, true}, {"644", 0o644, true},
		{"0400", 0, false}, {"0660", 0, false}, {"0602", 0, false}, {"0700", 0, false},
		{"01640", 0, false}, {"rw-r-----", 0, false}, {"0999", 0, false},
	} {
		got, err := Mailbox{Mode: tc.mode}.FileMode()
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("mode %q: %v, %v; want %v ok=%v", tc.mode, got, err, tc.want, tc.ok)
		}
	}
}

func TestStoreSection(t *testing.T) {
	base := `hostname = "mx.example.test"
data_dir = "data"
domains = ["example.test"]
[listen]
smtp = "127.0.0.1:2525"
admin = ""
`
	host, _ := os.Hostname()
	tests := []struct {
		name, store string
		wantErr     string // "" = valid
		backend     string
		node        string
	}{
		{"default", "", "", "embedded", host},
		{"redis", "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\nnode = \"mx1\"\n", "", "redis", "mx1"},
		{"sentinel", "[store]\nbackend = \"redis\"\nurl = \"redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster\"\nnode = \"mx-2_a\"\n", "", "redis", "mx-2_a"},
		{"redis without url", "[store]\nbackend = \"redis\"\n", "store.url is required", "", ""},
		{"bad scheme", "[store]\nbackend = \"redis\"\nurl = \"http://x:1\"\n", "store.url", "", ""},
		{"bad backend", "[store]\nbackend = \"etcd\"\n", "store.backend", "", ""},
		{"bad node", "[store]\nnode = \"mx 1\"\n", "store.node", "", ""},
		{"peers", "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\nnode = \"mx1\"\npeers = [\"10.0.0.2\", \"192.0.2.7/32\", \"2001:db8::25\"]\n", "", "redis", "mx1"},
		{"peer network", "[store]\nbackend = \"redis\"\nurl = \"redis://h:1\"\npeers = [\"10.0.0.0/29\"]\n", "not a network", "", ""},
		{"peers without redis", "[store]\npeers = [\"10.0.0.2\"]\n", "store.peers: only with backend", "", ""},
		{"peer not an address", "[store]\nbackend = \"redis\"\nurl = \"redis://h:1\"\npeers = [\"mx2.example.org\"]\n", "store.peers", "", ""},
		{"peer network too wide", "[store]\nbackend = \"redis\"\nurl = \"redis://h:1\"\npeers = [\"0.0.0.0/0\"]\n", "open relay", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.toml")
			os.WriteFile(p, []byte(base+tc.store), 0o600)
			c, err := Load(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Store.Backend != tc.backend || c.Store.Node != tc.node {
				t.Fatalf("store = %+v, want backend %q node %q", c.Store, tc.backend, tc.node)
			}
		})
	}
}

func TestRouteKeysCanonical(t *testing.T) {
	c := Defaults()
	c.Hostname, c.DataDir, c.Domains = "mx.example.org", "/tmp/x", []string{"example.org"}
	c.Listen.SMTP, c.Listen.Admin = "127.0.0.1:25", ""
	c.Delivery.Routes = map[string]string{"Example.ORG.": "mx1.example.org:25"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Delivery.Routes["example.org"] != "mx1.example.org:25" {
		t.Errorf("routes after validation: %v", c.Delivery.Routes)
	}
	c.Delivery.Routes = map[string]string{"a.test": "x:25", "A.test": "y:25"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate route keys: %v", err)
	}
}
