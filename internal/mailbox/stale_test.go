package mailbox

import (
	"testing"
	"time"
)

func TestStale(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	users := []User{
		{Address: "active@x.test", Created: now.Add(-400 * day), LastLogin: now.Add(-2 * day)},
		{Address: "gone@x.test", Created: now.Add(-400 * day), LastLogin: now.Add(-120 * day)},
		{Address: "never@x.test", Created: now.Add(-100 * day)},
		{Address: "new@x.test", Created: now.Add(-1 * day)},
	}
	got := Stale(users, 90*day, now)
	if len(got) != 2 || got[0].Address != "gone@x.test" || got[1].Address != "never@x.test" {
		t.Errorf("stale = %+v, want gone@ and never@", got)
	}
}
