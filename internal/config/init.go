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
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/user"
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
	IMAPPort        int    // default 143
	IMAPSPort       int    // default 993
	POP3Port        int    // default 110
	POP3SPort       int    // default 995
	AdminPort       int    // default 8025
	// DataDir is where the queue, mailboxes and state go (default DIR/data).
	DataDir string
	// User, when set, is written as [server] user; run as root, init also
	// lets that user's group read the config, TLS pair and token (and
	// makes DataDir the user's), so the unprivileged server can read them
	// again on reload.
	User string
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
	listenIP, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(o.ListenHost, "["), "]"))
	if err != nil {
		return InitResult{}, fmt.Errorf("init: --listen-host %q: want an IP address (e.g. 0.0.0.0 or 192.0.2.25)", o.ListenHost)
	}
	o.ListenHost = listenIP.String()
	// The admin API stays on loopback whatever the mail listeners use: on
	// the same loopback address when they are on one, else 127.0.0.1.
	// Never on a public or wildcard address (see checkAdminAddr).
	adminHost := "127.0.0.1"
	if listenIP.Unmap().IsLoopback() {
		adminHost = listenIP.Unmap().WithZone("").String()
	}
	// Every value written below comes from Defaults, the one place where
	// mamori's defaults live.
	d := Defaults()
	def := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	for _, p := range []int{o.SMTPPort, o.SubmissionPort, o.SubmissionsPort, o.IMAPPort, o.IMAPSPort, o.POP3Port, o.POP3SPort, o.AdminPort} {
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
	if o.DataDir != "" {
		if dataDir, err = filepath.Abs(o.DataDir); err != nil {
			return InitResult{}, fmt.Errorf("init: %w", err)
		}
	}
	var svc *user.User
	if o.User != "" {
		if svc, err = user.Lookup(o.User); err != nil {
			return InitResult{}, fmt.Errorf("init: --user: %w (create it first, e.g. useradd --system mamori)", err)
		}
		// init gives the user the data folder and its group the config
		// folder: only folders init makes (or empty ones), never an
		// existing tree such as /var/lib or /etc.
		for _, d := range []string{dir, dataDir} {
			if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
				return InitResult{}, fmt.Errorf("init: --user: %s exists and is not empty; name a new folder", d)
			}
		}
	}
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
	err = configTemplate.Execute(&b, map[string]any{
		"D":           d,
		"Hostname":    o.Hostname,
		"DataDir":     dataDir,
		"Domain":      dom,
		"SMTP":        hp(o.ListenHost, def(o.SMTPPort, 25)),
		"Submission":  hp(o.ListenHost, def(o.SubmissionPort, 587)),
		"Submissions": hp(o.ListenHost, def(o.SubmissionsPort, 465)),
		"IMAP":        hp(o.ListenHost, def(o.IMAPPort, 143)),
		"IMAPS":       hp(o.ListenHost, def(o.IMAPSPort, 993)),
		"POP3":        hp(o.ListenHost, def(o.POP3Port, 110)),
		"POP3S":       hp(o.ListenHost, def(o.POP3SPort, 995)),
		"Admin":       hp(adminHost, def(o.AdminPort, defaultAdminPort)),
		"Cert":        certPath,
		"Key":         keyPath,
		"TokenFile":   tokenPath,
		"User":        o.User,
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
	if svc != nil && os.Geteuid() == 0 {
		if err := shareWithService(svc, dir, dataDir, []string{cfgPath, certPath, keyPath, tokenPath}); err != nil {
			return InitResult{}, fmt.Errorf("init: --user: %w", err)
		}
	}
	return InitResult{ConfigPath: cfgPath, Token: token, TokenFile: tokenPath}, nil
}

// shareWithService lets the service user's group read the config folder
// and files (0750/0640, owner root, so the server cannot rewrite its own
// config) and gives the user the data folder.
func shareWithService(u *user.User, dir, dataDir string, files []string) error {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return err
	}
	for _, d := range []string{dir, filepath.Dir(files[1])} {
		if err := os.Chown(d, 0, gid); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o750); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := os.Chown(f, 0, gid); err != nil {
			return err
		}
		if err := os.Chmod(f, 0o640); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dataDir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
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

[server]
# Started as root, serve binds its ports, then runs as this user (and
# group, default the user's) before it touches any data. Or start it as
# this user with CAP_NET_BIND_SERVICE (contrib/mamori.service).
{{if .User}}user = "{{.User}}"{{else}}# user = "mamori"{{end}}
# group = "mamori"

[listen]
smtp = "{{.SMTP}}"               # MX: mail from the Internet, no AUTH
submission = "{{.Submission}}"   # STARTTLS required before AUTH
submissions = "{{.Submissions}}" # implicit TLS
imap = "{{.IMAP}}"               # STARTTLS required before LOGIN
imaps = "{{.IMAPS}}"             # implicit TLS
pop3 = "{{.POP3}}"               # STLS required before USER/PASS
pop3s = "{{.POP3S}}"             # implicit TLS
admin = "{{.Admin}}"             # admin API and dashboard (token), loopback

[tls]
cert = "{{.Cert}}"
key = "{{.Key}}"
# Automatic certificates (ACME, e.g. Let's Encrypt) for hostname and
# acme_names, renewed before they expire; the pair above is served until
# the first one is issued. The CA must reach this host on port 443
# (tls-alpn-01) or 80 (http-01), and hostname must resolve to it.
acme = false
# acme_email = "postmaster@{{.Domain}}"   # the CA's contact for this account
# acme_directory = "{{.D.TLS.ACMEDirectory}}"
# acme_names = []                 # more names, e.g. ["imap.{{.Domain}}"]
# acme_challenge = "{{.D.TLS.ACMEChallenge}}"   # or "http-01"
# acme_listen = ":443"            # default: ":443" for tls-alpn-01, ":80" for http-01
# acme_ca = "/path/to/ca.pem"     # extra roots for a private CA's directory

[admin]
token_file = "{{.TokenFile}}"
# HTTPS with the [tls] certificate. Required before [listen] admin may be
# a LAN address (never a wildcard); on loopback, reach it over SSH:
# ssh -L 8025:127.0.0.1:8025 this-host
tls = false

[relay]
# Clients here may send to any destination without AUTH (office LAN).
# Empty by default: only authenticated users relay. The guard still
# rate-limits trusted clients.
trusted_networks = []

[limits]
max_message_size = {{.D.Limits.MaxMessageSize}}   # bytes
max_recipients = {{.D.Limits.MaxRecipients}}          # per message
command_timeout = "{{.D.Limits.CommandTimeout}}"
data_timeout = "{{.D.Limits.DataTimeout}}"
max_inflight_bytes = {{.D.Limits.MaxInflight}}   # message bytes in memory, all sessions together (at least ~7 × max_message_size)

[mailbox]
quota = {{.D.Mailbox.Quota}}   # bytes per user over all folders (0: none); mamori user quota sets one per user
# Let a reader in this group (a Dovecot beside mamori, a backup agent)
# read the Maildirs without root: files get this group and mode.
# group = "mail"
# mode = "0640"

[queue]
max_messages = {{.D.Queue.MaxMessages}}         # beyond this new mail gets 452 4.3.1
max_bytes = {{.D.Queue.MaxBytes}}        # queued mail on disk at most
min_free_bytes = {{.D.Queue.MinFreeBytes}}    # free space to keep on the queue's filesystem
held_retention = "{{.D.Queue.HeldRetention}}"       # held mail is then deleted (export evidence first; "0s" keeps it)

[delivery]
port = {{.D.Delivery.Port}}
concurrency = {{.D.Delivery.Concurrency}}
per_domain_concurrency = {{.D.Delivery.PerDomainConcurrency}}
max_lifetime = "{{.D.Delivery.MaxLifetime}}"
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
pregreet_delay = "{{.D.Guard.PregreetDelay}}"      # port 25: clients that talk before the greeting are cut
max_session_time = "{{.D.Guard.MaxSessionTime}}"
dnsbl_zones = []              # e.g. ["zen.spamhaus.org"]
public_ips = []               # our own sending IPs, watched in dnsbl_zones
pause_outbound_when_listed = {{.D.Guard.PauseOutboundWhenListed}}
# webhook = "https://chat.example/hooks/mamori"
stale_days = {{.D.Guard.StaleDays}}

[guard.overrides]
# "newsletter@example.org" = { msgs_per_minute = 600, rcpts_per_minute = 2000, rcpts_per_hour = 20000, rcpts_per_day = 100000 }

[guard.notify]
# "alice@example.org" = "alice.private@elsewhere.example"

[content]
action = "{{.D.Content.Action}}"             # blocked attachments (exe, scr, js, … also inside zips): reject or hold
# block_extensions = ["xlsm"]
# allow_extensions = ["iso"]
# uninspectable = "accept"   # encrypted/7z/rar/unreadable archives; default: like action
# clamd = "unix:/run/clamav/clamd.ctl"   # ClamAV daemon (INSTREAM); empty: no virus scan
clamd_fail = "{{.D.Content.ClamdFail}}"         # clamd unreachable: "closed" answers 451, "open" accepts unscanned
virus_action = "{{.D.Content.VirusAction}}"

[content.domains]
# "lab.example.org" = { allow_extensions = ["exe"] }

[auth]
verify_inbound = {{.D.Auth.VerifyInbound}}         # SPF, DKIM, DMARC of inbound mail → Authentication-Results header
dmarc_reject = {{.D.Auth.DMARCReject}}           # honour p=reject: refuse failing mail with 550 5.7.1
dkim_selector = "{{.D.Auth.DKIMSelector}}"      # sign outbound mail with data_dir/dkim/DOMAIN.SELECTOR.key (mamori dkim keygen)
timeout = "{{.D.Auth.Timeout}}"                # budget for all DNS lookups of one message; then temperror, mail goes on

[store]
# Where the directory (users, domains, aliases, quotas) and the guard's
# decisions (bans, isolations, suspensions) live. "embedded": in data_dir,
# this node only. "redis": shared by every node with the same url
# (clustered mode, see the README); queue, mailboxes and journal stay on
# each node.
backend = "{{.D.Store.Backend}}"
# url = "redis://10.0.0.9:6379/0"   # or rediss://, redis+sentinel://H:P,H:P/MASTER, redis+cluster://H:P,H:P
# node = "mx1"                      # this node's name in the cluster, unique; default: the host name
# peers = ["10.0.0.2"]              # the other nodes: trusted, and the mail they pass on is not counted twice

[log]
format = "{{.D.Log.Format}}"   # or "logfmt"
level = "{{.D.Log.Level}}"
`))
