package admin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/incident"
	"github.com/mamori-mail/mamori/internal/journal"
)

// SetIncident enables GET /api/v1/incident/export?since=…&sender=…&client_ip=…,
// which streams the incident archive (tar.gz) of the held messages and the
// related journal events. j may be nil when no journal is kept.
func (s *Server) SetIncident(q incident.Queue, j *journal.Journal) {
	s.mux.HandleFunc("GET /api/v1/incident/export", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		f, err := incidentFilter(r.URL.Query(), now)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		s.audit(r, "incident export", r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="mamori-incident-%s.tar.gz"`, now.UTC().Format("20060102T150405Z")))
		m, err := incident.Export(w, q, j, f, now)
		if err != nil {
			// The archive is already partly sent: abort the connection so
			// the client sees a broken transfer, not a short archive.
			s.log.Error("incident export failed", "err", err, "remote", r.RemoteAddr)
			panic(http.ErrAbortHandler)
		}
		s.log.Info("incident exported", "messages", m.Messages, "events", m.Events, "missing", len(m.Missing), "remote", r.RemoteAddr)
	})
}

func incidentFilter(q url.Values, now time.Time) (incident.Filter, error) {
	since, err := ParseSince(q.Get("since"), now)
	if err != nil {
		return incident.Filter{}, err
	}
	f := incident.Filter{Since: since, Sender: q.Get("sender"), ClientIP: q.Get("client_ip")}
	return f, f.Validate()
}

// ParseSince reads a point in time given as an age before now ("2h", "3d",
// see ParseAge) or as an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("since: want a duration such as 2h or 3d, or an RFC 3339 time")
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := ParseAge(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want a duration such as 2h or 3d, or an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

// IncidentExport streams the incident archive for the given filter to w.
// since is a duration before now ("2h", "3d") or an RFC 3339 time; sender
// and clientIP may be empty.
func (c *Client) IncidentExport(since, sender, clientIP string, w io.Writer) error {
	q := url.Values{"since": {since}}
	if sender != "" {
		q.Set("sender", sender)
	}
	if clientIP != "" {
		q.Set("client_ip", clientIP)
	}
	return c.do("GET", "/api/v1/incident/export", q, nil, w)
}
