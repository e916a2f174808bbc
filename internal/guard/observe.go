package guard

// RuleNames are the rule names the guard's decisions carry (Decision.Rule,
// Isolation.Rule, Ban.Rule …), a fixed set: metrics use them as label
// values, so nothing a client sends can become one. An administrator's ban
// or suspension is "admin"; a decision without a rule (Accept, the hold cap)
// has Rule "". Keep this list in step with the rules in this package.
var RuleNames = []string{
	"ban",
	"conn.global", "conn.per_ip", "conn.per_net", "conn.rate",
	"auth.account_throttle", "auth.bruteforce", "auth.spray", "auth.spoofing",
	"auth.trusted_flood", "auth.right_password_refused",
	"rate.msgs_per_minute", "rate.rcpts_per_minute", "rate.rcpts_per_hour", "rate.rcpts_per_day",
	"burst.new_rcpts",
	"unknown_rcpts", "header_from", "content.dangerous", "history.volume",
	"login.fail_then_success", "login.networks", "login.new_network_burst",
	"admin",
}

// DecisionStages are the stages OnDecision names.
var DecisionStages = []string{"connect", "auth", "rcpt", "data"}

// observe tells Config.OnDecision about a final decision; called without
// g.mu held.
func (g *Guard) observe(stage string, d Decision) {
	if fn := g.conf().OnDecision; fn != nil {
		fn(stage, d.Rule, d.Verdict)
	}
}
