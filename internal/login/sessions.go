package login

import (
	"slices"
	"sync"
)

// Sessions tracks every logged-in session of every protocol by user, so
// that a credential the administrator revokes — a password changed, an
// account disabled or deleted, on this node or another — ends the
// sessions opened with it at once: a sold password stops working in the
// IMAP IDLE or the SMTP connection the buyer already holds, not only at
// the next login. It is safe for concurrent use; a nil *Sessions tracks
// nothing.
type Sessions struct {
	mu     sync.Mutex
	byUser map[string]map[*session]struct{}
	// gen counts each user's revocations per protocol (key: user NUL
	// protocol), so that a login checked before a revocation and
	// registered after it is ended too.
	gen map[string]uint64
}

type session struct {
	protocol string
	end      func()
}

// Protocols are the protocols sessions are registered for.
var Protocols = []string{"smtp", "imap", "pop3"}

// Gen returns user's revocation count for protocol: a front end reads it
// before it checks the password (with Key(username)) and passes it to Add.
func (s *Sessions) Gen(user, protocol string) uint64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen[user+"\x00"+protocol]
}

// Add records a session of user (the canonical login Check returned) over
// protocol ("smtp", "imap", "pop3"). gen is what Gen said before the
// password was checked: if user was revoked since, the session is ended
// at once. end is called, in a goroutine of its own, when the session is
// revoked; it must end the session (close its connection). The returned
// remove must be called when the session ends by itself.
func (s *Sessions) Add(user, protocol string, gen uint64, end func()) (remove func()) {
	if s == nil {
		return func() {}
	}
	e := &session{protocol: protocol, end: end}
	s.mu.Lock()
	if s.gen[user+"\x00"+protocol] != gen {
		s.mu.Unlock()
		go end()
		return func() {}
	}
	if s.byUser == nil {
		s.byUser = make(map[string]map[*session]struct{})
	}
	set := s.byUser[user]
	if set == nil {
		set = make(map[*session]struct{})
		s.byUser[user] = set
	}
	set[e] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if set := s.byUser[user]; set != nil {
			delete(set, e)
			if len(set) == 0 {
				delete(s.byUser, user)
			}
		}
	}
}

// Revoke ends the sessions of user over the given protocols (every
// protocol when none is named) and returns how many it ended.
func (s *Sessions) Revoke(user string, protocols ...string) int {
	if s == nil {
		return 0
	}
	var ended []*session
	s.mu.Lock()
	if s.gen == nil {
		s.gen = make(map[string]uint64)
	}
	bump := protocols
	if len(bump) == 0 {
		bump = Protocols
	}
	for _, p := range bump {
		s.gen[user+"\x00"+p]++
	}
	for e := range s.byUser[user] {
		if len(protocols) == 0 || slices.Contains(protocols, e.protocol) {
			ended = append(ended, e)
			delete(s.byUser[user], e)
		}
	}
	if len(s.byUser[user]) == 0 {
		delete(s.byUser, user)
	}
	s.mu.Unlock()
	for _, e := range ended {
		go e.end()
	}
	return len(ended)
}

// Count returns the number of sessions user has open.
func (s *Sessions) Count(user string) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byUser[user])
}
