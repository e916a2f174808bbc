package doctor

import (
	"fmt"
	"io"
	"strings"

	"github.com/mamori-mail/mamori/internal/termsafe"
)

// label is how a status is printed: plain ASCII, so any terminal and any
// log shows it.
func label(s Status) string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusWarn:
		return "WARN"
	case StatusFail:
		return "FAIL"
	}
	return "SKIP"
}

// Counts returns how many checks have each status.
func (r Report) Counts() map[Status]int {
	n := map[Status]int{}
	for _, c := range r.Checks {
		n[c.Status]++
	}
	return n
}

// WriteText writes the report as a table, one check a line; a check that
// is not OK and has a fix is followed by it, indented, one line for each
// line of the fix. Everything that came from DNS or the network (and so
// everything but the labels) goes through termsafe.
func (r Report) WriteText(w io.Writer) error {
	nameW, subjW := len("CHECK"), len("SUBJECT")
	for _, c := range r.Checks {
		nameW = max(nameW, len(c.Name))
		subjW = max(subjW, len(termsafe.String(c.Subject)))
	}
	subjW = min(subjW, 40)
	var b strings.Builder
	fmt.Fprintf(&b, "%-4s  %-*s  %-*s  %s\n", "", nameW, "CHECK", subjW, "SUBJECT", "DETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %-*s  %-*s  %s\n", label(c.Status), nameW, termsafe.String(c.Name),
			subjW, termsafe.String(c.Subject), termsafe.String(c.Detail))
		if c.Fix != "" && c.Status != StatusOK {
			for _, line := range strings.Split(c.Fix, "\n") {
				fmt.Fprintf(&b, "      fix: %s\n", termsafe.String(line))
			}
		}
	}
	n := r.Counts()
	verdict := "no failures"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "\n%d ok, %d warn, %d fail, %d skip: %s\n", n[StatusOK], n[StatusWarn], n[StatusFail], n[StatusSkip], verdict)
	_, err := io.WriteString(w, b.String())
	return err
}
