package dnsbl

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSelfInterval is how often a SelfMonitor checks when given 0.
const DefaultSelfInterval = time.Hour

// SelfMonitor watches the server's own public sending IPs in the Checker's
// zones. When one of them gets listed, the caller is told (onChange) so it
// can alert the administrator and pause outbound delivery to foreign
// domains: a breach should not get the whole organisation blocked.
//
// Own checks bypass the Checker's cache (and its request sharing), so a
// delisting is noticed at the next check rather than an hour later. The
// resolver's own cache still applies, but it keeps answers for minutes at
// most.
type SelfMonitor struct {
	c        *Checker
	ips      []netip.Addr
	every    time.Duration
	onChange func(listed bool, res []Result)
	log      *slog.Logger

	listed atomic.Bool
	mu     sync.Mutex // serialises checks, so onChange sees each flip once and in order
}

// NewSelfMonitor returns a monitor of ips that checks every `every`
// (<= 0 means DefaultSelfInterval). onChange, which may be nil, is called
// when the listed status flips, with one Result per IP in the order of ips.
// It is called with the monitor's check lock held: it must not call
// CheckNow. log may be nil.
func NewSelfMonitor(c *Checker, ips []netip.Addr, every time.Duration, onChange func(listed bool, res []Result), log *slog.Logger) *SelfMonitor {
	if every <= 0 {
		every = DefaultSelfInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SelfMonitor{
		c:        c,
		ips:      slices.Clone(ips),
		every:    every,
		onChange: onChange,
		log:      log,
	}
}

// Run checks at once, then every interval, until ctx ends.
func (m *SelfMonitor) Run(ctx context.Context) {
	m.CheckNow(ctx)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.CheckNow(ctx)
		}
	}
}

// Listed reports whether one of our IPs was listed at the last check.
func (m *SelfMonitor) Listed() bool { return m.listed.Load() }

// CheckNow checks every IP now and returns the new status. The status is
// listed when any IP is listed in any zone. When nothing is listed but some
// zone could not be asked (timeout, SERVFAIL, error code), the previous
// status is kept: a flaky resolver must neither raise nor clear an alarm.
func (m *SelfMonitor) CheckNow(ctx context.Context) bool {
	m.mu.Lock()
	defer m.mu.Unlock()

	results := make([]Result, len(m.ips))
	completes := make([]bool, len(m.ips))
	var wg sync.WaitGroup
	for i, ip := range m.ips {
		wg.Go(func() {
			results[i], completes[i] = m.c.checkDirect(ctx, ip)
		})
	}
	wg.Wait()

	was := m.listed.Load()
	now := false
	uncertain := false
	for i, r := range results {
		if r.Listed {
			now = true
			m.log.Warn("dnsbl: own IP is listed", "ip", m.ips[i], "zone", r.Zone, "codes", r.Codes, "reason", r.Reason)
		}
		if !completes[i] {
			uncertain = true
		}
	}
	if !now && uncertain {
		if was {
			m.log.Warn("dnsbl: own IP check incomplete, keeping listed status")
		}
		return was
	}
	if now != was {
		m.listed.Store(now)
		m.log.Warn("dnsbl: own listing status changed", "listed", now)
		if m.onChange != nil {
			m.onChange(now, results)
		}
	}
	return now
}
