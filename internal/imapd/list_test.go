package imapd

import (
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

func TestMatchListAgreesWithUpstream(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	gen := func(alphabet string, n int) string {
		b := make([]byte, rng.Intn(n))
		for i := range b {
			b[i] = alphabet[rng.Intn(len(alphabet))]
		}
		return string(b)
	}
	for i := 0; i < 20000; i++ {
		name, ref, pattern := gen("ab.", 8), gen("a.", 3), gen("ab.*%", 6)
		if got, want := matchList(name, ref, pattern), imapserver.MatchList(name, '.', ref, pattern); got != want {
			t.Fatalf("matchList(%q, %q, %q) = %v, upstream %v", name, ref, pattern, got, want)
		}
	}
}

func TestMatchListLinear(t *testing.T) {
	start := time.Now()
	matchList("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b")
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("took %v", d)
	}
}

// TestListSubscriptions: LIST (SUBSCRIBED), RECURSIVEMATCH and LSUB per
// RFC 5258 and RFC 3501 6.3.9, including names subscribed whose folder
// was deleted or never existed.
func TestListSubscriptions(t *testing.T) {
	env := startServer(t)
	rc := dialRaw(t, env)
	for _, name := range []string{"t.one", "t.two.one", "t.six", "t.eight.eight", "t.eight.nine"} {
		rc.ok("CREATE " + name)
	}
	for _, name := range []string{"t.one", "t.two.one", "t.six", "t.eight.eight", "t.eight.nine", "gone.away"} {
		rc.ok("SUBSCRIBE " + name)
	}
	rc.ok("DELETE t.six")

	tests := []struct {
		cmd  string
		want []string
	}{
		// Subscribed names only, a deleted one \NonExistent; parents
		// with subscribed children are not listed without RECURSIVEMATCH.
		{`LIST (SUBSCRIBED) "" t.*`, []string{
			`* LIST (\Subscribed \HasNoChildren) "." "t.eight.eight"`,
			`* LIST (\Subscribed \HasNoChildren) "." "t.eight.nine"`,
			`* LIST (\Subscribed \HasNoChildren) "." "t.one"`,
			`* LIST (\NonExistent \Subscribed) "." "t.six"`,
			`* LIST (\Subscribed \HasNoChildren) "." "t.two.one"`,
		}},
		// RECURSIVEMATCH: parents of subscribed names the pattern does
		// not match, existing or not, with CHILDINFO.
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" %`, []string{
			`* LIST (\Subscribed \HasNoChildren \Archive) "." "Archive"`,
			`* LIST (\Subscribed \HasNoChildren \Drafts) "." "Drafts"`,
			`* LIST (\Subscribed \HasNoChildren \Junk) "." "Junk"`,
			`* LIST (\Subscribed \HasNoChildren \Sent) "." "Sent"`,
			`* LIST (\Subscribed \HasNoChildren \Trash) "." "Trash"`,
			`* LIST (\NonExistent) "." "gone" (CHILDINFO ("SUBSCRIBED"))`,
			`* LIST (\HasChildren) "." "t" (CHILDINFO ("SUBSCRIBED"))`,
		}},
		// ...but not when the pattern matches every such descendant.
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" (t.two t.two.one)`, []string{
			`* LIST (\Subscribed \HasNoChildren) "." "t.two.one"`,
		}},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" *eight`, []string{
			`* LIST (\HasChildren) "." "t.eight" (CHILDINFO ("SUBSCRIBED"))`,
			`* LIST (\Subscribed \HasNoChildren) "." "t.eight.eight"`,
		}},
		// Plain LIST: folders only, subscriptions on request.
		{`LIST "" t.%`, []string{
			`* LIST (\HasChildren) "." "t.eight"`,
			`* LIST (\HasNoChildren) "." "t.one"`,
			`* LIST (\HasChildren) "." "t.two"`,
		}},
		{`LIST "" gone*`, nil},
		{`LIST "" t.% RETURN (SUBSCRIBED)`, []string{
			`* LIST (\HasChildren) "." "t.eight"`,
			`* LIST (\Subscribed \HasNoChildren) "." "t.one"`,
			`* LIST (\HasChildren) "." "t.two"`,
		}},
		// LSUB: unsubscribed parents that % stops at, and names that
		// are no folder, are \Noselect.
		{`LSUB "" %`, []string{
			`* LSUB () "." "Archive"`,
			`* LSUB () "." "Drafts"`,
			`* LSUB () "." "Junk"`,
			`* LSUB () "." "Sent"`,
			`* LSUB () "." "Trash"`,
			`* LSUB (\Noselect) "." "gone"`,
			`* LSUB (\Noselect) "." "t"`,
		}},
		{`LSUB "" t.*`, []string{
			`* LSUB () "." "t.eight.eight"`,
			`* LSUB () "." "t.eight.nine"`,
			`* LSUB () "." "t.one"`,
			`* LSUB (\Noselect) "." "t.six"`,
			`* LSUB () "." "t.two.one"`,
		}},
	}
	for _, tt := range tests {
		got := rc.ok(tt.cmd)
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("%s:\n%s\nwant\n%s", tt.cmd, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
}
