package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/queue"
	"github.com/mamori-mail/mamori/internal/resolver"
)

const (
	// maxSessionsPerAttempt bounds the addresses tried for one destination
	// in one attempt (Postfix: smtp_mx_address_limit).
	maxSessionsPerAttempt = 8
	// maxAddrsPerHost bounds the addresses used of one MX host.
	maxAddrsPerHost = 4
	// maxRcptsPerTxn: RFC 5321 §4.5.3.1.8 guarantees servers take 100.
	maxRcptsPerTxn = 100
	// dataChunk is how much body is written per write deadline.
	dataChunk = 64 << 10
	// quitTimeout bounds the wait for the reply to QUIT: the mail is sent.
	quitTimeout = 10 * time.Second
)

type destKind int

const (
	destMX    destKind = iota // by MX (or implicit MX) of domain
	destHost                  // to host:port (route, relayhost, domain literal)
	destLocal                 // LocalDeliverer
)

// dest is where a recipient's mail goes next.
type dest struct {
	kind   destKind
	key    string // grouping and per-destination concurrency key
	domain string // destMX
	host   string // destHost: name or IP literal
	port   int    // destHost
}

// route decides the next hop for a recipient address. Its error text starts
// with an enhanced status code.
func (s *Scheduler) route(addr string) (dest, error) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return dest{}, fmt.Errorf("5.1.3 bad recipient address syntax: %q", addr)
	}
	domain := normDomain(addr[at+1:])
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		lit := strings.TrimPrefix(domain[1:len(domain)-1], "ipv6:")
		ip, err := netip.ParseAddr(lit)
		if err != nil {
			return dest{}, fmt.Errorf("5.1.3 bad address literal in %q", addr)
		}
		return s.hostDest(ip.String(), s.cfg.Port), nil
	}
	target, ok := matchRoute(s.cfg.Routes, domain)
	if s.local != nil && s.local.IsLocalDomain(domain) {
		// Only a route named for exactly this local domain takes its mail
		// elsewhere: in a cluster, a node without the mailboxes passes
		// local mail to the node that holds them.
		t, exact := s.cfg.Routes[domain]
		if !exact {
			return dest{kind: destLocal, key: "local"}, nil
		}
		target, ok = t, true
	}
	if !ok && s.cfg.Relayhost != "" {
		target, ok = s.cfg.Relayhost, true
	}
	if !ok {
		return dest{kind: destMX, key: "mx:" + domain, domain: domain}, nil
	}
	host, port, err := splitHostPort(target, s.cfg.Port)
	if err != nil {
		return dest{}, fmt.Errorf("4.3.5 bad route %q for %s: %v", target, domain, err)
	}
	return s.hostDest(host, port), nil
}

func (s *Scheduler) hostDest(host string, port int) dest {
	host = strings.ToLower(host)
	return dest{kind: destHost, key: "host:" + net.JoinHostPort(host, strconv.Itoa(port)), host: host, port: port}
}

// matchRoute finds the route of domain: the exact key, else the most
// specific "*.parent" key.
func matchRoute(routes map[string]string, domain string) (string, bool) {
	if t, ok := routes[domain]; ok {
		return t, true
	}
	for d := domain; ; {
		dot := strings.IndexByte(d, '.')
		if dot < 0 {
			return "", false
		}
		d = d[dot+1:]
		if t, ok := routes["*."+d]; ok {
			return t, true
		}
	}
}

// splitHostPort parses "host:port", "host", "[v6]:port" or "[v6]".
func splitHostPort(target string, defPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		host = strings.Trim(target, "[]")
		if host == "" || strings.ContainsAny(host, " /") {
			return "", 0, err
		}
		return host, defPort, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("bad port or host in %q", target)
	}
	return host, port, nil
}

// hop is a host to try, in order.
type hop struct {
	name string
	port int
}

// hops lists the hosts for d. A non-empty diag means no host can be tried;
// perm says whether that is final.
func (s *Scheduler) hops(ctx context.Context, d dest) (hops []hop, perm bool, diag string) {
	if d.kind == destHost {
		return []hop{{d.host, d.port}}, false, ""
	}
	if s.dns == nil {
		return nil, false, "4.4.3 no DNS resolver configured for MX lookups"
	}
	mxs, err := s.dns.LookupMX(ctx, d.domain)
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return nil, true, fmt.Sprintf("5.1.10 domain %s accepts no mail (null MX)", d.domain)
	case errors.Is(err, resolver.ErrNXDomain):
		return nil, true, fmt.Sprintf("5.1.2 domain %s does not exist", d.domain)
	case errors.Is(err, resolver.ErrNotFound):
		// RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
		return []hop{{d.domain, s.cfg.Port}}, false, ""
	case err != nil:
		return nil, false, fmt.Sprintf("4.4.3 MX lookup for %s failed: %v", d.domain, err)
	}
	// RFC 5321 §5.1: if we are one of the MX hosts, only hosts more
	// preferred than us may be used.
	for i, mx := range mxs {
		if strings.EqualFold(mx.Host, s.cfg.Hostname) {
			cut := mxs[:0]
			for _, m := range mxs[:i] {
				if m.Pref < mx.Pref {
					cut = append(cut, m)
				}
			}
			mxs = cut
			break
		}
	}
	if len(mxs) == 0 {
		return nil, true, fmt.Sprintf("5.4.6 mail for %s loops back to myself", d.domain)
	}
	for _, mx := range mxs {
		hops = append(hops, hop{mx.Host, s.cfg.Port})
	}
	return hops, false, ""
}

func (s *Scheduler) addrs(ctx context.Context, name string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return []netip.Addr{ip}, nil
	}
	if s.dns == nil {
		return nil, fmt.Errorf("no DNS resolver configured to look up %s: %w", name, resolver.ErrTemporary)
	}
	addrs, err := s.dns.LookupIP(ctx, name)
	if len(addrs) > maxAddrsPerHost {
		addrs = addrs[:maxAddrsPerHost]
	}
	return addrs, err
}

// deliverRemote delivers g's recipients over SMTP, trying each host and
// each of its addresses until every recipient has a definite answer
// (RFC 5321 §5.1).
func (s *Scheduler) deliverRemote(ctx context.Context, l Lease, m queue.Meta, body []byte, g *group, outs []outcome) {
	hops, perm, diag := s.hops(ctx, g.dest)
	if diag != "" {
		setAll(outs, g.idx, outcome{state: stateFor(perm), diag: diag, touched: true})
		return
	}

	todo := g.idx
	var last sessionResult
	sessions, lookupTemp, lookupErrs := 0, false, []string{}
	allPerm := true
hosts:
	for _, h := range hops {
		addrs, err := s.addrs(ctx, h.name)
		if err != nil {
			lookupErrs = append(lookupErrs, err.Error())
			if !errors.Is(err, resolver.ErrNotFound) {
				lookupTemp = true
			}
			continue
		}
		for _, a := range addrs {
			if sessions == maxSessionsPerAttempt || ctx.Err() != nil || l.Revoked() {
				break hosts
			}
			sessions++
			ap := netip.AddrPortFrom(a, uint16(h.port))
			res := s.session(ctx, l, m, body, h.name, ap, todo, outs, true)
			if res.tlsFailed && !s.cfg.TLSVerify {
				s.log.Info("delivery: TLS handshake failed, retrying without TLS",
					"queue_id", m.ID, "relay", res.relay, "err", res.diag)
				res = s.session(ctx, l, m, body, h.name, ap, todo, outs, false)
			}
			todo = unresolvedOf(todo, outs)
			if len(todo) == 0 || !res.broken {
				return
			}
			last = res
			allPerm = allPerm && res.perm
		}
	}
	if ctx.Err() != nil || l.Revoked() || len(todo) == 0 {
		return // interrupted: leave the rest untouched
	}
	var o outcome
	switch {
	case sessions > 0:
		o = outcome{state: stateFor(allPerm && !lookupTemp), diag: last.diag, relay: last.relay}
	case lookupTemp:
		o = outcome{state: deferred, diag: "4.4.3 cannot resolve mail host: " + strings.Join(lookupErrs, "; ")}
	default:
		o = outcome{state: failed, diag: "5.4.4 no address found for any mail host: " + strings.Join(lookupErrs, "; ")}
	}
	o.touched = true
	setAll(outs, todo, o)
}

func stateFor(perm bool) outcomeState {
	if perm {
		return failed
	}
	return deferred
}

func setAll(outs []outcome, idx []int, o outcome) {
	for _, i := range idx {
		outs[i] = o
	}
}

func unresolvedOf(idx []int, outs []outcome) []int {
	var out []int
	for _, i := range idx {
		if outs[i].state == unresolved {
			out = append(out, i)
		}
	}
	return out
}

// sessionResult describes how an SMTP session ended.
type sessionResult struct {
	// broken: the session failed as a whole (connect, greeting, EHLO, a
	// network error, a 4xx to MAIL); recipients without an answer should
	// go to the next address.
	broken    bool
	perm      bool   // the failure was a 5xx reply (greeting or EHLO)
	tlsFailed bool   // the STARTTLS handshake failed: retry without TLS
	diag      string // why
	relay     string // "host[ip]:port"
}

// conn is an established SMTP session.
type conn struct {
	c     *smtp.Client
	raw   net.Conn
	nc    net.Conn // the stream c speaks over (raw, or TLS on raw)
	tls   bool
	relay string
	stop  func() bool // cancels the context watcher
}

func (c *conn) close() {
	c.stop()
	c.raw.Close()
}

// session connects to ap and runs one transaction per chunk of recipients
// in todo, recording each recipient's outcome in outs.
func (s *Scheduler) session(ctx context.Context, l Lease, m queue.Meta, body []byte, host string, ap netip.AddrPort, todo []int, outs []outcome, tryTLS bool) sessionResult {
	cn, res := s.connect(ctx, host, ap, tryTLS)
	if cn == nil {
		return res
	}
	defer cn.close()

	// Fit the message to what this server offers: CRLF only, no line over
	// 998 octets, 7-bit for a server without 8BITMIME, encoded headers for
	// one without SMTPUTF8 (mimeconv). What cannot be converted bounces.
	peer := mimeconv.Peer{EightBitMIME: cn.has("8BITMIME"), SMTPUTF8: cn.has("SMTPUTF8")}
	prep, err := mimeconv.ForPeer(body, peer)
	if err != nil {
		diag := err.Error()
		if _, ok := statusOf(diag); !ok {
			diag = "5.6.0 " + diag
		}
		for _, i := range todo {
			outs[i] = outcome{state: failed, diag: diag, relay: cn.relay, tls: cn.tls, touched: true}
		}
		cn.c.CommandTimeout = quitTimeout
		_ = cn.c.Quit()
		return sessionResult{relay: cn.relay}
	}
	if prep.Converted {
		s.log.Info("delivery: message converted for the receiving server", "queue_id", m.ID, "relay", cn.relay,
			"8bitmime", peer.EightBitMIME, "smtputf8", peer.SMTPUTF8)
	}

	for start := 0; start < len(todo); start += maxRcptsPerTxn {
		if ctx.Err() != nil || !l.BeginSend() {
			return sessionResult{relay: cn.relay}
		}
		chunk := todo[start:min(start+maxRcptsPerTxn, len(todo))]
		if res := s.transaction(cn, m, prep, chunk, outs); res.broken {
			return res
		}
	}
	cn.c.CommandTimeout = quitTimeout
	_ = cn.c.Quit()
	return sessionResult{relay: cn.relay}
}

// connect dials ap, reads the greeting, says EHLO and, when offered and
// tryTLS is set, upgrades with STARTTLS.
func (s *Scheduler) connect(ctx context.Context, host string, ap netip.AddrPort, tryTLS bool) (*conn, sessionResult) {
	relay := fmt.Sprintf("%s[%s]:%d", host, ap.Addr(), ap.Port())
	fail := func(perm bool, format string, args ...any) (*conn, sessionResult) {
		return nil, sessionResult{broken: true, perm: perm, diag: fmt.Sprintf(format, args...), relay: relay}
	}
	d := net.Dialer{Timeout: s.cfg.ConnectTimeout}
	raw, err := d.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return fail(false, "4.4.1 connect to %s: %v", relay, err)
	}
	// Abort any blocked read or write when ctx ends (shutdown).
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	cn := &conn{raw: raw, relay: relay, stop: stop}

	cn.c = s.newClient(raw)
	cn.nc = raw
	if err := cn.c.Hello(s.cfg.Hostname); err != nil {
		cn.close()
		return s.failReply(err, relay, "greeting or EHLO")
	}
	if !tryTLS {
		return cn, sessionResult{}
	}
	if ok, _ := cn.c.Extension("STARTTLS"); !ok {
		return cn, sessionResult{}
	}

	tc, refused, err := s.startTLS(ctx, raw, host)
	switch {
	case refused:
		// Server said no to STARTTLS: the session goes on in plain text.
		return cn, sessionResult{}
	case err != nil:
		cn.close()
		res := sessionResult{broken: true, diag: fmt.Sprintf("4.7.0 STARTTLS with %s: %v", relay, err), relay: relay}
		res.tlsFailed = errors.Is(err, errHandshake)
		return nil, res
	}
	// go-smtp's Client has no STARTTLS on an existing session; continue on
	// the TLS connection with a fresh Client that sees a synthetic greeting.
	cn.nc = &greetedConn{Conn: tc, r: io.MultiReader(strings.NewReader("220 "+host+" ESMTP\r\n"), tc)}
	cn.c = s.newClient(cn.nc)
	cn.tls = true
	if err := cn.c.Hello(s.cfg.Hostname); err != nil {
		cn.close()
		return s.failReply(err, relay, "EHLO after STARTTLS")
	}
	return cn, sessionResult{}
}

var errHandshake = errors.New("TLS handshake failed")

// startTLS sends STARTTLS on raw and runs the handshake. refused reports a
// non-220 reply (the session may continue in plain text).
func (s *Scheduler) startTLS(ctx context.Context, raw net.Conn, host string) (tc *tls.Conn, refused bool, err error) {
	_ = raw.SetDeadline(time.Now().Add(s.cfg.CommandTimeout))
	defer raw.SetDeadline(time.Time{})
	if _, err := io.WriteString(raw, "STARTTLS\r\n"); err != nil {
		return nil, false, fmt.Errorf("send STARTTLS: %w", err)
	}
	// The server says nothing after its 220 until our ClientHello, so this
	// reader cannot swallow TLS bytes.
	if _, _, err := textproto.NewReader(bufio.NewReaderSize(raw, 512)).ReadResponse(220); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("read STARTTLS reply: %w", err)
	}
	cfg := &tls.Config{
		InsecureSkipVerify: !s.cfg.TLSVerify, // RFC 7435: opportunistic, any certificate
		MinVersion:         tls.VersionTLS12,
	}
	if _, err := netip.ParseAddr(host); err != nil {
		cfg.ServerName = host
	}
	tc = tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errHandshake, err)
	}
	return tc, false, nil
}

func (s *Scheduler) newClient(c net.Conn) *smtp.Client {
	cl := smtp.NewClient(c)
	cl.CommandTimeout = s.cfg.CommandTimeout
	cl.SubmissionTimeout = s.cfg.DataTimeout
	return cl
}

// failReply turns a greeting/EHLO error into a broken-session result.
func (s *Scheduler) failReply(err error, relay, stage string) (*conn, sessionResult) {
	res := sessionResult{broken: true, relay: relay}
	if se, ok := replyOf(err); ok {
		res.diag = formatReply(se)
		res.perm = se.Code/100 == 5
	} else {
		res.diag = fmt.Sprintf("4.4.2 %s: %s: %v", relay, stage, err)
	}
	return nil, res
}

// greetedConn replays a synthetic greeting before the real stream.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// has reports whether the server announced the EHLO keyword ext.
func (c *conn) has(ext string) bool {
	ok, _ := c.c.Extension(ext)
	return ok
}

// transaction sends the message to the recipients chunk in one MAIL
// transaction on cn.
func (s *Scheduler) transaction(cn *conn, m queue.Meta, prep mimeconv.Result, chunk []int, outs []outcome) sessionResult {
	set := func(i int, st outcomeState, diag string) {
		outs[i] = outcome{state: st, diag: diag, relay: cn.relay, tls: cn.tls, touched: true}
	}
	broken := func(diag string) sessionResult {
		return sessionResult{broken: true, diag: diag, relay: cn.relay}
	}
	c := cn.c
	body := prep.Msg

	// RFC 6152: an octet above 127 goes only to a server that offers
	// 8BITMIME, announced with BODY=8BITMIME. This is checked here, on the
	// exact bytes sent, whatever mimeconv did: what is still 8-bit for a
	// 7-bit server bounces (5.6.3) and is never sent.
	peer := mimeconv.Peer{EightBitMIME: cn.has("8BITMIME"), SMTPUTF8: cn.has("SMTPUTF8")}
	if err := mimeconv.CheckWire(body, peer); err != nil {
		s.log.Warn("delivery: 8-bit message for a server without 8BITMIME", "queue_id", m.ID, "relay", cn.relay, "err", err)
		for _, i := range chunk {
			set(i, failed, err.Error())
		}
		return sessionResult{}
	}
	eightBit := peer.EightBitMIME && mimeconv.Has8bit(body)

	// RFC 6531 §3.2: a UTF-8 envelope address or UTF-8 header needs
	// SMTPUTF8; it is passed on whenever the message needs it. An address
	// cannot be downgraded: without SMTPUTF8 such a recipient bounces
	// (5.6.7). (mimeconv already encoded the header for a server without
	// SMTPUTF8, or failed the whole session.)
	utf8OK := cn.has("SMTPUTF8")
	utf8From := !isASCII(m.From)
	needUTF8 := utf8From || prep.UTF8
	send := make([]int, 0, len(chunk))
	for _, i := range chunk {
		rcptUTF8 := !isASCII(m.Rcpts[i].Addr)
		if (utf8From || rcptUTF8) && !utf8OK {
			set(i, failed, "5.6.7 non-ASCII address but host does not offer SMTPUTF8")
			continue
		}
		if !validAddr(m.Rcpts[i].Addr) {
			set(i, failed, "5.1.3 bad recipient address syntax")
			continue
		}
		needUTF8 = needUTF8 || rcptUTF8
		send = append(send, i)
	}
	if len(send) == 0 {
		return sessionResult{}
	}
	if !validAddr(m.From) {
		for _, i := range send {
			set(i, failed, "5.1.7 bad sender address syntax")
		}
		return sessionResult{}
	}
	if limit, ok := c.MaxMessageSize(); ok && limit > 0 && len(body) > limit {
		for _, i := range send {
			set(i, failed, fmt.Sprintf("5.3.4 message of %d bytes exceeds the host's limit of %d", len(body), limit))
		}
		return sessionResult{}
	}

	mail := "MAIL FROM:<" + m.From + ">"
	if eightBit {
		mail += " BODY=8BITMIME" // RFC 6152; only for a message that is 8-bit
	}
	if cn.has("SIZE") {
		mail += " SIZE=" + strconv.Itoa(len(body))
	}
	if needUTF8 {
		mail += " SMTPUTF8"
	}
	cmds := []string{mail}
	for _, i := range send {
		cmds = append(cmds, "RCPT TO:<"+m.Rcpts[i].Addr+">")
	}
	replies, err := s.envelope(cn, cmds)
	if err != nil {
		return broken(fmt.Sprintf("4.4.2 %s: MAIL FROM/RCPT TO: %v", cn.relay, err))
	}
	if se := replies[0]; se.Code/100 != 2 {
		if se.Code/100 == 5 {
			for _, i := range send {
				set(i, failed, formatReply(se))
			}
			return s.reset(cn)
		}
		return broken(formatReply(se))
	}

	accepted := make([]int, 0, len(send))
	for k, i := range send {
		se := replies[k+1]
		switch se.Code / 100 {
		case 2:
			accepted = append(accepted, i)
		case 5:
			set(i, failed, formatReply(se))
		default:
			set(i, deferred, formatReply(se))
		}
	}
	if len(accepted) == 0 {
		return s.reset(cn)
	}

	w, err := c.Data()
	if err != nil {
		se, ok := replyOf(err)
		if !ok {
			return broken(fmt.Sprintf("4.4.2 %s: DATA: %v", cn.relay, err))
		}
		for _, i := range accepted {
			set(i, stateFor(se.Code/100 == 5), formatReply(se))
		}
		return s.reset(cn)
	}
	for off := 0; off < len(body); off += dataChunk {
		_ = cn.raw.SetWriteDeadline(time.Now().Add(s.cfg.CommandTimeout))
		if _, err := w.Write(body[off:min(off+dataChunk, len(body))]); err != nil {
			return broken(fmt.Sprintf("4.4.2 %s: sending message: %v", cn.relay, err))
		}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		se, ok := replyOf(err)
		if !ok {
			// The server may or may not have taken the message: retry
			// later rather than risk a second copy at another host now.
			diag := fmt.Sprintf("4.4.2 %s: lost connection after end of data: %v", cn.relay, err)
			for _, i := range accepted {
				set(i, deferred, diag)
			}
			return broken(diag)
		}
		for _, i := range accepted {
			set(i, stateFor(se.Code/100 == 5), formatReply(se))
		}
		return sessionResult{}
	}
	for _, i := range accepted {
		set(i, delivered, "250 "+oneLine(resp.StatusText))
	}
	return sessionResult{}
}

// maxReplyBytes bounds what envelope reads for one transaction's replies.
const maxReplyBytes = 1 << 20

// envelope sends the MAIL and RCPT commands and returns one reply per
// command. go-smtp's client sends one command and waits for its reply
// before the next; with PIPELINING (RFC 2920) offered, the commands go out
// in one write and the replies are read afterwards, in order, saving a
// round trip per recipient. That stays correct on errors because every
// command gets exactly one reply, which is matched to it by position: a
// rejected MAIL makes the RCPT replies meaningless (the caller ignores
// them), a rejected RCPT affects only its recipient. DATA is sent only
// after the replies are in, so a message never goes out without an
// accepted recipient. A server sends nothing unasked, so once the replies
// are read nothing is left buffered for the client that sends DATA.
func (s *Scheduler) envelope(cn *conn, cmds []string) ([]*smtp.SMTPError, error) {
	for _, cmd := range cmds {
		if strings.ContainsAny(cmd, "\r\n") {
			return nil, errors.New("line break in command")
		}
	}
	r := textproto.NewReader(bufio.NewReader(io.LimitReader(cn.nc, maxReplyBytes)))
	read := func() (*smtp.SMTPError, error) {
		_ = cn.nc.SetReadDeadline(time.Now().Add(s.cfg.CommandTimeout))
		code, msg, err := r.ReadResponse(0)
		if err != nil {
			return nil, err
		}
		return parseReply(code, msg), nil
	}
	write := func(b string) error {
		_ = cn.nc.SetWriteDeadline(time.Now().Add(s.cfg.CommandTimeout))
		_, err := io.WriteString(cn.nc, b)
		return err
	}
	defer cn.nc.SetDeadline(time.Time{})

	replies := make([]*smtp.SMTPError, 0, len(cmds))
	if cn.has("PIPELINING") {
		var batch strings.Builder
		for _, cmd := range cmds {
			batch.WriteString(cmd)
			batch.WriteString("\r\n")
		}
		// Write while reading, so that a server that answers as it reads
		// never blocks on a full socket buffer (RFC 2920 §3.1).
		werr := make(chan error, 1)
		go func() { werr <- write(batch.String()) }()
		for range cmds {
			se, err := read()
			if err != nil {
				if e := <-werr; e != nil {
					err = e
				}
				if len(replies) > 0 && replies[0].Code/100 == 5 {
					// MAIL was refused for good and the server hung up
					// instead of answering the RCPTs: the refusal stands.
					for len(replies) < len(cmds) {
						replies = append(replies, replies[0])
					}
					return replies, nil
				}
				return nil, err
			}
			replies = append(replies, se)
		}
		if err := <-werr; err != nil {
			return nil, err
		}
	} else {
		for k, cmd := range cmds {
			if err := write(cmd + "\r\n"); err != nil {
				return nil, err
			}
			se, err := read()
			if err != nil {
				return nil, err
			}
			replies = append(replies, se)
			if k == 0 && se.Code/100 != 2 {
				// MAIL failed: no RCPT is sent; answer them with its reply.
				for range cmds[1:] {
					replies = append(replies, se)
				}
				break
			}
		}
	}
	if r.R.Buffered() > 0 {
		return nil, errors.New("server sent more replies than commands")
	}
	return replies, nil
}

// parseReply turns a reply into an SMTPError (also for 2xx), with the
// enhanced status code when the text starts with one.
func parseReply(code int, msg string) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}
	first, rest, _ := strings.Cut(msg, " ")
	if enhancedCode.MatchString(first) && first[0] == byte('0'+code/100) {
		var ec smtp.EnhancedCode
		if _, err := fmt.Sscanf(first, "%d.%d.%d", &ec[0], &ec[1], &ec[2]); err == nil {
			se.EnhancedCode = ec
			se.Message = rest
		}
	}
	return se
}

// validAddr: an address we may put in a command (no line breaks, no
// angle brackets, bounded).
func validAddr(a string) bool {
	return len(a) <= 512 && !strings.ContainsAny(a, "\r\n<>")
}

// reset ends a transaction that did not reach DATA.
func (s *Scheduler) reset(cn *conn) sessionResult {
	if err := cn.c.Reset(); err != nil {
		return sessionResult{broken: true, diag: fmt.Sprintf("4.4.2 %s: RSET: %v", cn.relay, err), relay: cn.relay}
	}
	return sessionResult{}
}

func replyOf(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se, true
	}
	return nil, false
}

// formatReply renders a server reply as "550 5.1.1 text" on one line.
func formatReply(se *smtp.SMTPError) string {
	msg := oneLine(se.Message)
	ec := se.EnhancedCode
	if ec != smtp.EnhancedCodeNotSet && ec != smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], msg)
	}
	return fmt.Sprintf("%d %s", se.Code, msg)
}

// oneLine joins a multi-line reply and drops control characters, so the
// text is safe in logs, queue listings and DSN header fields.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	const maxLen = 500
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
