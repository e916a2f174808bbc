package msgauth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/mamori-mail/mamori/internal/msgheader"
)

// Result is an RFC 8601 result keyword.
type Result string

// Result values used in Results (RFC 8601 result keywords).
const (
	ResultPass      Result = "pass"
	ResultFail      Result = "fail"
	ResultSoftFail  Result = "softfail"
	ResultNeutral   Result = "neutral"
	ResultNone      Result = "none"
	ResultTempError Result = "temperror"
	ResultPermError Result = "permerror"
)

// Policy is a DMARC policy to apply to a failing message.
type Policy string

// DMARC policies (RFC 7489 section 6.3, p= tag).
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// strictness orders policies: a higher value is stricter.
func (p Policy) strictness() int {
	switch p {
	case PolicyReject:
		return 3
	case PolicyQuarantine:
		return 2
	case PolicyNone:
		return 1
	}
	return 0
}

// MaxDKIMSignatures bounds how many DKIM-Signature fields of one message are
// verified; the rest are ignored. Each costs DNS lookups and a body hash, so
// an unbounded number would let a sender make us do unbounded work.
const MaxDKIMSignatures = 5

// MaxAuthorDomains bounds how many author domains get a DMARC evaluation.
// A From with more distinct domains is refused by the caller long before
// (it needs a Sender, and our own users own at most a few domains); the
// bound only caps DNS work.
const MaxAuthorDomains = 10

// DefaultTimeout bounds Verify when the caller's context has no deadline.
const DefaultTimeout = 30 * time.Second

// DKIMResult is the verdict on one DKIM-Signature.
type DKIMResult struct {
	Domain   string // d= (the signing domain)
	Selector string // s=
	Result   Result // pass fail neutral temperror permerror
}

// AuthorResult is the DMARC verdict for one author domain.
type AuthorResult struct {
	Domain string
	DMARC  Result // pass fail none temperror permerror
	Policy Policy // set only when DMARC is fail
}

// Results is what Verify found out about a message.
type Results struct {
	SPF       Result // pass fail softfail neutral none temperror permerror
	SPFDomain string // the domain SPF was checked for (MAIL FROM's, or HELO's for the null sender)

	DKIM []DKIMResult // one per verified signature (at most MaxDKIMSignatures); empty: dkim=none

	// Authors holds one DMARC verdict per author domain (RFC 7489
	// section 6.6.1: every domain of the From field is evaluated).
	Authors []AuthorResult
	// DMARC and DMARCPolicy are the strictest of Authors: fail with the
	// strictest policy among the failing domains if any fails.
	DMARC       Result
	DMARCPolicy Policy
	FromDomain  string // the first author domain, "" if none

	// Header is the whole Authentication-Results field, folded at 78
	// characters where possible, ending in CRLF; ready to prepend.
	Header string
}

// DKIMPass reports whether at least one DKIM signature verified.
func (r Results) DKIMPass() bool {
	for _, d := range r.DKIM {
		if d.Result == ResultPass {
			return true
		}
	}
	return false
}

// DKIMSignedBy reports whether a signature made by exactly domain (d=
// equal to it, no relaxed alignment: a subdomain's signer is someone
// else) verified; if not, temp says a signature of that domain could not
// be verified for a temporary reason (DNS), so the verdict may change on
// a retry.
func (r Results) DKIMSignedBy(domain string) (pass, temp bool) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, d := range r.DKIM {
		if strings.ToLower(strings.TrimSuffix(d.Domain, ".")) != domain {
			continue
		}
		switch d.Result {
		case ResultPass:
			return true, false
		case ResultTempError:
			temp = true
		}
	}
	return false, temp
}

// Envelope is the SMTP side of a message: who connected and MAIL FROM.
type Envelope struct {
	IP       netip.Addr
	Helo     string
	MailFrom string // without angle brackets; "" is the null sender
}

// Verify parses msg's header and calls VerifyParsed. A header that cannot
// be parsed, or whose authors are ambiguous, yields DMARC permerror:
// callers that accept mail must refuse such messages before (smtpd does),
// never let permerror through.
func Verify(ctx context.Context, r Resolver, authservID string, ip netip.Addr, helo, mailFrom string, msg []byte) Results {
	msg = toCRLF(msg)
	var authors []string
	hdr, err := msgheader.Parse(msg, msgheader.Limits{})
	if err == nil {
		if a, aerr := hdr.Authors(); aerr == nil {
			authors = a.Domains()
		}
	} else {
		hdr = &msgheader.Header{}
	}
	return VerifyParsed(ctx, r, authservID, Envelope{IP: ip, Helo: helo, MailFrom: mailFrom}, hdr, authors, msg)
}

// VerifyParsed checks SPF for the envelope, every DKIM signature of msg
// (up to MaxDKIMSignatures), and DMARC for every author domain, and
// formats an Authentication-Results header for authservID (normally the
// server's host name). hdr is msg's parsed header and authors its author
// domains (msgheader.Authors.Domains); no authors means DMARC permerror.
//
// msg is the message as received (header and body) with CRLF line ends.
// Verify never fails: DNS problems become temperror results. It returns
// when ctx is done at the latest; without a deadline on ctx it applies
// DefaultTimeout.
func VerifyParsed(ctx context.Context, r Resolver, authservID string, env Envelope, hdr *msgheader.Header, authors []string, msg []byte) Results {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var res Results
	var mailFromDomain string
	res.SPF, res.SPFDomain, mailFromDomain = checkSPF(ctx, r, env.IP, env.Helo, env.MailFrom)
	res.DKIM = VerifyDKIM(ctx, r, hdr, msg)

	if len(authors) == 0 {
		slog.DebugContext(ctx, "msgauth: no author domain")
		res.DMARC = ResultPermError
	}
	if len(authors) > MaxAuthorDomains {
		authors = authors[:MaxAuthorDomains]
	}
	// DMARC's SPF identifier is the MAIL FROM domain only (RFC 7489
	// section 3.1.2); a HELO-only pass does not align.
	spfAligned := ""
	if res.SPF == ResultPass {
		spfAligned = mailFromDomain
	}
	for _, d := range authors {
		v, p := checkDMARC(ctx, r, d, spfAligned, res.DKIM)
		res.Authors = append(res.Authors, AuthorResult{Domain: d, DMARC: v, Policy: p})
	}
	if len(res.Authors) > 0 {
		res.FromDomain = res.Authors[0].Domain
		res.DMARC, res.DMARCPolicy = strictest(res.Authors)
	}
	res.Header = formatHeader(authservID, env.Helo, env.MailFrom, res)
	return res
}

// strictest combines per-author verdicts: any fail wins (with the
// strictest policy among failing domains), then temperror, permerror,
// pass, none.
func strictest(rs []AuthorResult) (Result, Policy) {
	rank := map[Result]int{ResultFail: 5, ResultTempError: 4, ResultPermError: 3, ResultPass: 2, ResultNone: 1}
	best := rs[0]
	for _, r := range rs[1:] {
		switch {
		case rank[r.DMARC] > rank[best.DMARC]:
			best = r
		case r.DMARC == ResultFail && best.DMARC == ResultFail && r.Policy.strictness() > best.Policy.strictness():
			best = r
		}
	}
	return best.DMARC, best.Policy
}

// CheckSPF evaluates domain's SPF record for mail sent from ip with
// MAIL FROM postmaster@domain, as a receiver would. It returns the
// result and, when the evaluation said more than the result (which
// mechanism failed, a syntax or lookup-limit error), that detail as an
// error. mamori doctor uses it to check that our own IPs pass.
func CheckSPF(ctx context.Context, r Resolver, ip netip.Addr, domain string) (Result, error) {
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if !ip.IsValid() || domain == "" {
		return ResultPermError, errors.New("spf: no address or domain")
	}
	res, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), domain, "postmaster@"+domain,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{r}))
	switch res {
	case spf.Pass, spf.Fail, spf.SoftFail, spf.Neutral, spf.None, spf.TempError, spf.PermError:
		return Result(res), err
	}
	return ResultPermError, err
}

// checkSPF returns the SPF result, the domain checked, and the MAIL FROM
// domain ("" for the null sender).
func checkSPF(ctx context.Context, r Resolver, ip netip.Addr, helo, mailFrom string) (result Result, domain, mailFromDomain string) {
	mailFrom = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(mailFrom), "<"), ">")
	helo = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(helo), "."))
	sender := mailFrom
	if mailFrom == "" {
		if helo == "" || strings.HasPrefix(helo, "[") || net.ParseIP(helo) != nil {
			return ResultNone, "", ""
		}
		sender = "postmaster@" + helo
		domain = helo
	} else {
		at := strings.LastIndexByte(mailFrom, '@')
		if at < 0 || at == len(mailFrom)-1 {
			return ResultNone, "", ""
		}
		domain = strings.ToLower(strings.TrimSuffix(mailFrom[at+1:], "."))
		sender = mailFrom[:at+1] + domain
		mailFromDomain = domain
	}
	if !ip.IsValid() {
		return ResultPermError, domain, mailFromDomain
	}
	res, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{r}))
	if err != nil {
		slog.DebugContext(ctx, "msgauth: spf", "domain", domain, "result", string(res), "detail", err)
	}
	switch res {
	case spf.Pass, spf.Fail, spf.SoftFail, spf.Neutral, spf.None, spf.TempError, spf.PermError:
		return Result(res), domain, mailFromDomain
	}
	return ResultPermError, domain, mailFromDomain
}

// VerifyDKIM verifies up to MaxDKIMSignatures signatures of msg, whose
// parsed header is hdr.
func VerifyDKIM(ctx context.Context, r Resolver, hdr *msgheader.Header, msg []byte) []DKIMResult {
	sigs := hdr.Values("DKIM-Signature")
	if len(sigs) == 0 {
		return nil
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT:        txtLookup(ctx, r),
		MaxVerifications: MaxDKIMSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		// Not a verdict on a signature: the message itself could not be
		// read (a malformed header). Report every signature as permerror.
		slog.DebugContext(ctx, "msgauth: dkim", "err", err)
		out := make([]DKIMResult, 0, min(len(sigs), MaxDKIMSignatures))
		for _, s := range sigs[:min(len(sigs), MaxDKIMSignatures)] {
			out = append(out, DKIMResult{Domain: tagValue(s, "d"), Selector: tagValue(s, "s"), Result: ResultPermError})
		}
		return out
	}
	out := make([]DKIMResult, 0, len(verifs))
	for i, v := range verifs {
		d := DKIMResult{Domain: strings.ToLower(v.Domain), Result: ResultPass}
		if i < len(sigs) {
			// verifs are in header order, like sigs.
			d.Selector = tagValue(sigs[i], "s")
			if d.Domain == "" {
				d.Domain = strings.ToLower(tagValue(sigs[i], "d"))
			}
		}
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			d.Result = ResultTempError
		case dkim.IsPermFail(v.Err):
			d.Result = ResultPermError
		default:
			d.Result = ResultFail
		}
		if v.Err != nil {
			slog.DebugContext(ctx, "msgauth: dkim", "domain", d.Domain, "selector", d.Selector, "result", d.Result, "detail", v.Err)
		}
		out = append(out, d)
	}
	return out
}

// tagValue returns the value of tag in a DKIM tag=value list, without
// whitespace.
func tagValue(list, tag string) string {
	for _, part := range strings.Split(list, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == tag {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

// checkDMARC evaluates the From domain's DMARC record. spfDomain is the MAIL
// FROM domain if SPF passed, else "".
func checkDMARC(ctx context.Context, r Resolver, from, spfDomain string, dkims []DKIMResult) (Result, Policy) {
	org := orgDomain(from)
	opts := &dmarc.LookupOptions{LookupTXT: txtLookup(ctx, r)}
	rec, err := dmarc.LookupWithOptions(from, opts)
	atOrg := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != from {
		// RFC 7489 section 6.6.3: fall back to the organisational domain.
		rec, err = dmarc.LookupWithOptions(org, opts)
		atOrg = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return ResultNone, ""
	case dmarc.IsTempFail(err):
		return ResultTempError, ""
	case err != nil:
		slog.DebugContext(ctx, "msgauth: dmarc", "domain", from, "err", err)
		return ResultPermError, ""
	}

	if spfDomain != "" && aligned(spfDomain, from, rec.SPFAlignment) {
		return ResultPass, ""
	}
	for _, d := range dkims {
		if d.Result == ResultPass && aligned(d.Domain, from, rec.DKIMAlignment) {
			return ResultPass, ""
		}
	}

	p := rec.Policy
	if atOrg && rec.SubdomainPolicy != "" {
		p = rec.SubdomainPolicy
	}
	// pct (RFC 7489 section 6.6.4): messages not sampled get the next
	// weaker policy.
	if rec.Percent != nil && *rec.Percent < 100 && rand.IntN(100) >= *rec.Percent {
		switch p {
		case dmarc.PolicyReject:
			p = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			p = dmarc.PolicyNone
		}
	}
	switch p {
	case dmarc.PolicyReject, dmarc.PolicyQuarantine, dmarc.PolicyNone:
	default:
		p = dmarc.PolicyNone
	}
	return ResultFail, Policy(p)
}

// aligned reports identifier alignment (RFC 7489 section 3.1): strict
// needs the same domain, relaxed the same organisational domain.
func aligned(domain, from string, mode dmarc.AlignmentMode) bool {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == from {
		return true
	}
	if mode == dmarc.AlignmentStrict {
		return false
	}
	return orgDomain(domain) == orgDomain(from)
}

// orgDomain returns the organisational domain (public suffix plus one
// label) of d, or d itself when it has none (d is a public suffix).
func orgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

// toCRLF turns bare LF line ends into CRLF, leaving CRLF alone.
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n")) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// formatHeader builds the Authentication-Results field.
func formatHeader(authservID, helo, mailFrom string, res Results) string {
	if !safeValue(authservID) {
		authservID = "mamori"
	}
	spfRes := &authres.SPFResult{Value: authres.ResultValue(res.SPF)}
	if mailFrom != "" {
		spfRes.From = safe(strings.TrimSuffix(strings.TrimPrefix(mailFrom, "<"), ">"))
	} else {
		spfRes.Helo = safe(helo)
	}
	results := []authres.Result{spfRes}
	if len(res.DKIM) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range res.DKIM {
		params := map[string]string{}
		if v := safe(d.Domain); v != "" {
			params["header.d"] = v
		}
		if v := safe(d.Selector); v != "" {
			params["header.s"] = v
		}
		results = append(results, &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(d.Result), Params: params})
	}
	if len(res.Authors) == 0 {
		results = append(results, &authres.DMARCResult{Value: authres.ResultValue(res.DMARC)})
	}
	for _, a := range res.Authors {
		results = append(results, &authres.DMARCResult{Value: authres.ResultValue(a.DMARC), From: safe(a.Domain)})
	}
	return fold("Authentication-Results: " + authres.Format(authservID, results))
}

// safe returns v if it can go into the header unquoted and parse back
// (authres.Parse splits on ";" and white space), else "" (the parameter is
// then left out). This also keeps CR/LF out of the header.
func safe(v string) string {
	if safeValue(v) {
		return v
	}
	return ""
}

func safeValue(v string) bool {
	if v == "" || len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`";()\`, c) >= 0 {
			return false
		}
	}
	return true
}

// maxLine is the recommended header line length (RFC 5322 section 2.1.1),
// without the CRLF.
const maxLine = 78

// fold folds a one-line header field at spaces so that each line is at
// most maxLine characters where possible (a single longer word stays
// whole), and appends CRLF.
func fold(field string) string {
	var b strings.Builder
	lineLen := 0
	for i, w := range strings.Fields(field) {
		switch {
		case i == 0:
		case lineLen+1+len(w) > maxLine:
			b.WriteString("\r\n\t")
			lineLen = 1
			b.WriteString(w)
			lineLen += len(w)
			continue
		default:
			b.WriteByte(' ')
			lineLen++
		}
		b.WriteString(w)
		lineLen += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}
