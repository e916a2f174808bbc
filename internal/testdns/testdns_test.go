package testdns

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func startT(t *testing.T, records ...string) *Server {
	t.Helper()
	s, err := Start(nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, rr := range records {
		if err := s.Add(rr); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	return s
}

func ask(t *testing.T, s *Server, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(4096, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("exchange %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

func TestAnswers(t *testing.T) {
	s := startT(t,
		"example.test. 60 IN MX 10 mx.example.test.",
		"mx.example.test. 60 IN A 127.0.0.1",
		"Alias.Example.Test. 60 IN CNAME mx.example.test.",
		"loop1.example.test. 60 IN CNAME loop2.example.test.",
		"loop2.example.test. 60 IN CNAME loop1.example.test.",
	)
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answers   int
		lastType  uint16
		authority bool
	}{
		{"known name and type", "example.test", dns.TypeMX, dns.RcodeSuccess, 1, dns.TypeMX, true},
		{"case-insensitive", "EXAMPLE.test", dns.TypeMX, dns.RcodeSuccess, 1, dns.TypeMX, true},
		{"known name, no data", "example.test", dns.TypeA, dns.RcodeSuccess, 0, 0, true},
		{"unknown name", "nope.example.test", dns.TypeA, dns.RcodeNameError, 0, 0, true},
		{"cname followed", "alias.example.test", dns.TypeA, dns.RcodeSuccess, 2, dns.TypeA, true},
		{"cname asked directly", "alias.example.test", dns.TypeCNAME, dns.RcodeSuccess, 1, dns.TypeCNAME, true},
		{"cname loop bounded", "loop1.example.test", dns.TypeA, dns.RcodeSuccess, maxCNAMEChain, dns.TypeCNAME, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				resp := ask(t, s, network, tc.qname, tc.qtype, false)
				if resp.Rcode != tc.rcode {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if len(resp.Answer) != tc.answers {
					t.Fatalf("%s: %d answers, want %d: %v", network, len(resp.Answer), tc.answers, resp.Answer)
				}
				if tc.answers > 0 && resp.Answer[len(resp.Answer)-1].Header().Rrtype != tc.lastType {
					t.Errorf("%s: last answer %v, want type %s", network, resp.Answer[len(resp.Answer)-1], dns.TypeToString[tc.lastType])
				}
				if !resp.Authoritative {
					t.Errorf("%s: answer not authoritative", network)
				}
			}
		})
	}
}

func TestStartWithZoneAndSamePort(t *testing.T) {
	rr, err := dns.NewRR("z.test. 30 IN TXT \"hello\"")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(map[string][]dns.RR{"ignored-key": {rr}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr %q: want 127.0.0.1:port (%v)", s.Addr, err)
	}
	for _, network := range []string{"udp", "tcp"} {
		resp := ask(t, s, network, "z.test", dns.TypeTXT, false)
		if len(resp.Answer) != 1 || resp.Answer[0].(*dns.TXT).Txt[0] != "hello" {
			t.Errorf("%s: answer %v", network, resp.Answer)
		}
		if got := s.Queries(network); got != 1 {
			t.Errorf("Queries(%s) = %d, want 1", network, got)
		}
	}
}

func TestAddRejectsGarbage(t *testing.T) {
	s := startT(t)
	for _, rr := range []string{"", "not a record", "x.test. IN MX ten mx.test."} {
		if err := s.Add(rr); err == nil {
			t.Errorf("Add(%q) accepted", rr)
		}
	}
}

func TestRcodeOverrideAndRemove(t *testing.T) {
	s := startT(t, "fail.test. 60 IN A 192.0.2.1")
	s.SetRcode("FAIL.test", dns.RcodeServerFailure)
	if resp := ask(t, s, "udp", "fail.test", dns.TypeA, false); resp.Rcode != dns.RcodeServerFailure || len(resp.Answer) != 0 {
		t.Errorf("override: rcode %s, %d answers", dns.RcodeToString[resp.Rcode], len(resp.Answer))
	}
	s.SetRcode("fail.test", dns.RcodeSuccess)
	if resp := ask(t, s, "udp", "fail.test", dns.TypeA, false); resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("cleared: rcode %s, %d answers", dns.RcodeToString[resp.Rcode], len(resp.Answer))
	}
	s.Remove("fail.test.")
	if resp := ask(t, s, "udp", "fail.test", dns.TypeA, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("removed: rcode %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
}

func TestTruncationOverUDP(t *testing.T) {
	s := startT(t)
	for i := range 40 {
		if err := s.Add(fmt.Sprintf("big.test. 60 IN TXT \"%03d-%s\"", i, strings.Repeat("x", 150))); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		network   string
		edns      bool
		truncated bool
		maxSize   int
	}{
		{"udp", false, true, dns.MinMsgSize},
		{"udp", true, true, 4096},
		{"tcp", false, false, dns.MaxMsgSize},
	}
	for _, tc := range tests {
		resp := ask(t, s, tc.network, "big.test", dns.TypeTXT, tc.edns)
		if resp.Truncated != tc.truncated {
			t.Errorf("%s edns=%v: truncated=%v, want %v", tc.network, tc.edns, resp.Truncated, tc.truncated)
		}
		resp.Compress = true // the server compressed what it sent
		if resp.Len() > tc.maxSize {
			t.Errorf("%s edns=%v: %d bytes > %d", tc.network, tc.edns, resp.Len(), tc.maxSize)
		}
		if !tc.truncated && len(resp.Answer) != 40 {
			t.Errorf("%s: %d answers, want 40", tc.network, len(resp.Answer))
		}
	}
}

func TestDelay(t *testing.T) {
	s := startT(t, "slow.test. 60 IN A 192.0.2.1", "fast.test. 60 IN A 192.0.2.2")
	s.SetDelay("slow.test", 5*time.Second)

	m := new(dns.Msg)
	m.SetQuestion("slow.test.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	if _, _, err := c.Exchange(m, s.Addr); err == nil {
		t.Error("delayed answer arrived before the client timeout")
	}
	// Other names are not delayed.
	if resp := ask(t, s, "udp", "fast.test", dns.TypeA, false); len(resp.Answer) != 1 {
		t.Errorf("fast.test: %v", resp.Answer)
	}
	s.SetDelay("slow.test", 0)
	if resp := ask(t, s, "udp", "slow.test", dns.TypeA, false); len(resp.Answer) != 1 {
		t.Errorf("slow.test after clearing delay: %v", resp.Answer)
	}
}

func TestCloseIdempotentAndReleasesDelayed(t *testing.T) {
	s, err := Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("d.test. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	s.SetDelay("d.test", time.Hour)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("d.test.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 3 * time.Second}
		_, _, _ = c.Exchange(m, s.Addr)
	}()
	// Wait (bounded) until the delayed query is inside the handler.
	for i := 0; i < 200 && s.Queries("tcp") == 0; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a delayed handler")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
