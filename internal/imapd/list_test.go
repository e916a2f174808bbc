package imapd

import (
	"math/rand"
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
