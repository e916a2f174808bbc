package admin

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/incident"
	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/queue"
)

func TestIncidentExportAPI(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	j, err := journal.Open(t.TempDir(), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	held, err := q.Enqueue(queue.Meta{From: "worm@example.org", Rcpts: []queue.Rcpt{{Addr: "v@example.com"}},
		ClientIP: "192.0.2.1", State: queue.StateHeld, Rule: "worm"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(queue.Meta{From: "ok@example.org", Rcpts: []queue.Rcpt{{Addr: "v@example.com"}},
		ClientIP: "192.0.2.1", State: queue.StateHeld}, []byte("Subject: y\r\n\r\nother\r\n")); err != nil {
		t.Fatal(err)
	}
	j.Record(journal.Event{Kind: journal.KindGuard, Sender: "worm@example.org", Rule: "worm", Summary: "isolated"})

	s := NewServer(nil, q, "secret", nil)
	s.SetIncident(q, j)
	ts := httptest.NewServer(s)
	defer ts.Close()
	cl := &Client{Base: ts.URL, Token: "secret", HTTP: ts.Client()}

	var buf bytes.Buffer
	if err := cl.IncidentExport("1h", "worm@example.org", "", &buf); err != nil {
		t.Fatal(err)
	}
	m, err := incident.Verify(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if m.Messages != 1 || m.Events != 1 || m.Files[0].Name != "messages/"+held.ID+".eml" || m.Filter.Sender != "worm@example.org" {
		t.Fatalf("manifest %+v", m)
	}

	tests := []struct {
		name, token, since, ip string
		status                 int
	}{
		{"bad since", "secret", "yesterday", "", http.StatusBadRequest},
		{"missing since", "secret", "", "", http.StatusBadRequest},
		{"bad client ip", "secret", "2h", "300.1.1.1", http.StatusBadRequest},
		{"wrong token", "nope", "2h", "", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		c := &Client{Base: ts.URL, Token: tc.token, HTTP: ts.Client()}
		var out bytes.Buffer
		err := c.IncidentExport(tc.since, "", tc.ip, &out)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != tc.status {
			t.Errorf("%s: err %v, want status %d", tc.name, err, tc.status)
		}
	}

	// Without a journal the export still works, with an empty timeline.
	s2 := NewServer(nil, q, "secret", nil)
	s2.SetIncident(q, nil)
	ts2 := httptest.NewServer(s2)
	defer ts2.Close()
	buf.Reset()
	cl2 := &Client{Base: ts2.URL, Token: "secret", HTTP: ts2.Client()}
	if err := cl2.IncidentExport(time.Now().Add(-time.Hour).Format(time.RFC3339), "", "192.0.2.1", &buf); err != nil {
		t.Fatal(err)
	}
	if m, err := incident.Verify(&buf); err != nil || m.Messages != 2 || m.Events != 0 {
		t.Fatalf("no journal: %+v, %v", m, err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{"2h", now.Add(-2 * time.Hour), ""},
		{"3d", now.Add(-72 * time.Hour), ""},
		{"2026-05-01T00:00:00Z", time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), ""},
		{"2026-05-01T02:00:00+02:00", time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), ""},
		{"", time.Time{}, "want a duration"},
		{"-2h", time.Time{}, "want a duration"},
		{"yesterday", time.Time{}, "want a duration"},
	}
	for _, tc := range tests {
		got, err := ParseSince(tc.in, now)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSince(%q) err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
