package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/drill"
)

func (e *env) cmdDrill(args []string) error {
	fs := flag.NewFlagSet("drill", flag.ContinueOnError)
	var o drill.Options
	fs.StringVar(&o.Target, "target", "", "MX listener HOST:PORT (default with --config: [listen] smtp)")
	fs.StringVar(&o.Submission, "submission", "", "submission listener HOST:PORT (default with --config: [listen] submission)")
	fs.StringVar(&o.User, "user", "", "full address of a test account")
	pwStdin := fs.Bool("password-stdin", false, "read the test account's password from standard input")
	cfgPath := configFlag(fs)
	fs.IntVar(&o.Burst, "burst", 0, "messages in the burst (default 40, or 10 over the account's limit)")
	fs.BoolVar(&o.AllowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	asJSON := fs.Bool("json", false, "JSON report")
	fs.DurationVar(&o.Timeout, "timeout", drill.DefaultTimeout, "per SMTP exchange")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("drill: unexpected argument %q", pos[0])}
	}
	if o.User == "" {
		return &exitError{2, errors.New("drill: --user ADDRESS (a test account) is required")}
	}
	if o.Timeout <= 0 {
		return &exitError{2, fmt.Errorf("drill: --timeout %v: must be more than 0", o.Timeout)}
	}

	if *cfgPath != "" {
		c, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		srv, closeFn, err := drillServer(c, o.User)
		if err != nil {
			return err
		}
		defer closeFn()
		o.Server = srv
		if o.Target == "" {
			o.Target = dialable(c.Listen.SMTP)
		}
		if o.Submission == "" {
			o.Submission = dialable(c.Listen.Submission)
		}
	}
	// Refuse a remote target before asking for a password.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := drill.Check(ctx, withPlaceholderPassword(o)); err != nil {
		return &exitError{2, err}
	}
	if o.Password, err = e.drillPassword(*pwStdin); err != nil {
		return &exitError{2, err}
	}

	rep, err := drill.Run(ctx, o)
	if err != nil {
		return &exitError{2, err}
	}
	if *asJSON {
		err = printJSON(e.stdout, rep)
	} else {
		err = e.writeSafe(rep.WriteText) // the report quotes the server's replies
	}
	if err != nil {
		return err
	}
	if !rep.Passed {
		return &exitError{1, errSilent}
	}
	return nil
}

func withPlaceholderPassword(o drill.Options) drill.Options {
	o.Password = "-"
	return o
}

// drillServer reads what the drill needs from the config and connects to
// the running server's admin API.
func drillServer(c *config.Config, user string) (*drill.Server, func(), error) {
	trusted, err := c.TrustedPrefixes()
	if err != nil {
		return nil, nil, err
	}
	srv := &drill.Server{
		ConfigPath:    c.Path,
		Trusted:       trusted,
		MsgsPerMinute: c.Guard.MsgsPerMinute,
		AuthFails:     c.Guard.AuthFailsPerPair,
	}
	if ov, ok := c.Guard.Overrides[strings.ToLower(user)]; ok && ov.MsgsPerMinute > 0 {
		srv.MsgsPerMinute = ov.MsgsPerMinute
	}
	_, cl, closeFn, err := manager(c)
	if err != nil {
		return nil, nil, err
	}
	if cl == nil {
		closeFn()
		return nil, nil, fmt.Errorf("drill: the server is not running; start it with mamori serve --config %s", c.Path)
	}
	srv.Admin = cl
	return srv, closeFn, nil
}

// dialable turns a listen address into one to connect to: a wildcard
// host becomes loopback.
// Addresses are compared parsed, so "[::0]" and "[::ffff:0.0.0.0]" are
// wildcards too.
func dialable(listen string) string {
	l, err := config.ParseListenAddr(listen)
	if err != nil || !l.Everywhere() {
		return listen
	}
	host := "127.0.0.1"
	if h, _, _ := net.SplitHostPort(listen); strings.Contains(h, ":") && !l.Addr.Is4() {
		host = "::1" // an IPv6 wildcard may be IPv6-only
	}
	return net.JoinHostPort(host, strconv.Itoa(int(l.Port)))
}

// drillPassword reads the test account's password once.
func (e *env) drillPassword(fromStdin bool) (string, error) {
	if fromStdin {
		return e.readPassword(true)
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no terminal to prompt for the test account's password: use --password-stdin")
	}
	fmt.Fprint(e.stderr, "Test account password: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if len(b) == 0 {
		return "", errors.New("empty password")
	}
	return string(b), nil
}
