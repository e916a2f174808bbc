package guard

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// TestOnDecisionSeesFinalDecisions: the observer is told each final
// decision once, with the rule that decided, and every rule it sees is in
// RuleNames.
func TestOnDecisionSeesFinalDecisions(t *testing.T) {
	type seen struct {
		stage, rule string
		v           Verdict
	}
	var mu sync.Mutex
	var got []seen
	g, err := New(Config{InboundRcptsPerMinute: 2, OnDecision: func(stage, rule string, v Verdict) {
		mu.Lock()
		got = append(got, seen{stage, rule, v})
		mu.Unlock()
	}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("198.51.100.9")
	_, release := g.ConnectTo("smtp", ip, false)
	release()
	out := Sender{IP: ip, From: "x@example.net"}
	for range 3 {
		g.Rcpt(out, "u@example.test", true)
	}
	Login(g, ip, "u@example.test", func() bool { return false })
	g.Ban(netip.PrefixFrom(ip, 32), 0, "")
	g.ConnectTo("smtp", ip, false)

	want := []seen{
		{"connect", "", Accept},
		{"rcpt", "", Accept}, {"rcpt", "", Accept}, {"rcpt", "rate.rcpts_per_minute", Defer},
		{"auth", "", Accept}, // a wrong password: the guard does not refuse, the login reply does
		{"connect", "ban", Drop},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("observed %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("decision %d: %+v, want %+v", i, got[i], want[i])
		}
		if got[i].rule != "" && !slices.Contains(RuleNames, got[i].rule) {
			t.Errorf("rule %q is not in RuleNames", got[i].rule)
		}
	}
}
