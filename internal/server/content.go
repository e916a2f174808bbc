package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/mamori-mail/mamori/internal/clamd"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/smtpd"
)

// contentChecker builds the end-of-DATA inspection: the attachment policy
// first (cheap, local), then clamd when configured.
func contentChecker(c *config.Config, log *slog.Logger) func(context.Context, guard.Sender, []string, []byte) smtpd.ContentVerdict {
	pol := policyWith(content.DefaultPolicy(), c.Content.Action, c.Content.BlockExtensions, c.Content.AllowExtensions)
	perDomain := map[string]content.Policy{}
	for d, o := range c.Content.Domains {
		action := o.Action
		if action == "" {
			action = c.Content.Action
		}
		perDomain[strings.TrimSuffix(strings.ToLower(d), ".")] = policyWith(pol, action, o.BlockExtensions, o.AllowExtensions)
	}
	var cl *clamd.Client
	if c.Content.Clamd != "" {
		cl = &clamd.Client{Addr: c.Content.Clamd, Timeout: c.Content.ClamdTimeout.Duration, MaxSize: c.Limits.MaxMessageSize + 1<<20}
	}
	failOpen := c.Content.ClamdFail == "open"
	return func(ctx context.Context, s guard.Sender, rcpts []string, msg []byte) smtpd.ContentVerdict {
		if v := strictest(pol, perDomain, rcpts, msg); v.Action != content.Accept && v.Action != "" {
			log.Info("content", "verdict", string(v.Action), "rule", v.Rule, "part", v.Part, "reason", v.Reason,
				"client_ip", s.IP.String(), "user", s.User, "from", s.From)
			reason := v.Reason
			if v.Part != "" && !strings.Contains(reason, v.Part) {
				reason += " (" + v.Part + ")"
			}
			return smtpd.ContentVerdict{Action: string(v.Action), Rule: v.Rule, Reason: reason}
		}
		if cl == nil {
			return smtpd.ContentVerdict{Action: "accept"}
		}
		res, err := cl.Scan(ctx, bytes.NewReader(msg))
		if err != nil {
			// Unreachable, or the message is over clamd's StreamMaxLength
			// (ErrTooLarge): either way it went unscanned, so the
			// configured fail mode decides.
			log.Warn("clamd", "err", err.Error(), "unavailable", errors.Is(err, clamd.ErrUnavailable),
				"too_large", errors.Is(err, clamd.ErrTooLarge), "fail", c.Content.ClamdFail, "client_ip", s.IP.String())
			if failOpen {
				return smtpd.ContentVerdict{Action: "accept"}
			}
			return smtpd.ContentVerdict{Action: "defer", Rule: "clamd.unavailable"}
		}
		if res.Infected {
			log.Info("content", "verdict", c.Content.VirusAction, "rule", "virus", "signature", res.Signature,
				"client_ip", s.IP.String(), "user", s.User, "from", s.From)
			return smtpd.ContentVerdict{Action: c.Content.VirusAction, Rule: "virus", Reason: "virus found (" + sanitizeSig(res.Signature) + ")"}
		}
		return smtpd.ContentVerdict{Action: "accept"}
	}
}

// policyWith derives a policy: its action and extension list changes.
func policyWith(base content.Policy, action string, block, allow []string) content.Policy {
	p := base
	p.Action = content.Action(action)
	p.BlockedExt = make(map[string]bool, len(base.BlockedExt))
	for k, v := range base.BlockedExt {
		p.BlockedExt[k] = v
	}
	for _, e := range block {
		p.BlockedExt[strings.ToLower(strings.TrimPrefix(e, "."))] = true
	}
	for _, e := range allow {
		delete(p.BlockedExt, strings.ToLower(strings.TrimPrefix(e, ".")))
	}
	return p
}

// strictest checks msg under the policy of each recipient domain (the
// default for domains without an override) and returns the strictest
// verdict: reject over hold over accept.
func strictest(def content.Policy, per map[string]content.Policy, rcpts []string, msg []byte) content.Verdict {
	rank := map[content.Action]int{content.Accept: 0, "": 0, content.Hold: 1, content.Reject: 2}
	seen := map[string]bool{}
	var best content.Verdict
	check := func(p content.Policy) {
		if v := p.Check(msg); rank[v.Action] > rank[best.Action] {
			best = v
		}
	}
	usedDefault := len(per) == 0
	for _, r := range rcpts {
		d := strings.ToLower(r[strings.LastIndexByte(r, '@')+1:])
		if p, ok := per[d]; ok {
			if !seen[d] {
				seen[d] = true
				check(p)
			}
		} else {
			usedDefault = true
		}
	}
	if usedDefault {
		check(def)
	}
	return best
}

// sanitizeSig keeps a signature name printable and short for the reply.
func sanitizeSig(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return '_'
		}
		return r
	}, s)
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}
