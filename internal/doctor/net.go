package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/dnsbl"
	"github.com/mamori-mail/mamori/internal/drill"
	"github.com/mamori-mail/mamori/internal/relaytest"
)

// maxGreeting bounds how much of a greeting line is read.
const maxGreeting = 512

// listener is one configured [listen] address and the protocol it speaks.
type listener struct {
	key       string // the [listen] key
	addr      string
	proto     string // "smtp", "imap", "pop3", "http"
	implicitT bool   // TLS from the first byte
}

func (d *doctor) listeners() []listener {
	l := d.cfg.Listen
	all := []listener{
		{"smtp", l.SMTP, "smtp", false},
		{"submission", l.Submission, "smtp", false},
		{"submissions", l.Submissions, "smtp", true},
		{"imap", l.IMAP, "imap", false},
		{"imaps", l.IMAPS, "imap", true},
		{"pop3", l.POP3, "pop3", false},
		{"pop3s", l.POP3S, "pop3", true},
		{"admin", l.Admin, "http", d.cfg.Admin.TLS},
	}
	var out []listener
	for _, x := range all {
		if x.addr != "" {
			out = append(out, x)
		}
	}
	return out
}

// dialAddr is where to connect to reach a listener bound to addr: a
// wildcard address is reached on loopback.
func dialAddr(addr string) (string, error) {
	la, err := config.ParseListenAddr(addr)
	if err != nil {
		return "", err
	}
	port := strconv.Itoa(int(la.Port))
	switch {
	case la.Name != "":
		return net.JoinHostPort(la.Name, port), nil
	case !la.Addr.IsValid() || la.Addr.Is4() && la.Addr.IsUnspecified():
		return net.JoinHostPort("127.0.0.1", port), nil
	case la.Addr.IsUnspecified():
		return net.JoinHostPort("::1", port), nil
	}
	return net.JoinHostPort(la.Addr.String(), port), nil
}

// checkListeners connects to each listener and reads its greeting. When
// none accepts a connection the server is taken to be stopped: every
// listener is skipped (not failed), and so are the checks that need it.
func (d *doctor) checkListeners(ctx context.Context) []Check {
	ls := d.listeners()
	type result struct {
		greeting string
		err      error
	}
	results := make([]result, len(ls))
	for i, l := range ls {
		results[i].greeting, results[i].err = d.probeListener(ctx, l)
	}
	anyUp := false
	for _, r := range results {
		if !isRefused(r.err) {
			anyUp = true
		}
	}
	d.serverUp = anyUp
	close(d.up)

	var out []Check
	for i, l := range ls {
		c := Check{Name: CheckListeners, Subject: l.key + " " + l.addr}
		r := results[i]
		switch {
		case !anyUp:
			c.Status, c.Detail = StatusSkip, "the server is not running (no listener answers)"
			c.Fix = "mamori serve --config " + d.cfg.Path
		case r.err != nil:
			c.Status, c.Detail = StatusFail, r.err.Error()
		default:
			c.Status, c.Detail = StatusOK, "greeting "+strconv.Quote(r.greeting)
		}
		out = append(out, c)
	}
	return out
}

func isRefused(err error) bool {
	return err != nil && errors.Is(err, syscall.ECONNREFUSED)
}

// probeListener connects to l, checks its greeting (or, for HTTP, the
// status line of an answer) and says goodbye.
func (d *doctor) probeListener(ctx context.Context, l listener) (string, error) {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	addr, err := dialAddr(l.addr)
	if err != nil {
		return "", err
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if l.implicitT {
		// Only the protocol is checked here; the certificate check judges
		// the certificate.
		tc := tls.Client(conn, &tls.Config{ServerName: d.cfg.Hostname, InsecureSkipVerify: true}) // #nosec G402 -- see above
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	want, quit := "", ""
	switch l.proto {
	case "smtp":
		want, quit = "220", "QUIT\r\n"
	case "imap":
		want, quit = "* OK", "a LOGOUT\r\n"
	case "pop3":
		want, quit = "+OK", "QUIT\r\n"
	case "http":
		want = "HTTP/1."
		// Host is the address dialled: the admin listener refuses other
		// names (DNS rebinding).
		if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			return "", fmt.Errorf("send request: %w", err)
		}
	}
	line, err := readLine(conn)
	if err != nil {
		return "", fmt.Errorf("no greeting: %w", err)
	}
	if !strings.HasPrefix(line, want) {
		return line, fmt.Errorf("greeting %q, want %q", line, want+"…")
	}
	if quit != "" {
		io.WriteString(conn, quit)
	}
	return line, nil
}

// readLine reads one line of at most maxGreeting bytes, without its end.
func readLine(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxGreeting), maxGreeting)
	line, err := br.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// checkRelay runs the open-relay battery (as `mamori relaytest` does)
// against our own SMTP listener, from an address outside the trusted
// networks.
func (d *doctor) checkRelay(ctx context.Context) []Check {
	c := Check{Name: CheckRelay, Subject: d.cfg.Listen.SMTP}
	if d.cfg.Listen.SMTP == "" {
		c.Status, c.Detail, c.Subject = StatusSkip, "no [listen] smtp", "-"
		return []Check{c}
	}
	select {
	case <-d.up:
	case <-ctx.Done():
		c.Status, c.Detail = StatusSkip, "out of time"
		return []Check{c}
	}
	if !d.serverUp {
		c.Status, c.Detail = StatusSkip, "the server is not running"
		return []Check{c}
	}
	addr, err := dialAddr(d.cfg.Listen.SMTP)
	if err != nil {
		c.Status, c.Detail = StatusFail, err.Error()
		return []Check{c}
	}
	trusted, err := d.cfg.TrustedPrefixes()
	if err != nil {
		c.Status, c.Detail = StatusFail, err.Error()
		return []Check{c}
	}
	opt := relaytest.Options{Addr: addr, Timeout: d.opt.Timeout, Logger: d.log}
	if len(d.cfg.Domains) > 0 {
		opt.LocalDomain = d.cfg.Domains[0]
	}
	host, _, _ := net.SplitHostPort(addr)
	target, _ := netip.ParseAddr(host)
	switch {
	case target.Is4() && drill.Loopback.Contains(target):
		// All of 127.0.0.0/8 is ours: probe from an address the server
		// does not trust, away from 127.0.0.0/24 when possible.
		src, ok := drill.PickSource(drill.Loopback, append(trusted[:len(trusted):len(trusted)], netip.MustParsePrefix("127.0.0.0/24")), nil)
		if !ok {
			src, ok = drill.PickSource(drill.Loopback, trusted, nil)
		}
		if !ok {
			c.Status, c.Detail = StatusSkip, "every loopback address is in [relay] trusted_networks; run mamori relaytest from another host"
			return []Check{c}
		}
		opt.LocalAddr = src.String()
	case target.IsValid() && inAny(target, trusted):
		c.Status, c.Detail = StatusSkip, fmt.Sprintf("%s is in [relay] trusted_networks, so a probe from this host proves nothing; run mamori relaytest %s from another host", target, addr)
		return []Check{c}
	}
	rep, err := relaytest.Run(ctx, opt)
	c.Fix = "mamori relaytest " + addr + "   (lists each accepted probe; then check [relay] trusted_networks)"
	switch {
	case rep.Relayed > 0:
		var names []string
		for _, p := range rep.Probes {
			if p.Relayed {
				names = append(names, p.Name)
			}
		}
		c.Status, c.Detail = StatusFail, fmt.Sprintf("OPEN RELAY: %d of %d probes accepted (%s)", rep.Relayed, len(rep.Probes), strings.Join(names, ", "))
	case err != nil && errors.Is(err, relaytest.ErrIncomplete):
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("no relay accepted, but some of %d probes could not complete", len(rep.Probes))
	case err != nil:
		c.Status, c.Detail = StatusFail, "could not run the battery: "+err.Error()
	default:
		c.Status, c.Detail, c.Fix = StatusOK, fmt.Sprintf("closed: no relay accepted in %d probes from %s", len(rep.Probes), sourceOf(opt.LocalAddr)), ""
	}
	return []Check{c}
}

func sourceOf(a string) string {
	if a == "" {
		return "this host"
	}
	return a
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkDNSBL looks each of our addresses up in [guard] dnsbl_zones.
func (d *doctor) checkDNSBL(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	zones := d.cfg.Guard.DNSBLZones
	if len(zones) == 0 {
		return []Check{{Name: CheckDNSBL, Subject: "-", Status: StatusSkip, Detail: "no [guard] dnsbl_zones configured"}}
	}
	ips := d.ourIPs(ctx)
	if len(ips) == 0 {
		return []Check{{Name: CheckDNSBL, Subject: "-", Status: StatusSkip, Detail: "no public address known: " + d.ipsNote}}
	}
	checker := dnsbl.New(d.res, zones, d.opt.Timeout, d.log)
	var out []Check
	for _, ip := range ips {
		c := Check{Name: CheckDNSBL, Subject: ip.String()}
		res, complete := checker.CheckDirect(ctx, ip)
		switch {
		case res.Listed:
			c.Status = StatusFail
			c.Detail = fmt.Sprintf("listed in %s", res.Zone)
			if res.Reason != "" {
				c.Detail += ": " + res.Reason
			}
			c.Fix = fmt.Sprintf("find and stop what got %s listed (mamori guard list, mamori logscan), then ask %s for delisting", ip, res.Zone)
		case !complete:
			c.Status, c.Detail = StatusWarn, fmt.Sprintf("not listed where asked, but some of %d zones did not answer", len(checker.Zones()))
		default:
			c.Status, c.Detail = StatusOK, fmt.Sprintf("not listed in %s", strings.Join(checker.Zones(), ", "))
		}
		out = append(out, c)
	}
	return out
}

// checkOutbound25 tries a TCP connection to port 25 of a mail server on
// the Internet: many providers block it, and then no mail leaves.
func (d *doctor) checkOutbound25(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	c := Check{Name: CheckOutbound25}
	if d.cfg.Delivery.Relayhost != "" && d.opt.Probe == "" {
		c.Subject, c.Status, c.Detail = d.cfg.Delivery.Relayhost, StatusSkip, "mail leaves through [delivery] relayhost"
		return []Check{c}
	}
	target := d.opt.Probe
	if target == "" {
		mxs, err := d.res.LookupMX(ctx, d.opt.ProbeDomain)
		if err != nil {
			c.Subject, c.Status, c.Detail = d.opt.ProbeDomain, StatusWarn, "cannot find a mail server to try: MX: "+dnsProblem(err)
			return []Check{c}
		}
		target = net.JoinHostPort(mxs[0].Host, "25")
	}
	c.Subject = target
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		c.Status, c.Detail = StatusFail, err.Error()
		return []Check{c}
	}
	ips, err := d.res.LookupIP(ctx, host)
	if err != nil {
		c.Status, c.Detail = StatusWarn, "cannot resolve "+host+": "+dnsProblem(err)
		return []Check{c}
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(ips[0].String(), port))
	if err != nil {
		c.Status, c.Detail = StatusFail, fmt.Sprintf("cannot connect to %s: %v", target, err)
		c.Fix = "ask your provider to allow outbound TCP port 25, or set [delivery] relayhost to a smart host"
		return []Check{c}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(min(d.opt.Timeout, 5*time.Second)))
	c.Status, c.Detail = StatusOK, "connected to "+conn.RemoteAddr().String()
	if line, err := readLine(conn); err == nil && line != "" {
		c.Detail += ", greeting " + strconv.Quote(line)
		io.WriteString(conn, "QUIT\r\n")
	}
	return []Check{c}
}
