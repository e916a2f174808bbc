package config

import (
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
