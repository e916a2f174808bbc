package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/termsafe"
)

// bulkConfirm is how many messages a delete may touch before it asks.
const bulkConfirm = 1000

func (e *env) cmdQueue(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("queue: want list, show, hold, release, delete, retry or check")}
	}
	if args[0] == "check" {
		return e.cmdQueueCheck(args[1:]) // offline: queuecheck.go
	}
	sub := args[0]
	// A subcommand with flags of its own (queue check) is dispatched
	// before this point; the ones below share the filter flags.
	allowed, ok := queueFlags[sub]
	if !ok {
		return &exitError{2, fmt.Errorf("queue: unknown subcommand %q\n%s", sub, queueUsage)}
	}
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	var spec queue.FilterSpec
	fs.StringVar(&spec.From, "from", "", "envelope sender: address, @domain or glob (<> for bounces)")
	fs.StringVar(&spec.To, "to", "", "recipient: address, @domain or glob")
	fs.StringVar(&spec.ClientIP, "client-ip", "", "client IP or CIDR")
	fs.StringVar(&spec.User, "user", "", "authenticated user")
	fs.StringVar(&spec.OlderThan, "older-than", "", "age, e.g. 30m, 12h, 2d")
	fs.StringVar(&spec.State, "state", "", "active, deferred or held")
	fs.StringVar(&spec.Subject, "subject", "", "subject substring (case-insensitive)")
	fs.StringVar(&spec.Rule, "rule", "", "guard or content rule that held the message")
	fs.StringVar(&spec.LargerThan, "larger-than", "", "size in bytes (or 10k, 5m, 1g): at least this")
	fs.StringVar(&spec.SmallerThan, "smaller-than", "", "size in bytes (or 10k, 5m, 1g): at most this")
	asJSON := fs.Bool("json", false, "JSON output")
	count := fs.Bool("count", false, "print only the number of matching messages")
	all := fs.Bool("all", false, "allow an operation with no filter (the whole queue)")
	yes := fs.Bool("yes", false, "do not ask before deleting more than 1000 messages")
	body := fs.Bool("body", false, "show: print the raw message")
	reason := fs.String("reason", "", "hold: the reason recorded as the rule")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if err := onlyFlags(fs, allowed); err != nil {
		return &exitError{2, fmt.Errorf("%w\n%s", err, queueUsage)}
	}
	if sub == "show" {
		if len(pos) != 1 {
			return &exitError{2, fmt.Errorf("queue show: want one ID\n%s", queueUsage)}
		}
	} else {
		spec.IDs = pos
	}
	if *reason != "" {
		if err := queue.CheckRule(*reason); err != nil {
			return &exitError{2, fmt.Errorf("queue hold: --reason %q: %v", *reason, err)}
		}
	}
	// One parser for the CLI and the API: a filter that does not parse is
	// an error here, before anything is asked of the server.
	f, err := queue.ParseFilter(spec)
	if err != nil {
		return &exitError{2, fmt.Errorf("queue %s: %w\n%s", sub, err, queueUsage)}
	}
	if sub == "show" && !queue.ValidID(pos[0]) {
		return &exitError{2, fmt.Errorf("queue show: %q is not a queue ID (16 characters 0-9 a-v, as queue list prints)", pos[0])}
	}
	cl, closeFn, err := runningClient(*cfgPath, "queue "+sub)
	if err != nil {
		return err
	}
	defer closeFn()
	switch sub {
	case "list":
		if *count {
			n, err := cl.QueueCount(f)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, n)
			return nil
		}
		items, err := cl.QueueList(f)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, items)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tAGE\tSIZE\tFROM\tTO\tCLIENT\tUSER\tSUBJECT\tRULE")
		for _, it := range items {
			from := it.From
			if from == "" {
				from = "<>"
			}
			// Everything but the numbers comes from the sender: escaped.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.String(it.ID), termsafe.String(string(it.State)),
				(time.Duration(it.AgeS) * time.Second).String(), it.Size, termsafe.String(from), termsafe.String(strings.Join(it.To, ",")),
				termsafe.String(it.ClientIP), termsafe.String(dash(it.User)), clip(termsafe.String(it.Subject), 40), termsafe.String(dash(it.Rule)))
		}
		return tw.Flush()
	case "show":
		if *body {
			return e.writeBody(func(w io.Writer) error { return cl.QueueBody(pos[0], w) })
		}
		it, err := cl.QueueShow(pos[0])
		if err != nil {
			return err
		}
		return printJSON(e.stdout, it)
	case "hold", "release", "delete", "retry":
		if f.IsEmpty() && !*all {
			return &exitError{2, fmt.Errorf("queue %s: give IDs or a filter, or --all for the whole queue\n%s", sub, queueUsage)}
		}
		total := -1
		if sub == "delete" && !*yes {
			n, err := cl.QueueCount(f)
			if err != nil {
				return err
			}
			if n > bulkConfirm && !e.confirm(fmt.Sprintf("Delete %d messages?", n)) {
				return fmt.Errorf("queue delete: %d messages match; not deleted (use --yes)", n)
			}
			total = n
		}
		stop := e.progress(sub, total)
		op := cl.QueueOp
		if *all {
			op = cl.QueueOpAll
		}
		n, err := op(sub, f, *reason)
		stop()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, map[string]int{"count": n})
		}
		past := map[string]string{"hold": "held", "release": "released", "delete": "deleted", "retry": "scheduled for retry"}[sub]
		fmt.Fprintf(e.stdout, "%s %d message(s)\n", past, n)
		return nil
	}
	return &exitError{2, fmt.Errorf("queue: unknown subcommand %q", sub)}
}

const queueUsage = `usage: mamori queue list|hold|release|delete|retry [ID...] --config FILE
         [--from A] [--to A] [--client-ip IP|CIDR] [--user U] [--older-than 30m|12h|2d]
         [--state active|deferred|held] [--subject S] [--rule R]
         [--larger-than BYTES] [--smaller-than BYTES] (sizes may end in k, m or g)
       list: [--json] [--count];  hold: [--reason R];  hold|release|delete|retry: [--all] [--yes] [--json]
       mamori queue show ID [--body] [--json] --config FILE`

// filterFlags are the queue filter flags, taken by every subcommand but show.
var filterFlags = []string{"from", "to", "client-ip", "user", "older-than", "state", "subject", "rule", "larger-than", "smaller-than"}

// queueFlags lists the flags each subcommand takes; any other one is an
// error rather than silently ignored.
var queueFlags = map[string][]string{
	"list":    append([]string{"config", "json", "count"}, filterFlags...),
	"show":    {"config", "json", "body"},
	"hold":    append([]string{"config", "json", "all", "yes", "reason"}, filterFlags...),
	"release": append([]string{"config", "json", "all", "yes"}, filterFlags...),
	"delete":  append([]string{"config", "json", "all", "yes"}, filterFlags...),
	"retry":   append([]string{"config", "json", "all", "yes"}, filterFlags...),
}

// progress shows, on a terminal only, that a bulk operation is running
// (the server does it in one durable batch, so there is no partial count to
// show), and clears the line when stop is called.
func (e *env) progress(op string, total int) (stop func()) {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	what := "messages"
	if total >= 0 {
		what = fmt.Sprintf("%d messages", total)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		spin := `|/-\`
		for i := 0; ; i++ {
			select {
			case <-done:
				fmt.Fprintf(f, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(f, "\r\033[K%c %s %s… %.1fs", spin[i%4], op, what, time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done); <-finished }
}

// confirm asks on a terminal; without one it answers no.
func (e *env) confirm(q string) bool {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	fmt.Fprintf(e.stderr, "%s [y/N] ", q)
	var ans string
	fmt.Fscanln(f, &ans)
	return strings.EqualFold(ans, "y") || strings.EqualFold(ans, "yes")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
