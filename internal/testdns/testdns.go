// Package testdns is a tiny in-process authoritative DNS server for tests
// and benchmarks.
//
// Why it exists: outbound delivery (MX selection, implicit MX, null MX,
// SERVFAIL handling) and, later, DNSBL/SPF checks must be tested against real
// DNS wire behaviour — NXDOMAIN versus "no data", truncation and TCP retry,
// slow answers — without touching the network or the host's resolver. The
// server listens on UDP and TCP on the same loopback port, so a resolver
// pointed at Server.Addr behaves exactly as it would against a real name
// server.
//
// It uses github.com/miekg/dns for the wire format and the server loop: the
// same library the production resolver uses, and the only maintained Go DNS
// library that exposes a server.
package testdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCNAMEChain bounds how many CNAMEs the server follows inside its own zone
// when answering, so a CNAME loop in a test zone cannot hang a query.
const maxCNAMEChain = 8

// Server is a running authoritative server for one in-memory zone.
//
// Names are matched case-insensitively. A name with no records at all is
// answered NXDOMAIN; a name with records but none of the asked type is
// answered NOERROR with an empty answer section ("no data").
type Server struct {
	// Addr is "127.0.0.1:port"; the same port serves UDP and TCP.
	Addr string

	udp, tcp *dns.Server
	closed   chan struct{}
	once     sync.Once

	mu      sync.Mutex
	rrs     map[string][]dns.RR // lower-case FQDN → records
	delays  map[string]time.Duration
	rcodes  map[string]int
	queries map[string]int // "udp"/"tcp" → count
}

// Start starts a server answering from zone. The map keys are only a
// convenience for grouping: every record is filed under its own owner name
// (rr.Header().Name). zone may be nil; records can be added later with Add.
func Start(zone map[string][]dns.RR) (*Server, error) {
	s := &Server{
		closed:  make(chan struct{}),
		rrs:     make(map[string][]dns.RR),
		delays:  make(map[string]time.Duration),
		rcodes:  make(map[string]int),
		queries: make(map[string]int),
	}
	for _, rrs := range zone {
		for _, rr := range rrs {
			if rr == nil {
				continue
			}
			s.addRR(rr)
		}
	}

	pc, ln, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()

	handler := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: handler}
	s.tcp = &dns.Server{Listener: ln, Handler: handler}

	if err := startServer(s.udp); err != nil {
		pc.Close()
		ln.Close()
		return nil, fmt.Errorf("testdns: start udp: %w", err)
	}
	if err := startServer(s.tcp); err != nil {
		_ = s.udp.Shutdown()
		ln.Close()
		return nil, fmt.Errorf("testdns: start tcp: %w", err)
	}
	return s, nil
}

// listenPair opens a UDP socket on a free loopback port and a TCP listener
// on the same port, retrying a bounded number of times when another process
// already holds that TCP port.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("testdns: listen udp: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("testdns: no port free for both udp and tcp: %w", lastErr)
}

// startServer runs srv in the background and waits until it is serving, so a
// later Shutdown cannot race with the start-up.
func startServer(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		if err == nil {
			err = errors.New("server stopped during start-up")
		}
		return err
	}
}

// Add parses one record in zone-file syntax and adds it, for example
// s.Add("example.test. 60 IN MX 10 mx.example.test.").
func (s *Server) Add(rr string) error {
	r, err := dns.NewRR(rr)
	if err != nil {
		return fmt.Errorf("testdns: parse %q: %w", rr, err)
	}
	if r == nil {
		return fmt.Errorf("testdns: parse %q: no record", rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addRR(r)
	return nil
}

// addRR files rr under its owner name. The caller holds s.mu (or is Start,
// before the server runs).
func (s *Server) addRR(rr dns.RR) {
	name := canonical(rr.Header().Name)
	s.rrs[name] = append(s.rrs[name], rr)
}

// Remove deletes every record of name, which then answers NXDOMAIN.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rrs, canonical(name))
}

// SetDelay makes every answer for name wait d before it is sent (to simulate
// a slow or unreachable server). d <= 0 removes the delay.
func (s *Server) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.delays, canonical(name))
		return
	}
	s.delays[canonical(name)] = d
}

// SetRcode makes every query for name answer with rcode (dns.RcodeServerFailure,
// dns.RcodeRefused, …) and no records. dns.RcodeSuccess removes the override.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, canonical(name))
		return
	}
	s.rcodes[canonical(name)] = rcode
}

// Queries returns how many queries arrived over network ("udp" or "tcp").
func (s *Server) Queries(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[network]
}

// Close stops both listeners and releases delayed handlers.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
		if err != nil {
			err = fmt.Errorf("testdns: close: %w", err)
		}
	})
	return err
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := "tcp"
	if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
		network = "udp"
	}

	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true

	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.queries[network]++
	delay := s.delays[name]
	rcode, hasRcode := s.rcodes[name]
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.closed:
			t.Stop()
			return
		}
	}

	if hasRcode {
		resp.Rcode = rcode
	} else {
		s.answer(resp, name, q.Qtype)
	}

	if network == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			resp.SetEdns0(opt.UDPSize(), false)
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// answer fills resp for name/qtype from the zone, following CNAMEs that stay
// inside the zone.
func (s *Server) answer(resp *dns.Msg, name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if _, ok := s.rrs[name]; !ok {
		resp.Rcode = dns.RcodeNameError
		return
	}
	for range maxCNAMEChain {
		var cname *dns.CNAME
		found := false
		for _, rr := range s.rrs[name] {
			switch {
			case qtype == dns.TypeANY || rr.Header().Rrtype == qtype:
				resp.Answer = append(resp.Answer, dns.Copy(rr))
				found = true
			case rr.Header().Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if found || cname == nil {
			return
		}
		resp.Answer = append(resp.Answer, dns.Copy(cname))
		name = canonical(cname.Target)
		if _, ok := s.rrs[name]; !ok {
			return
		}
	}
}

func canonical(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}
