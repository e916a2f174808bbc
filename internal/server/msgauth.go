package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/msgauth"
	"github.com/mamori-mail/mamori/internal/resolver"
	"github.com/mamori-mail/mamori/internal/smtpd"
)

// inboundVerifier authenticates inbound mail: SPF, DKIM and DMARC of every
// author domain when [auth] verify_inbound is on, and in any case DKIM for
// authors in our own domains (smtpd refuses those without an aligned
// signature).
func inboundVerifier(c *config.Config, res *resolver.Resolver, log *slog.Logger) func(context.Context, smtpd.VerifyRequest) smtpd.AuthVerdict {
	budget := c.Auth.Timeout.Duration
	return func(ctx context.Context, req smtpd.VerifyRequest) smtpd.AuthVerdict {
		if !c.Auth.VerifyInbound && len(req.Local) == 0 {
			return smtpd.AuthVerdict{}
		}
		if budget > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, budget)
			defer cancel()
		}
		var r msgauth.Results
		if c.Auth.VerifyInbound {
			r = msgauth.VerifyParsed(ctx, res, c.Hostname, msgauth.Envelope{IP: req.IP, Helo: req.Helo, MailFrom: req.MailFrom},
				req.Header, req.Authors, req.Msg)
			log.Info("auth results", "client_ip", req.IP.String(), "from", req.MailFrom, "header_from_domains", strings.Join(req.Authors, ","),
				"spf", r.SPF, "dmarc", r.DMARC, "dmarc_policy", r.DMARCPolicy, "dkim_pass", r.DKIMPass())
		} else {
			r.DKIM = msgauth.VerifyDKIM(ctx, res, req.Header, req.Msg)
		}
		v := smtpd.AuthVerdict{Header: r.Header, Fail: r.SPF == msgauth.ResultFail || r.DMARC == msgauth.ResultFail}
		if c.Auth.VerifyInbound && c.Auth.DMARCReject && r.DMARC == msgauth.ResultFail && r.DMARCPolicy == msgauth.PolicyReject {
			failing := ""
			for _, a := range r.Authors {
				if a.DMARC == msgauth.ResultFail && a.Policy == msgauth.PolicyReject {
					failing = a.Domain
					break
				}
			}
			v.Reject, v.Reason = true, failing+" publishes p=reject and this message fails DMARC"
		}
		for _, d := range req.Local {
			// Strict: only a signature by the domain itself (our key, or one
			// we gave a mailing service) vouches for it, not one of a
			// subdomain someone else may control.
			pass, temp := r.DKIMSignedBy(d)
			if !pass {
				v.Unsigned = append(v.Unsigned, d)
				v.UnsignedTemp = v.UnsignedTemp || temp
				v.Fail = true
			}
		}
		if len(v.Unsigned) > 0 {
			log.Warn("own domain in From without our signature", "client_ip", req.IP.String(), "from", req.MailFrom,
				"domains", strings.Join(v.Unsigned, ","))
		}
		return v
	}
}

// loadKeyring loads data_dir/dkim/DOMAIN.SELECTOR.key.
func loadKeyring(c *config.Config, log *slog.Logger) *msgauth.Keyring {
	k, warns, err := msgauth.LoadKeyring(filepath.Join(c.DataDir, "dkim"), c.Auth.DKIMSelector)
	if err != nil {
		log.Warn("dkim keys", "err", err.Error())
		return nil
	}
	for _, w := range warns {
		log.Warn("dkim key", "err", w.Error())
	}
	for _, d := range k.Domains() {
		log.Info("dkim signing enabled", "domain", d, "selector", c.Auth.DKIMSelector)
	}
	return k
}

// headerSigner gives smtpd the DKIM-Signature fields for the author
// domains of a submitted message.
func headerSigner(k *msgauth.Keyring, log *slog.Logger) func([]string, []byte) []byte {
	if k.Len() == 0 {
		return nil
	}
	return func(domains []string, msg []byte) []byte {
		sigs, err := k.Signatures(domains, msg)
		if err != nil {
			log.Warn("dkim sign", "domains", strings.Join(domains, ","), "err", err.Error())
		}
		return sigs
	}
}

// dkimSigner signs whole messages mamori writes itself (DSNs, alerts) with
// the key of their From domain; it returns msg unchanged when there is no
// key for it.
func dkimSigner(k *msgauth.Keyring, log *slog.Logger) func([]byte) []byte {
	if k.Len() == 0 {
		return nil
	}
	return func(msg []byte) []byte {
		signed, err := k.SignMessage(msg)
		if err != nil {
			log.Warn("dkim sign", "err", err.Error())
		}
		return signed
	}
}
