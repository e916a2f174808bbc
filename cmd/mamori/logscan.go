package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/logscan"
	"github.com/mamori-mail/mamori/internal/termsafe"
)

// domainList is a repeatable --local-domain.
type domainList []string

func (d *domainList) String() string { return strings.Join(*d, ",") }
func (d *domainList) Set(v string) error {
	v = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), "."))
	if v == "" || strings.ContainsAny(v, "@ \t") || len(v) > 253 {
		return fmt.Errorf("not a domain: %q", v)
	}
	*d = append(*d, v)
	return nil
}

func (e *env) cmdLogscan(args []string) error {
	fs := flag.NewFlagSet("logscan", flag.ContinueOnError)
	format := fs.String("format", "auto", "log format: auto, postfix, sendmail, exim or mamori")
	asJSON := fs.Bool("json", false, "JSON report")
	htmlOut := fs.String("html", "", "also write the report as one self-contained HTML page to this file")
	since := fs.String("since", "", "only lines at or after this time (RFC 3339, 2006-01-02 15:04 or 2006-01-02; local time)")
	until := fs.String("until", "", "only lines before this time")
	year := fs.Int("year", 0, "year of syslog timestamps, which have none (default: this year)")
	top := fs.Int("top", 10, "rows per table in the text and HTML reports")
	var locals domainList
	fs.Var(&locals, "local-domain", "a domain of this server (repeatable; added to those the log shows receiving local delivery)")
	var th logscan.Thresholds
	fs.DurationVar(&th.Window, "window", 10*time.Minute, "detection window (whole minutes)")
	fs.IntVar(&th.BurstMessages, "worm-msgs", 50, "worm: messages per window from one IP or sender")
	fs.IntVar(&th.BurstRecipients, "worm-rcpts", 150, "worm: recipients per window from one IP or sender")
	fs.IntVar(&th.RelayDenied, "relay-denied", 20, "relay-denied: refusals per window from one IP")
	fs.IntVar(&th.AuthFailures, "auth-failures", 10, "auth-bruteforce: failed logins per window from one IP")
	fs.IntVar(&th.Backscatter, "backscatter", 50, "backscatter: null-sender recipients per window for one local domain")
	fs.IntVar(&th.RotatingIPs, "rotating-ips", 20, "rotating-ips: distinct client IPs per window for one sender or HELO")
	fs.IntVar(&th.RelayOut, "relay-out", 5, "open-relay: outside-to-outside recipients per window from one IP")
	fs.IntVar(&th.RateFactor, "rate-factor", 10, "rate-change: a sender's hour against its hourly average (and at least 30 messages)")
	follow := fs.Bool("follow", false, "tail one live log (like tail -F) and raise findings as alerts")
	cfgPath := fs.String("config", "", "--follow: mamori.toml for the webhook, postmaster and SMTP listener")
	webhook := fs.String("webhook", "", "--follow: POST alerts as JSON to this URL")
	postmasterAddr := fs.String("postmaster", "", "--follow: mail alerts to this address (through --smtp)")
	smtpAddr := fs.String("smtp", "", "--follow: HOST:PORT of the SMTP server for alert mail")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return &exitError{2, errors.New("logscan: want FILE... (- for stdin)")}
	}
	o := logscan.Options{Format: logscan.Format(*format), Clock: logscan.Clock{Year: *year, Loc: time.Local},
		Thresholds: th, LocalDomains: locals}
	if !slices.Contains(logscan.Formats, o.Format) {
		return &exitError{2, fmt.Errorf("logscan: --format %q: want auto, postfix, sendmail, exim or mamori", *format)}
	}
	if th.Window < time.Minute || th.Window > 24*time.Hour {
		return &exitError{2, fmt.Errorf("logscan: --window %v: want 1m to 24h", th.Window)}
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
	if *follow {
		if len(pos) != 1 || pos[0] == "-" || *asJSON || *htmlOut != "" || *since != "" || *until != "" {
			return &exitError{2, errors.New("logscan --follow: want one FILE, without --json, --html, --since or --until")}
		}
		return e.followLog(pos[0], o, followTargets{config: *cfgPath, webhook: *webhook, postmaster: *postmasterAddr, smtp: *smtpAddr})
	}
	if *cfgPath != "" || *webhook != "" || *postmasterAddr != "" || *smtpAddr != "" {
		return &exitError{2, errors.New("logscan: --config, --webhook, --postmaster and --smtp go with --follow")}
	}
	stopProgress := e.scanProgress(pos, &o)
	rep, err := logscan.ScanFiles(pos, e.stdin, o)
	stopProgress()
	if err != nil {
		return err
	}
	if *htmlOut != "" {
		if err := writeHTMLFile(*htmlOut, rep, *top, time.Local); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeLogscanJSON(e.stdout, rep)
	}
	return e.writeSafe(func(w io.Writer) error { writeLogscan(w, rep, *top); return nil })
}

// scanProgress shows bytes read against the files' total size on stderr,
// only when stderr is a terminal; the returned func stops it and clears
// the line.
func (e *env) scanProgress(paths []string, o *logscan.Options) func() {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	var total int64
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			total += st.Size()
		}
	}
	var read atomic.Int64
	o.Progress = func(n int) { read.Add(int64(n)) }
	return runProgress(f, read.Load, total, 100*time.Millisecond)
}

// runProgress redraws the progress line on w every interval (10 times a
// second: no faster, whatever the read rate) until stop, which clears it.
func runProgress(w io.Writer, read func() int64, total int64, every time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\x1b[K%s", progressLine(read(), total))
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// progressLine is "logscan: 1.2 GB of 4.0 GB (30%)" (no total: stdin).
func progressLine(read, total int64) string {
	if total <= 0 {
		return "logscan: " + fmtBytes(read) + " read"
	}
	return fmt.Sprintf("logscan: %s of %s (%d%%)", fmtBytes(read), fmtBytes(total), min(100, read*100/total))
}

// writeLogscanJSON streams the report as JSON, one row a line, so that a
// report of 200,000 senders is not held twice more in memory as text.
func writeLogscanJSON(w io.Writer, r *logscan.Report) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	put := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err) // the report's types always encode
		}
		bw.Write(termsafe.JSON(b))
	}
	field := func(name string, v any, comma bool) {
		fmt.Fprintf(bw, "  %q: ", name)
		put(v)
		if comma {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
	}
	list := func(name string, n int, row func(i int) any, comma bool) {
		fmt.Fprintf(bw, "  %q: [", name)
		for i := range n {
			if i > 0 {
				bw.WriteString(",")
			}
			bw.WriteString("\n    ")
			put(row(i))
		}
		if n > 0 {
			bw.WriteString("\n  ")
		}
		bw.WriteString("]")
		if comma {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
	}
	bw.WriteString("{\n")
	field("files", r.Files, true)
	field("lines", r.Lines, true)
	field("totals", r.Totals, true)
	field("orphan_lines", r.Orphans, true)
	if len(r.Warnings) > 0 {
		field("warnings", r.Warnings, true)
	}
	list("findings", len(r.Findings), func(i int) any { return r.Findings[i] }, true)
	list("senders", len(r.Senders), func(i int) any { return r.Senders[i] }, true)
	list("clients", len(r.Clients), func(i int) any { return r.Clients[i] }, true)
	list("users", len(r.Users), func(i int) any { return r.Users[i] }, true)
	list("hours", len(r.Hours), func(i int) any { return r.Hours[i] }, false)
	bw.WriteString("}\n")
	return bw.Flush()
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
	loc := time.Local
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
		fmt.Fprintf(w, "  %-6s %-15s %s %s: %s, %s – %s\n", strings.ToUpper(f.Severity), f.Kind, f.SubjectType,
			termsafe.String(f.Subject), findingCounts(f),
			ev.First.In(loc).Format("Jan _2 15:04"), spanEnd(ev.First.In(loc), ev.Last.In(loc), "Jan _2 15:04"))
		if s := findingSamples(f); len(s) > 0 {
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
	hours := r.Hours
	title := "HOURS"
	if len(hours) > maxTextHours {
		// A log of weeks has hundreds of hours: the text report shows
		// the busiest, in time order (--json and --html have them all).
		hours = busiestHours(hours, maxTextHours)
		title = fmt.Sprintf("HOURS, the %d busiest of %d (all in --json and --html)", len(hours), len(r.Hours))
	}
	table(title, "hour", len(hours), len(hours), func(i int) (string, logscan.Counts) {
		return hours[i].Hour.In(loc).Format("Jan _2 15:00"), hours[i].Counts
	})
}

// maxTextHours is how many hour rows the text report prints at most.
const maxTextHours = 48

// busiestHours returns the n hours with the most events — messages,
// rejects and deferrals together, so that an hour of refused spraying
// ranks with an hour of mail — in time order.
func busiestHours(hours []logscan.HourRow, n int) []logscan.HourRow {
	idx := make([]int, len(hours))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ca, cb := hours[a].Counts, hours[b].Counts
		return cmp.Or(cmp.Compare(cb.Messages+cb.Rejects+cb.Deferrals, ca.Messages+ca.Rejects+ca.Deferrals),
			cmp.Compare(cb.Recipients, ca.Recipients))
	})
	idx = idx[:n]
	slices.Sort(idx)
	out := make([]logscan.HourRow, n)
	for i, j := range idx {
		out[i] = hours[j]
	}
	return out
}

// findingCounts is the evidence of a finding in words: "312 messages,
// 640 recipients (peak 120 per 10m0s)".
func findingCounts(f logscan.Finding) string {
	ev := f.Evidence
	var n []string
	for _, c := range []struct {
		k string
		v int
	}{{"messages", ev.Messages}, {"recipients", ev.Recipients}, {"rejects", ev.Rejects},
		{"auth failures", ev.AuthFailures}, {"distinct IPs", ev.DistinctIPs}} {
		if c.v > 0 {
			n = append(n, fmt.Sprintf("%d %s", c.v, c.k))
		}
	}
	s := strings.Join(n, ", ")
	if ev.BaselinePerHour > 0 {
		s += fmt.Sprintf(" in one hour against %.1f an hour before", ev.BaselinePerHour)
	} else {
		s += fmt.Sprintf(" (peak %d per %s)", ev.Peak, ev.Window)
	}
	return s
}

// findingSamples lists a finding's samples: recipients, senders, IPs,
// subjects (quoted) and users.
func findingSamples(f logscan.Finding) []string {
	ev := f.Evidence
	var s []string
	s = append(s, ev.SampleRecipients...)
	s = append(s, ev.SampleSenders...)
	s = append(s, ev.SampleIPs...)
	for _, x := range ev.SampleSubjects {
		s = append(s, strconv.Quote(x))
	}
	return append(s, ev.SampleUsers...)
}

// spanEnd formats the end of a time span: the time alone on the start's
// day, else with the date in layout.
func spanEnd(first, last time.Time, layout string) string {
	y1, m1, d1 := first.Date()
	y2, m2, d2 := last.Date()
	if y1 == y2 && m1 == m2 && d1 == d2 {
		return last.Format("15:04")
	}
	return last.Format(layout)
}
