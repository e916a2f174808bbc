package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/server"
	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/termsafe"
	"github.com/mamori-mail/mamori/internal/units"
)

// manager returns the running server's API client, or — when no server
// answers — a Local manager over the data directory, plus a close func.
func manager(c *config.Config) (admin.Manager, *admin.Client, func(), error) {
	if c.Listen.Admin != "" {
		tok, err := server.ReadToken(c)
		if err != nil {
			return nil, nil, nil, err
		}
		cl := admin.NewClient(c.Listen.Admin, tok)
		if c.Admin.TLS {
			acmeName, roots, err := acmeTrust(c)
			if err != nil {
				return nil, nil, nil, err
			}
			if cl, err = admin.NewTLSClient(c.Listen.Admin, tok, c.TLS.Cert, acmeName, roots); err != nil {
				return nil, nil, nil, err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = cl.Ping(ctx)
		cancel()
		if err == nil {
			return cl, cl, func() {}, nil
		}
		if !errors.Is(err, admin.ErrUnreachable) {
			return nil, nil, nil, err
		}
	}
	if err := asServiceUser(c); err != nil {
		return nil, nil, nil, err
	}
	st, err := openDirectoryStore(c)
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := mailbox.OpenDirectory(st, c.Domains)
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	perm, err := server.MailboxPerm(c) // anything it creates gets [mailbox] group and mode
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	ms := mailbox.NewStore(server.MailDir(c), mailbox.StoreOptions{Perm: perm})
	return admin.Local{Dir: dir, Store: ms, DefaultQuota: c.Mailbox.Quota}, nil, func() { ms.Close(); st.Close() }, nil
}

// openDirectoryStore opens the store the directory lives in: the node's
// own database, or, clustered ([store] backend = "redis"), the shared one.
func openDirectoryStore(c *config.Config) (interface {
	store.KV
	Close() error
}, error) {
	if c.Store.Backend == "redis" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return server.OpenShared(ctx, c, slog.New(slog.DiscardHandler))
	}
	st, err := store.Open(server.StorePath(c), store.Options{LockTimeout: time.Second})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("the server seems to be running (its database is locked) but its admin API at %s does not answer", c.Listen.Admin)
		}
		return nil, err
	}
	return st, nil
}

// runningClient loads the config and returns an API client of the running
// server, for commands that need it (queue, guard).
func runningClient(cfgPath, what string) (*admin.Client, func(), error) {
	c, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	_, cl, closeFn, err := manager(c)
	if err != nil {
		return nil, nil, err
	}
	if cl == nil {
		closeFn()
		return nil, nil, fmt.Errorf("%s: the server is not running; start it with mamori serve --config %s", what, c.Path)
	}
	return cl, closeFn, nil
}

// withManager loads the config named by --config and runs fn with a manager.
func withManager(cfgPath string, fn func(admin.Manager) error) error {
	c, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	m, _, closeFn, err := manager(c)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(m)
}

func (e *env) readPassword(fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("empty password on standard input")
		}
		return pw, nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no terminal to prompt for the password: use --password-stdin")
	}
	fmt.Fprint(e.stderr, "Password: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(e.stderr, "Again: ")
	b2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", err
	}
	if string(b) != string(b2) {
		return "", errors.New("passwords do not match")
	}
	return string(b), nil
}

func (e *env) cmdUser(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("user: want add, list, del, passwd, quota, disable or enable")}
	}
	sub := args[0]
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	asJSON := fs.Bool("json", false, "JSON output")
	stale := fs.Bool("stale", false, "list: only accounts not used for --days (default [guard] stale_days)")
	days := fs.Int("days", 0, "list --stale: days without a login")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	allowed, ok := map[string][]string{
		"add":     {"config", "password-stdin"},
		"passwd":  {"config", "password-stdin"},
		"del":     {"config"},
		"quota":   {"config"},
		"disable": {"config"},
		"enable":  {"config"},
		"list":    {"config", "json", "stale", "days"},
	}[sub]
	if !ok {
		return &exitError{2, fmt.Errorf("user: unknown subcommand %q\n%s", sub, userUsage)}
	}
	if err := onlyFlags(fs, allowed); err != nil {
		return &exitError{2, fmt.Errorf("%w\n%s", err, userUsage)}
	}
	daysSet := false
	fs.Visit(func(f *flag.Flag) { daysSet = daysSet || f.Name == "days" })
	if daysSet && !*stale {
		return &exitError{2, fmt.Errorf("user list: --days goes with --stale\n%s", userUsage)}
	}
	if daysSet && *days < 1 {
		return &exitError{2, fmt.Errorf("user list: --days %d: want at least 1\n%s", *days, userUsage)}
	}
	staleDays := *days
	if *stale && !daysSet {
		// The config's stale_days (whose default lives in config.Defaults),
		// never a silent 0 that would list every account.
		c, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if staleDays = c.Guard.StaleDays; staleDays < 1 {
			return &exitError{2, fmt.Errorf("user list --stale: guard.stale_days is %d; give --days N", staleDays)}
		}
	}
	need := func(n int, what string) error {
		if len(pos) != n {
			return &exitError{2, fmt.Errorf("user %s: want %s\n%s", sub, what, userUsage)}
		}
		return nil
	}
	return withManager(*cfgPath, func(m admin.Manager) error {
		switch sub {
		case "add":
			if err := need(1, "ADDRESS"); err != nil {
				return err
			}
			pw, err := e.readPassword(*pwStdin)
			if err != nil {
				return err
			}
			if err := m.AddUser(pos[0], pw); err != nil {
				return fmt.Errorf("user add %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "added user %s\n", termsafe.String(pos[0]))
		case "passwd":
			if err := need(1, "ADDRESS"); err != nil {
				return err
			}
			pw, err := e.readPassword(*pwStdin)
			if err != nil {
				return err
			}
			if err := m.SetPassword(pos[0], pw); err != nil {
				return fmt.Errorf("user passwd %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "password changed for %s\n", termsafe.String(pos[0]))
		case "del":
			if err := need(1, "ADDRESS"); err != nil {
				return err
			}
			if err := m.DelUser(pos[0]); err != nil {
				return fmt.Errorf("user del %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "deleted user %s (mailbox files are kept)\n", termsafe.String(pos[0]))
		case "quota":
			if err := need(2, "ADDRESS SIZE"); err != nil {
				return err
			}
			q, err := parseQuota(pos[1])
			if err != nil {
				return &exitError{2, fmt.Errorf("user quota %s: %w\n%s", termsafe.String(pos[0]), err, userUsage)}
			}
			if err := m.SetQuota(pos[0], q); err != nil {
				return fmt.Errorf("user quota %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "quota of %s: %s\n", termsafe.String(pos[0]), pos[1])
		case "disable", "enable":
			if err := need(1, "ADDRESS"); err != nil {
				return err
			}
			if err := m.SetDisabled(pos[0], sub == "disable"); err != nil {
				return fmt.Errorf("user %s %s: %w", sub, pos[0], err)
			}
			if sub == "disable" {
				fmt.Fprintf(e.stdout, "disabled user %s: logins refused, open sessions ended, mail still delivered\n", termsafe.String(pos[0]))
			} else {
				fmt.Fprintf(e.stdout, "enabled user %s\n", termsafe.String(pos[0]))
			}
		case "list":
			if err := need(0, "no argument"); err != nil {
				return err
			}
			users, err := m.Users()
			if err != nil {
				return err
			}
			if *stale {
				users = mailbox.Stale(users, time.Duration(staleDays)*24*time.Hour, time.Now())
			}
			if *asJSON {
				return printJSON(e.stdout, users)
			}
			for _, u := range users {
				flags := ""
				if u.Disabled {
					flags = "\tdisabled"
				}
				if *stale {
					last := "never"
					if !u.LastLogin.IsZero() {
						last = u.LastLogin.Format("2006-01-02")
					}
					flags += "\tlast login " + last
				}
				quota := units.FormatSize(u.Usage.Bytes) + ", no quota"
				if u.QuotaBytes > 0 {
					quota = fmt.Sprintf("%s of %s (%d%%)", units.FormatSize(u.Usage.Bytes), units.FormatSize(u.QuotaBytes), u.Usage.Bytes*100/u.QuotaBytes)
				}
				fmt.Fprintf(e.stdout, "%s\t%d messages, %s%s\n", termsafe.String(u.Address), u.Usage.Messages, quota, flags)
			}
		default:
			return &exitError{2, fmt.Errorf("user: unknown subcommand %q", sub)}
		}
		return nil
	})
}

func (e *env) cmdDomain(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("domain: want add, list or del")}
	}
	sub := args[0]
	fs := flag.NewFlagSet("domain "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if err := checkAddDelList("domain", sub, fs, pos); err != nil {
		return err
	}
	return withManager(*cfgPath, func(m admin.Manager) error {
		switch sub {
		case "add", "del":
			if len(pos) != 1 {
				return &exitError{2, fmt.Errorf("domain %s: want DOMAIN", sub)}
			}
			if sub == "add" {
				if err := m.AddDomain(pos[0]); err != nil {
					return fmt.Errorf("domain add %s: %w", pos[0], err)
				}
				fmt.Fprintf(e.stdout, "added domain %s\n", termsafe.String(pos[0]))
				return nil
			}
			if err := m.DelDomain(pos[0]); err != nil {
				return fmt.Errorf("domain del %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "deleted domain %s\n", termsafe.String(pos[0]))
		case "list":
			ds, err := m.Domains()
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, ds)
			}
			for _, d := range ds {
				fmt.Fprintln(e.stdout, termsafe.String(d))
			}
		default:
			return &exitError{2, fmt.Errorf("domain: unknown subcommand %q", sub)}
		}
		return nil
	})
}

func (e *env) cmdAlias(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("alias: want add, list or del")}
	}
	sub := args[0]
	fs := flag.NewFlagSet("alias "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if err := checkAddDelList("alias", sub, fs, pos); err != nil {
		return err
	}
	return withManager(*cfgPath, func(m admin.Manager) error {
		switch sub {
		case "add":
			if len(pos) < 2 {
				return &exitError{2, errors.New("alias add: want ALIAS and at least one TARGET")}
			}
			if err := m.AddAlias(pos[0], pos[1:]); err != nil {
				return fmt.Errorf("alias add %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "alias %s -> %s\n", termsafe.String(pos[0]), termsafe.String(strings.Join(pos[1:], ", ")))
		case "del":
			if len(pos) != 1 {
				return &exitError{2, errors.New("alias del: want ALIAS")}
			}
			if err := m.DelAlias(pos[0]); err != nil {
				return fmt.Errorf("alias del %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "deleted alias %s\n", termsafe.String(pos[0]))
		case "list":
			as, err := m.Aliases()
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, as)
			}
			for _, a := range as {
				fmt.Fprintf(e.stdout, "%s -> %s\n", termsafe.String(a.Alias), termsafe.String(strings.Join(a.Targets, ", ")))
			}
		default:
			return &exitError{2, fmt.Errorf("alias: unknown subcommand %q", sub)}
		}
		return nil
	})
}

// printJSON prints v as indented JSON. The value is unchanged, but the few
// characters encoding/json leaves raw that a terminal would act on (DEL, C1
// and bidi controls) are written as \u escapes.
const userUsage = `usage: mamori user add ADDRESS [--password-stdin] --config FILE
       mamori user passwd ADDRESS [--password-stdin] --config FILE;  mamori user del ADDRESS --config FILE
       mamori user list [--json] [--stale [--days N]] --config FILE
       mamori user quota ADDRESS SIZE|default|none --config FILE   (SIZE: bytes, or 500m, 2g)
       mamori user disable|enable ADDRESS --config FILE   (disable: logins refused, open sessions ended)`

// parseQuota reads a quota argument: a size, "default" (follow
// [mailbox] quota) or "none".
func parseQuota(s string) (int64, error) {
	switch strings.ToLower(s) {
	case "default":
		return 0, nil
	case "none", "unlimited":
		return mailbox.QuotaNone, nil
	}
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errors.New(`a quota of 0 would refuse all mail; say "none" for no quota or "default"`)
	}
	return n, nil
}

func printJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(termsafe.JSON(b.Bytes()))
	return err
}

// checkAddDelList checks the flags and arguments of an add/del/list
// command (domain, alias): add and del take only --config, list also
// --json and no arguments.
func checkAddDelList(cmd, sub string, fs *flag.FlagSet, pos []string) error {
	switch sub {
	case "add", "del":
		if err := onlyFlags(fs, []string{"config"}); err != nil {
			return &exitError{2, err}
		}
	case "list":
		if err := onlyFlags(fs, []string{"config", "json"}); err != nil {
			return &exitError{2, err}
		}
		if err := noArgs(cmd+" list", pos); err != nil {
			return err
		}
	default:
		return &exitError{2, fmt.Errorf("%s: unknown subcommand %q", cmd, sub)}
	}
	return nil
}

// asServiceUser: run as root, a command that writes data_dir itself (no
// server to ask) first becomes [server] user, as serve does, so that the
// files it creates stay readable by the server.
func asServiceUser(c *config.Config) error {
	if os.Geteuid() != 0 || c.Server.User == "" {
		return nil
	}
	return server.BecomeServiceUser(c, slog.New(slog.DiscardHandler))
}

// acmeTrust: with [tls] acme, the admin listener may serve the ACME
// certificate for hostname; the CLI then checks it against the system
// roots (a private ACME CA's root belongs in the system store).
func acmeTrust(c *config.Config) (string, *x509.CertPool, error) {
	if !c.TLS.ACME {
		return "", nil, nil
	}
	return c.Hostname, nil, nil
}
