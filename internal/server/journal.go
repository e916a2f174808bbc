package server

import (
	"fmt"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/smtpd"
)

// sessionRecorder turns SMTP session summaries into journal events: the
// "session summaries" half of an incident timeline.
type sessionRecorder struct{ j *journal.Journal }

func (r sessionRecorder) RecordSession(s smtpd.SessionSummary) {
	var ids, senders []string
	seen := map[string]bool{}
	for _, t := range s.Transactions {
		ids = append(ids, t.QueueID)
		if !seen[t.From] {
			seen[t.From] = true
			senders = append(senders, t.From)
		}
	}
	sum := fmt.Sprintf("%s session from %s: %d queued", s.Listener, s.ClientIP, len(s.Transactions)+s.More)
	for stage, n := range s.Rejects {
		sum += fmt.Sprintf(", %d refused at %s", n, stage)
	}
	if s.AuthFailures > 0 {
		sum += fmt.Sprintf(", %d failed AUTH", s.AuthFailures)
	}
	r.j.Record(journal.Event{
		Time:     s.End,
		Kind:     "session",
		IP:       s.ClientIP,
		User:     s.User,
		Sender:   strings.Join(senders, ","),
		QueueIDs: ids,
		Summary:  sum,
		Data:     map[string]any{"session": s},
	})
}

// guardEvent records a guard alert (isolation, suspension, ban, release).
func guardEvent(j *journal.Journal, a guard.Alert) {
	j.Record(journal.Event{
		Time:    a.Time,
		Kind:    "guard",
		IP:      a.IP,
		User:    a.User,
		Sender:  a.Sender,
		Rule:    a.Rule,
		Summary: strings.TrimSpace(a.Kind + " " + a.IP + " " + a.User + " " + a.Detail),
		Data:    map[string]any{"alert": a},
	})
}

// queueEvent records an administrative or policy change to the queue.
func queueEvent(j *journal.Journal, op, filter, by string, n int) {
	j.Record(journal.Event{
		Time:    time.Now(),
		Kind:    "queue",
		Summary: fmt.Sprintf("%s %d message(s) (%s) by %s", op, n, filter, by),
		Data:    map[string]any{"op": op, "filter": filter, "count": n, "by": by},
	})
}
