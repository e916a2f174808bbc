package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/termsafe"
	"github.com/mamori-mail/mamori/internal/units"
)

const topUsage = "usage: mamori top --config FILE [--once [--json]]"

// topRefresh is how often the interactive view asks the server.
const topRefresh = time.Second

// cmdTop shows the live view of the running server (GET /api/v1/live):
// full-screen and refreshed every second on a terminal, or one plain
// snapshot with --once.
func (e *env) cmdTop(args []string) error {
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	once := fs.Bool("once", false, "print one plain snapshot and exit")
	asJSON := fs.Bool("json", false, "with --once: print the live view as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("top: unexpected argument %q\n%s", pos[0], topUsage)}
	}
	if *asJSON && !*once {
		return &exitError{2, fmt.Errorf("top: --json needs --once\n%s", topUsage)}
	}
	var out, in *os.File
	if !*once {
		f, ok := e.stdout.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) || !term.IsTerminal(int(os.Stdin.Fd())) {
			return &exitError{2, fmt.Errorf("top: not a terminal; use --once (or --once --json) in scripts\n%s", topUsage)}
		}
		out, in = f, os.Stdin
	}
	cl, closeFn, err := runningClient(*cfgPath, "top")
	if err != nil {
		return err
	}
	defer closeFn()
	// One snapshot must come quickly, or not at all.
	// (Keep the client's transport: with [admin] tls it trusts exactly
	// the configured certificate.)
	quick := *cl
	hc := http.Client{}
	if cl.HTTP != nil {
		hc = *cl.HTTP
	}
	hc.Timeout = 5 * time.Second
	quick.HTTP = &hc
	if !*once {
		return topInteractive(&quick, in, out)
	}
	v, err := quick.Live()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, v)
	}
	var b bytes.Buffer
	writeTopOnce(&b, v)
	_, err = e.stdout.Write(b.Bytes())
	return err
}

// ---- plain snapshot (--once) ----

// writeTopOnce prints v in full as plain text: no escape sequences, every
// outside-controlled string through termsafe.
func writeTopOnce(w io.Writer, v admin.Live) {
	for _, l := range topHead(v, 60) {
		fmt.Fprintln(w, l)
	}
	for _, s := range topSections(v, 32, false) {
		fmt.Fprintln(w)
		fmt.Fprintln(w, s.title)
		if len(s.items) == 0 {
			fmt.Fprintln(w, "  "+s.empty)
		}
		for _, it := range s.items {
			fmt.Fprintln(w, it)
		}
	}
}

// topHead is the summary at the top: time, traffic, queue, sessions,
// guard counts. spark is the width of the traffic sparklines (at most 60,
// one column a minute).
func topHead(v admin.Live, spark int) []string {
	lines := []string{"mamori top — " + v.Time.UTC().Format("2006-01-02 15:04:05") + " UTC"}
	if len(v.Traffic) == 0 {
		lines = append(lines, "traffic   not available")
	} else {
		cur := v.Traffic[len(v.Traffic)-1]
		var last admin.TrafficMinute
		if n := len(v.Traffic); n >= 2 {
			last = v.Traffic[n-2]
		}
		in, out := make([]int, len(v.Traffic)), make([]int, len(v.Traffic))
		for i, m := range v.Traffic {
			in[i], out[i] = m.In, m.Out
		}
		lines = append(lines,
			fmt.Sprintf("in  %5d/min %s max %d", last.In, sparkline(in, spark), slices.Max(in)),
			fmt.Sprintf("out %5d/min %s max %d", last.Out, sparkline(out, spark), slices.Max(out)),
			fmt.Sprintf("this minute: in %d  out %d  refused %d  held %d  bounced %d  guard %d  isolated %d",
				cur.In, cur.Out, cur.Refused, cur.Held, cur.Bounced, cur.Guard, cur.Isolated))
	}
	q := v.Queue
	lines = append(lines, fmt.Sprintf("queue     active %d (%s)  deferred %d (%s)  held %d (%s)",
		q.Messages["active"], fmtBytes(q.Bytes["active"]), q.Messages["deferred"], fmtBytes(q.Bytes["deferred"]),
		q.Messages["held"], fmtBytes(q.Bytes["held"])))
	sess := "sessions "
	if len(v.Sessions) == 0 {
		sess += " none"
	}
	for _, k := range sortedKeys(v.Sessions) {
		sess += fmt.Sprintf(" %s %d", termsafe.String(k), v.Sessions[k])
	}
	lines = append(lines, sess)
	lines = append(lines, fmt.Sprintf("guard     %d isolated  %d suspended  %d bans  %d throttled",
		max(v.GuardTotals.Isolated, len(v.Guard.Isolated)), max(v.GuardTotals.Suspended, len(v.Guard.Suspended)), max(v.GuardTotals.Bans, len(v.Guard.Bans)), len(v.Guard.Throttled)))
	return lines
}

// topSection is a titled list.
type topSection struct {
	title string
	empty string // shown when items is empty (--once)
	items []string
}

// topSections are the lists below the summary. keyWidth is the column of
// sender keys; clipKeys cuts longer keys to it (on screen; --once prints
// them whole).
func topSections(v admin.Live, keyWidth int, clipKeys bool) []topSection {
	esc := termsafe.String
	senders := func(title string, rs []admin.TopSender) topSection {
		s := topSection{title: title + "  (last 60 s: messages/limit, recipients/limit)", empty: "none active"}
		for _, r := range rs {
			kind := "user"
			switch {
			case r.Trusted:
				kind = "trusted"
			case r.Outside:
				kind = "outside"
			}
			flag := ""
			if r.Isolated {
				flag = "ISOLATED"
			}
			key := esc(r.Key)
			if clipKeys {
				key = clip(key, keyWidth)
			}
			s.items = append(s.items, fmt.Sprintf("  %-*s %-7s %11s %11s  %s", keyWidth, key, kind,
				rate(r.MsgsPerMin, r.LimitMsgs), rate(r.RcptsPerMin, r.LimitRcpts), flag))
		}
		return s
	}
	g := topSection{title: "isolated, suspended, banned", empty: "none"}
	for _, i := range v.Guard.Isolated {
		who := "ip " + esc(dash(i.IP))
		if i.User != "" {
			who = "user " + esc(i.User)
		}
		g.items = append(g.items, fmt.Sprintf("  isolated  %s  rule %s  since %s  held %d  sender %s  %s", who, esc(i.Rule),
			i.Since.UTC().Format("15:04:05"), i.Held, esc(dash(i.Sender)), fmtCounts(i.Counts)))
	}
	for _, s := range v.Guard.Suspended {
		g.items = append(g.items, fmt.Sprintf("  suspended user %s  rule %s  since %s", esc(s.User), esc(s.Rule), s.Since.UTC().Format("15:04:05")))
	}
	for _, b := range v.Guard.Bans {
		g.items = append(g.items, fmt.Sprintf("  banned    %s  rule %s  until %s  strikes %d", esc(b.CIDR), esc(b.Rule),
			b.Expires.UTC().Format("2006-01-02 15:04"), b.Strikes))
	}
	a := topSection{title: "recent alerts", empty: "none"}
	for _, al := range v.Alerts {
		who := ""
		if al.IP != "" {
			who += " ip " + esc(al.IP)
		}
		if al.User != "" {
			who += " user " + esc(al.User)
		}
		a.items = append(a.items, fmt.Sprintf("  %s %s %s%s  %s", al.Time.UTC().Format("15:04:05"), esc(al.Kind), esc(al.Rule), who, esc(al.Detail)))
	}
	secs := []topSection{senders("top senders by IP", v.TopIPs), senders("top senders by user", v.TopUsers), g, a}
	for _, s := range secs {
		for i := range s.items {
			s.items[i] = strings.TrimRight(s.items[i], " ")
		}
	}
	return secs
}

// rate prints "n/limit", marked with ! over the limit.
func rate(n, limit int) string {
	if limit <= 0 {
		return strconv.Itoa(n)
	}
	s := fmt.Sprintf("%d/%d", n, limit)
	if n > limit {
		s = "!" + s
	}
	return s
}

func fmtBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	return units.FormatSize(n)
}

// sparkline draws the last width values as block characters scaled to
// their maximum: ▁ is zero, ▂ to █ the rest.
func sparkline(vals []int, width int) string {
	if width <= 0 {
		return ""
	}
	if len(vals) > width {
		vals = vals[len(vals)-width:]
	}
	const blocks = "▁▂▃▄▅▆▇█"
	levels := []rune(blocks)
	hi := 0
	for _, v := range vals {
		hi = max(hi, v)
	}
	var b strings.Builder
	for _, v := range vals {
		i := 0
		if v > 0 && hi > 0 {
			i = min((v*7+hi-1)/hi, 7)
		}
		b.WriteRune(levels[i])
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// ---- full screen ----

// screenLine is one row of the screen: plain text, bold or not.
type screenLine struct {
	text string
	bold bool
}

// renderScreen lays v out for a width × height terminal: the summary,
// then the lists, each cut to what fits (a title says how many more there
// are), every line cut to width. status goes on the first line.
func renderScreen(v admin.Live, width, height int, status string) []screenLine {
	cols := max(width, 1)
	width, height = max(width, 20), max(height, 1)
	spark := min(60, max(width-30, 0))
	head := topHead(v, spark)
	title := head[0] + "   " + status
	var lines []screenLine
	lines = append(lines, screenLine{text: title, bold: true})
	for _, l := range head[1:] {
		lines = append(lines, screenLine{text: l})
	}
	secs := topSections(v, max(min(width-40, 32), 12), true)
	room := height - len(lines) - len(secs)
	shown := fitCounts(secs, room)
	for i, s := range secs {
		t := s.title
		if more := len(s.items) - shown[i]; more > 0 {
			t += fmt.Sprintf("  (+%d more)", more)
		} else if len(s.items) == 0 {
			t += "  — " + s.empty
		}
		lines = append(lines, screenLine{text: t, bold: true})
		for _, it := range s.items[:shown[i]] {
			lines = append(lines, screenLine{text: it})
		}
	}
	if len(lines) > height {
		lines = lines[:height]
	}
	for i := range lines {
		lines[i].text = clip(lines[i].text, cols)
	}
	return lines
}

// fitCounts decides how many items of each section fit in room rows:
// the longest list gives up a row first, so every list keeps its head.
func fitCounts(secs []topSection, room int) []int {
	n := make([]int, len(secs))
	total := 0
	for i, s := range secs {
		n[i] = len(s.items)
		total += n[i]
	}
	for total > max(room, 0) {
		big := 0
		for i := range n {
			if n[i] >= n[big] {
				big = i
			}
		}
		n[big]--
		total--
	}
	return n
}

// drawFrame writes lines over the previous frame: home, each line then
// clear to its end, clear below. \r\n because the terminal is raw.
func drawFrame(w io.Writer, lines []screenLine) error {
	var b bytes.Buffer
	b.WriteString("\x1b[H")
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		if l.bold {
			b.WriteString("\x1b[1m" + l.text + "\x1b[0m")
		} else {
			b.WriteString(l.text)
		}
		b.WriteString("\x1b[K")
	}
	b.WriteString("\x1b[J")
	_, err := w.Write(b.Bytes())
	return err
}

type liveResult struct {
	v   admin.Live
	err error
	at  time.Time
}

// topInteractive runs the full-screen view until q, Ctrl-C, Ctrl-D or a
// signal, then restores the terminal.
func topInteractive(cl *admin.Client, in, out *os.File) error {
	old, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return fmt.Errorf("top: terminal: %w", err)
	}
	defer term.Restore(int(in.Fd()), old)
	// Alternate screen, cursor hidden; undone on every way out.
	io.WriteString(out, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")
	defer io.WriteString(out, "\x1b[?25h\x1b[?1049l")

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)

	keys := make(chan byte, 16)
	go func() { // ends with the process; a blocked read cannot be cancelled
		buf := make([]byte, 64)
		for {
			n, err := in.Read(buf)
			for _, c := range buf[:n] {
				select {
				case keys <- c:
				default:
				}
			}
			if err != nil {
				close(keys)
				return
			}
		}
	}()
	done := make(chan struct{})
	defer close(done)
	results := make(chan liveResult, 1)
	go func() {
		t := time.NewTicker(topRefresh)
		defer t.Stop()
		for {
			v, err := cl.Live()
			select {
			case results <- liveResult{v, err, time.Now()}:
			case <-done:
				return
			}
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()

	var (
		last   liveResult
		have   bool
		status = "connecting…"
	)
	draw := func() error {
		w, h, err := term.GetSize(int(out.Fd()))
		if err != nil {
			w, h = 80, 24
		}
		if !have {
			return drawFrame(out, []screenLine{{text: clip("mamori top   "+status, max(w, 20)), bold: true}})
		}
		return drawFrame(out, renderScreen(last.v, w, h, status))
	}
	if err := draw(); err != nil {
		return err
	}
	for {
		select {
		case r := <-results:
			if r.err != nil {
				status = "server: " + termsafe.String(r.err.Error())
				if have {
					status += " (showing " + last.at.Format("15:04:05") + ")"
				}
			} else {
				last, have, status = r, true, "q: quit"
			}
		case c, ok := <-keys:
			if !ok {
				return nil
			}
			switch c {
			case 'q', 'Q', 3, 4: // q, Ctrl-C, Ctrl-D
				return nil
			case 12: // Ctrl-L: redraw from scratch
				io.WriteString(out, "\x1b[2J")
			}
		case <-winch:
			io.WriteString(out, "\x1b[2J")
		case <-sigs:
			return nil
		}
		if err := draw(); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
