package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/clamd"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/content"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/metrics"
)

// contentChecker builds the end-of-DATA inspection: the attachment policy
// first (cheap, local), then clamd when configured.
func contentChecker(c *config.Config, pols content.DomainPolicies, mt *metrics.Metrics, log *slog.Logger) func(context.Context, guard.Sender, []string, []byte) content.Verdict {
	var cl *clamd.Client
	if c.Content.Clamd != "" {
		cl = &clamd.Client{Addr: c.Content.Clamd, Timeout: c.Content.ClamdTimeout.Duration, MaxSize: c.Limits.MaxMessageSize + 1<<20}
	}
	failOpen := c.Content.ClamdFail == "open"
	virusAction := parseAction(c.Content.VirusAction)
	accept := content.Verdict{Action: content.Accept}
	return func(ctx context.Context, s guard.Sender, rcpts []string, msg []byte) content.Verdict {
		if v := pols.Check(rcpts, msg); v.Action != content.Accept {
			log.Info("content", "verdict", v.Action.String(), "rule", string(v.Rule), "part", v.Part, "reason", v.Reason,
				"client_ip", s.IP.String(), "user", s.User, "from", s.From)
			if v.Part != "" && !strings.Contains(v.Reason, v.Part) {
				v.Reason += " (" + v.Part + ")"
			}
			return v
		}
		if cl == nil {
			return accept
		}
		start := time.Now()
		res, err := cl.Scan(ctx, bytes.NewReader(msg))
		mt.ClamdScan(scanResult(res, err), time.Since(start))
		if err != nil {
			// Unreachable, or the message is over clamd's StreamMaxLength
			// (ErrTooLarge): either way it went unscanned, so the
			// configured fail mode decides.
			log.Warn("clamd", "err", err.Error(), "unavailable", errors.Is(err, clamd.ErrUnavailable),
				"too_large", errors.Is(err, clamd.ErrTooLarge), "fail", c.Content.ClamdFail, "client_ip", s.IP.String())
			if failOpen {
				return accept
			}
			return content.Verdict{Action: content.Defer, Rule: content.RuleScannerUnavailable}
		}
		if res.Infected {
			log.Info("content", "verdict", virusAction.String(), "rule", string(content.RuleVirus), "signature", res.Signature,
				"client_ip", s.IP.String(), "user", s.User, "from", s.From)
			return content.Verdict{Action: virusAction, Rule: content.RuleVirus, Reason: "virus found (" + sanitizeSig(res.Signature) + ")"}
		}
		return accept
	}
}

// scanResult labels a clamd scan for metrics.
func scanResult(res clamd.Result, err error) string {
	switch {
	case err != nil:
		return metrics.ScanError
	case res.Infected:
		return metrics.ScanInfected
	}
	return metrics.ScanClean
}

// contentPolicies maps the [content] config onto the content package's
// policy layers; the merging itself lives (and is tested) there.
func contentPolicies(c *config.Config) content.DomainPolicies {
	domains := make(map[string]content.Overrides, len(c.Content.Domains))
	for d, o := range c.Content.Domains {
		domains[d] = content.Overrides{Action: parseAction(o.Action), Uninspectable: parseAction(o.Uninspectable),
			Block: o.BlockExtensions, Allow: o.AllowExtensions}
	}
	global := content.Overrides{Action: parseAction(c.Content.Action), Uninspectable: parseAction(c.Content.Uninspectable),
		Block: c.Content.BlockExtensions, Allow: c.Content.AllowExtensions}
	return content.NewDomainPolicies(content.DefaultPolicy(), global, domains)
}

// parseAction reads an action the config has already validated; anything
// else (impossible after validation) is the zero value, "keep the default".
func parseAction(s string) content.Action {
	a, _ := content.ParseAction(s)
	return a
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
