package delivery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/queue"
)

func TestBuildDSN(t *testing.T) {
	received := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	now := received.Add(2 * time.Hour)
	m := queue.Meta{ID: "Q123", From: "alice@local.test", Received: received, Subject: "Bericht für März"}
	failed := []queue.Rcpt{
		{Addr: "bad@dest.test", Status: queue.RcptFailed, Diag: "550 5.1.1 no such user"},
		{Addr: "gone@nx.test", Status: queue.RcptFailed, Diag: "5.1.2 domain nx.test does not exist"},
		{Addr: "old@slow.test", Status: queue.RcptFailed, Diag: "4.4.7 message expired after 120h0m0s in the queue"},
		{Addr: "odd@x.test", Status: queue.RcptFailed, Diag: "weird\r\nInjected: header"},
	}
	header := []byte("From: alice@local.test\nSubject: report\n")

	raw := BuildDSN("mx.local.test", m, failed, header, now)

	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("bare LF in DSN")
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	hdrWant := map[string]string{
		"From":           "Mail Delivery System <postmaster@mx.local.test>",
		"To":             "<alice@local.test>",
		"Auto-Submitted": "auto-replied",
		"Date":           now.Format(time.RFC1123Z),
	}
	for k, v := range hdrWant {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}

	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		types = append(types, p.Header.Get("Content-Type"))
		parts = append(parts, b)
	}
	wantTypes := []string{"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"}
	if strings.Join(types, "|") != strings.Join(wantTypes, "|") {
		t.Fatalf("parts %q, want %q", types, wantTypes)
	}
	if !strings.Contains(string(parts[0]), "<bad@dest.test>: 550 5.1.1 no such user") ||
		!strings.Contains(string(parts[0]), "Subject: Bericht f?r M?rz") {
		t.Errorf("human part:\n%s", parts[0])
	}

	// The delivery-status body is header-like groups separated by blank lines.
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(parts[1])))
	perMsg, err := tr.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if perMsg.Get("Reporting-MTA") != "dns; mx.local.test" || perMsg.Get("Arrival-Date") != received.Format(time.RFC1123Z) {
		t.Errorf("per-message fields %v", perMsg)
	}
	wantRcpts := []struct{ rcpt, status, diag string }{
		{"rfc822; bad@dest.test", "5.1.1", "smtp; 550 5.1.1 no such user"},
		{"rfc822; gone@nx.test", "5.1.2", "X-mamori; 5.1.2 domain nx.test does not exist"},
		{"rfc822; old@slow.test", "4.4.7", "X-mamori; 4.4.7 message expired after 120h0m0s in the queue"},
		{"rfc822; odd@x.test", "5.0.0", "X-mamori; weird Injected: header"},
	}
	for _, w := range wantRcpts {
		h, err := tr.ReadMIMEHeader()
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if h.Get("Final-Recipient") != w.rcpt || h.Get("Action") != "failed" || h.Get("Status") != w.status ||
			h.Get("Diagnostic-Code") != w.diag || h.Get("Last-Attempt-Date") == "" {
			t.Errorf("recipient group %v, want %+v", h, w)
		}
	}
	if string(parts[2]) != "From: alice@local.test\r\nSubject: report\r\n" {
		t.Errorf("original header part %q", parts[2])
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		diag string
		want string
		ok   bool
	}{
		{"550 5.1.1 no such user", "5.1.1", true},
		{"550 no such user", "5.0.0", true},
		{"451 4.7.1 greylisted", "4.7.1", true},
		{"4.4.7 expired", "4.4.7", true},
		{"5.1.10 null MX", "5.1.10", true},
		{"250 2.0.0 ok", "2.0.0", true},
		{"disk full", "", false},
		{"", "", false},
		{"5500 x", "", false},
	}
	for _, tc := range tests {
		got, ok := statusOf(tc.diag)
		if got != tc.want || ok != tc.ok {
			t.Errorf("statusOf(%q) = %q, %v; want %q, %v", tc.diag, got, ok, tc.want, tc.ok)
		}
	}
	if got := dsnStatus("disk full"); got != "5.0.0" {
		t.Errorf("dsnStatus fallback %q", got)
	}
}

func TestHeaderOf(t *testing.T) {
	long := strings.Repeat("X-Long: "+strings.Repeat("a", 100)+"\r\n", 1000)
	tests := []struct {
		name, body, want string
	}{
		{"crlf", "A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore", "A: 1\r\nB: 2\r\n"},
		{"lf", "A: 1\nB: 2\n\nbody", "A: 1\nB: 2\n"},
		{"no body", "A: 1\r\n", "A: 1\r\n"},
	}
	for _, tc := range tests {
		if got := string(headerOf([]byte(tc.body))); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	h := headerOf([]byte(long + "\r\nbody"))
	if len(h) > maxOriginalHeader || !bytes.HasSuffix(h, []byte("\r\n")) {
		t.Errorf("long header: %d bytes, ends %q", len(h), h[len(h)-2:])
	}
}

func TestBackoff(t *testing.T) {
	s := NewScheduler(Config{MinBackoff: time.Minute, MaxBackoff: time.Hour}, nil, nil, nil, nil)
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, time.Minute, time.Minute},
		{2, 96 * time.Second, 2 * time.Minute},
		{3, 192 * time.Second, 4 * time.Minute},
		{7, 48 * time.Minute, time.Hour},
		{8, 48 * time.Minute, time.Hour},
		{1000, 48 * time.Minute, time.Hour},
	}
	for _, tc := range tests {
		for range 50 {
			if d := s.backoff(tc.attempt); d < tc.min || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want %v..%v", tc.attempt, d, tc.min, tc.max)
			}
		}
	}
}

func TestRoute(t *testing.T) {
	s := NewScheduler(Config{
		Port:      2525,
		Routes:    map[string]string{"Exact.Test": "10.0.0.1:26", "routed.test": "10.0.0.9:25", "*.wild.test": "relay.wild.test", "*.deep.wild.test": "[2001:db8::1]:27", "bad.test": "host:port"},
		Relayhost: "smarthost.test:587",
	}, nil, &fakeLocal{domains: map[string]bool{"local.test": true, "routed.test": true, "sub.wild.test": true}}, nil, nil)

	tests := []struct {
		addr    string
		kind    destKind
		key     string
		wantErr string
	}{
		{"u@exact.test", destHost, "host:10.0.0.1:26", ""},
		{"u@EXACT.TEST.", destHost, "host:10.0.0.1:26", ""},
		{"u@a.wild.test", destHost, "host:relay.wild.test:2525", ""},
		{"u@x.deep.wild.test", destHost, "host:[2001:db8::1]:27", ""},
		{"u@wild.test", destHost, "host:smarthost.test:587", ""}, // wildcard is subdomains only
		{"u@local.test", destLocal, "local", ""},
		{"u@routed.test", destHost, "host:10.0.0.9:25", ""}, // a local domain routed by name (cluster)
		{"u@sub.wild.test", destLocal, "local", ""},         // a wildcard route never takes a local domain
		{"u@[192.0.2.5]", destHost, "host:192.0.2.5:2525", ""},
		{"u@[IPv6:2001:db8::5]", destHost, "host:[2001:db8::5]:2525", ""},
		{"nodomain", 0, "", "5.1.3"},
		{"u@", 0, "", "5.1.3"},
		{"u@[not-an-ip]", 0, "", "5.1.3"},
		{"u@bad.test", 0, "", "4.3.5"},
	}
	for _, tc := range tests {
		d, err := s.route(tc.addr)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("route(%q) err %v, want %s…", tc.addr, err, tc.wantErr)
			}
			continue
		}
		if err != nil || d.kind != tc.kind || d.key != tc.key {
			t.Errorf("route(%q) = %+v, %v; want kind %d key %s", tc.addr, d, err, tc.kind, tc.key)
		}
	}

	noRelay := NewScheduler(Config{}, nil, nil, nil, nil)
	if d, err := noRelay.route("u@Far.Example"); err != nil || d.kind != destMX || d.domain != "far.example" {
		t.Errorf("MX route %+v, %v", d, err)
	}
}

func TestKeyedSem(t *testing.T) {
	k := newKeyedSem(2)
	ctx := context.Background()
	r1, _ := k.acquire(ctx, "a")
	r2, _ := k.acquire(ctx, "a")
	rb, err := k.acquire(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := k.acquire(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third acquire of a: %v, want blocked until deadline", err)
	}
	r1()
	r3, err := k.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []func(){r2, r3, rb} {
		r()
	}
	if n := k.size(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("mailbox full")
	p := Permanent(fmt.Errorf("deliver: %w", base))
	if !IsPermanent(p) || !errors.Is(p, ErrPermanent) || !errors.Is(p, base) {
		t.Errorf("Permanent lost its marks: %v", p)
	}
	if p.Error() != "deliver: mailbox full" {
		t.Errorf("Error() = %q", p.Error())
	}
	if IsPermanent(base) || Permanent(nil) != nil {
		t.Error("plain error or nil marked permanent")
	}
	if !IsPermanent(fmt.Errorf("mailbox: %w", ErrPermanent)) {
		t.Error("wrapped ErrPermanent not permanent")
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Hostname: "mx.test.", MinBackoff: 2 * time.Hour}.withDefaults()
	if c.Hostname != "mx.test" || c.Port != 25 || c.Concurrency != 20 || c.PerDomain != 5 ||
		c.MaxLifetime != 5*24*time.Hour || c.MaxBackoff != 2*time.Hour ||
		c.CommandTimeout != 5*time.Minute || c.DataTimeout != 10*time.Minute || c.Postmaster != "postmaster@mx.test" {
		t.Errorf("defaults %+v", c)
	}
}
