package smtpd

import (
	"errors"
	"io"
)

// errBodyBudget: the server-wide budget for message bytes in memory is used up.
var errBodyBudget = errors.New("in-flight message budget exhausted")

// A message without a SIZE hint is read in chunks of firstChunk, growing
// to bodyChunk.
const (
	firstChunk = 8 << 10
	bodyChunk  = 64 << 10
)

// budget is one session's share of the server-wide budget for message
// bodies (the receive part of Config.MaxInflightBytes, see memoryPlan). Every buffer a message occupies while it is
// received, checked and queued is reserved here first, including buffers
// the garbage collector has not reclaimed yet, so the bound holds for all
// copies, not only the first.
type budget struct {
	srv      *Server
	limit    int64 // this session's ceiling on the shared counter
	reserved int64
}

// outsiderShare is the part of the in-flight budget that unauthenticated
// clients from outside may fill together; the rest stays for the trusted
// LAN and authenticated users, whom a flood on port 25 must not stop.
const outsiderShare = 3 // quarters

// newBudget returns the budget of a session of the given class.
func (s *Server) newBudget(outsider bool) *budget {
	limit := s.receiveLimit
	if outsider {
		limit = limit / 4 * outsiderShare
	}
	return &budget{srv: s, limit: limit}
}

// take reserves n bytes, or reports that the budget is exhausted.
func (b *budget) take(n int64) bool {
	if n <= 0 {
		return true
	}
	if b.srv.bodyBytes.Add(n) > b.limit {
		b.srv.bodyBytes.Add(-n)
		return false
	}
	b.reserved += n
	return true
}

// give returns n bytes of the reservation (a copy that is no longer
// referenced).
func (b *budget) give(n int64) {
	n = min(n, b.reserved)
	b.srv.bodyBytes.Add(-n)
	b.reserved -= n
}

// release returns everything reserved.
func (b *budget) release() {
	b.srv.bodyBytes.Add(-b.reserved)
	b.reserved = 0
}

// readBody reads a message into one buffer: in chunks, reserved as bytes
// actually arrive (a SIZE= announcement reserves nothing: a client could
// otherwise hold the budget without sending), joined at the end. Both are
// reserved while the join copies, then the chunks are given back, so the
// reservation is the live bytes.
func (b *budget) readBody(r io.Reader) ([]byte, error) {
	return b.readChunks(r, nil)
}

func (b *budget) readChunks(r io.Reader, first []byte) ([]byte, error) {
	var chunks [][]byte
	total := int64(len(first))
	if first != nil {
		chunks = append(chunks, first)
	}
	for {
		// Small messages (most mail) take a small first chunk; chunks grow
		// with the message up to bodyChunk.
		size := int64(min(max(total, firstChunk), bodyChunk))
		if !b.take(size) {
			return nil, errBodyBudget
		}
		c := make([]byte, size)
		n, err := io.ReadFull(r, c)
		chunks = append(chunks, c[:n])
		total += int64(n)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(chunks) == 1 {
		return chunks[0], nil
	}
	if !b.take(total) {
		return nil, errBodyBudget
	}
	buf := make([]byte, 0, total)
	var held int64
	for _, c := range chunks {
		buf = append(buf, c...)
		held += int64(cap(c))
	}
	b.give(held)
	return buf, nil
}
