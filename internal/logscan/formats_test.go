package logscan

import (
	"reflect"
	"testing"
	"time"
)

func TestParseSendmail(t *testing.T) {
	c := Clock{Year: 2026}
	t0 := time.Date(2026, 12, 6, 10, 0, 1, 0, time.UTC).Unix()
	for _, tc := range []struct {
		line string
		want []Event
	}{
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: from=<A@B.example>, size=1500, class=0, nrcpts=2, msgid=<1@pc>, proto=ESMTP, daemon=MTA, relay=pc.corp.test [10.0.0.5] (may be forged)",
			[]Event{{Kind: KindQueued, Time: t0, QueueID: "wB6A01a1000101", From: "a@b.example", Size: 1500, Nrcpt: 2, Client: "10.0.0.5"}}},
		{"Dec  6 10:00:01 mx sm-mta[1]: wB6A01a1000101: from=<>, size=9, class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=[IPv6:2001:db8::1]\r\n",
			[]Event{{Kind: KindQueued, Time: t0, QueueID: "wB6A01a1000101", From: "<>", Size: 9, Nrcpt: 1, Client: "2001:db8::1"}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: from=<s@x>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=unknown [1.2.3.4]", nil},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=<U@x>,<v@x>, \"w, x\"@x, delay=00:00:01, mailer=esmtp, pri=1, relay=mx.x. [192.0.2.1], dsn=2.0.0, stat=Sent (ok, queued)",
			[]Event{{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: "wB6A01a1000101", To: "u@x", Dest: DestRemote},
				{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: "wB6A01a1000101", To: "v@x", Dest: DestRemote},
				{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: "wB6A01a1000101", To: `"w, x"@x`, Dest: DestRemote}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=<u@x>, delay=00:00:01, mailer=esmtp, pri=1, relay=mx.x., dsn=4.4.1, stat=Deferred: Connection timed out",
			[]Event{{Kind: KindRcpt, Status: StatusDeferred, Time: t0, QueueID: "wB6A01a1000101", To: "u@x", Dest: DestRemote}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=nobody, ctladdr=<nobody@x> (1/1), delay=00:00:01, mailer=local, pri=1, dsn=5.1.1, stat=User unknown",
			[]Event{{Kind: KindRcpt, Status: StatusBounced, Time: t0, QueueID: "wB6A01a1000101", To: "nobody", Dest: DestLocal}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=<u@x>, delay=00:00:00, mailer=esmtp, pri=1, stat=queued", nil},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: ruleset=check_rcpt, arg1=<X@far.example>, relay=unknown [203.0.113.9], reject=550 5.7.1 <X@far.example>... Relaying denied",
			[]Event{{Kind: KindReject, Time: t0, Client: "203.0.113.9", To: "x@far.example", Relay: true, Text: "550 5.7.1 <X@far.example>... Relaying denied"}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: ruleset=check_mail, arg1=<s@bad.example>, relay=h [IPv6:2001:db8::9], reject=553 5.1.8 <s@bad.example>... Domain of sender address s@bad.example does not exist",
			[]Event{{Kind: KindReject, Time: t0, Client: "2001:db8::9", From: "s@bad.example", Text: "553 5.1.8 <s@bad.example>... Domain of sender address s@bad.example does not exist"}}},
		{"Dec  6 10:00:01 mx sendmail[1]: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=bob, relay=unknown [198.51.100.23]",
			[]Event{{Kind: KindAuthFail, Time: t0, Client: "198.51.100.23", User: "bob"}}},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: AUTH=server, relay=pc [10.0.0.5], authid=alice, mech=PLAIN, bits=0",
			[]Event{{Kind: KindClient, Time: t0, QueueID: "wB6A01a1000101", Client: "10.0.0.5", User: "alice"}}},
		{"Dec  6 10:00:01 mx  sendmail[1]:   wB6A01a1000101: from=<a@b>", nil}, // odd spacing: not a Sendmail line we trust
		{"Dec  6 10:00:01 mx postfix/qmgr[1]: 4ABCDEF01: from=<a@b>, size=1, nrcpt=1", nil},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=<u@x>, delay=00:0", nil},
		{"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: from=<a@b>, size=12, class=0, nrcpts=1, msgid=<", []Event{{Kind: KindQueued, Time: t0, QueueID: "wB6A01a1000101", From: "a@b", Size: 12, Nrcpt: 1}}},
		{"Dec  6 10:0", nil},
	} {
		if got := c.ParseSendmail([]byte(tc.line)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
}

func TestParseExim(t *testing.T) {
	c := Clock{Year: 2026}
	t0 := time.Date(2026, 12, 6, 10, 0, 1, 0, time.UTC).Unix()
	id := "1abcDE-000123-AB"
	for _, tc := range []struct {
		line string
		want Event
	}{
		{"2026-12-06 10:00:01 1abcDE-000123-AB <= Alice@Corp.test H=pc1.corp.test (pc1) [10.0.0.5]:50312 I=[10.0.0.1]:587 P=esmtpa A=login:alice S=1234 id=1@pc1",
			Event{Kind: KindQueued, Time: t0, QueueID: id, From: "alice@corp.test", Client: "10.0.0.5", Helo: "pc1", User: "alice", Size: 1234}},
		{"2026-12-06 11:00:01 +0100 [77] 1rGHkA-00000000Ls3-0bGq <= <> H=(helo) [2001:db8::7]:25 P=esmtps S=9",
			Event{Kind: KindQueued, Time: t0, QueueID: "1rGHkA-00000000Ls3-0bGq", From: "<>", Client: "2001:db8::7", Helo: "helo", Size: 9}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB => B@y.example R=dnslookup T=remote_smtp H=mx.y [192.0.2.1] C=\"250 ok\"",
			Event{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: id, To: "b@y.example", Dest: DestRemote}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB -> c@y.example R=dnslookup T=remote_smtp H=mx.y [192.0.2.1]",
			Event{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: id, To: "c@y.example", Dest: DestRemote}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB => alice <alice@corp.test> R=local_user T=mail_spool",
			Event{Kind: KindRcpt, Status: StatusSent, Time: t0, QueueID: id, To: "alice@corp.test", Dest: DestLocal}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB == d@y.example R=dnslookup T=remote_smtp defer (-53): retry time not reached",
			Event{Kind: KindRcpt, Status: StatusDeferred, Time: t0, QueueID: id, To: "d@y.example", Dest: DestRemote}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB ** e@y.example: Unrouteable address",
			Event{Kind: KindRcpt, Status: StatusBounced, Time: t0, QueueID: id, To: "e@y.example"}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB Completed", Event{Kind: KindRemoved, Time: t0, QueueID: id}},
		{"2026-12-06 10:00:01 H=(spam) [203.0.113.9]:4711 F=<S@spam.example> rejected RCPT <X@far.example>: relay not permitted",
			Event{Kind: KindReject, Time: t0, Client: "203.0.113.9", Helo: "spam", From: "s@spam.example", To: "x@far.example", Relay: true, Text: "RCPT <X@far.example>: relay not permitted"}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB H=mx.z [2001:db8::2]:25 F=<> rejected after DATA: spam",
			Event{Kind: KindReject, Time: t0, Client: "2001:db8::2", Helo: "mx.z", From: "<>", Text: "after DATA: spam"}},
		{"2026-12-06 10:00:01 dovecot_login authenticator failed for (ylmf-pc) [198.51.100.23]:5000 I=[10.0.0.1]:587: 535 Incorrect authentication data (set_id=bob)",
			Event{Kind: KindAuthFail, Time: t0, Client: "198.51.100.23", User: "bob"}},
		{"2026-12-06 10:00:01 Start queue run: pid=4300", Event{}},
		{"2026-12-06 10:00:01 1abcDE-000123-AB =>", Event{}},
		{"2026-12-06 10:00:01  1abcDE-000123-AB  => x@y", Event{}},
		{"2026-12-06 10:0", Event{}},
		{"Dec  6 10:00:01 mx exim[1]: 1abcDE-000123-AB Completed", Event{}},
	} {
		if got := c.ParseExim([]byte(tc.line)); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
}

func TestDetect(t *testing.T) {
	for head, want := range map[string]Format{
		"Dec  6 10:00:00 mx1 kernel: x\nDec  6 10:00:01 mx1 sm-mta[1]: x: from=<a>\n": FormatSendmail,
		"Dec  6 10:00:01 mx1 postfix/smtpd[1]: connect from x\n":                      FormatPostfix,
		"\n2026-12-06 10:00:00 1abcDE-000123-AB <= a@b\n":                             FormatExim,
		`{"time":"2026-05-04T09:00:00Z","msg":"x"}` + "\n":                            FormatMamori,
		"garbage\n": FormatPostfix,
	} {
		if got := Detect([]byte(head)); got != want {
			t.Errorf("Detect(%q) = %s, want %s", head, got, want)
		}
	}
}

// TestSmallLogs scans the hand-written logs of testdata, detected and
// forced, with counts worked out by hand: both logs tell the same story.
func TestSmallLogs(t *testing.T) {
	for _, tc := range []struct {
		file   string
		format Format
		lines  int64
		spam   bool // the reject names its sender
	}{{"sendmail.log", FormatSendmail, 15, false}, {"exim.log", FormatExim, 16, true}} {
		for _, f := range []Format{FormatAuto, tc.format} {
			o := opts
			o.Format = f
			r, err := ScanFiles([]string{"testdata/" + tc.file}, nil, o)
			if err != nil {
				t.Fatal(err)
			}
			if want := (Counts{Messages: 3, Recipients: 5, Rejects: 1, Deferrals: 1, Bounces: 1, Bytes: 2700}); r.Totals != want {
				t.Errorf("%s (%s): totals %+v, want %+v", tc.file, f, r.Totals, want)
			}
			wantS := []SenderRow{{"<>", Counts{Messages: 1, Recipients: 1, Bounces: 1, Bytes: 900}},
				{"alice@corp.test", Counts{Messages: 1, Recipients: 3, Deferrals: 1, Bytes: 1500}},
				{"root@mx1", Counts{Messages: 1, Bytes: 300}}}
			if tc.spam {
				wantS = append(wantS, SenderRow{"s@spam.example", Counts{Rejects: 1}})
			}
			if !reflect.DeepEqual(r.Senders, wantS) {
				t.Errorf("%s (%s): senders %+v, want %+v", tc.file, f, r.Senders, wantS)
			}
			wantC := []ClientRow{{"10.0.0.5", 0, Counts{Messages: 1, Recipients: 3, Deferrals: 1, Bytes: 1500}},
				{"2001:db8::7", 0, Counts{Messages: 1, Recipients: 1, Bounces: 1, Bytes: 900}},
				{"203.0.113.9", 1, Counts{Rejects: 1}}}
			if !reflect.DeepEqual(r.Clients, wantC) {
				t.Errorf("%s (%s): clients %+v, want %+v", tc.file, f, r.Clients, wantC)
			}
			wantU := []UserRow{{"alice", Counts{Messages: 1, Recipients: 3, Deferrals: 1, Bytes: 1500}}}
			if !reflect.DeepEqual(r.Users, wantU) {
				t.Errorf("%s (%s): users %+v, want %+v", tc.file, f, r.Users, wantU)
			}
			if len(r.Hours) != 2 || r.Hours[0].Messages != 1 || r.Hours[1].Messages != 2 || r.Hours[1].Rejects != 1 {
				t.Errorf("%s (%s): hours %+v", tc.file, f, r.Hours)
			}
			if r.Lines != tc.lines || r.Orphans != 1 || len(r.Findings) != 0 {
				t.Errorf("%s (%s): %d lines, %d orphans, findings %+v", tc.file, f, r.Lines, r.Orphans, r.Findings)
			}
		}
	}
}

func FuzzParseSendmail(f *testing.F) {
	for _, s := range []string{
		"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: from=<a@b>, size=12, class=0, nrcpts=3, proto=ESMTP, daemon=MTA, relay=h [1.2.3.4]",
		"Dec  6 10:00:01 mx sendmail[1]: wB6A01a1000101: to=<a@b>,<c@d>, delay=00:00:01, mailer=esmtp, relay=h [1.2.3.4], dsn=5.1.1, stat=User unknown",
		"Dec  6 10:00:01 mx sm-mta[1]: wB6A01a1000101: ruleset=check_rcpt, arg1=<x>, relay=h [IPv6:2001:db8::1], reject=550 5.7.1 <x>... Relaying denied",
		"Dec  6 10:00:01 mx sendmail[1]: AUTH failure (LOGIN): authentication failure (-13), user=b, relay=h [1.2.3.4]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ev := range (Clock{Year: 2026}).ParseSendmail(b) {
			if ev.Kind == KindNone || ev.Kind == KindRcpt && (ev.To == "" || ev.Status == StatusNone || ev.QueueID == "") {
				t.Fatalf("bad event: %+v", ev)
			}
		}
	})
}

func FuzzParseExim(f *testing.F) {
	for _, s := range []string{
		"2026-12-06 10:00:01 1abcDE-000123-AB <= a@b H=h (x) [1.2.3.4]:5 P=esmtpa A=login:u S=12 id=x",
		"2026-12-06 10:00:01 +0100 [9] 1abcDE-000123-AB ** e@y: Unrouteable address",
		"2026-12-06 10:00:01 H=(spam) [2001:db8::1]:4711 F=<s@x> rejected RCPT <x@y>: relay not permitted",
		"2026-12-06 10:00:01 plain authenticator failed for (h) [1.2.3.4]:5: 535 Incorrect authentication data (set_id=u)",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev := Clock{Year: 2026}.ParseExim(b)
		if ev.Kind == KindNone && ev != (Event{}) {
			t.Fatalf("KindNone with fields: %+v", ev)
		}
		if ev.Kind == KindRcpt && (ev.To == "" || ev.QueueID == "") {
			t.Fatalf("bad recipient: %+v", ev)
		}
	})
}
