package relaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func probeByName(t *testing.T, r Report, name string) Probe {
	t.Helper()
	for _, p := range r.Probes {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no probe %q in report", name)
	return Probe{}
}

func countControls(r Report) (controls, relayProbes int) {
	for _, p := range r.Probes {
		if p.Control {
			controls++
		} else {
			relayProbes++
		}
	}
	return
}

func TestOpenRelayIsDetected(t *testing.T) {
	ts := startToy(t, "220 mx.open.test ESMTP toy\r\n", func() handler {
		return smtpHandler("mx.open.test", acceptAll, "250 2.0.0 queued\r\n")
	})
	rep, err := Run(context.Background(), Options{Addr: ts.addr(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.LocalDomain != "open.test" {
		t.Errorf("LocalDomain = %q, want open.test (from the greeting)", rep.LocalDomain)
	}
	controls, relayProbes := countControls(rep)
	if controls == 0 || relayProbes < 20 {
		t.Fatalf("battery has %d controls and %d relay probes", controls, relayProbes)
	}
	if rep.Relayed != relayProbes {
		t.Errorf("Relayed = %d, want every relay probe (%d)", rep.Relayed, relayProbes)
	}
	for _, p := range rep.Probes {
		if p.Control && p.Relayed {
			t.Errorf("control %s counted as relayed", p.Name)
		}
		if p.Code != 250 || p.Stage != "RCPT" || p.Err != "" {
			t.Errorf("probe %s: code %d stage %q err %q", p.Name, p.Code, p.Stage, p.Err)
		}
	}

	// The deliberately malformed paths went out verbatim.
	got := ts.received()
	for _, want := range []string{
		"EHLO relaytest.invalid",
		"MAIL FROM:<>",
		"MAIL FROM:<postmaster@open.test>",
		"RCPT TO:<postmaster@open.test>",
		"RCPT TO:<postmaster@OpEn.TeSt>",
		"RCPT TO:<relaytest@relaytest.invalid>",
		"RCPT TO:<relaytest@relaytest.invalid.>",
		"RCPT TO:<relaytest%relaytest.invalid@open.test>",
		"RCPT TO:<relaytest%relaytest.invalid@[127.0.0.1]>",
		`RCPT TO:<"relaytest@relaytest.invalid">`,
		`RCPT TO:<"relaytest@relaytest.invalid"@open.test>`,
		`RCPT TO:<"relaytest%relaytest.invalid"@open.test>`,
		"RCPT TO:<relaytest.invalid!relaytest>",
		"RCPT TO:<relaytest.invalid!relaytest@open.test>",
		"RCPT TO:<@open.test:relaytest@relaytest.invalid>",
		"RCPT TO:<@open.test,@open.test:relaytest@relaytest.invalid>",
		"RCPT TO:<relaytest@relaytest.invalid@open.test>",
		"RCPT TO:<relaytest@[192.0.2.1]>",
		"RSET",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("server never received %q", want)
		}
	}
	if slices.Contains(got, "DATA") {
		t.Error("DATA sent although SendData is false")
	}

	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if lines := strings.Count(out, "\n"); lines != len(rep.Probes)+1 {
		t.Errorf("WriteText wrote %d lines for %d probes", lines, len(rep.Probes))
	}
	for _, want := range []string{"ACCEPTED", "percent-hack", "control-ok", "OPEN RELAY"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

// closedRcpt accepts plain addresses at local.test only and refuses the
// rest with a multi-line reply.
var closedPath = regexp.MustCompile(`(?i)^<[a-z0-9._-]+@local\.test\.?>$`)

func closedRcpt(path string) string {
	if closedPath.MatchString(path) {
		return "250 2.1.5 Ok\r\n"
	}
	return "554-5.7.1 Relay access denied\r\n554 5.7.1 Closed by construction\r\n"
}

func TestClosedServerHasNoRelay(t *testing.T) {
	ts := startToy(t, "220 mx.local.test ESMTP toy\r\n", func() handler {
		return smtpHandler("mx.local.test", closedRcpt, "250 queued\r\n")
	})
	rep, err := Run(context.Background(), Options{Addr: ts.addr(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Relayed != 0 {
		t.Errorf("Relayed = %d on a closed server", rep.Relayed)
	}
	if rep.LocalDomain != "local.test" {
		t.Errorf("LocalDomain = %q", rep.LocalDomain)
	}
	for _, p := range rep.Probes {
		if p.Err != "" {
			t.Errorf("probe %s: %s", p.Name, p.Err)
		}
		if p.Control && p.Code != 250 {
			t.Errorf("control %s refused: %s", p.Name, p.Reply)
		}
		if !p.Control && p.Code != 554 {
			t.Errorf("probe %s <%s> got %d", p.Name, p.Rcpt, p.Code)
		}
	}
	p := probeByName(t, rep, "percent-hack")
	if want := "554-5.7.1 Relay access denied\n554 5.7.1 Closed by construction"; p.Reply != want {
		t.Errorf("multi-line reply = %q, want %q", p.Reply, want)
	}
	// Reconnects every probesPerConn probes; never more per connection.
	if want := (len(rep.Probes) + probesPerConn - 1) / probesPerConn; ts.connCount() != want {
		t.Errorf("%d connections for %d probes, want %d", ts.connCount(), len(rep.Probes), want)
	}

	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); strings.Contains(out, "ACCEPTED") || !strings.Contains(out, "no relay accepted") {
		t.Errorf("text report of a closed server:\n%s", out)
	}

	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || back.Relayed != 0 || len(back.Probes) != len(rep.Probes) {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
	if !bytes.Contains(js, []byte(`"relayed":0`)) || !bytes.Contains(js, []byte(`"target":`)) {
		t.Errorf("JSON lacks fields: %s", js)
	}
}

func TestSendData(t *testing.T) {
	tests := []struct {
		name        string
		dataReply   string
		wantRelayed bool
	}{
		{"message accepted", "250 2.0.0 queued as X\r\n", true},
		{"message refused at end of data", "554 5.7.1 relay refused after DATA\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startToy(t, "220 mx.open.test\r\n", func() handler {
				return smtpHandler("mx.open.test", acceptAll, tt.dataReply)
			})
			rep, err := Run(context.Background(), Options{Addr: ts.addr(), SendData: true, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			_, relayProbes := countControls(rep)
			want := 0
			if tt.wantRelayed {
				want = relayProbes
			}
			if rep.Relayed != want {
				t.Errorf("Relayed = %d, want %d", rep.Relayed, want)
			}
			p := probeByName(t, rep, "foreign")
			if p.Relayed != tt.wantRelayed || p.DataReply != strings.TrimRight(tt.dataReply, "\r\n") || p.Code != 250 {
				t.Errorf("probe foreign = %+v", p)
			}
			if c := probeByName(t, rep, "control-local"); c.DataReply != "" {
				t.Errorf("DATA sent for a control: %+v", c)
			}
			datas := 0
			for _, l := range ts.received() {
				if l == "DATA" {
					datas++
				}
			}
			if datas != relayProbes {
				t.Errorf("%d DATA commands, want %d", datas, relayProbes)
			}
		})
	}
}

func TestServerClosesMidway(t *testing.T) {
	// Greets and answers EHLO, then hangs up on every MAIL FROM.
	ts := startToy(t, "220 mx.local.test\r\n", func() handler {
		h := smtpHandler("mx.local.test", closedRcpt, "")
		return func(line string) (string, bool) {
			if verb(line) == "MAIL" {
				return "", true
			}
			return h(line)
		}
	})
	rep, err := runBounded(t, context.Background(), Options{Addr: ts.addr(), Timeout: 5 * time.Second})
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run error = %v, want ErrIncomplete", err)
	}
	if len(rep.Probes) == 0 {
		t.Fatal("no probes reported")
	}
	for _, p := range rep.Probes {
		if p.Err == "" || p.Relayed {
			t.Errorf("probe %s: err %q relayed %v", p.Name, p.Err, p.Relayed)
		}
	}
	if rep.Relayed != 0 {
		t.Errorf("Relayed = %d", rep.Relayed)
	}
	if !strings.Contains(rep.Probes[0].Err, "closed") {
		t.Errorf("first probe error %q does not say the connection closed", rep.Probes[0].Err)
	}
	// The initial connection, then two attempts for each failing probe
	// before the run gives up.
	if max := 1 + 2*maxConsecutiveFailures; ts.connCount() > max {
		t.Errorf("%d connections, want at most %d", ts.connCount(), max)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "ERROR") {
		t.Errorf("text report does not show errors:\n%s", buf.String())
	}
}

func TestServerClosesOnceIsRetried(t *testing.T) {
	var rcpts atomic.Int32
	ts := startToy(t, "220 mx.local.test\r\n", func() handler {
		h := smtpHandler("mx.local.test", closedRcpt, "")
		return func(line string) (string, bool) {
			if verb(line) == "RCPT" && rcpts.Add(1) == 5 {
				return "", true
			}
			return h(line)
		}
	})
	rep, err := Run(context.Background(), Options{Addr: ts.addr(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, p := range rep.Probes {
		if p.Err != "" || p.Code == 0 {
			t.Errorf("probe %s not completed: %+v", p.Name, p)
		}
	}
	if int(rcpts.Load()) != len(rep.Probes)+1 {
		t.Errorf("%d RCPTs for %d probes, want one retry", rcpts.Load(), len(rep.Probes))
	}
}

func TestServerNeverAnswers(t *testing.T) {
	// Answers everything but RCPT, which it leaves hanging.
	ts := startToy(t, "220 mx.local.test\r\n", func() handler {
		h := smtpHandler("mx.local.test", closedRcpt, "")
		return func(line string) (string, bool) {
			if verb(line) == "RCPT" {
				return "", false
			}
			return h(line)
		}
	})
	rep, err := runBounded(t, context.Background(), Options{Addr: ts.addr(), Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run error = %v, want ErrIncomplete", err)
	}
	if !strings.Contains(rep.Probes[0].Err, "timeout") {
		t.Errorf("first probe error = %q, want a timeout", rep.Probes[0].Err)
	}
	for _, p := range rep.Probes {
		if p.Err == "" {
			t.Errorf("probe %s has no error", p.Name)
		}
	}
}

func TestCancel(t *testing.T) {
	ts := startToy(t, "220 mx.local.test\r\n", func() handler {
		h := smtpHandler("mx.local.test", closedRcpt, "")
		return func(line string) (string, bool) {
			if verb(line) == "RCPT" {
				return "", false
			}
			return h(line)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	rep, err := runBounded(t, ctx, Options{Addr: ts.addr(), Timeout: time.Minute})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want context.Canceled", err)
	}
	for _, p := range rep.Probes {
		if p.Err == "" {
			t.Errorf("probe %s has no error after cancel", p.Name)
		}
	}
}

// runBounded runs Run and fails the test if it does not return within a
// generous bound: these tests are about never hanging.
func runBounded(t *testing.T, ctx context.Context, opt Options) (Report, error) {
	t.Helper()
	type result struct {
		rep Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Run(ctx, opt)
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, r.err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
		return Report{}, nil
	}
}

func TestSessionSetUp(t *testing.T) {
	tests := []struct {
		name     string
		greeting string
		h        func(line string) (string, bool)
		opt      Options
		wantErr  string // "" = Run succeeds
		wantLD   string
	}{
		{
			name: "EHLO refused, HELO works", greeting: "220 mx.local.test\r\n",
			h: func(line string) (string, bool) {
				if verb(line) == "EHLO" {
					return "500 5.5.1 what?\r\n", false
				}
				return smtpHandler("mx.local.test", closedRcpt, "")(line)
			},
			wantLD: "local.test",
		},
		{
			name: "greeting refuses service", greeting: "554 5.7.1 go away\r\n",
			h:       smtpHandler("mx.local.test", closedRcpt, ""),
			wantErr: "refused the session",
		},
		{
			name: "no domain in greeting", greeting: "220 localhost ESMTP\r\n",
			h:       smtpHandler("localhost", closedRcpt, ""),
			wantErr: "set LocalDomain",
		},
		{
			name: "no domain in greeting but given", greeting: "220 localhost ESMTP\r\n",
			h: smtpHandler("localhost", closedRcpt, ""), opt: Options{LocalDomain: "Local.Test."},
			wantLD: "Local.Test",
		},
		{
			name: "domain from EHLO when greeting has none", greeting: "220 ESMTP ready\r\n",
			h:      smtpHandler("mail.local.test", closedRcpt, ""),
			wantLD: "local.test",
		},
		{
			name: "two-label host name is the domain", greeting: "220 local.test ESMTP\r\n",
			h:      smtpHandler("local.test", closedRcpt, ""),
			wantLD: "local.test",
		},
		{
			name: "bad local domain option", greeting: "220 mx.local.test\r\n",
			h: smtpHandler("mx.local.test", closedRcpt, ""), opt: Options{LocalDomain: "a b"},
			wantErr: "local domain",
		},
		{
			name: "over-long greeting line", greeting: "220 " + strings.Repeat("x", 3*maxReplyLine) + "\r\n",
			h:       smtpHandler("mx.local.test", closedRcpt, ""),
			wantErr: "longer than",
		},
		{
			name: "garbage greeting", greeting: "hello there\r\n",
			h:       smtpHandler("mx.local.test", closedRcpt, ""),
			wantErr: "malformed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startToy(t, tt.greeting, func() handler { return tt.h })
			opt := tt.opt
			opt.Addr, opt.Timeout = ts.addr(), 5*time.Second
			rep, err := runBounded(t, context.Background(), opt)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Run error = %v, want one containing %q", err, tt.wantErr)
				}
				if len(rep.Probes) != 0 {
					t.Errorf("%d probes reported after a set-up failure", len(rep.Probes))
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if rep.LocalDomain != tt.wantLD || rep.Relayed != 0 {
				t.Errorf("LocalDomain %q Relayed %d", rep.LocalDomain, rep.Relayed)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep, err := runBounded(t, context.Background(), Options{Addr: addr, Timeout: 2 * time.Second})
	if err == nil || errors.Is(err, ErrIncomplete) || len(rep.Probes) != 0 {
		t.Fatalf("Run against a closed port = %d probes, %v", len(rep.Probes), err)
	}
	if _, err := Run(context.Background(), Options{}); err == nil {
		t.Error("Run without Addr succeeded")
	}
	if _, err := Run(context.Background(), Options{Addr: "no-port"}); err == nil {
		t.Error("Run with a bad Addr succeeded")
	}
}

func TestHostileReplies(t *testing.T) {
	ts := startToy(t, "220 mx.local.test\r\n", func() handler {
		h := smtpHandler("mx.local.test", closedRcpt, "")
		return func(line string) (string, bool) {
			if verb(line) == "RCPT" {
				// Terminal escape in the text; endless multi-line reply.
				return "550-\x1b[2J\x1b]0;pwned\a\r\n" + strings.Repeat("550-more\r\n", 2*maxReplyLines), false
			}
			return h(line)
		}
	})
	rep, _ := runBounded(t, context.Background(), Options{Addr: ts.addr(), Timeout: 2 * time.Second})
	if rep.Relayed != 0 {
		t.Errorf("Relayed = %d", rep.Relayed)
	}
	if len(rep.Probes) == 0 || !strings.Contains(rep.Probes[0].Err, "lines") {
		t.Fatalf("endless reply not reported as an error: %+v", rep.Probes)
	}

	r := Report{Target: "t", Probes: []Probe{{Name: "x", Rcpt: "a\x1b@b", Reply: "550 \x1b[31mred\x07\n550 two", Code: 550}}}
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("control characters reached the text report: %q", out)
	}
	if !strings.Contains(out, "550 \\x1b[31mred\\x07 / 550 two") {
		t.Errorf("reply not rendered on one line: %q", out)
	}
}

func TestBattery(t *testing.T) {
	tg := target{
		localDomain: "local.test", localUser: "postmaster", foreignDomain: "relaytest.invalid",
		localLit: "[192.0.2.5]", foreignLit: "[192.0.2.1]",
	}
	specs := battery(tg)
	names := map[string]bool{}
	rcpts := map[string]bool{}
	for _, s := range specs {
		if names[s.name] {
			t.Errorf("duplicate probe name %q", s.name)
		}
		names[s.name] = true
		rcpts[s.rcpt] = true
		if s.control {
			// A control's destination is local: the local user at the local domain.
			if !strings.HasPrefix(s.rcpt, "postmaster@") || !strings.EqualFold(strings.TrimSuffix(s.rcpt[len("postmaster@"):], "."), "local.test") {
				t.Errorf("control %s has a non-local recipient %q", s.name, s.rcpt)
			}
		} else if !strings.Contains(strings.ToLower(s.rcpt), "relaytest.invalid") && !strings.Contains(s.rcpt, "[192.0.2.1]") {
			t.Errorf("relay probe %s never names the foreign destination: %q", s.name, s.rcpt)
		}
		if strings.ContainsAny(s.rcpt+s.from, " \r\n<>") {
			t.Errorf("probe %s would break the command line: %q %q", s.name, s.from, s.rcpt)
		}
	}
	// Every S2 form and the classic ones.
	for _, want := range []string{
		"relaytest@relaytest.invalid",
		"relaytest%relaytest.invalid@local.test",
		"relaytest%relaytest.invalid@[192.0.2.5]",
		`"relaytest@relaytest.invalid"`,
		`"relaytest@relaytest.invalid"@local.test`,
		`"relaytest%relaytest.invalid"@local.test`,
		"relaytest.invalid!relaytest",
		"relaytest.invalid!relaytest@local.test",
		"@local.test:relaytest@relaytest.invalid",
		"@local.test,@local.test:relaytest@relaytest.invalid",
		"relaytest@relaytest.invalid@local.test",
		"relaytest@[192.0.2.1]",
		"relaytest@relaytest.invalid.",
		"ReLaYtEsT@ReLaYtEsT.iNvAlId",
	} {
		if !rcpts[want] {
			t.Errorf("battery lacks RCPT <%s>", want)
		}
	}
	senders := map[string]bool{}
	for _, s := range specs {
		if s.rcpt == "relaytest@relaytest.invalid" {
			senders[s.from] = true
		}
	}
	for _, want := range []string{"", "postmaster@local.test", "relaytest@relaytest.invalid", "postmaster@[192.0.2.5]"} {
		if !senders[want] {
			t.Errorf("plain foreign RCPT never tried with sender <%s>", want)
		}
	}
}

func TestHelpers(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"mx.example.org", "example.org"},
		{"MX.Example.ORG.", "example.org"},
		{"example.org", "example.org"},
		{"a.b.c.example.org", "b.c.example.org"},
		{"localhost", ""},
		{"[127.0.0.1]", ""},
		{"Hello", ""},
		{"mx..org", ""},
		{"", ""},
	} {
		if got := domainOfHost(tt.in); got != tt.want {
			t.Errorf("domainOfHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"local.test", "LoCaL.tEsT"},
		{"a-b.c", "A-b.C"},
	} {
		if got := mixedCase(tt.in); got != tt.want {
			t.Errorf("mixedCase(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"127.0.0.1", "[127.0.0.1]"},
		{"::ffff:10.0.0.1", "[10.0.0.1]"},
		{"::1", "[IPv6:::1]"},
		{"fe80::1%eth0", "[IPv6:fe80::1]"},
	} {
		if got := literal(netip.MustParseAddr(tt.in)); got != tt.want {
			t.Errorf("literal(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := foreignLiteral(netip.MustParseAddr("192.0.2.1")); got == "[192.0.2.1]" {
		t.Errorf("foreign literal equals the target's address")
	}
}
