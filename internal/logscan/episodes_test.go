package logscan

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

// formatCase is one log format as the generator writes it.
type formatCase struct {
	name   string
	format loggen.Format
	filter bool   // Postfix through a content filter that re-injects
	junk   string // a line of no message, with bytes that are not UTF-8
	cut    string // a truncated last line
	helo   bool   // the format logs the HELO of a rotating botnet
}

var formatCases = []formatCase{
	{"postfix", loggen.Postfix, false, "May  4 02:00:00 mx1 postfix/smtpd[7]: connect from caf\xe9\xff[192.0.2.200]", "May  4 23:59:59 mx1 postfix/qmgr[99]: 3A00", true},
	{"postfix-filter", loggen.Postfix, true, "May  4 02:00:00 mx1 postfix/smtpd[7]: connect from caf\xe9\xff[192.0.2.200]", "May  4 23:59:59 mx1 postfix/sm", true},
	{"sendmail", loggen.Sendmail, false, "May  4 02:00:00 mx1 sm-mta[7]: wB4ZZZ: lost input channel from caf\xe9\xff [192.0.2.200] to MTA after rcpt", "May  4 23:59:59 mx1 sm-mta[12]: wB40000001", false},
	{"exim", loggen.Exim, false, "2026-05-04 02:00:00 SMTP connection from caf\xe9\xff [192.0.2.200]:4000 lost", "2026-05-04 23:59:59 1q00", true},
}

// day of one format: a busy day, an orphan delivery, a kernel line and a
// line of no message with bytes that are not UTF-8.
func formatDay(fc formatCase) *loggen.Log {
	g := loggen.New(7, day)
	g.Format, g.Filter = fc.format, fc.filter
	g.NormalDay(150, 20)
	g.Orphan(day.Add(30 * time.Minute))
	g.Raw(day.Add(time.Hour), "May  4 01:00:00 mx1 kernel: [12.3] eth0: link up")
	g.Raw(day.Add(2*time.Hour), fc.junk)
	return g
}

func findingSet(r *Report) map[[2]string]Finding {
	got := map[[2]string]Finding{}
	for _, f := range r.Findings {
		got[[2]string{f.Kind, f.Subject}] = f
	}
	return got
}

// TestFormatsNormalDay: the same busy day in each format gives the exact
// counts the generator wrote and no finding, whole and rotated into
// maillog.2.gz, maillog.1 and maillog with queue ids across the cuts.
func TestFormatsNormalDay(t *testing.T) {
	for _, fc := range formatCases {
		t.Run(fc.name, func(t *testing.T) {
			g := formatDay(fc)
			lines := g.Lines()
			r := scanBytes(t, text(lines, fc.cut))
			if g.Totals.Messages < 4000 || g.Totals.Deferrals == 0 || g.Totals.Bounces == 0 || g.Totals.Rejects == 0 {
				t.Fatalf("thin day: %+v", g.Totals)
			}
			checkCounts(t, g, r)
			if len(r.Findings) != 0 {
				t.Errorf("a normal day raised findings: %+v", r.Findings)
			}
			if r.Lines != int64(len(lines)+1) {
				t.Errorf("%d lines, want %d", r.Lines, len(lines)+1)
			}
			if fc.filter {
				for _, c := range r.Clients {
					if c.IP == "127.0.0.1" {
						t.Errorf("the content filter's re-injections were counted: %+v", c)
					}
				}
			}
			rotated(t, fc, g, lines, r)
		})
	}
}

func rotated(t *testing.T, fc formatCase, g *loggen.Log, lines []string, whole *Report) {
	// Cut where a message's lines fall on both sides.
	cut := func(i int) int {
		for k := i; k < i+1000; k++ {
			if spans(fc, lines, k) {
				return k
			}
		}
		t.Fatalf("no queue id spans a cut after line %d", i)
		return 0
	}
	a, b := cut(len(lines)/3), cut(2*len(lines)/3)
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(text(lines[:a], ""))
	zw.Close()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	paths := []string{
		write("maillog", text(lines[b:], fc.cut)),
		write("maillog.1", text(lines[a:b], "")),
		write("maillog.2.gz", gz.Bytes()),
	}
	r, err := ScanFiles(paths, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, g, r)
	if !reflect.DeepEqual(r.Senders, whole.Senders) || !reflect.DeepEqual(r.Clients, whole.Clients) || !reflect.DeepEqual(r.Findings, whole.Findings) {
		t.Error("the rotated files report differs from the whole file's")
	}
}

// spans reports whether a queue id has lines on both sides of line i.
func spans(fc formatCase, lines []string, i int) bool {
	before := map[string]bool{}
	for _, l := range lines[max(i-3, 0):i] {
		if q := qidOf(fc, l); q != "" {
			before[q] = true
		}
	}
	for _, l := range lines[i:min(i+3, len(lines))] {
		if before[qidOf(fc, l)] {
			return true
		}
	}
	return false
}

func qidOf(fc formatCase, l string) string {
	if fc.format == loggen.Exim {
		f := strings.Fields(l)
		if len(f) > 3 && isEximID(f[2]) {
			return f[2]
		}
		return ""
	}
	_, rest, ok := strings.Cut(l, "]: ")
	if !ok {
		return ""
	}
	q, _, _ := strings.Cut(rest, ":")
	if isQueueID(q) {
		return q
	}
	return ""
}

// TestFormatsEpisodes plants every episode into the busy day of each
// format and wants each flagged with the right subject, and nothing else.
func TestFormatsEpisodes(t *testing.T) {
	for _, fc := range formatCases {
		t.Run(fc.name, func(t *testing.T) {
			g := formatDay(fc)
			g.Worm("10.0.9.99", day.Add(14*time.Hour), 12*time.Minute, 300)
			g.RelayStorm("203.0.113.66", day.Add(3*time.Hour), 5*time.Minute, 120)
			g.BruteForce("198.51.100.23", day.Add(22*time.Hour), 15*time.Minute, 60)
			g.OpenRelay("100.70.0.9", day.Add(4*time.Hour), 8*time.Minute, 30)
			g.Backscatter(day.Add(5*time.Hour), 9*time.Minute, 80)
			g.Rotating("billing@paypa1.example", "ylmf-pc", day.Add(6*time.Hour), 9*time.Minute, 40)
			g.RateChange(7, day.Add(15*time.Hour), 45)
			r := scanBytes(t, text(g.Lines(), fc.cut))
			checkCounts(t, g, r)
			got := findingSet(r)
			want := [][2]string{
				{KindWorm, "10.0.9.99"}, {KindRelayStorm, "203.0.113.66"}, {KindRelayHack, "203.0.113.66"},
				{KindBruteForce, "198.51.100.23"}, {KindRelayOut, "100.70.0.9"}, {KindBackscatter, "corp.test"},
				{KindRotating, "billing@paypa1.example"}, {KindRateChange, "user7@corp.test"},
			}
			if fc.helo {
				want = append(want, [2]string{KindRotating, "ylmf-pc"})
			}
			for _, k := range want {
				if _, ok := got[k]; !ok {
					t.Errorf("no finding %v", k)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d findings, want %d: %+v", len(got), len(want), r.Findings)
			}
			or := got[[2]string{KindRelayOut, "100.70.0.9"}]
			if or.Severity != "high" || or.Evidence.Recipients != 30 || len(or.Evidence.SampleRecipients) != 5 || !slices.Contains(or.Evidence.SampleSenders, "offers@spam.example") {
				t.Errorf("open relay evidence: %+v", or)
			}
			if fc.format != loggen.Sendmail && !slices.Contains(or.Evidence.SampleSubjects, "Cheap meds") {
				t.Errorf("open relay without its subject: %+v", or.Evidence)
			}
			if bs := got[[2]string{KindBackscatter, "corp.test"}]; bs.Evidence.Recipients < 60 || fc.format != loggen.Sendmail && bs.Evidence.Rejects == 0 || bs.Evidence.Peak < 50 {
				t.Errorf("backscatter evidence: %+v", bs.Evidence)
			}
			if ro := got[[2]string{KindRotating, "billing@paypa1.example"}]; ro.Evidence.DistinctIPs != 40 || len(ro.Evidence.SampleIPs) != 5 || ro.Severity != "high" {
				t.Errorf("rotating evidence: %+v", ro.Evidence)
			}
			rc := got[[2]string{KindRateChange, "user7@corp.test"}]
			if rc.Evidence.Messages < 45 || rc.Evidence.BaselinePerHour <= 0 || rc.Evidence.BaselinePerHour > 4 || !rc.Evidence.First.Equal(day.Add(15*time.Hour)) {
				t.Errorf("rate change evidence: %+v", rc.Evidence)
			}
			w := got[[2]string{KindWorm, "10.0.9.99"}]
			if w.Severity != "high" || w.Evidence.Messages < 250 || len(w.Evidence.SampleRecipients) != 5 {
				t.Errorf("worm evidence: %+v", w.Evidence)
			}
			if fc.format != loggen.Sendmail && !slices.Contains(w.Evidence.SampleSubjects, "Invoice 3 overdue") {
				t.Errorf("worm without sample subjects: %+v", w.Evidence)
			}
		})
	}
}

// TestReinjectionCountedOnce: a message through amavis (to 127.0.0.1:10024,
// back from 127.0.0.1 as a second queue id, whose lines come partly before
// the first hop's "queued as") counts once, with its first hop's client.
func TestReinjectionCountedOnce(t *testing.T) {
	log := `May  4 09:00:00 mx1 postfix/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5], sasl_method=PLAIN, sasl_username=alice
May  4 09:00:01 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<alice@corp.test>, size=1500, nrcpt=2 (queue active)
May  4 09:00:02 mx1 postfix/smtpd[5]: 4BBBBBB02: client=localhost[127.0.0.1]
May  4 09:00:02 mx1 postfix/qmgr[3]: 4BBBBBB02: from=<alice@corp.test>, size=2300, nrcpt=2 (queue active)
May  4 09:00:02 mx1 postfix/local[6]: 4BBBBBB02: to=<carol@corp.test>, relay=local, delay=0, dsn=2.0.0, status=sent (delivered to mailbox)
May  4 09:00:02 mx1 postfix/smtp[4]: 4ABCDEF01: to=<bob@ext.example>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 4BBBBBB02)
May  4 09:00:02 mx1 postfix/smtp[4]: 4ABCDEF01: to=<carol@corp.test>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 4BBBBBB02)
May  4 09:00:02 mx1 postfix/qmgr[3]: 4ABCDEF01: removed
May  4 09:00:03 mx1 postfix/smtp[7]: 4BBBBBB02: to=<bob@ext.example>, relay=mx.ext.example[192.0.2.1]:25, delay=1, dsn=4.4.1, status=deferred (timeout)
May  4 09:30:03 mx1 postfix/smtp[7]: 4BBBBBB02: to=<bob@ext.example>, relay=mx.ext.example[192.0.2.1]:25, delay=1, dsn=2.0.0, status=sent (250 ok)
May  4 09:30:03 mx1 postfix/qmgr[3]: 4BBBBBB02: removed
`
	r := scanBytes(t, []byte(log))
	if want := (Counts{Messages: 1, Recipients: 2, Deferrals: 1, Bytes: 1500}); r.Totals != want {
		t.Errorf("totals %+v, want %+v", r.Totals, want)
	}
	wantC := []ClientRow{{"10.0.0.5", 0, Counts{Messages: 1, Recipients: 2, Deferrals: 1, Bytes: 1500}}}
	if !reflect.DeepEqual(r.Clients, wantC) {
		t.Errorf("clients %+v, want %+v", r.Clients, wantC)
	}
	if len(r.Senders) != 1 || r.Senders[0].Counts != (Counts{Messages: 1, Recipients: 2, Deferrals: 1, Bytes: 1500}) {
		t.Errorf("senders %+v", r.Senders)
	}
	if len(r.Hours) != 1 || r.Hours[0].Messages != 1 {
		t.Errorf("hours %+v", r.Hours)
	}
}

// TestYearRollover: a log without years that crosses New Year's Eve keeps
// January after December, in one file and across a rotation.
func TestYearRollover(t *testing.T) {
	dec := "Dec 31 23:59:00 mx1 postfix/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5]\n" +
		"Dec 31 23:59:01 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<a@corp.test>, size=10, nrcpt=1 (queue active)\n"
	jan := "Jan  1 00:00:30 mx1 postfix/smtp[4]: 4ABCDEF01: to=<b@ext.example>, relay=mx[192.0.2.1]:25, status=sent (ok)\n" +
		"Jan  1 00:01:01 mx1 postfix/qmgr[3]: 4ABCDEF02: from=<c@corp.test>, size=10, nrcpt=1 (queue active)\n"
	o := Options{Clock: Clock{Year: 2026}}
	check := func(name string, r *Report) {
		want := []time.Time{time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
		var got []time.Time
		for _, h := range r.Hours {
			got = append(got, h.Hour)
		}
		if !reflect.DeepEqual(got, want) || r.Hours[0].Messages != 1 || r.Hours[1].Messages != 1 || r.Hours[1].Recipients != 1 || r.Orphans != 0 {
			t.Errorf("%s: hours %+v, orphans %d", name, r.Hours, r.Orphans)
		}
	}
	r, err := Scan([]Input{{"maillog", strings.NewReader(dec + jan)}}, o)
	if err != nil {
		t.Fatal(err)
	}
	check("one file", r)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "maillog.1"), []byte(dec), 0o600)
	os.WriteFile(filepath.Join(dir, "maillog"), []byte(jan), 0o600)
	r, err = ScanFiles([]string{filepath.Join(dir, "maillog"), filepath.Join(dir, "maillog.1")}, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	check("rotated", r)
	// --since in January takes the January lines only.
	o.Since = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err = Scan([]Input{{"maillog", strings.NewReader(dec + jan)}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Totals.Messages != 1 || len(r.Hours) != 1 {
		t.Errorf("since January: %+v %+v", r.Totals, r.Hours)
	}
}

// TestSinceDropsUntimed: with --since or --until, a line without a
// readable time is not counted (it cannot be shown to be in the range).
func TestSinceDropsUntimed(t *testing.T) {
	log := `{"msg":"queued","queue_id":"q0","client_ip":"10.0.0.9","from":"old@corp.test","rcpts":1,"size":5}
{"time":"2026-05-04T09:00:00Z","msg":"queued","queue_id":"q1","client_ip":"10.0.0.5","from":"a@corp.test","rcpts":1,"size":9}
`
	for _, tc := range []struct {
		since time.Time
		want  int
	}{{time.Time{}, 2}, {day, 1}} {
		o := opts
		o.Since = tc.since
		r, err := Scan([]Input{{"log", strings.NewReader(log)}}, o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Totals.Messages != tc.want {
			t.Errorf("since %v: %d messages, want %d", tc.since, r.Totals.Messages, tc.want)
		}
	}
}

// TestBenchmarkMixNoFinding: the benchmark's busy mix (5,000 users, hour
// after hour) is a normal day too, at a scale where a threshold set too
// low would fire (one forged spam sender refused from 250 IPs, say).
func TestBenchmarkMixNoFinding(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MB of log")
	}
	var buf bytes.Buffer
	g := loggen.New(1, day)
	for h := range 24 {
		at := day.Add(time.Duration(h) * time.Hour)
		g.Hour(at, 5000, 20)
		if _, err := g.WriteBefore(&buf, at.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Flush(&buf); err != nil {
		t.Fatal(err)
	}
	r := scanBytes(t, buf.Bytes())
	checkCounts(t, g, r)
	if len(r.Findings) != 0 {
		t.Errorf("the benchmark's normal mix raised findings: %+v", r.Findings)
	}
}

// TestYearAlternating: lines that alternate between December 31 and
// January 1 (out of order around New Year's Eve, or hostile) take the
// year once: two years of hours, not one more per pair of lines.
func TestYearAlternating(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "Dec 31 23:59:%02d mx1 postfix/qmgr[3]: D%07X: from=<a@corp.test>, size=10, nrcpt=1 (queue active)\n", i%60, i)
		fmt.Fprintf(&b, "Jan  1 00:00:%02d mx1 postfix/qmgr[3]: J%07X: from=<a@corp.test>, size=10, nrcpt=1 (queue active)\n", i%60, i)
	}
	r, err := Scan([]Input{{"maillog", strings.NewReader(b.String())}}, Options{Clock: Clock{Year: 2026}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hours) != 2 || r.Hours[0].Hour.Year() != 2026 || r.Hours[1].Hour.Year() != 2027 {
		var hs []string
		for _, h := range r.Hours[:min(len(r.Hours), 5)] {
			hs = append(hs, h.Hour.String())
		}
		t.Fatalf("%d hours (first %v), want Dec 31 2026 23:00 and Jan 1 2027 00:00", len(r.Hours), hs)
	}
}

// TestHoursBounded: a JSON log whose lines carry dates from all over the
// calendar does not grow the per-hour table past MaxHours.
func TestHoursBounded(t *testing.T) {
	var b strings.Builder
	for i := 0; i < MaxHours+500; i++ {
		ts := time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 7 * time.Hour)
		fmt.Fprintf(&b, `{"time":%q,"msg":"queued","queue_id":"q%d","client_ip":"10.0.0.5","from":"a@corp.test","rcpts":1,"size":9}`+"\n", ts.Format(time.RFC3339), i)
	}
	r, err := Scan([]Input{{"mamori.log", strings.NewReader(b.String())}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hours) != MaxHours || len(r.Warnings) == 0 {
		t.Errorf("%d hours, warnings %v; want %d and a warning", len(r.Hours), r.Warnings, MaxHours)
	}
	if r.Totals.Messages != MaxHours+500 {
		t.Errorf("totals %d: messages past the hour cap must still count", r.Totals.Messages)
	}
}
