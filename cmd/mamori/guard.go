package main

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"github.com/mamori-mail/mamori/internal/termsafe"
)

func (e *env) cmdGuard(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("guard: want list, ban, unban, release or export")}
	}
	sub := args[0]
	allowed, ok := guardFlags[sub]
	if !ok {
		return &exitError{2, fmt.Errorf("guard: unknown subcommand %q\n%s", sub, guardUsage)}
	}
	fs := flag.NewFlagSet("guard "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	dur := fs.String("for", "", "ban: how long (e.g. 1h, 7d); default: the guard's growing backoff")
	nft := fs.Bool("nft", false, "export: nftables format")
	releaseMail := fs.Bool("release-mail", false, "release: also release the sender's held mail into the queue")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if err := onlyFlags(fs, allowed); err != nil {
		return &exitError{2, fmt.Errorf("%w\n%s", err, guardUsage)}
	}
	// Every argument is checked here, before the server is asked, with the
	// parsers the API uses: an unparsable one is an error, never a zero.
	var target string
	switch sub {
	case "list", "export":
		if len(pos) > 0 {
			return &exitError{2, fmt.Errorf("guard %s: unexpected argument %q\n%s", sub, pos[0], guardUsage)}
		}
	case "ban", "unban":
		if len(pos) != 1 {
			return &exitError{2, fmt.Errorf("guard %s: want one IP or CIDR\n%s", sub, guardUsage)}
		}
		p, err := ipnet.ParsePrefix(pos[0])
		if err != nil {
			return &exitError{2, fmt.Errorf("guard %s: %w\n%s", sub, err, guardUsage)}
		}
		target = p.String()
		if *dur != "" {
			if _, err := admin.ParseBanDuration(*dur); err != nil {
				return &exitError{2, fmt.Errorf("guard ban: --for: %w\n%s", err, guardUsage)}
			}
		}
	case "release":
		if len(pos) != 1 {
			return &exitError{2, fmt.Errorf("guard release: want one IP or ADDRESS\n%s", guardUsage)}
		}
		if target, err = admin.ParseReleaseTarget(pos[0]); err != nil {
			return &exitError{2, fmt.Errorf("guard release: %w\n%s", err, guardUsage)}
		}
	}
	cl, closeFn, err := runningClient(*cfgPath, "guard "+sub)
	if err != nil {
		return err
	}
	defer closeFn()
	switch sub {
	case "list":
		snap, err := cl.GuardSnapshot()
		if err != nil {
			return err
		}
		if *asJSON {
			// The contract's shape: isolated, suspended and bans (and
			// throttled) are arrays; the shared-counter status is in the
			// plain output, the API and the dashboard.
			snap.Shared = nil
			return printJSON(e.stdout, snap)
		}
		// Senders, users and rule details come from outside: escaped.
		esc := termsafe.String
		if sh := snap.Shared; sh != nil {
			if sh.Up {
				fmt.Fprintf(e.stdout, "shared counters: up since %s (rate limits count cluster-wide)\n", sh.Since.Format(time.RFC3339))
			} else {
				fmt.Fprintf(e.stdout, "shared counters: DOWN since %s: this node limits on its own counts (%s)\n", sh.Since.Format(time.RFC3339), esc(sh.Err))
			}
		}
		fmt.Fprintf(e.stdout, "isolated senders: %d\n", len(snap.Isolated))
		for _, i := range snap.Isolated {
			fmt.Fprintf(e.stdout, "  ip=%s user=%s sender=%s rule=%s since=%s held=%d counts=%s node=%s\n",
				esc(dash(i.IP)), esc(dash(i.User)), esc(dash(i.Sender)), esc(i.Rule), i.Since.Format(time.RFC3339), i.Held, fmtCounts(i.Counts), esc(dash(i.Node)))
		}
		fmt.Fprintf(e.stdout, "suspended accounts: %d\n", len(snap.Suspended))
		for _, s := range snap.Suspended {
			fmt.Fprintf(e.stdout, "  user=%s rule=%s since=%s node=%s\n", esc(s.User), esc(s.Rule), s.Since.Format(time.RFC3339), esc(dash(s.Node)))
		}
		fmt.Fprintf(e.stdout, "throttled accounts: %d\n", len(snap.Throttled))
		for _, th := range snap.Throttled {
			fmt.Fprintf(e.stdout, "  user=%s failures=%d since=%s until=%s\n", esc(th.User), th.Failures,
				th.Since.Format(time.RFC3339), th.Until.Format(time.RFC3339))
		}
		fmt.Fprintf(e.stdout, "bans: %d\n", len(snap.Bans))
		for _, b := range snap.Bans {
			fmt.Fprintf(e.stdout, "  %s rule=%s expires=%s strikes=%d node=%s\n", esc(b.CIDR), esc(b.Rule), b.Expires.Format(time.RFC3339), b.Strikes, esc(dash(b.Node)))
		}
		return nil
	case "ban":
		if err := cl.GuardBan(target, *dur); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "banned %s\n", target)
		return nil
	case "unban":
		if err := cl.GuardUnban(target); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "unbanned %s\n", target)
		return nil
	case "release":
		n, err := cl.GuardRelease(target, *releaseMail)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "released %s", termsafe.String(target))
		if *releaseMail {
			fmt.Fprintf(e.stdout, " and %d held message(s)", n)
		} else {
			fmt.Fprintf(e.stdout, " (its held mail stays held: mamori queue release --state held --client-ip/--user …, or --release-mail)")
		}
		fmt.Fprintln(e.stdout)
		return nil
	case "export":
		if !*nft {
			return &exitError{2, errors.New("guard export: only --nft is supported")}
		}
		return cl.GuardNft(e.stdout)
	}
	return &exitError{2, fmt.Errorf("guard: unknown subcommand %q", sub)}
}

const guardUsage = `usage: mamori guard list [--json] --config FILE
       mamori guard ban IP|CIDR [--for 30m|2h|7d] --config FILE;  mamori guard unban IP|CIDR --config FILE
       mamori guard release IP|ADDRESS [--release-mail] --config FILE;  mamori guard export --nft --config FILE`

// guardFlags lists the flags each guard subcommand takes.
var guardFlags = map[string][]string{
	"list":    {"config", "json"},
	"ban":     {"config", "for"},
	"unban":   {"config"},
	"release": {"config", "release-mail"},
	"export":  {"config", "nft"},
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(m))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", termsafe.String(k), m[k]))
	}
	return strings.Join(parts, ",")
}
