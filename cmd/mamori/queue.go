package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/queue"
)

// bulkConfirm is how many messages a delete may touch before it asks.
const bulkConfirm = 1000

func (e *env) cmdQueue(args []string) error {
	if len(args) == 0 {
		return &exitError{2, errors.New("queue: want list, show, hold, release, delete or retry")}
	}
	sub := args[0]
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	var f queue.Filter
	var older, state string
	fs.StringVar(&f.From, "from", "", "envelope sender: address, @domain or glob (<> for bounces)")
	fs.StringVar(&f.To, "to", "", "recipient: address, @domain or glob")
	fs.StringVar(&f.ClientIP, "client-ip", "", "client IP or CIDR")
	fs.StringVar(&f.User, "user", "", "authenticated user")
	fs.StringVar(&older, "older-than", "", "age, e.g. 30m, 12h, 2d")
	fs.StringVar(&state, "state", "", "active, deferred or held")
	fs.StringVar(&f.Subject, "subject", "", "subject substring (case-insensitive)")
	fs.StringVar(&f.Rule, "rule", "", "guard or content rule that held the message")
	fs.Int64Var(&f.MinSize, "larger-than", 0, "size in bytes: at least this")
	fs.Int64Var(&f.MaxSize, "smaller-than", 0, "size in bytes: at most this")
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
	f.IDs = pos
	f.State = queue.State(state)
	if older != "" {
		if f.OlderThan, err = admin.ParseAge(older); err != nil {
			return &exitError{2, err}
		}
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.State,
				(time.Duration(it.AgeS) * time.Second).String(), it.Size, from, strings.Join(it.To, ","),
				it.ClientIP, dash(it.User), clip(it.Subject, 40), dash(it.Rule))
		}
		return tw.Flush()
	case "show":
		if len(pos) != 1 {
			return &exitError{2, errors.New("queue show: want ID")}
		}
		if *body {
			return cl.QueueBody(pos[0], e.stdout)
		}
		it, err := cl.QueueShow(pos[0])
		if err != nil {
			return err
		}
		return printJSON(e.stdout, it)
	case "hold", "release", "delete", "retry":
		if isEmpty(f) && !*all {
			return &exitError{2, fmt.Errorf("queue %s: give IDs or a filter, or --all for the whole queue", sub)}
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
		n, err := cl.QueueOp(sub, f, *reason)
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

func isEmpty(f queue.Filter) bool {
	return len(f.IDs) == 0 && f.From == "" && f.To == "" && f.ClientIP == "" && f.User == "" &&
		f.OlderThan == 0 && f.State == "" && f.Subject == "" && f.Rule == "" && f.MinSize == 0 && f.MaxSize == 0
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
