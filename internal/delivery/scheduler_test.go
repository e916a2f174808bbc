package delivery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/testutil"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/mamori-mail/mamori/internal/queue"
)

func TestDeliverViaRoute(t *testing.T) {
	r := startRemote(t, nil)
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"Dest.Test.": r.addr}
	s, logs := newTestScheduler(cfg, sp, nil, nil)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test", "carol@DEST.test"),
		ClientIP: "192.0.2.7", User: "alice@local.test"}, testBody)

	fin, enq := run(t, s, sp, 1)

	got := r.got()
	if len(got) != 1 {
		t.Fatalf("remote got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.from != "alice@local.test" || strings.Join(m.rcpts, ",") != "bob@dest.test,carol@DEST.test" {
		t.Errorf("envelope %q → %q", m.from, m.rcpts)
	}
	if m.body != testBody {
		t.Errorf("body %q", m.body)
	}
	if m.helo != "mamori.test" {
		t.Errorf("EHLO %q, want mamori.test", m.helo)
	}
	if m.size != int64(len(testBody)) {
		t.Errorf("SIZE=%d, want %d", m.size, len(testBody))
	}
	if m.tls {
		t.Error("TLS used but the remote offers none")
	}
	a := fin[0].a
	for _, rc := range a.Rcpts {
		if rc.Status != queue.RcptDelivered || !strings.HasPrefix(rc.Diag, "250 ") {
			t.Errorf("%s: %q %q", rc.Addr, rc.Status, rc.Diag)
		}
	}
	if !a.NextAttempt.IsZero() || a.LastError != "" {
		t.Errorf("attempt %+v", a)
	}
	if len(enq) != 0 {
		t.Errorf("%d messages enqueued", len(enq))
	}
	ev := logs.events(t, "delivered")
	if len(ev) != 2 {
		t.Fatalf("%d delivered events, want 2", len(ev))
	}
	for _, e := range ev {
		if e["queue_id"] != "M001" || e["client_ip"] != "192.0.2.7" || e["user"] != "alice@local.test" ||
			!strings.Contains(fmt.Sprint(e["relay"]), "127.0.0.1") || !strings.HasPrefix(fmt.Sprint(e["reply"]), "250") {
			t.Errorf("delivered event %v", e)
		}
	}
}

func TestDeliverViaMX(t *testing.T) {
	r := startRemote(t, nil)
	d, res := startDNS(t,
		"mx.test. 60 IN MX 10 dead.mx.test.",
		"mx.test. 60 IN MX 20 live.mx.test.",
		"dead.mx.test. 60 IN A 127.0.0.2", // nothing listens there
		"live.mx.test. 60 IN A 127.0.0.1",
		"implicit.test. 60 IN A 127.0.0.1",
		"nullmx.test. 60 IN MX 0 .",
		"nohost.test. 60 IN MX 10 missing.nohost.test.",
		"nohost.test. 60 IN TXT \"exists\"",
		"self.test. 60 IN MX 10 mamori.test.",
		"servfail.test. 60 IN MX 10 live.mx.test.",
	)
	d.SetRcode("servfail.test", dns.RcodeServerFailure)

	tests := []struct {
		domain     string
		status     queue.RcptStatus
		diagPrefix string
		relay      string
		dsn        bool
	}{
		{"mx.test", queue.RcptDelivered, "250 ", "live.mx.test[127.0.0.1]", false},
		{"implicit.test", queue.RcptDelivered, "250 ", "implicit.test[127.0.0.1]", false},
		{"nullmx.test", queue.RcptFailed, "5.1.10 ", "", true},
		{"nx.test", queue.RcptFailed, "5.1.2 ", "", true},
		{"nohost.test", queue.RcptFailed, "5.4.4 ", "", true},
		{"self.test", queue.RcptFailed, "5.4.6 ", "", true},
		{"servfail.test", queue.RcptPending, "4.4.3 ", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			sp := newSpool()
			cfg := testConfig()
			cfg.Port = r.port
			s, logs := newTestScheduler(cfg, sp, nil, res)
			rcpt := "user@" + tc.domain
			sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts(rcpt)}, testBody)
			before := len(r.got())

			fin, enq := run(t, s, sp, 1)

			rc := rcptStatus(t, fin[0].a, rcpt)
			if rc.Status != tc.status || !strings.HasPrefix(rc.Diag, tc.diagPrefix) {
				t.Errorf("status %q diag %q, want %q %q…", rc.Status, rc.Diag, tc.status, tc.diagPrefix)
			}
			delivered := len(r.got()) - before
			if (tc.status == queue.RcptDelivered) != (delivered == 1) {
				t.Errorf("remote received %d messages", delivered)
			}
			if tc.relay != "" {
				ev := logs.events(t, "delivered")
				if len(ev) != 1 || !strings.HasPrefix(fmt.Sprint(ev[0]["relay"]), tc.relay) {
					t.Errorf("delivered events %v, want relay %s", ev, tc.relay)
				}
			}
			if (len(enq) == 1) != tc.dsn {
				t.Errorf("%d DSNs enqueued, want dsn=%v", len(enq), tc.dsn)
			}
			if tc.status == queue.RcptPending {
				if fin[0].a.NextAttempt.IsZero() || fin[0].a.LastError == "" {
					t.Errorf("deferred attempt without retry time or error: %+v", fin[0].a)
				}
				if len(logs.events(t, "deferred")) != 1 {
					t.Error("no deferred event logged")
				}
			}
		})
	}
}

func TestPermanentRcptFailureAndDSN(t *testing.T) {
	r := startRemote(t, nil)
	r.rcptReply["bad@dest.test"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}

	tests := []struct {
		name   string
		origin queue.Origin
		from   string
		dsn    bool
		why    string
	}{
		{"submitted", queue.OriginSubmitted, "alice@local.test", true, "queued "},
		{"trusted", queue.OriginTrusted, "printer@local.test", true, "queued "},
		{"local", queue.OriginLocal, "root@local.test", true, "queued "},
		{"inbound: no backscatter", queue.OriginInbound, "someone@far.test", false, "suppressed: origin inbound"},
		{"null sender", queue.OriginSubmitted, "", false, "suppressed: null sender"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := newSpool()
			cfg := testConfig()
			cfg.Routes = map[string]string{"dest.test": r.addr}
			cfg.Postmaster = "postmaster@local.test"
			s, logs := newTestScheduler(cfg, sp, nil, nil)
			sp.add(queue.Meta{From: tc.from, Origin: tc.origin, Rcpts: rcpts("good@dest.test", "bad@dest.test"),
				Subject: "quarterly report"}, testBody)

			fin, enq := run(t, s, sp, 1)

			a := fin[0].a
			if g := rcptStatus(t, a, "good@dest.test"); g.Status != queue.RcptDelivered {
				t.Errorf("good: %+v", g)
			}
			b := rcptStatus(t, a, "bad@dest.test")
			if b.Status != queue.RcptFailed || b.Diag != "550 5.1.1 no such user" {
				t.Errorf("bad: %+v", b)
			}
			if !a.NextAttempt.IsZero() {
				t.Errorf("nothing pending but NextAttempt %v", a.NextAttempt)
			}
			ev := logs.events(t, "bounced")
			if len(ev) != 1 || ev[0]["rcpt"] != "bad@dest.test" || !strings.HasPrefix(fmt.Sprint(ev[0]["dsn"]), tc.why) {
				t.Errorf("bounced events %v", ev)
			}
			if !tc.dsn {
				if len(enq) != 0 {
					t.Errorf("DSN enqueued: %+v", enq[0].meta)
				}
				return
			}
			if len(enq) != 1 {
				t.Fatalf("%d DSNs enqueued, want 1", len(enq))
			}
			dm := enq[0].meta
			if dm.From != "" || dm.Origin != queue.OriginLocal || len(dm.Rcpts) != 1 || dm.Rcpts[0].Addr != tc.from {
				t.Errorf("DSN meta %+v", dm)
			}
			body := string(enq[0].body)
			for _, want := range []string{
				"From: Mail Delivery System <postmaster@local.test>",
				"To: <" + tc.from + ">",
				"report-type=delivery-status",
				"Reporting-MTA: dns; mamori.test",
				"Final-Recipient: rfc822; bad@dest.test",
				"Status: 5.1.1",
				"Diagnostic-Code: smtp; 550 5.1.1 no such user",
				"Subject: quarterly report",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("DSN lacks %q", want)
				}
			}
			if strings.Contains(body, "good@dest.test>:") || strings.Contains(body, "rfc822; good@") {
				t.Error("DSN lists the delivered recipient")
			}
		})
	}
}

func TestTemporaryFailureBacksOff(t *testing.T) {
	r := startRemote(t, nil)
	r.rcptReply["slow@dest.test"] = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	cfg.MinBackoff, cfg.MaxBackoff = time.Minute, time.Hour
	s, logs := newTestScheduler(cfg, sp, nil, nil)
	now := time.Now()
	s.now = func() time.Time { return now }
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("slow@dest.test", "ok@dest.test"), Attempts: 2}, testBody)

	fin, enq := run(t, s, sp, 1)

	a := fin[0].a
	slow := rcptStatus(t, a, "slow@dest.test")
	if slow.Status != queue.RcptPending || slow.Diag != "451 4.3.0 try later" {
		t.Errorf("slow: %+v", slow)
	}
	if ok := rcptStatus(t, a, "ok@dest.test"); ok.Status != queue.RcptDelivered {
		t.Errorf("ok: %+v", ok)
	}
	// Third attempt: 4 min minus at most 20% jitter.
	if d := a.NextAttempt.Sub(now); d < 192*time.Second || d > 4*time.Minute {
		t.Errorf("next attempt in %v, want 3m12s..4m", d)
	}
	if a.LastError != "451 4.3.0 try later" {
		t.Errorf("LastError %q", a.LastError)
	}
	if len(enq) != 0 {
		t.Error("DSN for a temporary failure")
	}
	if ev := logs.events(t, "deferred"); len(ev) != 1 || ev[0]["rcpt"] != "slow@dest.test" {
		t.Errorf("deferred events %v", ev)
	}
}

func TestLifetimeExpiry(t *testing.T) {
	r := startRemote(t, nil)
	r.rcptReply["slow@dest.test"] = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	now := time.Now()
	tests := []struct {
		name     string
		received time.Time
		attempts int
		status   queue.RcptStatus
		next     time.Time
	}{
		{"expired: bounce", now.Add(-6 * 24 * time.Hour), 40, queue.RcptFailed, time.Time{}},
		{"retry clamped to expiry", now.Add(-DefaultMaxLifetime + 30*time.Second), 40, queue.RcptPending, now.Add(30 * time.Second)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := newSpool()
			cfg := testConfig()
			cfg.Routes = map[string]string{"dest.test": r.addr}
			s, _ := newTestScheduler(cfg, sp, nil, nil)
			s.now = func() time.Time { return now }
			sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("slow@dest.test"), Received: tc.received, Attempts: tc.attempts}, testBody)

			fin, enq := run(t, s, sp, 1)

			rc := rcptStatus(t, fin[0].a, "slow@dest.test")
			if rc.Status != tc.status {
				t.Fatalf("status %q (%s), want %q", rc.Status, rc.Diag, tc.status)
			}
			if !fin[0].a.NextAttempt.Equal(tc.next) {
				t.Errorf("NextAttempt %v, want %v", fin[0].a.NextAttempt, tc.next)
			}
			if tc.status != queue.RcptFailed {
				return
			}
			if !strings.HasPrefix(rc.Diag, "4.4.7 message expired") || !strings.Contains(rc.Diag, "451 4.3.0 try later") {
				t.Errorf("diag %q", rc.Diag)
			}
			if len(enq) != 1 || !strings.Contains(string(enq[0].body), "Status: 4.4.7") {
				t.Errorf("want one DSN with Status 4.4.7, got %d", len(enq))
			}
		})
	}
}

func TestSTARTTLS(t *testing.T) {
	good := testutil.NewCert(t, "remote.test", "localhost", "127.0.0.1").Server
	broken := testutil.NewCert(t, "remote.test", "localhost", "127.0.0.1").Server
	broken.MaxVersion = tls.VersionTLS11 // we require 1.2: the handshake fails

	tests := []struct {
		name      string
		tls       *tls.Config
		verify    bool
		delivered bool
		wantTLS   bool
		conns     int
	}{
		{"opportunistic TLS used", good, false, true, true, 1},
		{"handshake failure falls back to plain", broken, false, true, false, 2},
		{"verify refuses self-signed", good, true, false, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startRemote(t, tc.tls)
			sp := newSpool()
			cfg := testConfig()
			cfg.Routes = map[string]string{"dest.test": r.addr}
			cfg.TLSVerify = tc.verify
			s, logs := newTestScheduler(cfg, sp, nil, nil)
			sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, testBody)

			fin, _ := run(t, s, sp, 1)

			got := r.got()
			rc := rcptStatus(t, fin[0].a, "bob@dest.test")
			if !tc.delivered {
				if len(got) != 0 || rc.Status != queue.RcptPending || !strings.Contains(rc.Diag, "STARTTLS") {
					t.Errorf("got %d messages, rcpt %+v", len(got), rc)
				}
				if _, _, mails := r.stats(); mails != 0 {
					t.Errorf("%d MAIL commands sent without verified TLS", mails)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("remote got %d messages", len(got))
			}
			if got[0].tls != tc.wantTLS {
				t.Errorf("remote saw TLS=%v, want %v", got[0].tls, tc.wantTLS)
			}
			if got[0].helo != "mamori.test" {
				t.Errorf("EHLO %q", got[0].helo)
			}
			if conns, _, _ := r.stats(); conns != tc.conns {
				t.Errorf("%d connections, want %d", conns, tc.conns)
			}
			if ev := logs.events(t, "delivered"); len(ev) != 1 || ev[0]["tls"] != tc.wantTLS {
				t.Errorf("delivered events %v", ev)
			}
		})
	}
}

func TestPerDomainConcurrency(t *testing.T) {
	r := startRemote(t, nil)
	// Each session waits (bounded) in MAIL until two sessions are open, so
	// the cap is actually reached; a missing cap would show more.
	r.mailHook = func() {
		for range 200 {
			r.mu.Lock()
			n := r.txns
			r.mu.Unlock()
			if n >= 2 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	cfg.PerDomain = 2
	cfg.Concurrency = 10
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	const n = 8
	for i := range n {
		sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts(fmt.Sprintf("u%d@dest.test", i))}, testBody)
	}

	fin, _ := run(t, s, sp, n)

	for _, f := range fin {
		if f.a.Rcpts[0].Status != queue.RcptDelivered {
			t.Errorf("%s: %+v", f.lease.meta.ID, f.a.Rcpts[0])
		}
	}
	if maxTxns := r.maxTransactions(); maxTxns != 2 {
		t.Errorf("at most %d concurrent sessions, want exactly the cap 2", maxTxns)
	}
	if k := s.perDest.size(); k != 0 {
		t.Errorf("%d per-destination semaphores left behind", k)
	}
}

func TestRevokedLeaseSendsNothing(t *testing.T) {
	r := startRemote(t, nil)
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	l := sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, testBody)
	l.revoked.Store(true)

	fin, enq := run(t, s, sp, 1)

	if conns, _, _ := r.stats(); conns != 0 {
		t.Errorf("%d connections for a revoked lease", conns)
	}
	if rc := fin[0].a.Rcpts[0]; rc.Status != queue.RcptPending || rc.Diag != "" {
		t.Errorf("rcpt changed: %+v", rc)
	}
	if len(enq) != 0 {
		t.Error("DSN for a revoked lease")
	}
}

func TestRevokedDuringSession(t *testing.T) {
	r := startRemote(t, nil)
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	rs := make([]string, 150)
	for i := range rs {
		rs[i] = fmt.Sprintf("u%d@dest.test", i)
	}
	var l *fakeLease
	var once sync.Once
	// Revoke while the first transaction is running: the second (rcpts
	// 100..149) must not start.
	r.mailHook = func() { once.Do(func() { l.revoked.Store(true) }) }
	l = sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts(rs...)}, testBody)

	fin, _ := run(t, s, sp, 1)

	if _, _, mails := r.stats(); mails != 1 {
		t.Errorf("%d transactions, want 1", mails)
	}
	pending := 0
	for _, rc := range fin[0].a.Rcpts {
		if rc.Status == queue.RcptPending {
			pending++
		}
	}
	if pending != 50 {
		t.Errorf("%d recipients pending, want 50", pending)
	}
}

func TestManyRecipientsSplitIntoTransactions(t *testing.T) {
	r := startRemote(t, nil)
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	rs := make([]string, 150)
	for i := range rs {
		rs[i] = fmt.Sprintf("u%d@dest.test", i)
	}
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts(rs...)}, testBody)

	fin, _ := run(t, s, sp, 1)

	got := r.got()
	if len(got) != 2 || len(got[0].rcpts) != 100 || len(got[1].rcpts) != 50 {
		t.Fatalf("transactions: %d", len(got))
	}
	if conns, _, _ := r.stats(); conns != 1 {
		t.Errorf("%d connections, want 1", conns)
	}
	for _, rc := range fin[0].a.Rcpts {
		if rc.Status != queue.RcptDelivered {
			t.Fatalf("%+v", rc)
		}
	}
}

func TestLocalAndRelayhost(t *testing.T) {
	relay := startRemote(t, nil)
	routed := startRemote(t, nil)
	local := &fakeLocal{
		domains: map[string]bool{"local.test": true},
		fail: map[string]error{
			"nobody@local.test": Permanent(errors.New("5.1.1 mailbox unavailable")),
			"full@local.test":   errors.New("disk full"),
		},
	}
	sp := newSpool()
	cfg := testConfig()
	cfg.Relayhost = relay.addr
	cfg.Routes = map[string]string{"*.routed.test": routed.addr}
	s, _ := newTestScheduler(cfg, sp, local, nil)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts(
		"bob@local.test", "nobody@local.test", "full@local.test", "x@far.example", "y@a.routed.test")}, testBody)

	fin, enq := run(t, s, sp, 1)

	a := fin[0].a
	want := map[string]struct {
		status queue.RcptStatus
		diag   string
	}{
		"bob@local.test":    {queue.RcptDelivered, "2.0.0"},
		"nobody@local.test": {queue.RcptFailed, "5.1.1 mailbox unavailable"},
		"full@local.test":   {queue.RcptPending, "4.2.0 disk full"},
		"x@far.example":     {queue.RcptDelivered, "250"},
		"y@a.routed.test":   {queue.RcptDelivered, "250"},
	}
	for addr, w := range want {
		rc := rcptStatus(t, a, addr)
		if rc.Status != w.status || !strings.HasPrefix(rc.Diag, w.diag) {
			t.Errorf("%s: %q %q, want %q %q", addr, rc.Status, rc.Diag, w.status, w.diag)
		}
	}
	if len(local.got) != 1 || local.got[0] != "bob@local.test:"+testBody {
		t.Errorf("local deliveries %q", local.got)
	}
	if g := relay.got(); len(g) != 1 || strings.Join(g[0].rcpts, ",") != "x@far.example" {
		t.Errorf("relayhost got %+v", g)
	}
	if g := routed.got(); len(g) != 1 || strings.Join(g[0].rcpts, ",") != "y@a.routed.test" {
		t.Errorf("route got %+v", g)
	}
	if len(enq) != 1 || !strings.Contains(string(enq[0].body), "Final-Recipient: rfc822; nobody@local.test") {
		t.Errorf("want one DSN for nobody@, got %d", len(enq))
	}
}

func TestSessionFailureTriesNextHostThenDefers(t *testing.T) {
	r := startRemote(t, nil)
	r.mailReply = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "greylisted"}
	_, res := startDNS(t,
		"grey.test. 60 IN MX 10 a.grey.test.",
		"grey.test. 60 IN MX 20 b.grey.test.",
		"a.grey.test. 60 IN A 127.0.0.1",
		"b.grey.test. 60 IN A 127.0.0.1",
	)
	sp := newSpool()
	cfg := testConfig()
	cfg.Port = r.port
	s, _ := newTestScheduler(cfg, sp, nil, res)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("u@grey.test")}, testBody)

	fin, _ := run(t, s, sp, 1)

	if conns, _, _ := r.stats(); conns != 2 {
		t.Errorf("%d connections, want one per MX host", conns)
	}
	rc := fin[0].a.Rcpts[0]
	if rc.Status != queue.RcptPending || rc.Diag != "421 4.7.0 greylisted" {
		t.Errorf("rcpt %+v", rc)
	}
}

func TestShutdownInterruptsSession(t *testing.T) {
	r := startRemote(t, nil)
	entered := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var once sync.Once
	r.mailHook = func() {
		once.Do(func() { close(entered) })
		<-release
	}
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	now := time.Now()
	s.now = func() time.Time { return now }
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, testBody)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("session never reached MAIL")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return while a session was blocked")
	}
	fin, _ := sp.results()
	if len(fin) != 1 {
		t.Fatalf("%d attempts finished, want 1", len(fin))
	}
	if rc := fin[0].a.Rcpts[0]; rc.Status != queue.RcptPending {
		t.Errorf("rcpt %+v", rc)
	}
	if !fin[0].a.NextAttempt.Equal(now) {
		t.Errorf("NextAttempt %v, want immediate retry %v", fin[0].a.NextAttempt, now)
	}
}

func TestUnreadableBodyDefers(t *testing.T) {
	r := startRemote(t, nil)
	sp := newSpool()
	sp.bodyErr = errors.New("segment gone")
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, testBody)

	fin, _ := run(t, s, sp, 1)

	if conns, _, _ := r.stats(); conns != 0 {
		t.Errorf("%d connections without a body", conns)
	}
	rc := fin[0].a.Rcpts[0]
	if rc.Status != queue.RcptPending || !strings.Contains(rc.Diag, "segment gone") || fin[0].a.NextAttempt.IsZero() {
		t.Errorf("attempt %+v", fin[0].a)
	}
}

func TestMessageTooBigForRemote(t *testing.T) {
	r := startRemote(t, nil) // SIZE 1 MiB
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": r.addr}
	s, _ := newTestScheduler(cfg, sp, nil, nil)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, testBody+strings.Repeat("x", 2<<20))

	fin, _ := run(t, s, sp, 1)

	if rc := fin[0].a.Rcpts[0]; rc.Status != queue.RcptFailed || !strings.HasPrefix(rc.Diag, "5.3.4") {
		t.Errorf("rcpt %+v", rc)
	}
	if _, _, mails := r.stats(); mails != 0 {
		t.Error("MAIL sent for an oversized message")
	}
}

// TestPausedHoldsOutboundOnly: while Paused says so, remote recipients are
// deferred without a connection, and local delivery goes on.
func TestPausedHoldsOutboundOnly(t *testing.T) {
	relay := startRemote(t, nil)
	local := &fakeLocal{domains: map[string]bool{"local.test": true}}
	sp := newSpool()
	cfg := testConfig()
	cfg.Relayhost = relay.addr
	cfg.Paused = func() bool { return true }
	s, _ := newTestScheduler(cfg, sp, local, nil)
	l := sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@local.test", "x@far.example")}, testBody)

	fin, _ := run(t, s, sp, 1)

	if n := l.sends.Load(); n != 1 {
		t.Errorf("BeginSend said yes %d times, want once (the local delivery; the paused remote sends nothing)", n)
	}
	a := fin[0].a
	if rc := rcptStatus(t, a, "bob@local.test"); rc.Status != queue.RcptDelivered {
		t.Errorf("local recipient %+v, want delivered", rc)
	}
	if rc := rcptStatus(t, a, "x@far.example"); rc.Status != queue.RcptPending || !strings.Contains(rc.Diag, "paused") {
		t.Errorf("remote recipient %+v, want pending with a pause diagnostic", rc)
	}
	if conns, _, _ := relay.stats(); conns != 0 {
		t.Errorf("%d connections to the relayhost while paused", conns)
	}
}
