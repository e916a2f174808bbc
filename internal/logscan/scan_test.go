package logscan

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

var day = time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)

var opts = Options{Clock: Clock{Year: 2026}}

func busyDay() *loggen.Log {
	g := loggen.New(1, day)
	g.NormalDay(150, 20)
	g.Orphan(day.Add(30 * time.Minute))
	g.Raw(day.Add(time.Hour), "May  4 01:00:00 mx1 kernel: [12.3] eth0: link up")
	g.Raw(day.Add(2*time.Hour), "May  4 02:00:00 mx1 postfix/smtpd[7]: connect from caf\xe9\xff[192.0.2.200]")
	return g
}

func text(lines []string, truncated string) []byte {
	return []byte(strings.Join(lines, "\n") + "\n" + truncated)
}

func scanBytes(t *testing.T, b []byte) *Report {
	t.Helper()
	r, err := Scan([]Input{{"maillog", bytes.NewReader(b)}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func checkCounts(t *testing.T, g *loggen.Log, r *Report) {
	t.Helper()
	want := g.Totals
	got := r.Totals
	if got.Messages != want.Messages || got.Recipients != want.Recipients || got.Rejects != want.Rejects ||
		got.Deferrals != want.Deferrals || got.Bounces != want.Bounces {
		t.Errorf("totals = %+v, want %+v", got, want)
	}
	if r.Orphans != g.Orphans {
		t.Errorf("orphans = %d, want %d", r.Orphans, g.Orphans)
	}
	senders := map[string]Counts{}
	for _, s := range r.Senders {
		senders[s.Address] = s.Counts
	}
	for a, w := range g.Senders {
		s := senders[a]
		if s.Messages != w.Messages || s.Recipients != w.Recipients || s.Rejects != w.Rejects || s.Bounces != w.Bounces || s.Deferrals != w.Deferrals {
			t.Errorf("sender %s = %+v, want %+v", a, s, *w)
		}
	}
	if len(senders) != len(g.Senders) {
		t.Errorf("%d senders, want %d", len(senders), len(g.Senders))
	}
	clients := map[string]Counts{}
	for _, c := range r.Clients {
		clients[c.IP] = c.Counts
	}
	for ip, w := range g.Clients {
		if c := clients[ip]; c.Messages != w.Messages || c.Recipients != w.Recipients || c.Rejects != w.Rejects {
			t.Errorf("client %s = %+v, want %+v", ip, c, *w)
		}
	}
	for i := 1; i < len(r.Senders); i++ {
		if r.Senders[i].Messages > r.Senders[i-1].Messages {
			t.Fatalf("senders not sorted by messages at %d", i)
		}
	}
}

func TestBusyDayCountsAndNoFinding(t *testing.T) {
	g := busyDay()
	r := scanBytes(t, text(g.Lines(), "May  4 23:59:59 mx1 postfix/qmgr[99]: 3A00"))
	if g.Totals.Messages < 4000 || g.Totals.Deferrals == 0 || g.Totals.Bounces == 0 || g.Totals.Rejects == 0 {
		t.Fatalf("generator made a thin day: %+v", g.Totals)
	}
	checkCounts(t, g, r)
	if len(r.Findings) != 0 {
		t.Errorf("a normal day raised findings: %+v", r.Findings)
	}
	if len(r.Hours) == 0 || r.Hours[8].Messages == 0 {
		t.Errorf("hours: %+v", r.Hours)
	}
}

func TestPlantedEpisodes(t *testing.T) {
	g := busyDay()
	g.Worm("10.0.9.99", day.Add(14*time.Hour), 12*time.Minute, 300)
	g.RelayStorm("203.0.113.66", day.Add(3*time.Hour), 5*time.Minute, 120)
	g.BruteForce("198.51.100.23", day.Add(22*time.Hour), 15*time.Minute, 60)
	r := scanBytes(t, text(g.Lines(), ""))
	checkCounts(t, g, r)
	got := map[[2]string]Finding{}
	for _, f := range r.Findings {
		got[[2]string{f.Kind, f.Subject}] = f
	}
	want := [][2]string{{KindWorm, "10.0.9.99"}, {KindRelayStorm, "203.0.113.66"}, {KindRelayHack, "203.0.113.66"}, {KindBruteForce, "198.51.100.23"}}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("no finding %v", k)
		}
	}
	if len(got) != len(want) {
		t.Errorf("findings = %+v, want only %v", r.Findings, want)
	}
	w := got[[2]string{KindWorm, "10.0.9.99"}]
	if w.Severity != "high" || w.Evidence.Messages < 250 || len(w.Evidence.SampleRecipients) != 5 ||
		w.Evidence.Last.Sub(day.Add(14*time.Hour)) > 13*time.Minute {
		t.Errorf("worm evidence: %+v", w)
	}
	if rs := got[[2]string{KindRelayStorm, "203.0.113.66"}]; rs.Evidence.Rejects != 121 {
		t.Errorf("relay storm: %d rejects, want 121 (%+v)", rs.Evidence.Rejects, rs)
	}
	if bf := got[[2]string{KindBruteForce, "198.51.100.23"}]; bf.Evidence.AuthFailures != 60 {
		t.Errorf("brute force: %+v", bf)
	}
}

// TestRotatedFiles splits one day into maillog.2.gz, maillog.1 and
// maillog, cutting through open messages, names them newest first, and
// expects the same counts as the whole file.
func TestRotatedFiles(t *testing.T) {
	g := busyDay()
	g.Worm("10.0.9.99", day.Add(14*time.Hour), 12*time.Minute, 300)
	lines := g.Lines()
	a, b := len(lines)/3, 2*len(lines)/3
	// A queue id whose lines fall on both sides of the first cut.
	qid := ""
	for _, l := range lines[a-50 : a] {
		if i := strings.Index(l, ": client="); i > 0 {
			id := l[strings.LastIndex(l[:i], " ")+1 : i]
			if strings.Contains(strings.Join(lines[a:a+200], "\n"), id+": removed") {
				qid = id
			}
		}
	}
	if qid == "" {
		t.Fatal("no queue id spans the first rotation")
	}
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
		write("maillog", text(lines[b:], "May  4 23:59:59 mx1 postf")),
		write("maillog.1", text(lines[a:b], "")),
		write("maillog.2.gz", gz.Bytes()),
	}
	r, err := ScanFiles(paths, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{paths[2], paths[1], paths[0]}; !reflect.DeepEqual(r.Files, want) {
		t.Errorf("files read %v, want %v", r.Files, want)
	}
	checkCounts(t, g, r)
	whole := scanBytes(t, text(lines, ""))
	if !reflect.DeepEqual(r.Senders, whole.Senders) || !reflect.DeepEqual(r.Findings, whole.Findings) {
		t.Error("rotated files report differs from the whole file")
	}
}

// TestSmallLog has counts worked out by hand.
func TestSmallLog(t *testing.T) {
	log := `May  4 09:00:00 mx1 postfix/smtpd[1]: connect from pc[10.0.0.5]
May  4 09:00:01 mx1 postfix/submission/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5], sasl_method=PLAIN, sasl_username=alice
May  4 09:00:01 mx1 postfix/cleanup[2]: 4ABCDEF01: message-id=<1@pc>
May  4 09:00:02 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<Alice@Corp.test>, size=1500, nrcpt=2 (queue active)
May  4 09:00:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<bob@ext.example>, relay=mx.ext.example[192.0.2.1]:25, delay=1, dsn=4.4.1, status=deferred (timeout)
May  4 09:00:03 mx1 postfix/local[5]: 4ABCDEF01: to=<carol@corp.test>, relay=local, delay=1, dsn=2.0.0, status=sent (delivered to mailbox)
May  4 09:30:02 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<alice@corp.test>, size=1500, nrcpt=2 (queue active)
May  4 09:30:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<bob@ext.example>, relay=mx.ext.example[192.0.2.1]:25, delay=1800, dsn=2.0.0, status=sent (250 ok)
May  4 09:30:03 mx1 postfix/qmgr[3]: 4ABCDEF01: removed
May  4 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@far.example>: Relay access denied; from=<s@spam.example> to=<x@far.example> proto=ESMTP helo=<h>
May  4 10:00:05 mx1 postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
May  4 10:01:00 mx1 postfix/pickup[6]: 4ABCDEF02: uid=0 from=<root>
May  4 10:01:00 mx1 postfix/qmgr[3]: 4ABCDEF02: from=<>, size=300, nrcpt=1 (queue active)
May  4 10:01:01 mx1 postfix/smtp[4]: 4ABCDEF02: to=<a@b.example>, relay=none, delay=1, status=bounced (Host not found)
`
	r := scanBytes(t, []byte(log))
	if want := (Counts{Messages: 2, Recipients: 3, Rejects: 1, Deferrals: 1, Bounces: 1, Bytes: 1800}); r.Totals != want {
		t.Errorf("totals %+v, want %+v", r.Totals, want)
	}
	wantS := []SenderRow{{"<>", Counts{Messages: 1, Recipients: 1, Bounces: 1, Bytes: 300}},
		{"alice@corp.test", Counts{Messages: 1, Recipients: 2, Deferrals: 1, Bytes: 1500}},
		{"s@spam.example", Counts{Rejects: 1}}}
	if !reflect.DeepEqual(r.Senders, wantS) {
		t.Errorf("senders %+v, want %+v", r.Senders, wantS)
	}
	wantC := []ClientRow{{"10.0.0.5", 0, Counts{Messages: 1, Recipients: 2, Deferrals: 1, Bytes: 1500}}, {"203.0.113.9", 1, Counts{Rejects: 1}}}
	if !reflect.DeepEqual(r.Clients, wantC) {
		t.Errorf("clients %+v, want %+v", r.Clients, wantC)
	}
	if len(r.Users) != 1 || r.Users[0].User != "alice" || r.Users[0].Messages != 1 {
		t.Errorf("users %+v", r.Users)
	}
	if len(r.Hours) != 2 || r.Hours[0].Messages != 1 || r.Hours[1].Rejects != 1 || r.Lines != 14 {
		t.Errorf("hours %+v lines %d", r.Hours, r.Lines)
	}
}

func TestMamoriLog(t *testing.T) {
	log := `{"time":"2026-05-04T09:00:00Z","level":"INFO","msg":"queued","sid":"1","client_ip":"10.0.0.5","listener":"submission","queue_id":"q1","from":"alice@corp.test","rcpts":2,"size":900,"user":"alice@corp.test","origin":"submission","state":"active","rule":""}
{"time":"2026-05-04T09:00:01Z","level":"INFO","msg":"deferred","queue_id":"q1","from":"alice@corp.test","client_ip":"10.0.0.5","user":"alice@corp.test","rcpt":"bob@ext.example","relay":"","reply":"4.4.1","tls":false,"delay":"1s"}
{"time":"2026-05-04T09:00:01Z","level":"INFO","msg":"delivered","queue_id":"q1","from":"alice@corp.test","client_ip":"10.0.0.5","user":"alice@corp.test","rcpt":"carol@corp.test","relay":"local","reply":"","tls":false,"delay":"1s"}
{"time":"2026-05-04T09:10:01Z","level":"INFO","msg":"bounced","queue_id":"q1","from":"alice@corp.test","client_ip":"10.0.0.5","user":"alice@corp.test","rcpt":"bob@ext.example","relay":"","reply":"5.1.1","tls":false,"dsn":"d1"}
{"time":"2026-05-04T09:20:00Z","level":"INFO","msg":"rejected","sid":"2","client_ip":"203.0.113.9","listener":"smtp","stage":"rcpt","arg":"x@far.example","user":"","code":554,"status":"5.7.1","reason":"Relay access denied"}
{"time":"2026-05-04T09:21:00Z","level":"WARN","msg":"login failed","protocol":"imap","client_ip":"203.0.113.9","user":"bob","reason":"bad password"}
{"time":"2026-05-04T09:22:00Z","level":"INFO","msg":"starting"}
{"time":"2026-05-04T09:22:00Z","lev`
	r := scanBytes(t, []byte(log))
	if want := (Counts{Messages: 1, Recipients: 2, Rejects: 1, Deferrals: 1, Bounces: 1, Bytes: 900}); r.Totals != want {
		t.Errorf("totals %+v, want %+v", r.Totals, want)
	}
	if len(r.Clients) != 2 || r.Clients[1].AuthFailures != 1 || r.Clients[0].Recipients != 2 {
		t.Errorf("clients %+v", r.Clients)
	}
	if ev := ParseMamori([]byte(strings.SplitN(log, "\n", 4)[2])); ev.Dest != DestLocal || ev.To != "carol@corp.test" {
		t.Errorf("a local delivery: %+v", ev)
	}
}

func TestParsePostfix(t *testing.T) {
	c := Clock{Year: 2026}
	t0 := time.Date(2026, 5, 4, 9, 0, 1, 0, time.UTC).Unix()
	for _, tc := range []struct {
		line string
		want Event
	}{
		{"May  4 09:00:01 mx postfix/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5], sasl_method=PLAIN, sasl_username=alice",
			Event{Kind: KindClient, Time: t0, QueueID: "4ABCDEF01", Client: "10.0.0.5", User: "alice"}},
		{"2026-05-04T09:00:01.123+00:00 mx postfix/qmgr[3]: 3Zx9yq1Gz4z9sWh: from=<A@B.example>, size=12, nrcpt=3 (queue active)",
			Event{Kind: KindFrom, Time: t0, QueueID: "3Zx9yq1Gz4z9sWh", From: "a@b.example", Size: 12, Nrcpt: 3}},
		{"May  4 09:00:01 mx postfix/lmtp[1]: 4ABCDEF01: to=<u@x>, orig_to=<v@x>, relay=x[private/dovecot-lmtp], status=sent (ok)",
			Event{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: "4ABCDEF01", To: "u@x", Dest: DestLocal, Forward: true}},
		{"May  4 09:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a[2001:db8::1]: 554 5.7.1 <@a.example:u@b.example>: Relay access denied; from=<> to=<@a.example:u@b.example> proto=ESMTP helo=<x>",
			Event{Kind: KindReject, Time: t0, Client: "2001:db8::1", Helo: "x", From: "<>", To: "@a.example:u@b.example", Relay: true, Text: "554 5.7.1 <@a.example:u@b.example>: Relay access denied"}},
		{"May  4 09:00:01 mx postfix/smtpd[1]: disconnect from a[1.2.3.4]", Event{}},
		{"May  4 09:00:01 mx sendmail[1]: 4ABCDEF01: to=<u@x>, status=sent", Event{}},
		{"May  4 09:00", Event{}},
	} {
		if got := c.ParsePostfix([]byte(tc.line)); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
}

func TestOrderFiles(t *testing.T) {
	got := OrderFiles([]string{"/l/maillog", "/l/mail.err", "/l/maillog.10.gz", "/l/maillog.1", "/l/maillog.2.gz"})
	want := []string{"/l/maillog.10.gz", "/l/maillog.2.gz", "/l/maillog.1", "/l/maillog", "/l/mail.err"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
}

func FuzzParsePostfix(f *testing.F) {
	f.Add([]byte("May  4 09:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a[1.2.3.4]: 554 5.7.1 <x>: Relay access denied; from=<> to=<x> proto=ESMTP helo=<x>"))
	f.Add([]byte("May  4 09:00:01 mx postfix/qmgr[3]: 4ABCDEF01: from=<a@b>, size=12, nrcpt=3 (queue active)"))
	f.Add([]byte("May  4 09:00:01 mx postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x"))
	f.Add([]byte("May  4 09:00:01 mx postfix/smtp[1]: 4ABCDEF01: to=<b@x>, relay=127.0.0.1[127.0.0.1]:10024, status=sent (250 2.0.0 Ok: queued as 4BBBBBB02)"))
	f.Add([]byte("May  4 09:00:01 mx postfix/cleanup[1]: 4ABCDEF01: warning: header Subject: hi from pc[10.0.0.5]; from=<a@b> to=<c@d> proto=ESMTP helo=<pc>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev := Clock{Year: 2026}.ParsePostfix(b)
		if ev.Kind == KindNone && ev != (Event{}) {
			t.Fatalf("KindNone with fields: %+v", ev)
		}
		if ev.Kind == KindRcpt && ev.Text != "" && (ev.Dest != DestFilter || !isQueueID(ev.Text)) {
			t.Fatalf("a re-injection link that is not a queue id from a filter: %+v", ev)
		}
	})
}

func FuzzParseMamori(f *testing.F) {
	f.Add([]byte(`{"time":"2026-05-04T09:00:00Z","msg":"queued","queue_id":"q1","from":"a@b","rcpts":2,"size":9}`))
	f.Add([]byte(`{"time":"2026-05-04T09:00:00Z","msg":"rejected","stage":"rcpt","arg":"x","reason":"Relay access denied"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev := ParseMamori(b)
		if ev.Kind == KindNone && ev != (Event{}) {
			t.Fatalf("KindNone with fields: %+v", ev)
		}
	})
}

// TestRecycledChunks scans a log of many chunks, whose buffers the scan
// reuses, and compares with the same events parsed into strings of their
// own: a string the aggregator kept without copying would show up as a
// changed key or count.
func TestRecycledChunks(t *testing.T) {
	var buf bytes.Buffer
	g := loggen.New(3, day)
	for h := range 24 {
		at := day.Add(time.Duration(h) * time.Hour)
		g.Hour(at, 600, 20)
		if _, err := g.WriteBefore(&buf, at.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Flush(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() < 20*chunkSize {
		t.Fatalf("log of %d bytes: too few chunks", buf.Len())
	}
	got := scanBytes(t, buf.Bytes())
	ref := newAggregator(opts)
	ref.rep.Files = []string{"maillog"}
	for line := range bytes.Lines(buf.Bytes()) {
		ev := opts.Clock.ParsePostfix(line)
		ref.add(&ev)
		ref.rep.Lines++
	}
	want := ref.report()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("scan differs from the reference: totals %+v / %+v, %d/%d senders, %d/%d clients",
			got.Totals, want.Totals, len(got.Senders), len(want.Senders), len(got.Clients), len(want.Clients))
	}
	checkCounts(t, g, got)
	if len(got.Clients) == 0 || got.Clients[len(got.Clients)-1].AuthFailures == 0 && got.Totals.Rejects == 0 {
		t.Errorf("no rejects or auth failures in the mix")
	}
}

// TestQueueIDRejects: Postfix logs refusals inside a session that already
// has a queue id with that id ("QID: reject: RCPT from ..."; header and
// milter rejects too). They count as rejects, and relay denials among
// them feed the relay-storm finding, like NOQUEUE ones.
func TestQueueIDRejects(t *testing.T) {
	var b strings.Builder
	b.WriteString("May  4 09:00:00 mx1 postfix/smtpd[1]: 4ABCDEF01: client=unknown[203.0.113.7]\n")
	for i := range 30 {
		fmt.Fprintf(&b, "May  4 09:00:%02d mx1 postfix/smtpd[1]: 4ABCDEF01: reject: RCPT from unknown[203.0.113.7]: 554 5.7.1 <v%d@far.example>: Relay access denied; from=<s@spam.example> to=<v%d@far.example> proto=ESMTP helo=<h>\n", i, i, i)
	}
	b.WriteString("May  4 09:01:00 mx1 postfix/cleanup[2]: 4ABCDEF01: milter-reject: END-OF-MESSAGE from unknown[203.0.113.7]: 5.7.1 Spam; from=<s@spam.example> to=<bob@corp.test> proto=ESMTP helo=<h>\n")
	r := scanBytes(t, []byte(b.String()))
	if r.Totals.Rejects != 31 || r.Totals.Messages != 0 {
		t.Errorf("totals %+v, want 31 rejects and no message", r.Totals)
	}
	found := false
	for _, f := range r.Findings {
		found = found || f.Kind == KindRelayStorm && f.Subject == "203.0.113.7"
	}
	if !found {
		t.Errorf("no relay-denied finding for 203.0.113.7: %+v", r.Findings)
	}
}

// TestMaxKeys: past Options.MaxKeys distinct senders, the rest are counted
// together under Overflow with a warning, so a log of unique return paths
// cannot grow memory with its size; totals stay exact.
func TestMaxKeys(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "May  4 09:%02d:00 mx1 postfix/qmgr[3]: 4ABC%05X: from=<bounce-%d-bob=corp.test@list.example>, size=100, nrcpt=1 (queue active)\n", i, i, i)
		fmt.Fprintf(&b, "May  4 09:%02d:01 mx1 postfix/qmgr[3]: 4ABC%05X: removed\n", i, i)
	}
	r, err := Scan([]Input{{"maillog", strings.NewReader(b.String())}}, Options{MaxKeys: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Senders) != 11 || r.Totals.Messages != 50 {
		t.Fatalf("%d sender rows, %d messages; want 10 + overflow and 50", len(r.Senders), r.Totals.Messages)
	}
	if r.Senders[0].Address != Overflow || r.Senders[0].Messages != 40 {
		t.Errorf("first row %+v, want %s with 40 messages", r.Senders[0], Overflow)
	}
	if len(r.Warnings) != 1 {
		t.Errorf("warnings %v, want one", r.Warnings)
	}
}

// TestManyRecipients: a list message's recipients are each counted once
// however many there are (past manyRcpts they are kept in a set).
func TestManyRecipients(t *testing.T) {
	var b strings.Builder
	b.WriteString("May  4 09:00:00 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<list@corp.test>, size=100, nrcpt=300 (queue active)\n")
	for i := range 300 {
		for range 2 { // deferred twice: still one recipient
			fmt.Fprintf(&b, "May  4 09:00:01 mx1 postfix/smtp[4]: 4ABCDEF01: to=<m%d@far.example>, relay=none, delay=1, dsn=4.0.0, status=deferred (busy)\n", i)
		}
	}
	b.WriteString("May  4 09:00:02 mx1 postfix/qmgr[3]: 4ABCDEF01: removed\n")
	r := scanBytes(t, []byte(b.String()))
	if r.Totals.Recipients != 300 || r.Totals.Deferrals != 600 {
		t.Errorf("totals %+v, want 300 recipients and 600 deferrals", r.Totals)
	}
}
