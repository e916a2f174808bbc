package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/admit"

	"github.com/mamori-mail/mamori/internal/login"
	"github.com/mamori-mail/mamori/internal/mailbox"
)

// errClose ends a session after its reply has been written.
var errClose = errors.New("close connection")

// message is one message of the session's maildrop.
type message struct {
	uid     uint32
	size    int64
	deleted bool
}

// session is one POP3 connection.
type session struct {
	srv    *Server
	conn   net.Conn // guarded by srv.mu where Shutdown reads it
	r      *bufio.Reader
	w      *bufio.Writer
	tw     *timedWriter
	ip     netip.Addr
	secure bool
	idle   bool // waiting for a command; guarded by srv.mu

	// AUTHORIZATION state.
	userArg      string // the USER argument waiting for PASS
	authCommands int
	failedLogins int
	badCommands  int

	// TRANSACTION state; user != "" once logged in.
	user        string
	drop        maildrop
	release     func()
	forget      func() // removes the session from cfg.Sessions; nil before login
	uidValidity uint32
	msgs        []message
	retrieved   int
	expunged    int
	started     time.Time
}

func newSession(srv *Server, c net.Conn, secure bool) *session {
	ss := &session{srv: srv, secure: secure, started: time.Now(), ip: admit.RemoteIP(c)}
	ss.conn = c // not yet registered: no lock needed
	ss.initIO()
	return ss
}

// setConn makes c the session's connection after STLS.
func (ss *session) setConn(c net.Conn) {
	ss.srv.mu.Lock()
	ss.conn = c
	ss.srv.mu.Unlock()
	ss.initIO()
}

func (ss *session) initIO() {
	ss.r = bufio.NewReaderSize(ss.conn, 4096)
	ss.tw = &timedWriter{ss.conn, ss.srv.cfg.IdleTimeout}
	ss.w = bufio.NewWriterSize(ss.tw, 8192)
}

// timedWriter gives every write to the connection a deadline (the idle
// timeout), so a client that stops reading cannot hold a session forever.
type timedWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (t *timedWriter) Write(p []byte) (int, error) {
	if err := t.c.SetWriteDeadline(time.Now().Add(t.timeout)); err != nil {
		return 0, err
	}
	return t.c.Write(p)
}

// interruptLocked wakes a session waiting for a command so that it sees
// the shutdown. Called with srv.mu held.
func (ss *session) interruptLocked() {
	if ss.idle {
		_ = ss.conn.SetReadDeadline(time.Now())
	}
}

// waitCommand arms the idle timer before a read; false when the server is
// shutting down.
func (ss *session) waitCommand() bool {
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	if ss.srv.closing {
		return false
	}
	ss.idle = true
	_ = ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	return true
}

func (ss *session) busy() {
	ss.srv.mu.Lock()
	ss.idle = false
	ss.srv.mu.Unlock()
}

// serve runs the session to its end.
func (ss *session) serve() {
	reason := "quit"
	defer func() { ss.finish(reason) }()
	if tc, ok := ss.conn.(*tls.Conn); ok {
		if err := ss.handshake(tc); err != nil {
			reason = "tls handshake failed"
			ss.srv.log.Debug("pop3 tls handshake failed", "client_ip", ss.ip.String(), "err", err)
			return
		}
	}
	ss.reply("+OK %s POP3 server ready", ss.srv.cfg.Hostname)
	for {
		// PIPELINING: the replies to a pipeline go out together, once
		// no whole command is left to read.
		if !ss.commandBuffered() {
			if err := ss.w.Flush(); err != nil {
				reason = "write failed"
				return
			}
		}
		if !ss.waitCommand() {
			reason = "shutdown"
			ss.goodbye("-ERR [SYS/TEMP] Server shutting down")
			return
		}
		line, err := readLine(ss.r, maxCommandLine)
		ss.busy()
		if err != nil && !errors.Is(err, errLineTooLong) {
			reason = ss.readFailed(err)
			return
		}
		var cmd command
		if err == nil {
			cmd, err = parseCommand(line)
		}
		switch {
		case err == nil:
			err = ss.dispatch(cmd)
		case errors.Is(err, errLineTooLong):
			err = ss.bad("-ERR Line too long")
		default:
			err = ss.bad("-ERR Unknown command")
		}
		if errors.Is(err, errClose) {
			reason = ss.closeReason(cmd)
			_ = ss.w.Flush()
			return
		}
		if err != nil {
			reason = "error"
			ss.srv.log.Warn("pop3 session failed", "client_ip", ss.ip.String(), "user", ss.user, "err", err)
			return
		}
	}
}

// commandBuffered reports whether a whole command line has been read from
// the connection but not yet handled.
func (ss *session) commandBuffered() bool {
	n := ss.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := ss.r.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// readFailed says goodbye after a failed read and names the reason.
func (ss *session) readFailed(err error) string {
	var ne net.Error
	switch {
	case ss.srv.isClosing():
		ss.goodbye("-ERR [SYS/TEMP] Server shutting down")
		return "shutdown"
	case errors.As(err, &ne) && ne.Timeout():
		ss.goodbye("-ERR Disconnected for inactivity")
		return "idle timeout"
	case errors.Is(err, errFlood):
		ss.goodbye("-ERR Line too long")
		return "line flood"
	}
	return "connection closed"
}

func (ss *session) closeReason(cmd command) string {
	switch {
	case cmd.verb == "QUIT":
		return "quit"
	case ss.failedLogins >= maxFailedLogins:
		return "too many failed logins"
	case ss.badCommands >= maxBadCommands:
		return "too many bad commands"
	case ss.authCommands >= maxAuthCommands:
		return "too many commands before login"
	}
	return "closed by server"
}

// goodbye writes a last reply after any still buffered, giving the client
// little time to take them.
func (ss *session) goodbye(text string) {
	ss.tw.timeout = time.Second
	ss.reply("%s", text)
	_ = ss.w.Flush()
}

func (ss *session) handshake(tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(ss.srv.ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	return nil
}

// finish ends the session: without QUIT in the TRANSACTION state nothing
// is deleted.
func (ss *session) finish(reason string) {
	if ss.user != "" {
		ss.srv.log.Info("pop3 logout", "user", ss.user, "client_ip", ss.ip.String(), "reason", reason,
			"retrieved", ss.retrieved, "deleted", ss.expunged, "duration", time.Since(ss.started).Round(time.Millisecond).String())
		ss.unlock()
	} else {
		ss.srv.log.Debug("pop3 session closed", "client_ip", ss.ip.String(), "reason", reason)
	}
	if ss.forget != nil {
		ss.forget()
	}
	_ = ss.conn.Close()
	ss.srv.unregister(ss)
}

// unlock closes the maildrop and releases its lock, once.
func (ss *session) unlock() {
	if ss.drop == nil {
		return
	}
	if err := ss.drop.Close(); err != nil {
		ss.srv.log.Warn("pop3 close maildrop", "user", ss.user, "err", err)
	}
	ss.drop = nil
	ss.release()
}

// reply writes one response line.
func (ss *session) reply(format string, a ...any) {
	fmt.Fprintf(ss.w, format, a...)
	ss.w.WriteString("\r\n")
}

// bad answers a command that could not be understood, and closes the
// connection after too many.
func (ss *session) bad(text string) error {
	ss.badCommands++
	ss.reply("%s", text)
	if ss.badCommands >= maxBadCommands {
		ss.reply("-ERR Too many bad commands")
		return errClose
	}
	return nil
}

func (ss *session) dispatch(cmd command) error {
	if ss.user == "" {
		ss.authCommands++
		err := ss.authorization(cmd)
		if err == nil && ss.user == "" && ss.authCommands >= maxAuthCommands {
			ss.reply("-ERR Too many commands without logging in")
			return errClose
		}
		return err
	}
	return ss.transaction(cmd)
}

// authorization handles a command of the AUTHORIZATION state.
func (ss *session) authorization(cmd command) error {
	switch cmd.verb {
	case "CAPA":
		return ss.capa(cmd)
	case "QUIT":
		if cmd.arg != "" {
			return ss.bad("-ERR QUIT takes no argument")
		}
		ss.reply("+OK %s POP3 server signing off", ss.srv.cfg.Hostname)
		return errClose
	case "STLS":
		return ss.stls(cmd)
	case "USER":
		ss.userArg = ""
		if !ss.secure {
			ss.reply("-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first")
			return nil
		}
		if cmd.arg == "" {
			return ss.bad("-ERR USER needs a name")
		}
		ss.userArg = cmd.arg
		ss.reply("+OK Send your password")
		return nil
	case "PASS":
		name := ss.userArg
		ss.userArg = ""
		if !ss.secure {
			ss.reply("-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first")
			return nil
		}
		if name == "" {
			ss.reply("-ERR Send USER first")
			return nil
		}
		return ss.login(name, cmd.arg)
	case "AUTH":
		ss.userArg = ""
		return ss.auth(cmd)
	case "APOP":
		ss.reply("-ERR APOP is not supported: use USER/PASS or AUTH PLAIN over TLS")
		return nil
	case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
		ss.reply("-ERR Log in first")
		return nil
	}
	return ss.bad("-ERR Unknown command")
}

// capa answers CAPA (RFC 2449 section 5).
func (ss *session) capa(cmd command) error {
	if cmd.arg != "" {
		return ss.bad("-ERR CAPA takes no argument")
	}
	ss.reply("+OK Capability list follows")
	ss.reply("TOP")
	ss.reply("UIDL")
	ss.reply("RESP-CODES")
	ss.reply("AUTH-RESP-CODE")
	ss.reply("PIPELINING")
	if ss.user == "" {
		if ss.secure {
			ss.reply("USER")
			ss.reply("SASL PLAIN")
		} else if ss.srv.cfg.TLS != nil {
			ss.reply("STLS")
		}
	}
	ss.reply("IMPLEMENTATION mamori")
	ss.reply(".")
	return nil
}

// stls upgrades the connection (RFC 2595 section 4).
func (ss *session) stls(cmd command) error {
	switch {
	case cmd.arg != "":
		return ss.bad("-ERR STLS takes no argument")
	case ss.secure:
		ss.reply("-ERR Command not permitted when TLS active")
		return nil
	case ss.srv.cfg.TLS == nil:
		ss.reply("-ERR TLS not available")
		return nil
	case ss.r.Buffered() > 0:
		// Whatever follows STLS in the same packet was sent in the clear
		// and must not be read as if it came over TLS.
		ss.reply("-ERR STLS must be the last command of a pipeline")
		return errClose
	}
	ss.reply("+OK Begin TLS negotiation")
	if err := ss.w.Flush(); err != nil {
		return fmt.Errorf("stls: %w", err)
	}
	tc := tls.Server(ss.conn, ss.srv.cfg.TLS)
	if err := ss.handshake(tc); err != nil {
		ss.srv.log.Debug("pop3 stls handshake failed", "client_ip", ss.ip.String(), "err", err)
		return errClose
	}
	ss.setConn(tc)
	ss.secure = true
	return nil
}

// auth runs AUTH (RFC 5034); only PLAIN is offered.
func (ss *session) auth(cmd command) error {
	args, ok := cmd.args(0, 2)
	if !ok {
		return ss.bad("-ERR Syntax: AUTH mechanism [initial-response]")
	}
	if !ss.secure {
		ss.reply("-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first")
		return nil
	}
	if len(args) == 0 {
		ss.reply("+OK Mechanisms follow")
		ss.reply("PLAIN")
		ss.reply(".")
		return nil
	}
	if !strings.EqualFold(args[0], "PLAIN") {
		ss.reply("-ERR Unsupported authentication mechanism")
		return nil
	}
	var resp string
	if len(args) == 2 {
		resp = args[1]
	} else {
		ss.reply("+ ")
		if err := ss.w.Flush(); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		if !ss.waitCommand() {
			ss.goodbye("-ERR [SYS/TEMP] Server shutting down")
			return errClose
		}
		line, err := readLine(ss.r, maxSASLLine)
		ss.busy()
		switch {
		case errors.Is(err, errLineTooLong):
			return ss.failLogin("-ERR [AUTH] Authentication failed")
		case err != nil:
			ss.readFailed(err)
			return errClose
		}
		resp = line
	}
	if resp == "*" {
		ss.reply("-ERR Authentication cancelled")
		return nil
	}
	if resp == "=" {
		resp = ""
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return ss.failLogin("-ERR Invalid base64 response")
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return ss.failLogin("-ERR [AUTH] Authentication failed")
	}
	if parts[0] != "" && parts[0] != parts[1] {
		return ss.failLogin("-ERR [AUTH] Authorization identity must be empty or the login")
	}
	return ss.login(parts[1], parts[2])
}

// failLogin counts a refused login and closes after too many.
func (ss *session) failLogin(text string) error {
	ss.failedLogins++
	ss.reply("%s", text)
	if ss.failedLogins >= maxFailedLogins {
		return errClose
	}
	return nil
}

// login checks the credentials, takes the maildrop lock and the snapshot,
// and enters the TRANSACTION state.
func (ss *session) login(name, password string) error {
	gen := ss.srv.cfg.Sessions.Gen(login.Key(name), "pop3")
	user, err := ss.srv.cfg.Login.Check(ss.ip, "pop3", name, password)
	if err != nil {
		le, ok := login.AsError(err)
		switch {
		case !ok:
			ss.srv.log.Error("pop3 login check failed", "client_ip", ss.ip.String(), "err", err)
			ss.reply("-ERR [SYS/TEMP] Temporary authentication failure, try again later")
			return nil
		case le.Drop:
			ss.reply("-ERR [AUTH] %s", safeText(le.Text, "Authentication failed"))
			return errClose
		case le.Temporary:
			ss.failedLogins++
			ss.reply("-ERR [SYS/TEMP] %s", safeText(le.Text, "Temporary authentication failure, try again later"))
			if ss.failedLogins >= maxFailedLogins {
				return errClose
			}
			return nil
		case le.Rule == "":
			return ss.failLogin("-ERR [AUTH] Authentication failed")
		default:
			return ss.failLogin("-ERR [AUTH] " + safeText(le.Text, "Authentication failed"))
		}
	}
	release, ok := ss.srv.locks.acquire(user)
	if !ok {
		ss.srv.log.Info("pop3 maildrop in use", "user", user, "client_ip", ss.ip.String())
		ss.reply("-ERR [IN-USE] Mailbox is in use by another POP3 session")
		return nil
	}
	drop, snap, err := ss.open(user)
	if err != nil {
		release()
		ss.srv.log.Error("pop3 open maildrop", "user", user, "client_ip", ss.ip.String(), "err", err)
		ss.reply("-ERR [SYS/TEMP] Cannot open the mailbox, try again later")
		return nil
	}
	ss.user, ss.drop, ss.release = user, drop, release
	admit.MarkAuthenticated(ss.conn)
	ss.forget = ss.srv.cfg.Sessions.Add(user, "pop3", gen, func() {
		ss.srv.log.Info("pop3 session ended: credentials revoked", "user", user, "client_ip", ss.ip.String())
		ss.srv.mu.Lock()
		c := ss.conn
		ss.srv.mu.Unlock()
		_ = c.Close()
	})
	ss.uidValidity = snap.UIDValidity
	ss.msgs = make([]message, len(snap.Messages))
	var octets int64
	for i, m := range snap.Messages {
		ss.msgs[i] = message{uid: m.UID, size: m.Size}
		octets += m.Size
	}
	ss.started = time.Now()
	ss.srv.log.Info("pop3 login", "user", user, "client_ip", ss.ip.String(), "messages", len(ss.msgs), "octets", octets)
	ss.reply("+OK Logged in, %d messages (%d octets)", len(ss.msgs), octets)
	return nil
}

func (ss *session) open(user string) (maildrop, *mailbox.Snapshot, error) {
	drop, err := ss.srv.openDrop(user)
	if err != nil {
		return nil, nil, err
	}
	snap, err := drop.Snapshot()
	if err != nil {
		_ = drop.Close()
		return nil, nil, fmt.Errorf("snapshot of INBOX: %w", err)
	}
	return drop, snap, nil
}

// safeText makes a refusal text fit for one reply line.
func safeText(s, fallback string) string {
	b := []byte(strings.TrimSpace(s))
	if len(b) > 200 {
		b = b[:200]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) == 0 {
		return fallback
	}
	return string(b)
}

// transaction handles a command of the TRANSACTION state.
func (ss *session) transaction(cmd command) error {
	switch cmd.verb {
	case "STAT":
		if cmd.arg != "" {
			return ss.bad("-ERR STAT takes no argument")
		}
		n, octets := ss.count()
		ss.reply("+OK %d %d", n, octets)
	case "LIST", "UIDL":
		return ss.list(cmd)
	case "RETR":
		args, ok := cmd.args(1, 1)
		if !ok {
			return ss.bad("-ERR Syntax: RETR msg")
		}
		return ss.send(args[0], 0, false)
	case "TOP":
		args, ok := cmd.args(2, 2)
		if !ok {
			return ss.bad("-ERR Syntax: TOP msg lines")
		}
		lines, ok := parseNumber(args[1])
		if !ok {
			return ss.bad("-ERR Invalid number of lines")
		}
		return ss.send(args[0], lines, true)
	case "DELE":
		args, ok := cmd.args(1, 1)
		if !ok {
			return ss.bad("-ERR Syntax: DELE msg")
		}
		i, ok := ss.message(args[0])
		if ok {
			ss.msgs[i].deleted = true
			ss.reply("+OK Message %d deleted", i+1)
		}
	case "NOOP":
		if cmd.arg != "" {
			return ss.bad("-ERR NOOP takes no argument")
		}
		ss.reply("+OK")
	case "RSET":
		if cmd.arg != "" {
			return ss.bad("-ERR RSET takes no argument")
		}
		for i := range ss.msgs {
			ss.msgs[i].deleted = false
		}
		n, octets := ss.count()
		ss.reply("+OK %d messages (%d octets)", n, octets)
	case "QUIT":
		if cmd.arg != "" {
			return ss.bad("-ERR QUIT takes no argument")
		}
		return ss.update()
	case "CAPA":
		return ss.capa(cmd)
	case "USER", "PASS", "AUTH", "APOP", "STLS":
		ss.reply("-ERR Already logged in")
	default:
		return ss.bad("-ERR Unknown command")
	}
	return nil
}

// count is the number and size of the messages not deleted.
func (ss *session) count() (n int, octets int64) {
	for _, m := range ss.msgs {
		if !m.deleted {
			n++
			octets += m.size
		}
	}
	return n, octets
}

// message resolves a message number, replying -ERR when it names no
// message or a deleted one.
func (ss *session) message(arg string) (int, bool) {
	n, ok := parseNumber(arg)
	switch {
	case !ok || n == 0 || n > uint64(len(ss.msgs)):
		ss.reply("-ERR No such message")
		return 0, false
	case ss.msgs[n-1].deleted:
		ss.reply("-ERR Message %d already deleted", n)
		return 0, false
	}
	return int(n - 1), true
}

// uidl is a message's unique id: see the package doc.
func (ss *session) uidl(m message) string {
	return strconv.FormatUint(uint64(ss.uidValidity), 10) + "." + strconv.FormatUint(uint64(m.uid), 10)
}

// list answers LIST and UIDL, for one message or all.
func (ss *session) list(cmd command) error {
	args, ok := cmd.args(0, 1)
	if !ok {
		return ss.bad("-ERR Syntax: " + cmd.verb + " [msg]")
	}
	value := func(m message) string {
		if cmd.verb == "UIDL" {
			return ss.uidl(m)
		}
		return strconv.FormatInt(m.size, 10)
	}
	if len(args) == 1 {
		if i, ok := ss.message(args[0]); ok {
			ss.reply("+OK %d %s", i+1, value(ss.msgs[i]))
		}
		return nil
	}
	if cmd.verb == "UIDL" {
		ss.reply("+OK Unique-ID listing follows")
	} else {
		n, octets := ss.count()
		ss.reply("+OK %d messages (%d octets)", n, octets)
	}
	for i, m := range ss.msgs {
		if !m.deleted {
			ss.reply("%d %s", i+1, value(m))
		}
	}
	ss.reply(".")
	return nil
}

// send answers RETR (top false) and TOP, streaming the file.
func (ss *session) send(arg string, lines uint64, top bool) error {
	i, ok := ss.message(arg)
	if !ok {
		return nil
	}
	m := ss.msgs[i]
	f, err := ss.drop.Open(m.uid)
	if err != nil {
		if errors.Is(err, mailbox.ErrNoMessage) || errors.Is(err, os.ErrNotExist) {
			ss.reply("-ERR Message %d was removed by another session", i+1)
			return nil
		}
		ss.srv.log.Error("pop3 open message", "user", ss.user, "uid", m.uid, "err", err)
		ss.reply("-ERR [SYS/TEMP] Cannot read message %d", i+1)
		return nil
	}
	defer f.Close()
	var src io.Reader = f
	if top {
		src = newTopReader(f, lines)
		ss.reply("+OK Top of message follows")
	} else {
		ss.reply("+OK %d octets", m.size)
	}
	dw := newDotWriter(ss.w)
	buf := make([]byte, 32<<10)
	if _, err := io.CopyBuffer(dw, src, buf); err != nil {
		// The multi-line response is half sent: only closing the
		// connection tells the client it is incomplete.
		return fmt.Errorf("send message uid %d: %w", m.uid, err)
	}
	if err := dw.Close(); err != nil {
		return fmt.Errorf("send message uid %d: %w", m.uid, err)
	}
	if top {
		return nil
	}
	ss.retrieved++
	if err := ss.drop.StoreFlags([]uint32{m.uid}, mailbox.FlagsAdd, []string{mailbox.FlagSeen}); err != nil &&
		!errors.Is(err, mailbox.ErrNoMessage) {
		ss.srv.log.Warn("pop3 mark seen", "user", ss.user, "uid", m.uid, "err", err)
	}
	return nil
}

// update is the UPDATE state (RFC 1939 section 6): expunge the messages
// marked deleted, then say goodbye.
func (ss *session) update() error {
	var uids []uint32
	for _, m := range ss.msgs {
		if m.deleted {
			uids = append(uids, m.uid)
		}
	}
	if len(uids) > 0 {
		removed, err := ss.drop.Expunge(uids)
		ss.expunged = len(removed)
		if err != nil {
			ss.srv.log.Error("pop3 expunge", "user", ss.user, "client_ip", ss.ip.String(), "messages", len(uids), "err", err)
			ss.unlock()
			ss.reply("-ERR [SYS/TEMP] Some deleted messages were not removed")
			return errClose
		}
	}
	// Unlocked before the reply: a client may reconnect as soon as it
	// has it.
	ss.unlock()
	n, _ := ss.count()
	ss.reply("+OK %s POP3 server signing off (%d messages left)", ss.srv.cfg.Hostname, n)
	return errClose
}
