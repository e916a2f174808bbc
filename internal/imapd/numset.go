package imapd

import (
	"slices"

	"github.com/emersion/go-imap/v2"
)

// spans is an IMAP number set as sorted, disjoint, closed intervals.
// Clients send sets of thousands of ranges ("1,3,5,..."), and commands test
// every message of the folder against them: built once per command,
// membership costs O(log ranges) instead of O(ranges).
type spans [][2]uint32

// makeSpans normalises n ranges (at gives each; 0 stands for star, the
// largest number in use; either order) into spans.
func makeSpans(n int, at func(i int) (start, stop uint32), star uint32) spans {
	s := make(spans, 0, n)
	for i := range n {
		a, b := at(i)
		if a == 0 {
			a = star
		}
		if b == 0 {
			b = star
		}
		if a > b {
			a, b = b, a
		}
		s = append(s, [2]uint32{a, b})
	}
	slices.SortFunc(s, func(x, y [2]uint32) int {
		if x[0] != y[0] {
			return int(int64(x[0]) - int64(y[0]))
		}
		return int(int64(x[1]) - int64(y[1]))
	})
	out := s[:0]
	for _, r := range s {
		if k := len(out); k > 0 && uint64(r[0]) <= uint64(out[k-1][1])+1 {
			out[k-1][1] = max(out[k-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// has reports whether x is in s.
func (s spans) has(x uint32) bool {
	i, _ := slices.BinarySearchFunc(s, x, func(r [2]uint32, x uint32) int {
		switch {
		case r[1] < x:
			return -1
		case r[0] > x:
			return 1
		}
		return 0
	})
	return i < len(s) && s[i][0] <= x && x <= s[i][1]
}

func uidSpans(set imap.UIDSet, maxUID uint32) spans {
	return makeSpans(len(set), func(i int) (uint32, uint32) { return uint32(set[i].Start), uint32(set[i].Stop) }, maxUID)
}

func seqSpans(set imap.SeqSet, maxSeq uint32) spans {
	return makeSpans(len(set), func(i int) (uint32, uint32) { return set[i].Start, set[i].Stop }, maxSeq)
}
