// Package relaytest is mamori's open-relay battery as a client library:
// it connects to any SMTP server and tries every known way of getting a
// foreign recipient accepted by a client that is neither authenticated nor
// trusted, and reports what the server answered to each.
//
// Why it exists: "never an open relay" is mamori's first promise, and a
// promise is only worth what can be checked from outside. `mamori relaytest
// HOST:PORT` checks mamori itself (design scenario S2) and equally a
// legacy Postfix, Sendmail or Exim that an administrator is replacing.
//
// Why no SMTP client library: the probes are deliberately malformed paths
// (`"user@foreign"`, `@local:user@foreign`, `foreign!user`) that a
// well-behaved client such as github.com/emersion/go-smtp would refuse to
// send or would re-quote. The package speaks SMTP itself over a plain
// net.Conn, with net/textproto for command writing and dot-stuffing, and a
// bounded reply reader so a hostile server cannot make it allocate without
// limit. No dependency outside the standard library.
//
// A probe is "relayed" when the server answers 2xx to a RCPT whose real
// destination is foreign (or, with Options.SendData, also accepts the
// message). Probes whose destination is local are controls: reported, never
// counted. Probes run over a few connections with RSET in between, reconnecting
// every few probes (servers drop clients after many errors) and retrying a
// probe once on a fresh connection when the old one broke.
package relaytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// Options configures Run.
type Options struct {
	Addr          string        // host:port
	LocalDomain   string        // a domain the target accepts mail for; "" → the domain of the greeting/EHLO host name
	LocalUser     string        // an existing mailbox at LocalDomain, default "postmaster"
	ForeignDomain string        // default "relaytest.invalid", a name that cannot exist (RFC 2606)
	HeloName      string        // default "relaytest.invalid"
	Timeout       time.Duration // per probe (and per connection set-up), default 10 s
	SendData      bool          // when a RCPT is accepted, also send DATA; default false: RCPT acceptance alone counts as relayed (then RSET)
	Logger        *slog.Logger  // optional; nil → no logging
	// LocalAddr is the IP to connect from ("" = chosen by the system). On
	// Linux any 127.x.y.z can be bound, which lets `mamori drill` probe a
	// server from a loopback address outside its trusted networks.
	LocalAddr string
}

// Probe is the outcome of one probe.
type Probe struct {
	Name      string `json:"name"`                 // e.g. "percent-hack"
	From      string `json:"from"`                 // reverse-path as sent inside MAIL FROM:<...>
	Rcpt      string `json:"rcpt"`                 // exactly as sent inside RCPT TO:<...>
	Control   bool   `json:"control,omitempty"`    // destination is local: never counted as relayed
	Stage     string `json:"stage,omitempty"`      // "MAIL" or "RCPT": the command Reply answers
	Reply     string `json:"reply"`                // the server's reply line(s) to RCPT (or to MAIL if that failed), lines joined by "\n"
	Code      int    `json:"code"`                 // reply code of Reply
	DataReply string `json:"data_reply,omitempty"` // with SendData: the final reply to DATA
	Relayed   bool   `json:"relayed"`              // the server accepted (2xx) a recipient whose real destination is foreign
	Err       string `json:"error,omitempty"`      // the probe could not be completed
}

// Report is the outcome of Run.
type Report struct {
	Target      string  `json:"target"`
	LocalDomain string  `json:"local_domain"`
	Probes      []Probe `json:"probes"`
	Relayed     int     `json:"relayed"` // number of probes with Relayed set
}

// ErrIncomplete is wrapped by Run's error when some probes could not be
// completed (connection refused, closed or timed out). The Report is still
// complete: each such probe carries Err, and its relay verdict is unknown.
var ErrIncomplete = errors.New("relaytest: some probes could not be completed")

const (
	defaultLocalUser = "postmaster"
	defaultForeign   = "relaytest.invalid"
	defaultTimeout   = 10 * time.Second

	// probesPerConn keeps each connection under common error limits
	// (Postfix: smtpd_soft_error_limit 10, smtpd_hard_error_limit 20).
	probesPerConn = 10
	// maxConsecutiveFailures stops the run when the target is clearly gone,
	// so an unreachable server costs a few timeouts, not one per probe.
	maxConsecutiveFailures = 3
)

// Run runs the whole battery against opt.Addr. It returns an error without
// probes when the target cannot be reached or the local domain cannot be
// determined; otherwise the Report lists every probe, and the error wraps
// ErrIncomplete (or the context's error) when some probes failed.
func Run(ctx context.Context, opt Options) (Report, error) {
	opt, err := withDefaults(opt)
	if err != nil {
		return Report{Target: opt.Addr}, err
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep := Report{Target: opt.Addr}

	sess, err := dial(ctx, opt)
	if err != nil {
		return rep, fmt.Errorf("relaytest: connecting to %s: %w", opt.Addr, err)
	}
	defer func() {
		if sess != nil {
			sess.quit()
		}
	}()

	tg := target{
		localDomain:   strings.TrimSuffix(opt.LocalDomain, "."),
		localUser:     opt.LocalUser,
		foreignDomain: opt.ForeignDomain,
		localLit:      literal(sess.remoteIP),
		foreignLit:    foreignLiteral(sess.remoteIP),
	}
	if tg.localDomain == "" {
		tg.localDomain = domainOfHost(sess.greetName)
		if tg.localDomain == "" {
			tg.localDomain = domainOfHost(sess.ehloName)
		}
		if tg.localDomain == "" {
			return rep, fmt.Errorf("relaytest: cannot derive a local domain from greeting %q or EHLO name %q; set LocalDomain",
				sess.greetName, sess.ehloName)
		}
	}
	rep.LocalDomain = tg.localDomain

	failed, consecutive := 0, 0
	for _, spec := range battery(tg) {
		p := Probe{Name: spec.name, From: spec.from, Rcpt: spec.rcpt, Control: spec.control}
		switch {
		case ctx.Err() != nil:
			p.Err = "not run: " + ctx.Err().Error()
		case consecutive >= maxConsecutiveFailures:
			p.Err = fmt.Sprintf("not run: %d probes in a row failed", consecutive)
		default:
			p = runProbe(ctx, &sess, opt, spec)
		}
		if p.Err != "" {
			failed++
			consecutive++
		} else {
			consecutive = 0
		}
		if p.Relayed {
			rep.Relayed++
		}
		log.Debug("relaytest probe", "target", opt.Addr, "probe", p.Name, "rcpt", p.Rcpt,
			"code", p.Code, "relayed", p.Relayed, "error", p.Err)
		rep.Probes = append(rep.Probes, p)
	}

	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("relaytest: %s: %w", opt.Addr, err)
	}
	if failed > 0 {
		return rep, fmt.Errorf("%w: %d of %d probes against %s", ErrIncomplete, failed, len(rep.Probes), opt.Addr)
	}
	return rep, nil
}

func withDefaults(opt Options) (Options, error) {
	if opt.LocalUser == "" {
		opt.LocalUser = defaultLocalUser
	}
	if opt.ForeignDomain == "" {
		opt.ForeignDomain = defaultForeign
	}
	if opt.HeloName == "" {
		opt.HeloName = defaultForeign
	}
	if opt.Timeout <= 0 {
		opt.Timeout = defaultTimeout
	}
	if opt.Addr == "" {
		return opt, errors.New("relaytest: no target address")
	}
	if _, _, err := net.SplitHostPort(opt.Addr); err != nil {
		return opt, fmt.Errorf("relaytest: target %q: %w", opt.Addr, err)
	}
	if opt.LocalAddr != "" {
		if _, err := netip.ParseAddr(opt.LocalAddr); err != nil {
			return opt, fmt.Errorf("relaytest: local address %q: %w", opt.LocalAddr, err)
		}
	}
	for name, v := range map[string]string{
		"local domain": opt.LocalDomain, "local user": opt.LocalUser,
		"foreign domain": opt.ForeignDomain, "HELO name": opt.HeloName,
	} {
		if strings.ContainsFunc(v, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("<>@", r)
		}) {
			return opt, fmt.Errorf("relaytest: %s %q contains a space, control character, '<', '>' or '@'", name, v)
		}
	}
	return opt, nil
}

// runProbe runs spec on *sessp, reconnecting as needed, and retries once on
// a fresh connection when the connection fails under it. *sessp is nil
// afterwards when the connection is no longer usable.
func runProbe(ctx context.Context, sessp **session, opt Options, spec probeSpec) Probe {
	p := Probe{Name: spec.name, From: spec.from, Rcpt: spec.rcpt, Control: spec.control}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if s := *sessp; s != nil && s.probes >= probesPerConn {
			s.quit()
			*sessp = nil
		}
		if *sessp == nil {
			s, err := dial(ctx, opt)
			if err != nil {
				lastErr = fmt.Errorf("connecting: %w", err)
				continue
			}
			*sessp = s
		}
		s := *sessp
		res, err := s.probe(ctx, opt, spec)
		if s.broken {
			s.close()
			*sessp = nil
		}
		if err != nil {
			lastErr = err
			continue
		}
		res.Name, res.From, res.Rcpt, res.Control = p.Name, p.From, p.Rcpt, p.Control
		return res
	}
	p.Err = lastErr.Error()
	return p
}

// WriteText writes one line per probe — ACCEPTED, refused, control-ok,
// control-refused or ERROR, then the probe name, the recipient and the
// reply — and a summary line. Server text is sanitised: multi-line replies
// are joined with " / " and control characters are escaped.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	relayProbes := 0
	for _, p := range r.Probes {
		if !p.Control {
			relayProbes++
		}
		verdict := "refused"
		switch {
		case p.Err != "":
			verdict = "ERROR"
		case p.Control && p.Code/100 == 2:
			verdict = "control-ok"
		case p.Control:
			verdict = "control-refused"
		case p.Relayed:
			verdict = "ACCEPTED"
		}
		detail := oneLine(p.Reply)
		if p.Stage == "MAIL" {
			detail = "MAIL refused: " + detail
		}
		if p.DataReply != "" {
			detail += " / DATA: " + oneLine(p.DataReply)
		}
		if p.Err != "" {
			detail = oneLine(p.Err)
		}
		if _, err := fmt.Fprintf(tw, "%s\t%s\t<%s>\t%s\n", verdict, p.Name, oneLine(p.Rcpt), detail); err != nil {
			return fmt.Errorf("relaytest: writing report: %w", err)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("relaytest: writing report: %w", err)
	}
	verdict := "no relay accepted"
	if r.Relayed > 0 {
		verdict = "OPEN RELAY"
	}
	if _, err := fmt.Fprintf(w, "%s: %d of %d relay probes accepted (local domain %s): %s\n",
		oneLine(r.Target), r.Relayed, relayProbes, oneLine(r.LocalDomain), verdict); err != nil {
		return fmt.Errorf("relaytest: writing report: %w", err)
	}
	return nil
}

// oneLine makes server-controlled text safe for a terminal, on one line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " / ")
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
