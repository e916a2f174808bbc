package guard

import (
	"strconv"
	"testing"
	"time"
)

// TestSetConfig: a lowered limit applies at once to a sender already
// tracked (its count so far is kept), and an invalid config is refused
// with the old one left in force.
func TestSetConfig(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{Local: Limits{MsgsPerMinute: 30}}, nil)
	rcpt := rcptList("r", 1)
	for i := 0; i < 5; i++ {
		wantVerdict(t, "before reload, message "+strconv.Itoa(i+1), g.Message(mail(alice, i, rcpt...)), Accept, "")
	}
	if err := g.SetConfig(Config{Local: Limits{MsgsPerMinute: 2}, BanBase: time.Hour, BanMax: time.Minute}); err == nil {
		t.Fatal("ban_max shorter than ban_base was accepted")
	}
	if got := g.conf().Local.MsgsPerMinute; got != 30 {
		t.Fatalf("after a refused reload the limit is %d, want the old 30", got)
	}
	if err := g.SetConfig(Config{Local: Limits{MsgsPerMinute: 6}}); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "message 6", g.Message(mail(alice, 5, rcpt...)), Accept, "")
	wantVerdict(t, "message 7", g.Message(mail(alice, 6, rcpt...)), Hold, "rate.msgs_per_minute")
	if g.conf().Now == nil || g.conf().MaxTracked == 0 {
		t.Error("SetConfig lost the engine's own settings (Now, MaxTracked)")
	}
}
