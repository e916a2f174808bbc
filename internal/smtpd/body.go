package smtpd

import (
	"errors"
	"io"
)

// errBodyBudget: the server-wide budget for message bytes in memory is used up.
var errBodyBudget = errors.New("in-flight message budget exhausted")

// bodyChunk is how much budget a session takes at a time.
const bodyChunk = 64 << 10

// readBody reads a message, reserving room for it in the server-wide
// in-flight budget chunk by chunk as it grows. It returns the body and the
// bytes reserved, which the caller releases (s.bodyBytes.Add(-reserved))
// once the message is queued or refused — also on error.
func (s *Server) readBody(r io.Reader) ([]byte, int64, error) {
	var reserved int64
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			// Grow by doubling up to bodyChunk at a time, allocating
			// exactly what was reserved (append would round up).
			grow := min(max(int64(cap(buf)), 8<<10), bodyChunk)
			if s.bodyBytes.Add(grow) > s.cfg.MaxInflightBytes {
				s.bodyBytes.Add(-grow)
				return nil, reserved, errBodyBudget
			}
			reserved += grow
			nb := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, reserved, nil
		}
		if err != nil {
			return nil, reserved, err
		}
	}
}
