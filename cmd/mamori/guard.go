package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

func (e *env) cmdGuard(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("guard: want list, ban, unban, release or export")}
	}
	sub := args[0]
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
	cl, closeFn, err := runningClient(*cfgPath, "guard "+sub)
	if err != nil {
		return err
	}
	defer closeFn()
	one := func(what string) error {
		if len(pos) != 1 {
			return &exitError{2, fmt.Errorf("guard %s: want %s", sub, what)}
		}
		return nil
	}
	switch sub {
	case "list":
		snap, err := cl.GuardSnapshot()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, snap)
		}
		fmt.Fprintf(e.stdout, "isolated senders: %d\n", len(snap.Isolated))
		for _, i := range snap.Isolated {
			fmt.Fprintf(e.stdout, "  ip=%s user=%s sender=%s rule=%s since=%s held=%d counts=%s\n",
				dash(i.IP), dash(i.User), dash(i.Sender), i.Rule, i.Since.Format(time.RFC3339), i.Held, fmtCounts(i.Counts))
		}
		fmt.Fprintf(e.stdout, "suspended accounts: %d\n", len(snap.Suspended))
		for _, s := range snap.Suspended {
			fmt.Fprintf(e.stdout, "  user=%s rule=%s since=%s\n", s.User, s.Rule, s.Since.Format(time.RFC3339))
		}
		fmt.Fprintf(e.stdout, "bans: %d\n", len(snap.Bans))
		for _, b := range snap.Bans {
			fmt.Fprintf(e.stdout, "  %s rule=%s expires=%s strikes=%d\n", b.CIDR, b.Rule, b.Expires.Format(time.RFC3339), b.Strikes)
		}
		return nil
	case "ban":
		if err := one("IP or CIDR"); err != nil {
			return err
		}
		if err := cl.GuardBan(pos[0], *dur); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "banned %s\n", pos[0])
		return nil
	case "unban":
		if err := one("IP or CIDR"); err != nil {
			return err
		}
		if err := cl.GuardUnban(pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "unbanned %s\n", pos[0])
		return nil
	case "release":
		if err := one("IP or ADDRESS"); err != nil {
			return err
		}
		n, err := cl.GuardRelease(pos[0], *releaseMail)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "released %s", pos[0])
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

func fmtCounts(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	return strings.Join(parts, ",")
}
