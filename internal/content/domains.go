package content

import "strings"

// Overrides is one layer of administrator changes to a Policy: the
// [content] section of the config, or one of its per-domain sections.
type Overrides struct {
	Action        Action   // Hold or Reject; zero keeps the base's
	Uninspectable Action   // Accept, Hold or Reject; zero keeps the base's
	Block         []string // extensions added to the blocked list (".EXE" or "exe")
	Allow         []string // extensions removed from it
}

// With returns p changed by o. p is not modified: the result has its own
// BlockedExt map.
func (p Policy) With(o Overrides) Policy {
	out := p
	if o.Action != 0 {
		out.Action = o.Action
	}
	if o.Uninspectable != 0 {
		out.Uninspectable = o.Uninspectable
	}
	base := p.BlockedExt
	if base == nil {
		base = DefaultBlockedExt()
	}
	out.BlockedExt = make(map[string]bool, len(base)+len(o.Block))
	for k, v := range base {
		if v {
			out.BlockedExt[normExt(k)] = true
		}
	}
	for _, e := range o.Block {
		out.BlockedExt[normExt(e)] = true
	}
	for _, e := range o.Allow {
		delete(out.BlockedExt, normExt(e))
	}
	return out
}

func normExt(e string) string {
	return strings.TrimLeft(strings.ToLower(strings.TrimSpace(e)), ".")
}

// DomainPolicies is the attachment policy of a server with per-domain
// overrides: mail to a domain listed in Domains is judged by its policy,
// mail to any other recipient by Default.
type DomainPolicies struct {
	Default Policy
	Domains map[string]Policy // keys: lower-case domain, no trailing dot
}

// NewDomainPolicies layers the configuration on base: global applies to
// every domain, then each domain's own overrides apply on top of that (a
// domain's zero Action keeps the global one).
func NewDomainPolicies(base Policy, global Overrides, domains map[string]Overrides) DomainPolicies {
	d := DomainPolicies{Default: base.With(global), Domains: make(map[string]Policy, len(domains))}
	for name, o := range domains {
		d.Domains[normDomain(name)] = d.Default.With(o)
	}
	return d
}

func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// Check judges msg once under the policy of each distinct recipient domain
// (Default for recipients without their own) and returns the strictest
// verdict: a message to several domains is refused if any of them refuses
// it, held if any holds it.
func (d DomainPolicies) Check(rcpts []string, msg []byte) Verdict {
	best := Verdict{Action: Accept}
	check := func(p Policy) {
		if v := p.Check(msg); v.stricter(best) {
			best = v
		}
	}
	seen := map[string]bool{}
	useDefault := len(rcpts) == 0
	for _, r := range rcpts {
		dom := normDomain(r[strings.LastIndexByte(r, '@')+1:])
		p, ok := d.Domains[dom]
		if !ok {
			useDefault = true
			continue
		}
		if !seen[dom] {
			seen[dom] = true
			check(p)
		}
	}
	if useDefault {
		check(d.Default)
	}
	return best
}

// MemoryBound is the largest Policy.MemoryBound of d's policies: Check
// judges the message under one policy at a time.
func (d DomainPolicies) MemoryBound(msgLen int) int64 {
	b := d.Default.MemoryBound(msgLen)
	for _, p := range d.Domains {
		b = max(b, p.MemoryBound(msgLen))
	}
	return b
}
