// Command loggen writes a realistic Postfix, Sendmail or Exim log of a
// given size for the logscan benchmark and tests (issue 15): hour after
// hour of loggen's normal busy day
// (many users sending 08:00–18:00 with 1–3 recipients each, inbound mail
// around the clock, deferrals, bounces, unknown-user and relay rejects,
// failed AUTH), deterministic by seed, streamed: it holds about one hour of
// lines at a time, whatever the size. About 8 million lines per GB.
//
//	go run ./bench/loggen -size 1g -o maillog
//	go run ./bench/loggen -size 50m -format exim -episodes -o mainlog
//
// -episodes plants, on the first day, a worm (10.0.9.99, 14:00, 300
// messages in 12 minutes) and an open relay being used (100.70.0.9,
// 04:00, 30 messages in 8 minutes); -filter passes Postfix mail through a
// content filter on 127.0.0.1 that re-injects it (amavis).
//
// The counts a correct scan must report (totals, senders, clients) go to
// -counts as JSON.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

func main() {
	size := flag.String("size", "1g", "bytes to write at least (suffix k, m, g); stops at the end of that hour")
	out := flag.String("o", "-", "output file (- for stdout)")
	seed := flag.Uint64("seed", 1, "random seed")
	users := flag.Int("users", 5000, "local users")
	perUser := flag.Int("per-user", 20, "messages per user and day")
	start := flag.String("start", "2026-03-02", "first day (UTC)")
	counts := flag.String("counts", "", "write the expected counts as JSON to this file")
	format := flag.String("format", "postfix", "postfix, sendmail or exim")
	episodes := flag.Bool("episodes", false, "plant a worm and an open relay on the first day")
	filter := flag.Bool("filter", false, "postfix: re-inject every message from 127.0.0.1 (content filter)")
	flag.Parse()
	formats := map[string]loggen.Format{"postfix": loggen.Postfix, "sendmail": loggen.Sendmail, "exim": loggen.Exim}
	f, ok := formats[*format]
	if !ok {
		fail(fmt.Errorf("-format %q: want postfix, sendmail or exim", *format))
	}
	limit, err := parseSize(*size)
	if err != nil {
		fail(err)
	}
	day, err := time.Parse("2006-01-02", *start)
	if err != nil {
		fail(err)
	}
	var w io.Writer = os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	g := loggen.New(*seed, day)
	g.Format, g.Filter = f, *filter
	var n int64
	for t := day; n < limit; t = t.Add(time.Hour) {
		g.Hour(t, *users, *perUser)
		if *episodes && t.Equal(day.Add(4*time.Hour)) {
			g.OpenRelay("100.70.0.9", t, 8*time.Minute, 30)
		}
		if *episodes && t.Equal(day.Add(14*time.Hour)) {
			g.Worm("10.0.9.99", t, 12*time.Minute, 300)
		}
		k, err := g.WriteBefore(bw, t.Add(time.Hour))
		if err != nil {
			fail(err)
		}
		n += k
	}
	if _, err := g.Flush(bw); err != nil {
		fail(err)
	}
	if err := bw.Flush(); err != nil {
		fail(err)
	}
	if *counts != "" {
		b, _ := json.MarshalIndent(struct {
			Totals           loggen.Counts
			Senders, Clients int
		}{g.Totals, len(g.Senders), len(g.Clients)}, "", "  ")
		if err := os.WriteFile(*counts, append(b, '\n'), 0o644); err != nil {
			fail(err)
		}
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(strings.ToLower(s), "k"):
		mult = 1 << 10
	case strings.HasSuffix(strings.ToLower(s), "m"):
		mult = 1 << 20
	case strings.HasSuffix(strings.ToLower(s), "g"):
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("-size %q: want a positive number with k, m or g", s)
	}
	return n * mult, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loggen:", err)
	os.Exit(1)
}
