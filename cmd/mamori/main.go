// Command mamori is the single binary of the mamori mail server: it sets up
// (init), checks (check-config) and runs (serve) the server, manages users,
// domains, aliases and the queue while it runs, probes any SMTP server for
// open relay (relaytest) and checks a deployment (doctor). All logic lives
// in internal/; this package only parses arguments and prints results.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/server"
	"github.com/mamori-mail/mamori/internal/termsafe"
)

const usage = `mamori — a self-defending mail server

Usage:
  mamori init --dir DIR --domain DOMAIN [--hostname H] [--listen-host IP]
              [--smtp-port N] [--submission-port N] [--submissions-port N]
              [--imap-port N] [--imaps-port N] [--pop3-port N] [--pop3s-port N] [--admin-port N]
              [--data-dir DIR] [--user NAME]
  mamori serve --config FILE
  mamori check-config --config FILE
  mamori reload --config FILE   (re-read the config, DKIM keys, TLS files and content policy; also SIGHUP)
  mamori user add ADDRESS [--password-stdin] --config FILE
  mamori user list [--stale [--days N]] [--json] | del ADDRESS | passwd ADDRESS [--password-stdin]   (--config FILE)
  mamori domain add|del DOMAIN --config FILE;  mamori domain list --config FILE
  mamori alias add ALIAS TARGET... --config FILE;  mamori alias list|del ALIAS --config FILE
  mamori queue list|show|hold|release|delete|retry --config FILE [filters] [--json] [--count]
  mamori queue check [--repair] [--json] --config FILE   (offline; exit 0 clean, 1 damage found/repaired, 2 error)
  mamori guard list [--json] | ban IP|CIDR [--for DUR] | unban IP|CIDR | release IP|ADDRESS [--release-mail] | export --nft   (--config FILE)
  mamori top --config FILE [--once [--json]]   (live view: q quits; --once for scripts)
  mamori incident export --since DUR|TIME [--sender A] [--client-ip IP|CIDR] --out FILE.tar.gz --config FILE
  mamori dkim keygen --domain D [--selector mamori] [--algo rsa|ed25519] --config FILE
  mamori logscan [--format auto|postfix|sendmail|exim|mamori] [--json] [--html FILE] [--since T] [--until T]
                 [--year Y] [--top N] [--local-domain D]... [--window DUR] [--worm-msgs N] [--worm-rcpts N]
                 [--relay-denied N] [--auth-failures N] [--relay-out N] [--backscatter N] [--rotating-ips N]
                 [--rate-factor N] FILE...|-
  mamori logscan --follow [--config FILE] [--webhook URL] [--postmaster ADDR --smtp HOST:PORT] [thresholds] FILE
  mamori relaytest HOST:PORT [--json] [--domain D] [--user U]
  mamori doctor --config FILE [--json] [--probe-domain D] [--probe HOST:PORT]
               (checks DNS, certificate, listeners, relay, DNSBLs, port 25; exit 1 on a failure)
  mamori drill --target HOST:PORT --submission HOST:PORT --user ADDRESS --password-stdin
               [--config FILE] [--burst N] [--allow-remote] [--json]

Management commands talk to the running server's admin API; when no server
is running they change the data directory directly.

--config may be omitted: $MAMORI_CONFIG names the file, else
/etc/mamori/mamori.toml is used.
`

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if !errors.Is(err, errSilent) {
			// Errors can quote what a remote server or a message said.
			fmt.Fprintln(os.Stderr, "mamori:", termsafe.Lines(err.Error()))
		}
		os.Exit(code)
	}
}

// errSilent: the command already reported; just exit non-zero.
var errSilent = errors.New("failed")

type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin, stdout, stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{2, errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "init":
		return e.cmdInit(rest)
	case "serve":
		return e.cmdServe(rest)
	case "check-config":
		return e.cmdCheckConfig(rest)
	case "user":
		return e.cmdUser(rest)
	case "domain":
		return e.cmdDomain(rest)
	case "alias":
		return e.cmdAlias(rest)
	case "queue":
		return e.cmdQueue(rest)
	case "relaytest":
		return e.cmdRelaytest(rest)
	case "doctor":
		return e.cmdDoctor(rest)
	case "guard":
		return e.cmdGuard(rest)
	case "drill":
		return e.cmdDrill(rest)
	case "incident":
		return e.cmdIncident(rest)
	case "top":
		return e.cmdTop(rest)
	case "dkim":
		return e.cmdDKIM(rest)
	case "logscan":
		return e.cmdLogscan(rest)
	case "reload":
		return e.cmdReload(rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return &exitError{2, fmt.Errorf("unknown command %q", cmd)}
}

// parse parses flags that may come before, between or after positional
// arguments ("user add ADDR --config F" as well as "user add --config F ADDR"),
// and returns the positionals.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, &exitError{2, fmt.Errorf("%s: %w\n%s", fs.Name(), err, flagUsage(fs))}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagUsage lists the flags of fs, for an error about them.
func flagUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: mamori %s [flags]; flags:", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(&b, "\n  --%s\t%s", f.Name, f.Usage)
	})
	return b.String()
}

// onlyFlags refuses a flag that was given but that this subcommand does not
// use, so that it is not silently ignored.
func onlyFlags(fs *flag.FlagSet, allowed []string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && !slices.Contains(allowed, f.Name) {
			err = fmt.Errorf("%s: --%s does not apply here", fs.Name(), f.Name)
		}
	})
	return err
}

// noArgs refuses positional arguments a command does not take.
func noArgs(what string, pos []string) error {
	if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("%s: unexpected argument %q", what, pos[0])}
	}
	return nil
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "path to mamori.toml")
}

// loadConfig loads the config named by --config, else by $MAMORI_CONFIG,
// else /etc/mamori/mamori.toml.
func loadConfig(path string) (*config.Config, error) {
	path, from := config.Locate(path, os.Getenv)
	if from != "--config" {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, &exitError{2, fmt.Errorf("no config: --config FILE not given, and %s (%s) does not exist", path, from)}
		}
	}
	return config.Load(path)
}

func (e *env) cmdInit(args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	var o config.InitOptions
	fs.StringVar(&o.Dir, "dir", "", "directory to create the config and data in")
	fs.StringVar(&o.Domain, "domain", "", "first local mail domain")
	fs.StringVar(&o.Hostname, "hostname", "", "server host name (default mail.DOMAIN)")
	fs.StringVar(&o.ListenHost, "listen-host", "", "address to listen on (default 0.0.0.0; admin API on 127.0.0.1)")
	fs.IntVar(&o.SMTPPort, "smtp-port", 0, "MX port (default 25)")
	fs.IntVar(&o.SubmissionPort, "submission-port", 0, "submission port (default 587)")
	fs.IntVar(&o.SubmissionsPort, "submissions-port", 0, "submissions port (default 465)")
	fs.IntVar(&o.IMAPPort, "imap-port", 0, "IMAP port, STARTTLS (default 143)")
	fs.IntVar(&o.IMAPSPort, "imaps-port", 0, "IMAPS port, implicit TLS (default 993)")
	fs.IntVar(&o.POP3Port, "pop3-port", 0, "POP3 port, STLS (default 110)")
	fs.IntVar(&o.POP3SPort, "pop3s-port", 0, "POP3S port, implicit TLS (default 995)")
	fs.IntVar(&o.AdminPort, "admin-port", 0, "admin API port (default 8025)")
	fs.StringVar(&o.DataDir, "data-dir", "", "queue, mailboxes and state (default DIR/data)")
	fs.StringVar(&o.User, "user", "", "run the server as this user ([server] user); as root, init lets its group read the config")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("init: unexpected argument %q", pos[0])}
	}
	res, err := config.Init(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", res.ConfigPath)
	fmt.Fprintf(e.stdout, "admin token file: %s\n", res.TokenFile)
	fmt.Fprintf(e.stdout, "next: mamori user add postmaster@%s --password-stdin --config %s\n", strings.ToLower(o.Domain), res.ConfigPath)
	fmt.Fprintf(e.stdout, "      mamori serve --config %s\n", res.ConfigPath)
	fmt.Fprintf(e.stdout, "admin token: %s\n", res.Token)
	return nil
}

func (e *env) cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if err := noArgs("serve", pos); err != nil {
		return err
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := server.NewLogger(c, e.stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP re-reads the config; signals arriving during a reload fold
	// into one more.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return server.Run(ctx, c, log, server.Options{Reload: reload})
}

func (e *env) cmdCheckConfig(args []string) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if err := noArgs("check-config", pos); err != nil {
		return err
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if c.TLS.Cert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	if c.Listen.Admin != "" {
		if _, err := server.ReadToken(c); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "%s: OK (domains: %s)\n", c.Path, strings.Join(c.Domains, ", "))
	return nil
}

func (e *env) cmdReload(args []string) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if err := noArgs("reload", pos); err != nil {
		return err
	}
	cl, closeFn, err := runningClient(*cfgPath, "reload")
	if err != nil {
		// A config that does not load here would not load in the server.
		return fmt.Errorf("not reloaded, the old configuration stays in force: %w", err)
	}
	defer closeFn()
	res, err := cl.Reload()
	if err != nil {
		return fmt.Errorf("reload refused, the old configuration stays in force: %w", err)
	}
	fmt.Fprintln(e.stdout, "reloaded")
	if len(res.NeedRestart) > 0 {
		fmt.Fprintf(e.stdout, "changed but applied only at the next start: %s\n", termsafe.String(strings.Join(res.NeedRestart, ", ")))
	}
	return nil
}
