package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan"
	"github.com/mamori-mail/mamori/internal/termsafe"
)

func (e *env) cmdLogscan(args []string) error {
	fs := flag.NewFlagSet("logscan", flag.ContinueOnError)
	format := fs.String("format", "auto", "log format: auto, postfix, sendmail, exim or mamori")
	asJSON := fs.Bool("json", false, "JSON report")
	since := fs.String("since", "", "only lines at or after this time (RFC 3339, 2006-01-02 15:04 or 2006-01-02; local time)")
	until := fs.String("until", "", "only lines before this time")
	year := fs.Int("year", 0, "year of syslog timestamps, which have none (default: this year)")
	top := fs.Int("top", 10, "rows per table in the text report")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return &exitError{2, errors.New("logscan: want FILE... (- for stdin)")}
	}
	o := logscan.Options{Format: logscan.Format(*format), Clock: logscan.Clock{Year: *year, Loc: time.Local}}
	if !slices.Contains(logscan.Formats, o.Format) {
		return &exitError{2, fmt.Errorf("logscan: --format %q: want auto, postfix, sendmail, exim or mamori", *format)}
	}
	for _, f := range []struct {
		s string
		t *time.Time
	}{{*since, &o.Since}, {*until, &o.Until}} {
		if f.s == "" {
			continue
		}
		if *f.t, err = parseWhen(f.s); err != nil {
			return &exitError{2, fmt.Errorf("logscan: %w", err)}
		}
	}
	rep, err := logscan.ScanFiles(pos, e.stdin, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, rep)
	}
	return e.writeSafe(func(w io.Writer) error { writeLogscan(w, rep, *top); return nil })
}

func parseWhen(s string) (time.Time, error) {
	for _, l := range []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339, 2006-01-02 15:04 or 2006-01-02", s)
}

// writeLogscan writes the text report: findings first, then the top
// tables. Addresses come from senders: every key goes through termsafe.
func writeLogscan(w io.Writer, r *logscan.Report, top int) {
	t := r.Totals
	fmt.Fprintf(w, "%d lines in %d files: %d messages, %d recipients, %d rejects, %d deferrals, %d bounces, %s\n",
		r.Lines, len(r.Files), t.Messages, t.Recipients, t.Rejects, t.Deferrals, t.Bounces, fmtBytes(t.Bytes))
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", termsafe.String(s))
	}
	fmt.Fprintf(w, "\nFINDINGS (%d)\n", len(r.Findings))
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, f := range r.Findings {
		ev := f.Evidence
		var n []string
		for _, c := range []struct {
			k string
			v int
		}{{"messages", ev.Messages}, {"recipients", ev.Recipients}, {"rejects", ev.Rejects}, {"auth failures", ev.AuthFailures}} {
			if c.v > 0 {
				n = append(n, fmt.Sprintf("%d %s", c.v, c.k))
			}
		}
		fmt.Fprintf(w, "  %-6s %-15s %s %s: %s (peak %d per %s), %s – %s\n", strings.ToUpper(f.Severity), f.Kind, f.SubjectType,
			termsafe.String(f.Subject), strings.Join(n, ", "), ev.Peak, ev.Window,
			ev.First.Local().Format("Jan _2 15:04"), ev.Last.Local().Format("15:04"))
		if s := append(ev.SampleRecipients, ev.SampleUsers...); len(s) > 0 {
			fmt.Fprintf(w, "         e.g. %s\n", termsafe.String(strings.Join(s, ", ")))
		}
	}
	table := func(title, key string, n, limit int, row func(i int) (string, logscan.Counts)) {
		fmt.Fprintf(w, "\n%s (%d)\n", title, n)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "messages\trecipients\trejects\tdeferrals\tbounces\tbytes\t  %s\n", key)
		for i := range min(n, limit) {
			k, c := row(i)
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t  %s\n", c.Messages, c.Recipients, c.Rejects, c.Deferrals, c.Bounces, fmtBytes(c.Bytes), termsafe.String(k))
		}
		tw.Flush()
	}
	table("SENDERS", "address", len(r.Senders), top, func(i int) (string, logscan.Counts) { return r.Senders[i].Address, r.Senders[i].Counts })
	table("CLIENTS", "ip", len(r.Clients), top, func(i int) (string, logscan.Counts) { return r.Clients[i].IP, r.Clients[i].Counts })
	table("USERS", "user", len(r.Users), top, func(i int) (string, logscan.Counts) { return r.Users[i].User, r.Users[i].Counts })
	table("HOURS", "hour", len(r.Hours), len(r.Hours), func(i int) (string, logscan.Counts) {
		return r.Hours[i].Hour.Local().Format("Jan _2 15:00"), r.Hours[i].Counts
	})
}
