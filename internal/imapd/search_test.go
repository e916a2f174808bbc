package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestSearchReturnSave: RETURN (SAVE) alone saves the result for "$"
// and sends no ESEARCH (RFC 5182 2.1); with MIN or MAX it saves only
// those, and sends them.
func TestSearchReturnSave(t *testing.T) {
	env := startServer(t)
	for i := 1; i <= 3; i++ {
		deliver(t, env, fmt.Sprintf("Q%d", i), fmt.Sprintf("subject %d", i), "body")
	}
	rc := dialRaw(t, env)
	rc.ok("SELECT INBOX")

	for _, cmd := range []string{"SEARCH RETURN (SAVE) 2:3", "UID SEARCH RETURN (SAVE) 2:3"} {
		if got := rc.ok(cmd); len(got) != 0 {
			t.Errorf("%s: untagged replies %q, want none", cmd, got)
		}
		got := rc.ok("FETCH $ (UID)")
		want := []string{"* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)"}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("after %s, FETCH $: %q, want %q", cmd, got, want)
		}
	}

	got := rc.ok("SEARCH RETURN (SAVE MAX) 1:2")
	if want := []string{`* ESEARCH (TAG "t7") MAX 2`}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("SEARCH RETURN (SAVE MAX): %q, want %q", got, want)
	}
	if got, want := rc.ok("SEARCH $"), []string{"* SEARCH 2"}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("SEARCH $: %q, want %q", got, want)
	}
	if got, want := rc.ok("SEARCH RETURN () 1:*"), []string{`* ESEARCH (TAG "t9") ALL 1:3`}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("SEARCH RETURN (): %q, want %q", got, want)
	}
}
