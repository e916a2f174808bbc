package queue

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/ipnet"
	"github.com/mamori-mail/mamori/internal/units"
)

// FilterError is a filter that cannot be used: a field that does not parse
// or is out of range. Invalid reports true so that the admin API answers 400.
type FilterError struct {
	Field string // the field as the user named it: "client-ip", "state", …
	Value string
	Msg   string
}

func (e *FilterError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("queue filter: %s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("queue filter: %s %q: %s", e.Field, e.Value, e.Msg)
}

// Invalid marks the error as the caller's fault (HTTP 400).
func (e *FilterError) Invalid() bool { return true }

// FilterSpec is a filter as text, the way the CLI flags and the admin API's
// query parameters give it. ParseFilter is the one place where it is read,
// so the CLI and the API accept and refuse exactly the same filters.
type FilterSpec struct {
	IDs         []string
	From        string // address, @domain, glob, or <> for bounces
	To          string
	ClientIP    string // IP or CIDR
	User        string
	OlderThan   string // age: Go duration or Nd ("30m", "12h", "2d")
	State       string // active, deferred or held (any case)
	Subject     string // substring
	Rule        string
	LargerThan  string // bytes, optionally with k, m or g (KiB, MiB, GiB)
	SmallerThan string
}

// Limits on filter text; nothing legitimate comes near them.
const (
	maxPatternLen = 512
	maxTextLen    = 998
	// MaxAge is the longest age a filter or a ban may name (100 years): a
	// bound that keeps day arithmetic far from time.Duration's overflow.
	MaxAge = 100 * 365 * 24 * time.Hour
)

// ParseFilter reads and validates every field of s. An error names the
// field and says what was expected; it is never turned into a filter that
// silently matches nothing (or everything).
func ParseFilter(s FilterSpec) (Filter, error) {
	var f Filter
	for _, id := range s.IDs {
		id = strings.TrimSpace(id)
		if !ValidID(id) {
			return Filter{}, &FilterError{"id", id, "not a queue ID (16 characters 0-9 a-v, as queue list prints)"}
		}
		f.IDs = append(f.IDs, id)
	}
	f.From = strings.TrimSpace(s.From)
	f.To = strings.TrimSpace(s.To)
	f.User = strings.TrimSpace(s.User)
	f.Subject = s.Subject
	f.Rule = strings.TrimSpace(s.Rule)
	if v := strings.TrimSpace(s.ClientIP); v != "" {
		p, err := ipnet.ParsePrefix(v)
		if err != nil {
			return Filter{}, &FilterError{"client-ip", v, "want an IP address or a CIDR such as 10.0.0.0/8"}
		}
		f.ClientIP = p.String()
	}
	if v := strings.TrimSpace(s.OlderThan); v != "" {
		d, err := ParseAge(v)
		if err != nil {
			return Filter{}, &FilterError{"older-than", v, err.Error()}
		}
		f.OlderThan = d // 0 is "older than now": every message
	}
	if v := strings.TrimSpace(s.State); v != "" {
		f.State = State(strings.ToLower(v))
	}
	var err error
	if f.MinSize, err = parseSize("larger-than", s.LargerThan); err != nil {
		return Filter{}, err
	}
	if f.MaxSize, err = parseSize("smaller-than", s.SmallerThan); err != nil {
		return Filter{}, err
	}
	if strings.TrimSpace(s.SmallerThan) != "" && f.MaxSize == 0 {
		return Filter{}, &FilterError{"smaller-than", s.SmallerThan, "must be at least 1 byte"}
	}
	if err := f.Validate(); err != nil {
		return Filter{}, err
	}
	return f, nil
}

// ValidID reports whether id has the form of a queue ID.
func ValidID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}

// ParseAge reads an age or a length of time: a Go duration ("90s", "30m",
// "12h") or a number of days ("2d", "1.5d"). Negative, non-finite and
// absurd (beyond MaxAge) values are errors, never a silent 0.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || strings.ContainsAny(d, "xXpP_") {
			return 0, fmt.Errorf("bad age %q: use e.g. 30m, 12h or 2d", s)
		}
		if n < 0 || n*24 > float64(MaxAge/time.Hour) {
			return 0, fmt.Errorf("age %q out of range 0..%dd", s, MaxAge/(24*time.Hour))
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad age %q: use e.g. 30m, 12h or 2d", s)
	}
	if d < 0 || d > MaxAge {
		return 0, fmt.Errorf("age %q out of range 0..%dd", s, MaxAge/(24*time.Hour))
	}
	return d, nil
}

// parseSize reads a byte count with an optional k, m or g (1024-based)
// suffix; "" is 0.
func parseSize(field, s string) (int64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, &FilterError{field, s, err.Error()}
	}
	return n, nil
}

// CheckRule validates a rule name given by a person (the reason of a hold):
// non-empty, printable, at most 512 bytes.
func CheckRule(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("empty")
	}
	return checkText(s, maxPatternLen)
}

// IsEmpty reports whether f selects the whole queue (no IDs, no field).
func (f Filter) IsEmpty() bool {
	return len(f.IDs) == 0 && f.From == "" && f.To == "" && f.ClientIP == "" && f.User == "" &&
		f.OlderThan == 0 && f.State == "" && f.Subject == "" && f.Rule == "" && f.MinSize == 0 && f.MaxSize == 0
}

// Validate reports whether the filter can be used. List and Count treat an
// invalid filter as matching nothing; the bulk operations return this error.
// Callers that take a filter from a person parse it with ParseFilter, which
// calls Validate, so such a filter is refused before it reaches the queue.
func (f Filter) Validate() error {
	if f.ClientIP != "" {
		if _, err := ipnet.ParsePrefix(f.ClientIP); err != nil {
			return &FilterError{"client-ip", f.ClientIP, "want an IP address or a CIDR such as 10.0.0.0/8"}
		}
	}
	if f.OlderThan < 0 || f.OlderThan > MaxAge {
		return &FilterError{"older-than", f.OlderThan.String(), "out of range"}
	}
	if f.MinSize < 0 || f.MaxSize < 0 || (f.MaxSize > 0 && f.MinSize > f.MaxSize) {
		return &FilterError{"size", fmt.Sprintf("%d..%d", f.MinSize, f.MaxSize), "larger-than must not exceed smaller-than"}
	}
	switch f.State {
	case "", StateActive, StateDeferred, StateHeld:
	default:
		return &FilterError{"state", string(f.State), "want active, deferred or held"}
	}
	for _, a := range []struct{ field, v string }{{"from", f.From}, {"to", f.To}} {
		if err := checkAddrPattern(a.v); err != nil {
			return &FilterError{a.field, a.v, err.Error()}
		}
	}
	for _, t := range []struct {
		field, v string
		max      int
	}{{"user", f.User, maxPatternLen}, {"subject", f.Subject, maxTextLen}, {"rule", f.Rule, maxPatternLen}} {
		if err := checkText(t.v, t.max); err != nil {
			return &FilterError{t.field, t.v, err.Error()}
		}
	}
	return nil
}

// checkText refuses text no message field can contain: invalid UTF-8 and
// control characters (a subject is stored decoded, on one line).
func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains the control character %U", r)
		}
	}
	return nil
}

// checkAddrPattern refuses sender/recipient patterns that cannot match any
// address, so a typo is an error rather than an empty result.
func checkAddrPattern(p string) error {
	p = strings.TrimSpace(p)
	if err := checkText(p, maxPatternLen); err != nil {
		return err
	}
	if p == "" || p == "<>" {
		return nil
	}
	if strings.HasPrefix(p, "<") != strings.HasSuffix(p, ">") {
		return fmt.Errorf("unbalanced angle brackets")
	}
	if strings.HasPrefix(p, "<") {
		p = p[1 : len(p)-1]
	}
	if strings.ContainsAny(p, "<>") {
		return fmt.Errorf("want an address, @domain or a glob (<> alone for bounces)")
	}
	if strings.ContainsAny(p, "*?") {
		return nil
	}
	if d, ok := strings.CutPrefix(p, "@"); ok && (d == "" || strings.Contains(d, "@")) {
		return fmt.Errorf("want @domain")
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
