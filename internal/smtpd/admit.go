package smtpd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/mamori-mail/mamori/internal/admit"
)

// admission is the connection-time defence of one SMTP listener: the
// guard's bans and connection budgets (internal/admit, shared with IMAP
// and POP3), then, on port 25 for untrusted clients, DNS blocklists and
// the pre-greeting test.
func (s *Server) admission(kind Kind) admit.Config {
	ac := admit.Config{
		Name:        kind.String(),
		Trusted:     s.isTrusted,
		SessionTime: func() time.Duration { return s.conf().MaxSessionTime },
		Log:         s.log,
		Metrics:     s.conf().Metrics,
		Refuse: func(w io.Writer, r admit.Refusal) {
			fmt.Fprintf(w, "%d %d.%d.%d %s\r\n", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
		},
	}
	if s.conf().Guard != nil {
		ac.Guard = s.conf().Guard
	}
	if kind == KindSubmissions {
		ac.TLS = s.conf().TLS
	}
	if kind == KindMX {
		ac.Check = s.checkMX
	}
	return ac
}

// checkMX runs the port-25 checks for untrusted clients: DNS blocklists
// and the pre-greeting test.
func (s *Server) checkMX(c net.Conn, ip netip.Addr, trusted bool) (*admit.Refusal, bool) {
	if trusted {
		return nil, false
	}
	if s.conf().DNSBL != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		zone, reason, listed := s.conf().DNSBL.Listed(ctx, ip)
		cancel()
		if listed {
			text := fmt.Sprintf("Service unavailable; client [%s] blocked using %s", ip, zone)
			if reason != "" {
				text += "; " + reason
			}
			return &admit.Refusal{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: text, Rule: "dnsbl"}, false
		}
	}
	if d := s.conf().PregreetDelay; d > 0 && !s.pregreetPassed(ip) {
		_ = c.SetReadDeadline(time.Now().Add(d))
		var b [1]byte
		n, err := c.Read(b[:])
		_ = c.SetReadDeadline(time.Time{})
		switch {
		case n > 0:
			return &admit.Refusal{Code: 554, Enhanced: [3]int{5, 5, 1}, Text: "Protocol error: you talked before my greeting", Rule: "pregreet"}, false
		case err != nil && !admit.IsTimeout(err):
			return nil, true // the client left
		}
		s.markPregreetPassed(ip)
	}
	return nil, false
}

// pregreetCacheMax bounds the memory of clients that passed the test.
const pregreetCacheMax = 100000

func (s *Server) pregreetPassed(ip netip.Addr) bool {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	t, ok := s.pgPassed[ip]
	return ok && time.Since(t) < 24*time.Hour
}

func (s *Server) markPregreetPassed(ip netip.Addr) {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	if s.pgPassed == nil || len(s.pgPassed) >= pregreetCacheMax {
		s.pgPassed = make(map[netip.Addr]time.Time)
	}
	s.pgPassed[ip] = time.Now()
}
