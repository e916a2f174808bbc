package main

import (
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan"
)

// The HTML report is one page an admin can mail to a manager: inline CSS,
// inline SVG charts, no script and nothing fetched from elsewhere. Every
// value from the log goes through html/template, which escapes it for the
// context it lands in (text, attribute, SVG title).

// htmlReport is what the template shows.
type htmlReport struct {
	Period   string
	Files    []string
	Lines    int64
	Totals   logscan.Counts
	Orphans  int
	Warnings []string
	Findings []htmlFinding
	Charts   []htmlChart
	Tables   []htmlTable
	Hours    []htmlRow
	Bytes    string
}

type htmlFinding struct {
	Severity, Kind, SubjectType, Subject string
	Counts, When                         string
	Samples                              []string
}

type htmlTable struct {
	Title, Key string
	Total      int
	Rows       []htmlRow
}

type htmlRow struct {
	Key string
	logscan.Counts
	Bytes string
}

// htmlChart is one bar chart of a per-hour count.
type htmlChart struct {
	Title, Class string
	Max          int
	Width        float64 // of a bar
	Bars         []htmlBar
	Ticks        []htmlTick
}

type htmlBar struct {
	X, Y, H float64
	Title   string
}

type htmlTick struct {
	X     float64
	Label string
}

const (
	chartW = 720.0
	chartH = 120.0
)

func buildHTML(r *logscan.Report, top int, loc *time.Location) htmlReport {
	h := htmlReport{Files: r.Files, Lines: r.Lines, Totals: r.Totals, Orphans: r.Orphans, Warnings: r.Warnings, Bytes: fmtBytes(r.Totals.Bytes)}
	if len(r.Hours) > 0 {
		first, last := r.Hours[0].Hour.In(loc), r.Hours[len(r.Hours)-1].Hour.Add(time.Hour).In(loc)
		h.Period = first.Format("2006-01-02 15:04") + " – " + last.Format("2006-01-02 15:04 MST")
	}
	for _, f := range r.Findings {
		hf := htmlFinding{Severity: f.Severity, Kind: f.Kind, SubjectType: f.SubjectType, Subject: f.Subject,
			Counts: findingCounts(f), Samples: findingSamples(f),
			When: f.Evidence.First.In(loc).Format("2006-01-02 15:04") + " – " + spanEnd(f.Evidence.First.In(loc), f.Evidence.Last.In(loc), "2006-01-02 15:04")}
		h.Findings = append(h.Findings, hf)
	}
	for _, c := range []struct {
		title, class string
		n            func(logscan.Counts) int
	}{
		{"Messages per hour", "msgs", func(c logscan.Counts) int { return c.Messages }},
		{"Rejects per hour", "rejects", func(c logscan.Counts) int { return c.Rejects }},
		{"Deferrals per hour", "defers", func(c logscan.Counts) int { return c.Deferrals }},
	} {
		h.Charts = append(h.Charts, chart(r.Hours, c.title, c.class, c.n, loc))
	}
	row := func(k string, c logscan.Counts) htmlRow { return htmlRow{k, c, fmtBytes(c.Bytes)} }
	t := htmlTable{Title: "Senders", Key: "address", Total: len(r.Senders)}
	for _, s := range r.Senders[:min(top, len(r.Senders))] {
		t.Rows = append(t.Rows, row(s.Address, s.Counts))
	}
	h.Tables = append(h.Tables, t)
	t = htmlTable{Title: "Clients", Key: "IP", Total: len(r.Clients)}
	for _, s := range r.Clients[:min(top, len(r.Clients))] {
		t.Rows = append(t.Rows, row(s.IP, s.Counts))
	}
	h.Tables = append(h.Tables, t)
	t = htmlTable{Title: "Authenticated users", Key: "user", Total: len(r.Users)}
	for _, s := range r.Users[:min(top, len(r.Users))] {
		t.Rows = append(t.Rows, row(s.User, s.Counts))
	}
	h.Tables = append(h.Tables, t)
	for _, x := range r.Hours {
		h.Hours = append(h.Hours, row(x.Hour.In(loc).Format("2006-01-02 15:00"), x.Counts))
	}
	return h
}

// chart lays out one bar per hour, with a tick at most every 12 bars'
// worth of width (a label per 6 h, 1 day, ... as the log grows).
func chart(hours []logscan.HourRow, title, class string, n func(logscan.Counts) int, loc *time.Location) htmlChart {
	c := htmlChart{Title: title, Class: class}
	if len(hours) == 0 {
		return c
	}
	for _, x := range hours {
		c.Max = max(c.Max, n(x.Counts))
	}
	// Hours without a line count as zero: bars stand at their hour.
	start := hours[0].Hour
	span := int(hours[len(hours)-1].Hour.Sub(start)/time.Hour) + 1
	c.Width = chartW / float64(span)
	for _, x := range hours {
		i := float64(x.Hour.Sub(start) / time.Hour)
		v := n(x.Counts)
		bh := 0.0
		if c.Max > 0 {
			bh = chartH * float64(v) / float64(c.Max)
		}
		c.Bars = append(c.Bars, htmlBar{X: round1(i * c.Width), Y: round1(chartH - bh), H: round1(bh),
			Title: fmt.Sprintf("%s: %d", x.Hour.In(loc).Format("Jan 2 15:00"), v)})
	}
	step := 1
	for _, s := range []int{1, 2, 3, 6, 12, 24, 48, 168, 336, 720} {
		step = s
		if span/s <= 12 {
			break
		}
	}
	for i := 0; i < span; i += step {
		at := start.Add(time.Duration(i) * time.Hour).In(loc)
		label := at.Format("15:04")
		if at.Hour() == 0 || i == 0 {
			label = at.Format("Jan 2")
		}
		c.Ticks = append(c.Ticks, htmlTick{X: round1(float64(i) * c.Width), Label: label})
	}
	c.Width = round1(max(c.Width-1, 0.5))
	return c
}

func round1(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"upper": strings.ToUpper,
	"base":  filepath.Base,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mail log report{{with .Period}}, {{.}}{{end}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 2em auto; max-width: 780px; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.meta { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.5em; border-bottom: 1px solid #eaeef2; text-align: right; }
th { background: #f6f8fa; font-weight: 600; }
td.key, th.key { text-align: left; word-break: break-all; }
.totals td { font-size: 1.2em; font-weight: 600; }
.finding { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 0.5em 0.8em; margin: 0.6em 0; }
.finding.high { border-color: #cf222e; background: #ffebe9; }
.finding h3 { margin: 0; font-size: 1em; }
.finding p { margin: 0.2em 0; }
.sev { font-weight: 700; }
.samples { color: #57606a; word-break: break-all; }
.ok { color: #1a7f37; font-weight: 600; }
figure { margin: 1em 0; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
svg { width: 100%; height: auto; background: #f6f8fa; }
svg text { font-size: 10px; fill: #57606a; }
.msgs rect { fill: #0969da; }
.rejects rect { fill: #cf222e; }
.defers rect { fill: #bf8700; }
.warn { color: #9a6700; }
</style>
</head>
<body>
<h1>Mail log report</h1>
<p class="meta">{{with .Period}}{{.}} · {{end}}{{.Lines}} lines in {{len .Files}} file(s): {{range $i, $f := .Files}}{{if $i}}, {{end}}{{base $f}}{{end}}</p>
{{range .Warnings}}<p class="warn">Warning: {{.}}</p>
{{end}}<table class="totals">
<tr><th>messages</th><th>recipients</th><th>rejects</th><th>deferrals</th><th>bounces</th><th>size</th></tr>
<tr><td>{{.Totals.Messages}}</td><td>{{.Totals.Recipients}}</td><td>{{.Totals.Rejects}}</td><td>{{.Totals.Deferrals}}</td><td>{{.Totals.Bounces}}</td><td>{{.Bytes}}</td></tr>
</table>

<h2>Findings ({{len .Findings}})</h2>
{{range .Findings}}<div class="finding {{.Severity}}">
<h3><span class="sev">{{upper .Severity}}</span> {{.Kind}} — {{.SubjectType}} {{.Subject}}</h3>
<p>{{.Counts}}; {{.When}}</p>
{{with .Samples}}<p class="samples">e.g. {{range $i, $s := .}}{{if $i}}, {{end}}{{$s}}{{end}}</p>
{{end}}</div>
{{else}}<p class="ok">No finding: no worm-like burst, relay attempt, brute force, backscatter, rotating IPs or sudden change was seen.</p>
{{end}}
<h2>Per hour</h2>
{{range .Charts}}<figure class="{{.Class}}">
<figcaption>{{.Title}} (max {{.Max}})</figcaption>
<svg viewBox="0 -4 720 140" role="img" aria-label="{{.Title}}">
{{$w := .Width}}{{range .Bars}}<rect x="{{.X}}" y="{{.Y}}" width="{{$w}}" height="{{.H}}"><title>{{.Title}}</title></rect>
{{end}}{{range .Ticks}}<text x="{{.X}}" y="134">{{.Label}}</text>
{{end}}</svg>
</figure>
{{end}}
{{range .Tables}}<h2>{{.Title}} (top {{len .Rows}} of {{.Total}})</h2>
<table>
<tr><th class="key">{{.Key}}</th><th>messages</th><th>recipients</th><th>rejects</th><th>deferrals</th><th>bounces</th><th>size</th></tr>
{{range .Rows}}<tr><td class="key">{{.Key}}</td><td>{{.Messages}}</td><td>{{.Recipients}}</td><td>{{.Rejects}}</td><td>{{.Deferrals}}</td><td>{{.Bounces}}</td><td>{{.Bytes}}</td></tr>
{{end}}</table>
{{end}}
<details>
<summary>Every hour ({{len .Hours}})</summary>
<table>
<tr><th class="key">hour</th><th>messages</th><th>recipients</th><th>rejects</th><th>deferrals</th><th>bounces</th><th>size</th></tr>
{{range .Hours}}<tr><td class="key">{{.Key}}</td><td>{{.Messages}}</td><td>{{.Recipients}}</td><td>{{.Rejects}}</td><td>{{.Deferrals}}</td><td>{{.Bounces}}</td><td>{{.Bytes}}</td></tr>
{{end}}</table>
</details>
<p class="meta">Made by mamori logscan. Messages count once per queue id; recipients once per distinct recipient delivered or attempted.{{if .Orphans}} {{.Orphans}} delivery lines belonged to messages that entered the queue before the log starts.{{end}}</p>
</body>
</html>
`))

func writeHTML(w io.Writer, r *logscan.Report, top int, loc *time.Location) error {
	return htmlTmpl.Execute(w, buildHTML(r, top, loc))
}

// writeHTMLFile writes the page next to its final name and renames it
// into place, so a reader never sees half a report.
func writeHTMLFile(path string, r *logscan.Report, top int, loc *time.Location) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("logscan --html: %w", err)
	}
	if err := writeHTML(f, r, top, loc); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("logscan --html: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("logscan --html: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("logscan --html: %w", err)
	}
	return nil
}
