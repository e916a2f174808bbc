package server

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/mail"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/smtpd"
)

// inboundVerifier checks SPF, DKIM and DMARC of inbound mail.
func inboundVerifier(c *config.Config, res *resolver.Resolver, log *slog.Logger) func(context.Context, netip.Addr, string, string, []byte) smtpd.AuthVerdict {
	if !c.Auth.VerifyInbound {
		return nil
	}
	budget := c.Auth.Timeout.Duration
	return func(ctx context.Context, ip netip.Addr, helo, from string, msg []byte) smtpd.AuthVerdict {
		if budget > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, budget)
			defer cancel()
		}
		r := msgauth.Verify(ctx, res, c.Hostname, ip, helo, from, msg)
		log.Info("auth results", "client_ip", ip.String(), "from", from, "header_from_domain", r.FromDomain,
			"spf", r.SPF, "dmarc", r.DMARC, "dmarc_policy", r.DMARCPolicy, "dkim_pass", r.DKIMPass())
		v := smtpd.AuthVerdict{Header: r.Header, Fail: r.SPF == msgauth.ResultFail || r.DMARC == msgauth.ResultFail}
		if c.Auth.DMARCReject && r.DMARC == msgauth.ResultFail && r.DMARCPolicy == "reject" {
			v.Reject, v.Reason = true, r.FromDomain+" publishes p=reject and this message fails DMARC"
		}
		return v
	}
}

// dkimSigner signs with data_dir/dkim/DOMAIN.SELECTOR.key for the domain of
// the message's From header; keys are loaded once at start.
func dkimSigner(c *config.Config, log *slog.Logger) func([]byte) []byte {
	dir := filepath.Join(c.DataDir, "dkim")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	signers := map[string]*msgauth.Signer{}
	suffix := "." + c.Auth.DKIMSelector + ".key"
	for _, e := range ents {
		dom, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || e.IsDir() {
			continue
		}
		s, err := msgauth.LoadSigner(dom, c.Auth.DKIMSelector, filepath.Join(dir, e.Name()))
		if err != nil {
			log.Warn("dkim key", "file", e.Name(), "err", err.Error())
			continue
		}
		signers[strings.ToLower(dom)] = s
		log.Info("dkim signing enabled", "domain", dom, "selector", c.Auth.DKIMSelector)
	}
	if len(signers) == 0 {
		return nil
	}
	return func(msg []byte) []byte {
		s := signers[fromDomain(msg)]
		if s == nil {
			return msg
		}
		signed, err := s.Sign(msg)
		if err != nil {
			log.Warn("dkim sign", "domain", s.Domain, "err", err.Error())
			return msg
		}
		return signed
	}
}

// fromDomain is the lower-cased domain of the single From header address.
func fromDomain(msg []byte) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(msg[:end:end], "\r\n\r\n"...)))).ReadMIMEHeader()
	a, err := mail.ParseAddress(h.Get("From"))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(a.Address, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(a.Address[i+1:]), ".")
}
