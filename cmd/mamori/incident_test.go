package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/incident"
	"github.com/mamori-mail/mamori/internal/queue"
)

func TestExportTo(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Enqueue(queue.Meta{From: "a@example.org", Rcpts: []queue.Rcpt{{Addr: "b@example.com"}},
		State: queue.StateHeld}, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if _, err := incident.Export(&archive, q, nil, incident.Filter{}, time.Now()); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	tests := []struct {
		name    string
		data    []byte
		failing error
		ok      bool
	}{
		{"good", archive.Bytes(), nil, true},
		{"truncated", archive.Bytes()[:archive.Len()/2], nil, false},
		{"transfer error", archive.Bytes()[:10], errors.New("connection reset"), false},
	}
	for _, tc := range tests {
		out := filepath.Join(dir, tc.name+".tar.gz")
		m, sum, err := exportTo(out, func(w io.Writer) error {
			w.Write(tc.data)
			return tc.failing
		})
		if (err == nil) != tc.ok {
			t.Fatalf("%s: err %v", tc.name, err)
		}
		got, rerr := os.ReadFile(out)
		if !tc.ok {
			if rerr == nil {
				t.Errorf("%s: a bad archive was left at %s", tc.name, out)
			}
			continue
		}
		if !bytes.Equal(got, tc.data) || m.Messages != 1 || len(sum) != 64 {
			t.Errorf("%s: file %d bytes, manifest %+v, sum %q", tc.name, len(got), m, sum)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".mamori-incident-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// An existing archive is never replaced.
	if _, _, err := exportTo(filepath.Join(dir, "good.tar.gz"), func(w io.Writer) error {
		_, err := w.Write(archive.Bytes())
		return err
	}); err == nil {
		t.Error("exportTo overwrote an existing archive")
	}
}

func TestIncidentArgs(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "old.tar.gz")
	os.WriteFile(existing, []byte("evidence"), 0o600)
	out := filepath.Join(dir, "new.tar.gz")
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no subcommand", []string{"incident"}, 2},
		{"no out", []string{"incident", "export", "--since", "2h"}, 2},
		{"no since", []string{"incident", "export", "--out", out}, 2},
		{"bad since", []string{"incident", "export", "--since", "soon", "--out", out}, 2},
		{"bad ip", []string{"incident", "export", "--since", "2h", "--client-ip", "1.2.3", "--out", out}, 2},
		{"existing out", []string{"incident", "export", "--since", "2h", "--out", existing}, 1},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		err := run(tc.args, nil, &stdout, &stderr)
		code := 0
		if err != nil {
			code = 1
			var ee *exitError
			if errors.As(err, &ee) {
				code = ee.code
			}
		}
		if code != tc.code {
			t.Errorf("%s: exit %d (%v), want %d", tc.name, code, err, tc.code)
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "evidence" {
		t.Error("existing archive changed")
	}
}
