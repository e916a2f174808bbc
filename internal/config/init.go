package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// InitOptions are the flags of `mamori init`.
type InitOptions struct {
	Dir             string
	Domain          string
	Hostname        string // default "mail." + Domain
	ListenHost      string // default 0.0.0.0 for SMTP listeners
	SMTPPort        int    // default 25
	SubmissionPort  int    // default 587
	SubmissionsPort int    // default 465
	AdminPort       int    // default 8025
}

// InitResult says what init wrote.
type InitResult struct {
	ConfigPath string
	Token      string
	TokenFile  string
}

// ErrExists is returned when the directory already holds a config.
var ErrExists = errors.New("config already exists")

// Init writes DIR/mamori.toml, a self-signed TLS pair, the admin token and
// the data folders. It never overwrites an existing config.
func Init(o InitOptions) (InitResult, error) {
	if o.Dir == "" || o.Domain == "" {
		return InitResult{}, errors.New("init: --dir and --domain are required")
	}
	dom := strings.TrimSuffix(strings.ToLower(o.Domain), ".")
	if dom == "" || strings.ContainsAny(dom, " @/\\") || !strings.Contains(dom, ".") {
		return InitResult{}, fmt.Errorf("init: %q is not a domain name", o.Domain)
	}
	if o.Hostname == "" {
		o.Hostname = "mail." + dom
	}
	if o.ListenHost == "" {
		o.ListenHost = "0.0.0.0"
	}
	adminHost := o.ListenHost
	if ip := net.ParseIP(adminHost); ip == nil || ip.IsUnspecified() {
		adminHost = "127.0.0.1"
	}
	def := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	for _, p := range []int{o.SMTPPort, o.SubmissionPort, o.SubmissionsPort, o.AdminPort} {
		if p < 0 || p > 65535 {
			return InitResult{}, fmt.Errorf("init: port %d out of range", p)
		}
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	cfgPath := filepath.Join(dir, "mamori.toml")
	if _, err := os.Stat(cfgPath); err == nil {
		return InitResult{}, fmt.Errorf("init: %s: %w; refusing to overwrite it", cfgPath, ErrExists)
	}
	dataDir := filepath.Join(dir, "data")
	tlsDir := filepath.Join(dir, "tls")
	for _, d := range []string{dir, dataDir, tlsDir, filepath.Join(dataDir, "mail"), filepath.Join(dataDir, "queue")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return InitResult{}, fmt.Errorf("init: %w", err)
		}
	}
	certPath, keyPath := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if err := writeSelfSigned(certPath, keyPath, o.Hostname); err != nil {
		return InitResult{}, fmt.Errorf("init: tls: %w", err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return InitResult{}, fmt.Errorf("init: token: %w", err)
	}
	token := hex.EncodeToString(tok)
	tokenPath := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenPath, []byte(token+"\n"), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("init: token: %w", err)
	}
	hp := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	var b strings.Builder
	err = configTemplate.Execute(&b, map[string]string{
		"Hostname":    o.Hostname,
		"DataDir":     dataDir,
		"Domain":      dom,
		"SMTP":        hp(o.ListenHost, def(o.SMTPPort, 25)),
		"Submission":  hp(o.ListenHost, def(o.SubmissionPort, 587)),
		"Submissions": hp(o.ListenHost, def(o.SubmissionsPort, 465)),
		"Admin":       hp(adminHost, def(o.AdminPort, 8025)),
		"Cert":        certPath,
		"Key":         keyPath,
		"TokenFile":   tokenPath,
	})
	if err != nil {
		return InitResult{}, fmt.Errorf("init: render config: %w", err)
	}
	// O_EXCL: never clobber a config that appeared meanwhile.
	f, err := os.OpenFile(cfgPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return InitResult{}, fmt.Errorf("init: write config: %w", err)
	}
	if err := f.Close(); err != nil {
		return InitResult{}, fmt.Errorf("init: write config: %w", err)
	}
	if _, err := Load(cfgPath); err != nil {
		return InitResult{}, fmt.Errorf("init: generated config does not validate (bug): %w", err)
	}
	return InitResult{ConfigPath: cfgPath, Token: token, TokenFile: tokenPath}, nil
}

func writeSelfSigned(certPath, keyPath, host string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

var configTemplate = template.Must(template.New("cfg").Parse(`# mamori configuration, written by "mamori init".
# Check changes with: mamori check-config --config THIS_FILE

# The name this server gives in its greeting, EHLO and Received headers.
hostname = "{{.Hostname}}"
# Queue, mailboxes (data_dir/mail/DOMAIN/USER) and state live here.
data_dir = "{{.DataDir}}"
# Mail for these domains is delivered locally. More: mamori domain add.
domains = ["{{.Domain}}"]

[listen]
smtp = "{{.SMTP}}"               # MX: mail from the Internet, no AUTH
submission = "{{.Submission}}"   # STARTTLS required before AUTH
submissions = "{{.Submissions}}" # implicit TLS
admin = "{{.Admin}}"             # HTTP admin API, bearer token

[tls]
cert = "{{.Cert}}"
key = "{{.Key}}"

[admin]
token_file = "{{.TokenFile}}"

[relay]
# Clients here may send to any destination without AUTH (office LAN).
# Empty by default: only authenticated users relay. The guard still
# rate-limits trusted clients.
trusted_networks = []

[limits]
max_message_size = 26214400   # bytes
max_recipients = 100          # per message
command_timeout = "5m"
data_timeout = "10m"

[queue]
max_messages = 200000         # beyond this new mail gets 452 4.3.1
max_bytes = 8589934592        # 8 GiB of queued mail at most
min_free_bytes = 268435456    # keep 256 MiB free on the queue's filesystem
held_retention = "720h"       # held mail is deleted after 30 days (export evidence first)

[delivery]
port = 25
concurrency = 20
per_domain_concurrency = 5
max_lifetime = "120h"
# relayhost = "smarthost.example:587"

[delivery.routes]
# "partner.example" = "10.0.0.5:25"

[dns]
# resolver = "127.0.0.1:53"   # empty: the servers in /etc/resolv.conf

[guard]
# Limits apply to everyone, trusted networks and authenticated users too.
# A local sender that exceeds them is isolated: its mail is held, not sent.
msgs_per_minute = 30
rcpts_per_minute = 100
rcpts_per_hour = 300
rcpts_per_day = 1000
pregreet_delay = "500ms"      # port 25: clients that talk before the greeting are cut
max_session_time = "30m"
dnsbl_zones = []              # e.g. ["zen.spamhaus.org"]
public_ips = []               # our own sending IPs, watched in dnsbl_zones
pause_outbound_when_listed = true
# webhook = "https://chat.example/hooks/mamori"
stale_days = 90

[guard.overrides]
# "newsletter@example.org" = { msgs_per_minute = 600, rcpts_per_minute = 2000, rcpts_per_hour = 20000, rcpts_per_day = 100000 }

[guard.notify]
# "alice@example.org" = "alice.private@elsewhere.example"

[content]
action = "reject"             # blocked attachments (exe, scr, js, … also inside zips): reject or hold
# block_extensions = ["xlsm"]
# allow_extensions = ["iso"]
# clamd = "unix:/run/clamav/clamd.ctl"   # ClamAV daemon (INSTREAM); empty: no virus scan
clamd_fail = "closed"         # clamd unreachable: "closed" answers 451, "open" accepts unscanned
virus_action = "reject"

[content.domains]
# "lab.example.org" = { allow_extensions = ["exe"] }

[auth]
verify_inbound = true         # SPF, DKIM, DMARC of inbound mail → Authentication-Results header
dmarc_reject = true           # honour p=reject: refuse failing mail with 550 5.7.1
dkim_selector = "mamori"      # sign outbound mail with data_dir/dkim/DOMAIN.SELECTOR.key (mamori dkim keygen)
timeout = "4s"                # budget for all DNS lookups of one message; then temperror, mail goes on

[log]
format = "json"   # or "logfmt"
level = "info"
`))
