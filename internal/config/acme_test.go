package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestACMEValidation(t *testing.T) {
	base := `hostname = "mx.example.test"
data_dir = "data"
domains = ["example.test"]
[listen]
smtp = "127.0.0.1:2525"
submission = "127.0.0.1:2587"
admin = ""
[tls]
`
	tests := []struct {
		name, hostname, extra string
		want                  string // "" = valid
	}{
		{"acme alone is enough for submission", "", "acme = true\n", ""},
		{"email and names", "", "acme = true\nacme_email = \"admin@example.test\"\nacme_names = [\"imap.example.test\", \"MX.example.test.\"]\n", ""},
		{"http-01 on a port", "", "acme = true\nacme_challenge = \"http-01\"\nacme_listen = \"127.0.0.1:8080\"\n", ""},
		{"IP hostname", "192.0.2.1", "acme = true\n", "is an IP address"},
		{"single label hostname", "mail", "acme = true\n", "not a fully qualified"},
		{"IP hostname without acme is fine", "192.0.2.1", "cert = \"c.pem\"\nkey = \"k.pem\"\n", ""},
		{"IPv6 name", "", "acme = true\nacme_names = [\"[2001:db8::1]\"]\n", "tls.acme_names"},
		{"wildcard", "", "acme = true\nacme_names = [\"*.example.test\"]\n", "wildcard"},
		{"underscore", "", "acme = true\nacme_names = [\"a_b.example.test\"]\n", "not a DNS name"},
		{"bad email", "", "acme = true\nacme_email = \"admin\"\n", "tls.acme_email"},
		{"display name email", "", "acme = true\nacme_email = \"Admin <admin@example.test>\"\n", "tls.acme_email"},
		{"dotless email domain", "", "acme = true\nacme_email = \"admin@localhost\"\n", "tls.acme_email"},
		{"http directory", "", "acme = true\nacme_directory = \"http://ca.example.test/dir\"\n", "tls.acme_directory"},
		{"bad challenge", "", "acme = true\nacme_challenge = \"dns-01\"\n", "tls.acme_challenge"},
		{"bad listen", "", "acme = true\nacme_listen = \"443\"\n", "tls.acme_listen"},
		{"cert without key", "", "cert = \"c.pem\"\n", "cert and key go together"},
		{"no tls for submission", "", "", "acme = true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base + tc.extra
			if tc.hostname != "" {
				cfg = strings.Replace(cfg, "mx.example.test", tc.hostname, 1)
			}
			p := filepath.Join(t.TempDir(), "m.toml")
			if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				if c.TLS.ACMEDirectory != LetsEncryptDirectory {
					t.Errorf("acme_directory default %q", c.TLS.ACMEDirectory)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestACMEHostsAndListen(t *testing.T) {
	c := Config{Hostname: "MX.Example.test.", TLS: TLS{ACMENames: []string{"imap.example.test", "mx.example.test", " "}}}
	if got := strings.Join(c.ACMEHosts(), ","); got != "mx.example.test,imap.example.test" {
		t.Errorf("ACMEHosts = %s", got)
	}
	for _, tc := range []struct{ challenge, listen, want string }{
		{"", "", ":443"},
		{ChallengeTLSALPN, "", ":443"},
		{ChallengeHTTP, "", ":80"},
		{ChallengeHTTP, "127.0.0.1:8080", "127.0.0.1:8080"},
	} {
		if got := (TLS{ACMEChallenge: tc.challenge, ACMEListen: tc.listen}).ChallengeListen(); got != tc.want {
			t.Errorf("%q %q: ChallengeListen = %q, want %q", tc.challenge, tc.listen, got, tc.want)
		}
	}
}

// TestInitDocumentsACME: the config init writes names every acme key, and
// turning ACME on in it (as an admin would, by editing) gives a valid config.
func TestInitDocumentsACME(t *testing.T) {
	res, err := Init(InitOptions{Dir: t.TempDir(), Domain: "example.test"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, k := range []string{"acme =", "acme_email =", "acme_directory =", "acme_names =", "acme_challenge =", "acme_listen =", "acme_ca ="} {
		if !strings.Contains(text, k) {
			t.Errorf("init's config does not mention %s", k)
		}
	}
	if !strings.Contains(text, LetsEncryptDirectory) {
		t.Error("init's config does not show the default directory")
	}
	text = strings.Replace(text, "acme = false", "acme = true", 1)
	text = strings.Replace(text, `# acme_email = "postmaster@example.test"`, `acme_email = "postmaster@example.test"`, 1)
	if err := os.WriteFile(res.ConfigPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS.ACME || c.TLS.ACMEEmail != "postmaster@example.test" || c.TLS.ACMEChallenge != ChallengeTLSALPN {
		t.Errorf("tls = %+v", c.TLS)
	}
}
