package smtpd

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tapConn watches the plaintext command stream of a connection for what
// go-smtp's parser throws away before our Session sees it: the source route
// of a path (`RCPT TO:<@relay:user@domain>` reaches Rcpt as `user@domain`).
// mamori refuses source-routed recipients, so it must know one was used.
//
// The tap follows the SMTP state just enough to ignore message content: a
// DATA command answered with 354 switches to data mode until the lone "."
// line; BDAT chunks are skipped by their announced size. After STARTTLS (or
// on an implicit-TLS listener) the bytes below go-smtp are ciphertext and
// the tap switches itself off; inside TLS the route is ignored, as RFC 5321
// appendix C prescribes, and the relay decision is made on the final
// mailbox, so a source route can never open a relay either way.
type tapConn struct {
	net.Conn

	mu        sync.Mutex
	off       bool
	mode      tapMode
	skip      int64 // BDAT bytes still to skip
	line      []byte
	overflow  bool // current line longer than we keep
	awaitData bool // saw DATA; 354 reply switches to data mode
	awaitTLS  bool // saw STARTTLS; 220 reply switches the tap off
	routed    []string
	flood     bool // more routed paths pipelined than we keep: treat all as routed

	onClose   func()      // releases the guard's connection slot
	timer     *time.Timer // session time limit
	closeOnce sync.Once
}

// Close closes the connection once, stopping the session timer and
// releasing the connection slot.
func (t *tapConn) Close() error {
	err := net.ErrClosed
	t.closeOnce.Do(func() {
		if t.timer != nil {
			t.timer.Stop()
		}
		err = t.Conn.Close()
		if t.onClose != nil {
			t.onClose()
		}
	})
	return err
}

type tapMode int

const (
	modeCommand tapMode = iota
	modeData
)

const (
	tapMaxLine   = 1024 // enough for any MAIL/RCPT path (RFC 5321: 256 + params)
	tapMaxRouted = 64
)

func newTap(c net.Conn, tlsFromStart bool) *tapConn {
	return &tapConn{Conn: c, off: tlsFromStart, line: make([]byte, 0, 128)}
}

func (t *tapConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if n > 0 {
		t.mu.Lock()
		t.scan(p[:n])
		t.mu.Unlock()
	}
	return n, err
}

func (t *tapConn) Write(p []byte) (int, error) {
	t.observeReply(p)
	return t.Conn.Write(p)
}

// observeReply switches modes on the server's answers to DATA (354) and
// STARTTLS (220).
func (t *tapConn) observeReply(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.off || len(p) < 4 {
		return
	}
	switch {
	case t.awaitData && bytes.HasPrefix(p, []byte("354")):
		t.mode = modeData
	case t.awaitTLS && bytes.HasPrefix(p, []byte("220")):
		t.off = true
	}
	t.awaitData, t.awaitTLS = false, false
}

func (t *tapConn) scan(b []byte) {
	for len(b) > 0 && !t.off {
		if t.skip > 0 {
			k := int64(len(b))
			if k > t.skip {
				k = t.skip
			}
			t.skip -= k
			b = b[k:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.appendLine(b)
			return
		}
		t.appendLine(b[:i])
		b = b[i+1:]
		t.endLine()
	}
}

func (t *tapConn) appendLine(b []byte) {
	if t.overflow {
		return
	}
	if len(t.line)+len(b) > tapMaxLine {
		t.overflow = true
		return
	}
	t.line = append(t.line, b...)
}

func (t *tapConn) endLine() {
	line := strings.TrimSuffix(string(t.line), "\r")
	overflow := t.overflow
	t.line, t.overflow = t.line[:0], false
	if t.mode == modeData {
		if !overflow && line == "." {
			t.mode = modeCommand
		}
		return
	}
	if overflow {
		return
	}
	verb, arg, _ := strings.Cut(line, " ")
	switch strings.ToUpper(verb) {
	case "DATA":
		t.awaitData = true
	case "STARTTLS":
		t.awaitTLS = true
	case "BDAT":
		f := strings.Fields(arg)
		if len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n > 0 {
				t.skip = n
			}
		}
	case "RCPT":
		if mbox, ok := routedMailbox(arg, "TO:"); ok {
			if len(t.routed) >= tapMaxRouted {
				t.flood = true
			} else {
				t.routed = append(t.routed, mbox)
			}
		}
	}
}

// routedMailbox extracts the final mailbox of a source-routed path in a
// MAIL/RCPT argument ("TO:<@a,@b:user@c> ..."), as go-smtp will report it.
func routedMailbox(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	p := strings.TrimLeft(arg[len(prefix):], " ")
	p = strings.TrimPrefix(p, "<")
	if !strings.HasPrefix(p, "@") {
		return "", false
	}
	i := strings.IndexByte(p, ':')
	if i < 0 {
		return "", false
	}
	p = p[i+1:]
	var sb strings.Builder
	if strings.HasPrefix(p, `"`) {
		p = p[1:]
		for len(p) > 0 {
			c := p[0]
			p = p[1:]
			if c == '\\' && len(p) > 0 {
				c, p = p[0], p[1:]
			} else if c == '"' {
				break
			}
			sb.WriteByte(c)
		}
	}
	end := strings.IndexAny(p, "> \t")
	if end < 0 {
		end = len(p)
	}
	sb.WriteString(p[:end])
	return sb.String(), true
}

// takeRouted reports whether rcpt (as go-smtp parsed it) was given with a
// source route, consuming that observation.
func (t *tapConn) takeRouted(rcpt string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flood {
		return true
	}
	for i, r := range t.routed {
		if strings.EqualFold(r, rcpt) {
			t.routed = append(t.routed[:i], t.routed[i+1:]...)
			return true
		}
	}
	return false
}
