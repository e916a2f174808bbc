package alert

import (
	"fmt"
	"testing"
	"time"
)

// TestRecent: the latest RecentAlerts alerts, newest first, throttled or
// not (the live view shows what happened, not what was mailed), each a
// copy the caller may change.
func TestRecent(t *testing.T) {
	n, _, clk := newThrottled(t, time.Hour)
	defer n.Close()
	if r := n.Recent(); len(r) != 0 {
		t.Fatalf("Recent of a new notifier: %v", r)
	}
	const total = RecentAlerts + 5
	for i := range total {
		a := alertFor("isolated", "127.0.0.5", fmt.Sprintf("s%d", i)) // one key: all but the first throttled
		a.Counts = map[string]int{"n": i}
		n.Alert(a)
		clk.Advance(time.Second)
	}
	r := n.Recent()
	if len(r) != RecentAlerts {
		t.Fatalf("%d recent alerts, want %d", len(r), RecentAlerts)
	}
	for i, a := range r {
		if want := fmt.Sprintf("s%d", total-1-i); len(a.Subjects) != 1 || a.Subjects[0] != want {
			t.Errorf("recent[%d] subjects %v, want [%s] (newest first)", i, a.Subjects, want)
		}
		if a.Time.IsZero() {
			t.Errorf("recent[%d] has no time", i)
		}
	}
	r[0].Counts["n"] = -1
	r[0].Subjects[0] = "changed"
	if again := n.Recent(); again[0].Counts["n"] != total-1 || again[0].Subjects[0] != fmt.Sprintf("s%d", total-1) {
		t.Errorf("Recent shares its maps or slices with the caller: %+v", again[0])
	}
}
