package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/mamori-mail/mamori/internal/relaytest"
)

func (e *env) cmdRelaytest(args []string) error {
	fs := flag.NewFlagSet("relaytest", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON report")
	var o relaytest.Options
	fs.StringVar(&o.LocalDomain, "domain", "", "a domain the target accepts mail for (default: from its greeting)")
	fs.StringVar(&o.LocalUser, "user", "", "an existing mailbox at that domain (default postmaster)")
	fs.StringVar(&o.ForeignDomain, "foreign", "", "a foreign domain to try to relay to")
	fs.StringVar(&o.HeloName, "helo", "", "EHLO name to use")
	timeout := fs.Duration("timeout", 10*time.Second, "per-probe timeout")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &exitError{2, errors.New("relaytest: want HOST:PORT")}
	}
	if *timeout <= 0 {
		return &exitError{2, fmt.Errorf("relaytest: --timeout %v: must be more than 0", *timeout)}
	}
	o.Addr = pos[0]
	o.Timeout = *timeout
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, runErr := relaytest.Run(ctx, o)
	if runErr != nil && !errors.Is(runErr, relaytest.ErrIncomplete) {
		return &exitError{2, fmt.Errorf("relaytest %s: %w", o.Addr, runErr)}
	}
	if *asJSON {
		err = printJSON(e.stdout, rep)
	} else {
		err = e.writeSafe(rep.WriteText) // the report quotes the server's replies
	}
	if err != nil {
		return err
	}
	if rep.Relayed > 0 {
		if !*asJSON {
			fmt.Fprintf(e.stdout, "OPEN RELAY: %d of %d probes were accepted\n", rep.Relayed, len(rep.Probes))
		}
		return &exitError{1, errSilent}
	}
	if runErr != nil {
		// Some probes could not run: "closed" is not proven.
		return &exitError{2, fmt.Errorf("relaytest %s: %w", o.Addr, runErr)}
	}
	if !*asJSON {
		fmt.Fprintf(e.stdout, "closed: no relay accepted in %d probes\n", len(rep.Probes))
	}
	return nil
}
