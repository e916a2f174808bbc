package queue

import (
	"fmt"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Validate reports whether the filter can be used. List and Count treat an
// invalid filter as matching nothing; the bulk operations return this error.
func (f Filter) Validate() error {
	if f.ClientIP != "" {
		if _, err := ipnet.ParsePrefix(f.ClientIP); err != nil {
			return fmt.Errorf("queue filter: client IP %q: %w", f.ClientIP, err)
		}
	}
	if f.OlderThan < 0 {
		return fmt.Errorf("queue filter: negative age %v", f.OlderThan)
	}
	if f.MinSize < 0 || f.MaxSize < 0 || (f.MaxSize > 0 && f.MinSize > f.MaxSize) {
		return fmt.Errorf("queue filter: bad size range %d..%d", f.MinSize, f.MaxSize)
	}
	switch f.State {
	case "", StateActive, StateDeferred, StateHeld:
	default:
		return fmt.Errorf("queue filter: unknown state %q", f.State)
	}
	return nil
}

// parseClientIP reads a message's ClientIP; an unparsable one is the zero
// Addr, which no ClientIP filter matches.
func parseClientIP(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone("")
}

type addrKind int

const (
	addrAny addrKind = iota
	addrNull
	addrExact
	addrDomain
	addrGlob
)

// addrPattern is a compiled From/To filter.
type addrPattern struct {
	kind addrKind
	pat  string
}

func compileAddr(p string) addrPattern {
	p = strings.TrimSpace(p)
	switch {
	case p == "":
		return addrPattern{kind: addrAny}
	case p == "<>":
		return addrPattern{kind: addrNull}
	case len(p) > 2 && p[0] == '<' && p[len(p)-1] == '>':
		p = p[1 : len(p)-1]
	}
	switch {
	case strings.ContainsAny(p, "*?"):
		return addrPattern{kind: addrGlob, pat: strings.ToLower(p)}
	case strings.HasPrefix(p, "@"):
		return addrPattern{kind: addrDomain, pat: p[1:]}
	default:
		return addrPattern{kind: addrExact, pat: p}
	}
}

func (a addrPattern) match(addr string) bool {
	switch a.kind {
	case addrAny:
		return true
	case addrNull:
		return addr == ""
	case addrExact:
		return strings.EqualFold(addr, a.pat)
	case addrDomain:
		i := strings.LastIndexByte(addr, '@')
		return i >= 0 && strings.EqualFold(addr[i+1:], a.pat)
	case addrGlob:
		return globMatch(a.pat, addr)
	}
	return false
}

// globMatch matches name against a lower-case pattern where * is any run of
// characters and ? one character, ignoring case. It backtracks only to the
// last star, so it runs in O(len(pattern)*len(name)) at worst.
func globMatch(pattern, name string) bool {
	px, nx := 0, 0
	nextPx, nextNx := 0, 0
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			pr, pw := utf8.DecodeRuneInString(pattern[px:])
			switch pr {
			case '*':
				nextPx = px
				if nx < len(name) {
					_, w := utf8.DecodeRuneInString(name[nx:])
					nextNx = nx + w
				} else {
					nextNx = len(name) + 1
				}
				px += pw
				continue
			case '?':
				if nx < len(name) {
					_, w := utf8.DecodeRuneInString(name[nx:])
					px += pw
					nx += w
					continue
				}
			default:
				if nx < len(name) {
					nr, w := utf8.DecodeRuneInString(name[nx:])
					if nr == pr || unicode.ToLower(nr) == pr {
						px += pw
						nx += w
						continue
					}
				}
			}
		}
		if 0 < nextNx && nextNx <= len(name) {
			px, nx = nextPx, nextNx
			continue
		}
		return false
	}
	return true
}

// matcher is a Filter compiled against one point in time.
type matcher struct {
	ids      []string // deduplicated; nil means all
	from, to addrPattern
	hasIP    bool
	prefix   netip.Prefix
	user     string
	hasAge   bool
	cutoff   time.Time
	state    State
	subject  string // lower case
	rule     string
	minSize  int64
	maxSize  int64
}

func compileFilter(f Filter, now time.Time) (*matcher, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	m := &matcher{
		from:    compileAddr(f.From),
		to:      compileAddr(f.To),
		user:    f.User,
		state:   f.State,
		subject: strings.ToLower(f.Subject),
		rule:    f.Rule,
		minSize: f.MinSize,
		maxSize: f.MaxSize,
	}
	if len(f.IDs) > 0 {
		seen := make(map[string]bool, len(f.IDs))
		m.ids = make([]string, 0, len(f.IDs))
		for _, id := range f.IDs {
			if !seen[id] {
				seen[id] = true
				m.ids = append(m.ids, id)
			}
		}
	}
	if f.ClientIP != "" {
		p, _ := ipnet.ParsePrefix(f.ClientIP) // checked by Validate
		m.hasIP, m.prefix = true, p
	}
	if f.OlderThan > 0 {
		m.hasAge, m.cutoff = true, now.Add(-f.OlderThan)
	}
	return m, nil
}

// match tests everything but IDs, which the caller uses to pick candidates.
func (m *matcher) match(e *entry) bool {
	if m.state != "" && e.meta.State != m.state {
		return false
	}
	if m.hasAge && !e.meta.Received.Before(m.cutoff) {
		return false
	}
	if (m.minSize > 0 && e.meta.Size < m.minSize) || (m.maxSize > 0 && e.meta.Size > m.maxSize) {
		return false
	}
	if m.user != "" && !strings.EqualFold(e.meta.User, m.user) {
		return false
	}
	if m.rule != "" && !strings.EqualFold(e.meta.Rule, m.rule) {
		return false
	}
	if m.hasIP && (!e.ip.IsValid() || !m.prefix.Contains(e.ip)) {
		return false
	}
	if m.subject != "" && !strings.Contains(e.lowerSubject, m.subject) {
		return false
	}
	if !m.from.match(e.meta.From) {
		return false
	}
	if m.to.kind != addrAny {
		found := false
		for _, r := range e.meta.Rcpts {
			if m.to.match(r.Addr) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
