package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/server"
)

const queueCheckUsage = `Usage: mamori queue check [--repair] [--json] --config FILE

Offline integrity check of the queue log (stop the server first: the check
refuses to run while the server holds the queue).

It reports the segments, the intact records and messages, every damaged
byte range with the message IDs it names, the acknowledged messages lost,
the messages held for review (rule queue.damaged: a damaged record changed
their state) and a torn tail (a write cut by a crash, never acknowledged).

--repair rewrites a clean log: each damaged segment is copied to
DATA_DIR/queue/damaged/ and replaced by one holding exactly its intact
records, a torn tail is cut off, and the holds are recorded.

Exit status: 0 the log is clean; 1 damage was found (with --repair: found
and repaired, the log is clean now); 2 usage error, or the check could not
run (server running, I/O error, repair failed).
`

func (e *env) cmdQueueCheck(args []string) error {
	fs := flag.NewFlagSet("queue check", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	repair := fs.Bool("repair", false, "rewrite a clean log, keeping every intact record")
	asJSON := fs.Bool("json", false, "JSON output")
	help := fs.Bool("help", false, "show usage")
	pos, err := parse(fs, args)
	if err != nil {
		fmt.Fprint(e.stderr, queueCheckUsage)
		return err
	}
	if *help {
		fmt.Fprint(e.stdout, queueCheckUsage)
		return nil
	}
	if len(pos) > 0 {
		fmt.Fprint(e.stderr, queueCheckUsage)
		return &exitError{2, fmt.Errorf("queue check: unexpected argument %q", pos[0])}
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	dir := server.QueueDir(c)
	var rep *queue.Report
	if *repair {
		if err := asServiceUser(c); err != nil {
			return err
		}
		rep, err = queue.Repair(dir, time.Now())
	} else {
		rep, err = queue.Check(dir)
	}
	if err != nil {
		if errors.Is(err, queue.ErrLocked) {
			return &exitError{2, fmt.Errorf("queue check: the server is running (it holds %s); stop it first: this is an offline check", dir)}
		}
		if rep != nil {
			printQueueReport(e.stdout, rep, false)
		}
		return &exitError{2, fmt.Errorf("queue check: %w", err)}
	}
	if *asJSON {
		if err := printJSON(e.stdout, struct {
			*queue.Report
			Clean    bool `json:"clean"`
			Repaired bool `json:"repaired"`
		}{rep, rep.Clean(), *repair && !rep.Clean()}); err != nil {
			return err
		}
	} else {
		printQueueReport(e.stdout, rep, *repair)
		if !rep.Clean() && !*repair {
			fmt.Fprintf(e.stdout, "repair: mamori queue check --repair --config %s\n", c.Path)
		}
	}
	switch {
	case rep.Clean():
		return nil
	case *repair:
		return &exitError{1, errors.New("queue check: the queue log was damaged and is repaired")}
	default:
		return &exitError{1, errors.New("queue check: the queue log is damaged")}
	}
}

func printQueueReport(w io.Writer, rep *queue.Report, repaired bool) {
	fmt.Fprintf(w, "queue %s: %d segments, %d intact records, %d intact messages\n",
		rep.Dir, rep.Segments, rep.Records, rep.Messages)
	for _, d := range rep.Damage {
		what := "DAMAGED"
		switch {
		case d.TornTail:
			what = "TORN TAIL (a write never acknowledged)"
		case d.Recovered:
			what = "DAMAGED HEADER (record recovered whole)"
		}
		ids := "names no message"
		if len(d.IDs) > 0 {
			ids = "ids " + strings.Join(d.IDs, " ")
		}
		fmt.Fprintf(w, "%s: %s offset %d, %d bytes, %s\n", what, d.Segment, d.Offset, d.Length, ids)
	}
	if rep.AckLoss() {
		n := fmt.Sprint(len(rep.Lost))
		if rep.Unidentified > 0 {
			n = fmt.Sprintf("at least %d (%d damaged ranges name no message)", len(rep.Lost), rep.Unidentified)
		}
		fmt.Fprintf(w, "lost messages: %s %s\n", n, strings.Join(rep.Lost, " "))
	}
	if len(rep.Held) > 0 {
		fmt.Fprintf(w, "held for review (rule %s): %d %s\n", queue.RuleDamaged, len(rep.Held), strings.Join(rep.Held, " "))
	}
	switch {
	case rep.Clean():
		fmt.Fprintln(w, "clean")
	case repaired:
		fmt.Fprintf(w, "repaired: damaged segments kept in %s\n", filepath.Join(rep.Dir, queue.DamagedDir))
		for _, s := range rep.Saved {
			fmt.Fprintf(w, "  %s\n", s)
		}
	case !rep.AckLoss():
		fmt.Fprintln(w, "no acknowledged mail lost")
	}
}
