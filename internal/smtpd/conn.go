package smtpd

import (
	"net"
	"sync"
	"time"
)

// sessionConn is an accepted connection with the limits that outlive any
// one SMTP command: it releases the guard's connection slot when closed and
// ends the session when its time limit passes, whatever the client does.
//
// It never looks at the bytes: every protocol decision is go-smtp's parse,
// so nothing the client writes inside a message can be taken for a
// command. (An earlier tap scanned the plaintext stream for source routes,
// which go-smtp strips; it could be misled by pipelined transactions and
// message lines. The relay decision is made on the final mailbox, as RFC
// 5321 appendix C prescribes, so the route is simply ignored.)
type sessionConn struct {
	net.Conn

	onClose   func()      // releases the guard's connection slot
	timer     *time.Timer // session time limit
	closeOnce sync.Once
}

// Close closes the connection once, stopping the session timer and
// releasing the connection slot.
func (c *sessionConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		err = c.Conn.Close()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}
