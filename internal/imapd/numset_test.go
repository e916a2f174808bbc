package imapd

import (
	"math/rand"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// naiveHas is the definition: x is in some range, 0 standing for star.
func naiveHas(set imap.SeqSet, x, star uint32) bool {
	for _, r := range set {
		a, b := r.Start, r.Stop
		if a == 0 {
			a = star
		}
		if b == 0 {
			b = star
		}
		if a > b {
			a, b = b, a
		}
		if a <= x && x <= b {
			return true
		}
	}
	return false
}

// TestSpansMatchTheDefinition: for random sets (overlapping, reversed,
// "*", adjacent ranges), spans answer exactly as a scan of the ranges.
func TestSpansMatchTheDefinition(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	for range 500 {
		star := uint32(1 + rnd.Intn(60))
		var set imap.SeqSet
		for range rnd.Intn(8) {
			pick := func() uint32 {
				if rnd.Intn(6) == 0 {
					return 0 // "*"
				}
				return uint32(1 + rnd.Intn(70))
			}
			set = append(set, imap.SeqRange{Start: pick(), Stop: pick()})
		}
		sp := seqSpans(set, star)
		for x := uint32(0); x <= 80; x++ {
			if got, want := sp.has(x), naiveHas(set, x, star); got != want {
				t.Fatalf("set %v star %d: has(%d) = %v, want %v (spans %v)", set, star, x, got, want, sp)
			}
		}
	}
	if sp := uidSpans(imap.UIDSet{{Start: 4294967295, Stop: 4294967295}}, 5); !sp.has(4294967295) || sp.has(5) {
		t.Errorf("top UID: %v", sp)
	}
}

// BenchmarkUIDSetResolve is the case a review found: a set of ~9,000
// ranges against 100,000 messages (once O(messages × ranges)).
func BenchmarkUIDSetResolve(b *testing.B) {
	var set imap.UIDSet
	for u := imap.UID(1); u < 18000; u += 2 {
		set = append(set, imap.UIDRange{Start: u, Stop: u})
	}
	for b.Loop() {
		sp := uidSpans(set, 100000)
		n := 0
		for u := uint32(1); u <= 100000; u++ {
			if sp.has(u) {
				n++
			}
		}
		if n != 9000 {
			b.Fatal(n)
		}
	}
}
