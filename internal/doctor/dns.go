package doctor

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"

	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/resolver"
)

// fqdn is name with the trailing dot of zone-file syntax.
func fqdn(name string) string { return dns.Fqdn(strings.ToLower(name)) }

// addrRecord is the zone-file A or AAAA line that makes name resolve to ip.
func addrRecord(name string, ip netip.Addr) string {
	t := "A"
	if ip.Is6() {
		t = "AAAA"
	}
	return fmt.Sprintf("%s IN %s %s", fqdn(name), t, ip)
}

func (d *doctor) checkMX(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	host := strings.ToLower(d.cfg.Hostname)
	var out []Check
	for _, dom := range d.cfg.Domains {
		c := Check{Name: CheckMX, Subject: dom, Fix: fmt.Sprintf("%s IN MX 10 %s", fqdn(dom), fqdn(host))}
		mxs, err := d.res.LookupMX(ctx, dom)
		if err != nil {
			c.Status, c.Detail = StatusFail, "MX: "+dnsProblem(err)
			out = append(out, c)
			continue
		}
		var names []string
		for _, mx := range mxs {
			names = append(names, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
		}
		slices.Sort(names)
		list := strings.Join(names, ", ")
		c.Status, c.Detail = StatusFail, fmt.Sprintf("MX %s: none is %s or resolves to our addresses", list, host)
		ours := d.ourIPs(ctx)
		for _, mx := range mxs {
			if mx.Host == host {
				c.Status, c.Detail, c.Fix = StatusOK, "MX "+list, ""
				break
			}
			ips, err := d.res.LookupIP(ctx, mx.Host)
			if err == nil && overlaps(ips, ours) {
				c.Status, c.Detail, c.Fix = StatusOK, fmt.Sprintf("MX %s (%s resolves to our address)", list, mx.Host), ""
				break
			}
		}
		out = append(out, c)
	}
	return out
}

func overlaps(a, b []netip.Addr) bool {
	for _, x := range a {
		if slices.Contains(b, x.Unmap()) {
			return true
		}
	}
	return false
}

func (d *doctor) checkA(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	host := strings.ToLower(d.cfg.Hostname)
	c := Check{Name: CheckA, Subject: host}
	var public []netip.Addr
	for _, s := range d.cfg.Guard.PublicIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			public = append(public, a.Unmap())
		}
	}
	fixFor := func(ips []netip.Addr) string {
		if len(ips) == 0 {
			return fmt.Sprintf("%s IN A YOUR.PUBLIC.IPV4.ADDRESS   (and set [guard] public_ips)", fqdn(host))
		}
		var lines []string
		for _, ip := range ips {
			lines = append(lines, addrRecord(host, ip))
		}
		return strings.Join(lines, "\n")
	}
	got, err := d.res.LookupIP(ctx, host)
	if err != nil {
		c.Status, c.Detail, c.Fix = StatusFail, "A/AAAA: "+dnsProblem(err), fixFor(public)
		return []Check{c}
	}
	var missing []netip.Addr
	for _, ip := range public {
		if !slices.Contains(got, ip) {
			missing = append(missing, ip)
		}
	}
	c.Detail = "A/AAAA " + joinAddrs(got)
	switch {
	case len(missing) > 0:
		c.Status, c.Fix = StatusFail, fixFor(missing)
		c.Detail += "; missing [guard] public_ips " + joinAddrs(missing)
	case len(public) == 0:
		c.Status = StatusWarn
		c.Detail += "; [guard] public_ips is not set, so these are assumed to be ours"
		c.Fix = "public_ips = [" + quoteAddrs(got) + "]   (in [guard])"
	default:
		c.Status = StatusOK
	}
	return []Check{c}
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

func quoteAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = `"` + ip.String() + `"`
	}
	return strings.Join(s, ", ")
}

// checkPTR checks the reverse DNS of each of our addresses: that a PTR
// exists and names the host name (ptr), and that a name it gives resolves
// back to the address (fcrdns, forward-confirmed reverse DNS, which many
// receivers require).
func (d *doctor) checkPTR(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	host := strings.ToLower(d.cfg.Hostname)
	ips := d.ourIPs(ctx)
	if len(ips) == 0 {
		return []Check{
			{Name: CheckPTR, Subject: host, Status: StatusSkip, Detail: "no public address known: " + d.ipsNote},
			{Name: CheckFCrDNS, Subject: host, Status: StatusSkip, Detail: "no public address known"},
		}
	}
	var out []Check
	for _, ip := range ips {
		arpa, _ := dns.ReverseAddr(ip.String())
		fixPTR := fmt.Sprintf("%s IN PTR %s   (set by the owner of the address, usually your hosting provider)", arpa, fqdn(host))
		ptr := Check{Name: CheckPTR, Subject: ip.String()}
		fc := Check{Name: CheckFCrDNS, Subject: ip.String()}
		names, err := d.res.LookupPTR(ctx, ip)
		if err != nil {
			ptr.Status, ptr.Detail, ptr.Fix = StatusFail, "PTR: "+dnsProblem(err), fixPTR
			fc.Status, fc.Detail = StatusSkip, "no PTR name to confirm"
			out = append(out, ptr, fc)
			continue
		}
		list := strings.Join(names, ", ")
		if slices.Contains(names, host) {
			ptr.Status, ptr.Detail = StatusOK, "PTR "+list
		} else {
			ptr.Status, ptr.Detail, ptr.Fix = StatusWarn, fmt.Sprintf("PTR %s, not %s", list, host), fixPTR
		}
		fc.Status = StatusFail
		fc.Detail = fmt.Sprintf("no PTR name (%s) resolves back to %s", list, ip)
		fc.Fix = addrRecord(names[0], ip)
		for _, n := range names {
			back, err := d.res.LookupIP(ctx, n)
			if err == nil && slices.Contains(back, ip) {
				fc.Status, fc.Detail, fc.Fix = StatusOK, fmt.Sprintf("%s resolves back to %s", n, ip), ""
				break
			}
		}
		out = append(out, ptr, fc)
	}
	return out
}

// spfRecords returns the TXT records of name that are SPF records.
func spfRecords(txts []string) []string {
	var out []string
	for _, t := range txts {
		t = strings.TrimSpace(t)
		if strings.EqualFold(t, "v=spf1") || len(t) > 7 && strings.EqualFold(t[:7], "v=spf1 ") {
			out = append(out, t)
		}
	}
	return out
}

// suggestedSPF is the SPF record we recommend: our MX hosts and addresses,
// everything else refused.
func suggestedSPF(dom string, ips []netip.Addr) string {
	rec := "v=spf1 mx"
	for _, ip := range ips {
		if ip.Is4() {
			rec += " ip4:" + ip.String()
		} else {
			rec += " ip6:" + ip.String()
		}
	}
	return fmt.Sprintf(`%s IN TXT "%s -all"`, fqdn(dom), rec)
}

func (d *doctor) checkSPF(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	ips := d.ourIPs(ctx)
	var out []Check
	for _, dom := range d.cfg.Domains {
		c := Check{Name: CheckSPF, Subject: dom, Fix: suggestedSPF(dom, ips)}
		txts, err := d.res.LookupTXT(ctx, dom)
		if err != nil && !errors.Is(err, resolver.ErrNotFound) {
			c.Status, c.Detail = StatusFail, "TXT: "+dnsProblem(err)
			out = append(out, c)
			continue
		}
		recs := spfRecords(txts)
		switch {
		case len(recs) == 0:
			c.Status, c.Detail = StatusFail, "no v=spf1 record"
		case len(recs) > 1:
			c.Status, c.Detail = StatusFail, fmt.Sprintf("%d v=spf1 records (receivers treat this as an error); publish exactly one", len(recs))
		case slices.ContainsFunc(strings.Fields(strings.ToLower(recs[0])), func(t string) bool { return t == "all" || t == "+all" }):
			c.Status, c.Detail = StatusFail, fmt.Sprintf("%q lets anyone send as %s (+all)", recs[0], dom)
		case len(ips) == 0:
			c.Status, c.Detail, c.Fix = StatusWarn, fmt.Sprintf("%q; cannot test it: %s", recs[0], d.ipsNote), ""
		default:
			c.Status, c.Detail, c.Fix = StatusOK, fmt.Sprintf("%q passes %s", recs[0], joinAddrs(ips)), ""
			var bad []string
			for _, ip := range ips {
				res, err := msgauth.CheckSPF(ctx, d.res, ip, dom)
				if res != msgauth.ResultPass {
					s := fmt.Sprintf("%s gets %s", ip, res)
					if err != nil {
						s += " (" + err.Error() + ")"
					}
					bad = append(bad, s)
				}
			}
			if len(bad) > 0 {
				c.Status, c.Fix = StatusFail, suggestedSPF(dom, ips)
				c.Detail = fmt.Sprintf("%q: %s", recs[0], strings.Join(bad, "; "))
			}
		}
		out = append(out, c)
	}
	return out
}

// tag returns the value of tag in a DKIM-style "k=v; k=v" list, with
// whitespace removed.
func tag(list, name string) (string, bool) {
	for _, part := range strings.Split(list, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(v), ""), true
		}
	}
	return "", false
}

func (d *doctor) checkDKIM(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	sel := strings.ToLower(d.cfg.Auth.DKIMSelector)
	var out []Check
	for _, dom := range d.cfg.Domains {
		c := Check{Name: CheckDKIM, Subject: dom}
		if sel == "" {
			c.Status, c.Detail = StatusSkip, "no [auth] dkim_selector: outbound mail is not signed"
			out = append(out, c)
			continue
		}
		keyPath := filepath.Join(d.cfg.DataDir, "dkim", dom+"."+sel+".key")
		signer, err := msgauth.LoadSigner(dom, sel, keyPath)
		if errors.Is(err, fs.ErrNotExist) {
			c.Status, c.Detail = StatusWarn, fmt.Sprintf("no key %s: mail from %s is not DKIM-signed", keyPath, dom)
			c.Fix = fmt.Sprintf("mamori dkim keygen --domain %s --selector %s --config %s", dom, sel, d.cfg.Path)
			out = append(out, c)
			continue
		}
		if err != nil {
			c.Status, c.Detail = StatusFail, err.Error()
			out = append(out, c)
			continue
		}
		want, err := msgauth.DKIMRecord(signer.Key)
		if err != nil {
			c.Status, c.Detail = StatusFail, err.Error()
			out = append(out, c)
			continue
		}
		name := sel + "._domainkey." + dom
		c.Fix = fmt.Sprintf("%s IN TXT %s", fqdn(name), msgauth.TXTStrings(want))
		txts, err := d.res.LookupTXT(ctx, name)
		if err != nil {
			c.Status, c.Detail = StatusFail, fmt.Sprintf("%s TXT: %s", name, dnsProblem(err))
			out = append(out, c)
			continue
		}
		c.Status, c.Detail = StatusFail, fmt.Sprintf("%s publishes no DKIM key", name)
		for _, t := range txts {
			p, ok := tag(t, "p")
			if !ok {
				continue
			}
			if p == "" {
				c.Detail = fmt.Sprintf("%s: the key is revoked (empty p=)", name)
				continue
			}
			if sameKey(p, signer.Key.Public()) {
				c.Status, c.Detail, c.Fix = StatusOK, fmt.Sprintf("%s matches %s", name, keyPath), ""
				break
			}
			c.Detail = fmt.Sprintf("%s publishes a different key than %s", name, keyPath)
		}
		out = append(out, c)
	}
	return out
}

// sameKey reports whether the base64 p= value of a DKIM record is the
// public key pub: for RSA as SubjectPublicKeyInfo or (as some publish it)
// PKCS #1, for Ed25519 the raw key.
func sameKey(p string, pub crypto.PublicKey) bool {
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return false
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return bytes.Equal(k, der)
	case *rsa.PublicKey:
		if got, err := x509.ParsePKIXPublicKey(der); err == nil {
			return k.Equal(got)
		}
		if got, err := x509.ParsePKCS1PublicKey(der); err == nil {
			return k.Equal(got)
		}
	}
	return false
}

func (d *doctor) checkDMARC(ctx context.Context) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	var out []Check
	for _, dom := range d.cfg.Domains {
		name := "_dmarc." + dom
		c := Check{Name: CheckDMARC, Subject: dom,
			Fix: fmt.Sprintf(`%s IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@%s"`, fqdn(name), dom)}
		txts, err := d.res.LookupTXT(ctx, name)
		if err != nil && !errors.Is(err, resolver.ErrNotFound) {
			c.Status, c.Detail = StatusFail, name+" TXT: "+dnsProblem(err)
			out = append(out, c)
			continue
		}
		var recs []string
		for _, t := range txts {
			if t = strings.TrimSpace(t); len(t) >= 8 && strings.EqualFold(t[:8], "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		switch {
		case len(recs) == 0:
			c.Status, c.Detail = StatusFail, "no v=DMARC1 record at "+name
		case len(recs) > 1:
			c.Status, c.Detail = StatusFail, fmt.Sprintf("%d v=DMARC1 records at %s (receivers then ignore DMARC); publish exactly one", len(recs), name)
		default:
			rec, err := dmarc.Parse(recs[0])
			switch {
			case err != nil:
				c.Status, c.Detail = StatusFail, fmt.Sprintf("%q: %v", recs[0], err)
			case rec.Policy == dmarc.PolicyNone:
				c.Status, c.Detail = StatusWarn, fmt.Sprintf("%q: p=none only monitors; spoofed mail from %s is still delivered", recs[0], dom)
			default:
				c.Status, c.Detail, c.Fix = StatusOK, fmt.Sprintf("%q", recs[0]), ""
			}
		}
		out = append(out, c)
	}
	return out
}

// optionalTXT checks an optional policy record (MTA-STS, TLS-RPT): absent
// is a skip, malformed a warning; never a failure.
func (d *doctor) optionalTXT(ctx context.Context, name, check, prefix, what string, fix func(dom string) string) []Check {
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	var out []Check
	for _, dom := range d.cfg.Domains {
		qname := name + "." + dom
		c := Check{Name: check, Subject: dom}
		txts, err := d.res.LookupTXT(ctx, qname)
		switch {
		case errors.Is(err, resolver.ErrNotFound):
			c.Status, c.Detail, c.Fix = StatusSkip, fmt.Sprintf("no %s record at %s (optional)", what, qname), fix(dom)
		case err != nil:
			c.Status, c.Detail = StatusWarn, qname+" TXT: "+dnsProblem(err)
		default:
			var recs []string
			for _, t := range txts {
				if t = strings.TrimSpace(t); strings.HasPrefix(t, prefix) {
					recs = append(recs, t)
				}
			}
			switch {
			case len(recs) == 0:
				c.Status, c.Detail, c.Fix = StatusSkip, fmt.Sprintf("no %s record at %s (optional)", what, qname), fix(dom)
			case len(recs) > 1:
				c.Status, c.Detail, c.Fix = StatusWarn, fmt.Sprintf("%d %s records at %s; publish exactly one", len(recs), what, qname), fix(dom)
			default:
				c.Status, c.Detail = StatusOK, fmt.Sprintf("%q", recs[0])
				if msg := validOptional(check, recs[0]); msg != "" {
					c.Status, c.Detail, c.Fix = StatusWarn, fmt.Sprintf("%q: %s", recs[0], msg), fix(dom)
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// validOptional returns what is wrong with an MTA-STS or TLS-RPT record,
// or "".
func validOptional(check, rec string) string {
	switch check {
	case CheckMTASTS:
		if id, ok := tag(rec, "id"); !ok || id == "" {
			return "no id= tag"
		}
	case CheckTLSRPT:
		rua, ok := tag(rec, "rua")
		if !ok || !(strings.HasPrefix(rua, "mailto:") || strings.HasPrefix(rua, "https:")) {
			return "no rua=mailto: or rua=https: tag"
		}
	}
	return ""
}

func (d *doctor) checkMTASTS(ctx context.Context) []Check {
	return d.optionalTXT(ctx, "_mta-sts", CheckMTASTS, "v=STSv1", "MTA-STS", func(dom string) string {
		return fmt.Sprintf(`%s IN TXT "v=STSv1; id=%s"   (and serve the policy at https://mta-sts.%s/.well-known/mta-sts.txt)`,
			fqdn("_mta-sts."+dom), d.opt.Now().UTC().Format("20060102")+"01", dom)
	})
}

func (d *doctor) checkTLSRPT(ctx context.Context) []Check {
	return d.optionalTXT(ctx, "_smtp._tls", CheckTLSRPT, "v=TLSRPTv1", "TLS-RPT", func(dom string) string {
		return fmt.Sprintf(`%s IN TXT "v=TLSRPTv1; rua=mailto:postmaster@%s"`, fqdn("_smtp._tls."+dom), dom)
	})
}
