package relaytest

import (
	"net/netip"
	"strings"
)

// probeSpec is one probe of the battery before it is run.
type probeSpec struct {
	name    string
	from    string // reverse-path, "" for <>
	rcpt    string // exactly what goes between RCPT TO:< and >
	control bool   // the destination is local: must not count as relayed
}

// target describes the names the battery is built from.
type target struct {
	localDomain   string // L
	localUser     string // U
	foreignDomain string // F
	localLit      string // the target's own address as a literal, "[192.0.2.5]"
	foreignLit    string // an address literal that is not the target
}

// foreignUser is the local part used at the foreign domain.
const foreignUser = "relaytest"

// battery returns every probe: the S2 forms from mamori's design and the
// classic forms from the Sendmail/Postfix literature and the old public
// relay-test services. Each recipient form whose real destination is
// foreign is tried with a foreign sender, the null sender and a spoofed
// local sender (some servers relay "for local senders"). Controls (local
// destinations) come first so a reader sees the server does accept mail.
func battery(t target) []probeSpec {
	u, L, F := foreignUser, t.localDomain, t.foreignDomain
	fromForeign := foreignUser + "@" + F
	fromLocal := t.localUser + "@" + L

	specs := []probeSpec{
		{name: "control-local", from: fromForeign, rcpt: t.localUser + "@" + L, control: true},
		{name: "control-local-mixed-case", from: fromForeign, rcpt: t.localUser + "@" + mixedCase(L), control: true},
		{name: "control-local-trailing-dot", from: fromForeign, rcpt: t.localUser + "@" + L + ".", control: true},
	}

	forms := []struct{ name, rcpt string }{
		{"foreign", u + "@" + F},
		{"foreign-trailing-dot", u + "@" + F + "."},
		{"foreign-mixed-case", mixedCase(u) + "@" + mixedCase(F)},
		{"foreign-ip-literal", u + "@" + t.foreignLit},
		{"percent-hack", u + "%" + F + "@" + L},
		{"percent-hack-mixed-case", u + "%" + F + "@" + mixedCase(L)},
		{"percent-hack-trailing-dot", u + "%" + F + "@" + L + "."},
		{"percent-hack-local-literal", u + "%" + F + "@" + t.localLit},
		{"percent-hack-double", u + "%" + F + "%" + L + "@" + L},
		{"quoted-at", `"` + u + "@" + F + `"`},
		{"quoted-at-local", `"` + u + "@" + F + `"@` + L},
		{"quoted-at-local-literal", `"` + u + "@" + F + `"@` + t.localLit},
		{"quoted-percent-local", `"` + u + "%" + F + `"@` + L},
		{"bang-path", F + "!" + u},
		{"bang-path-local", F + "!" + u + "@" + L},
		{"bang-path-local-literal", F + "!" + u + "@" + t.localLit},
		{"source-route", "@" + L + ":" + u + "@" + F},
		{"source-route-multihop", "@" + L + ",@" + L + ":" + u + "@" + F},
		{"source-route-local-literal", "@" + t.localLit + ":" + u + "@" + F},
		{"double-at", u + "@" + F + "@" + L},
	}
	senders := []struct{ suffix, from string }{
		{"", fromForeign},
		{"/null-sender", ""},
		{"/local-sender", fromLocal},
	}
	for _, s := range senders {
		for _, f := range forms {
			specs = append(specs, probeSpec{name: f.name + s.suffix, from: s.from, rcpt: f.rcpt})
		}
	}
	specs = append(specs, probeSpec{
		name: "foreign/local-literal-sender", from: t.localUser + "@" + t.localLit, rcpt: u + "@" + F,
	})
	return specs
}

// mixedCase alternates letter case: "local.test" → "LoCaL.tEsT".
func mixedCase(s string) string {
	var b strings.Builder
	upper := true
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			if upper {
				r = toUpper(r)
			} else {
				r = toLower(r)
			}
			upper = !upper
		}
		b.WriteRune(r)
	}
	return b.String()
}

func toUpper(r rune) rune {
	if r >= 'a' && r <= 'z' {
		return r - 'a' + 'A'
	}
	return r
}

func toLower(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r - 'A' + 'a'
	}
	return r
}

// literal formats an address as an RFC 5321 address literal.
func literal(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

// foreignLiteral picks a documentation address (RFC 5737, never routed)
// that is not the target itself.
func foreignLiteral(targetIP netip.Addr) string {
	for _, s := range []string{"192.0.2.1", "198.51.100.1"} {
		ip := netip.MustParseAddr(s)
		if ip != targetIP.Unmap() {
			return literal(ip)
		}
	}
	return literal(netip.MustParseAddr("203.0.113.1"))
}

// domainOfHost derives a mail domain from a server host name: the host name
// minus its first label when it has at least three labels
// ("mx.example.org" → "example.org"), else the name itself. It returns ""
// when name does not look like a host name.
func domainOfHost(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if !strings.Contains(name, ".") {
		return ""
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return ""
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return ""
			}
		}
	}
	if len(labels) >= 3 {
		return strings.Join(labels[1:], ".")
	}
	return name
}
