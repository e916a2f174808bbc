package logscan

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/logscan/loggen"
)

// alerts collects what Follow raises.
type alerts struct {
	mu sync.Mutex
	fs []Finding
	ch chan Finding
}

func (a *alerts) add(f Finding) {
	a.mu.Lock()
	a.fs = append(a.fs, f)
	a.mu.Unlock()
	a.ch <- f
}

// wait returns the first alert of kind within a few seconds.
func (a *alerts) wait(t *testing.T, kind string) Finding {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f := <-a.ch:
			if f.Kind == kind {
				return f
			}
		case <-timeout:
			t.Fatalf("no %s alert within 5 s", kind)
		}
	}
}

func (a *alerts) count(kind, subject string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, f := range a.fs {
		if f.Kind == kind && f.Subject == subject {
			n++
		}
	}
	return n
}

func appendLines(t *testing.T, path string, lines []string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// In pieces, as a logger writes: the follower sees partial lines.
	s := strings.Join(lines, "\n") + "\n"
	for len(s) > 0 {
		n := min(len(s), 7000)
		if _, err := f.WriteString(s[:n]); err != nil {
			t.Fatal(err)
		}
		s = s[n:]
	}
}

// TestFollow appends a normal hour, a worm, then rotates the log by
// rename and plants a relay storm, then truncates it and plants a
// brute-force attack: each raises its alert within seconds, once.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "maillog")
	g := loggen.New(5, day)
	g.Hour(day.Add(9*time.Hour), 150, 20)
	old := g.Lines()
	appendLines(t, path, old[:len(old)/2]) // there before following starts: not read

	a := &alerts{ch: make(chan Finding, 1000)}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Follow(ctx, path, FollowOptions{Options: opts, Poll: 20 * time.Millisecond, Ready: func() { close(ready) }}, a.add)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-ready
	appendLines(t, path, old[len(old)/2:])

	w := loggen.New(6, day)
	w.Worm("10.0.9.99", day.Add(10*time.Hour), 5*time.Minute, 300)
	appendLines(t, path, w.Lines())
	f := a.wait(t, KindWorm)
	if f.Subject != "10.0.9.99" || f.SubjectType != "ip" {
		t.Errorf("worm alert: %+v", f)
	}
	time.Sleep(100 * time.Millisecond)
	if n := a.count(KindWorm, "10.0.9.99"); n != 1 {
		t.Errorf("%d worm alerts for one 5-minute episode, want 1", n)
	}

	// Rotation by rename: the follower must read the new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	r := loggen.New(7, day)
	r.RelayStorm("203.0.113.66", day.Add(11*time.Hour), 3*time.Minute, 40)
	appendLines(t, path, r.Lines())
	if f := a.wait(t, KindRelayStorm); f.Subject != "203.0.113.66" {
		t.Errorf("relay alert after rotation: %+v", f)
	}

	// Truncation: copytruncate rotation.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	b := loggen.New(8, day)
	b.BruteForce("198.51.100.23", day.Add(12*time.Hour), 2*time.Minute, 30)
	appendLines(t, path, b.Lines())
	if f := a.wait(t, KindBruteForce); f.Subject != "198.51.100.23" {
		t.Errorf("brute-force alert after truncation: %+v", f)
	}
	if n := a.count(KindWorm, "10.0.9.99") + a.count(KindRelayStorm, "203.0.113.66"); n != 2 {
		t.Errorf("%d worm and relay alerts, want one each", n)
	}
	if n := len(a.fs); n != 4 || a.count(KindRelayHack, "203.0.113.66") != 1 {
		t.Errorf("%d alerts, want 4 (worm, relay-denied, relay-hack, auth-bruteforce): %+v", n, a.fs)
	}
}

// TestFollowPrune: a finding is alerted again when the pattern comes
// back after it was forgotten, and the follower's tables shrink.
func TestFollowPrune(t *testing.T) {
	fl := &follower{o: FollowOptions{Retention: time.Hour}, agg: newAggregator(opts), st: opts.Clock.stamp(), alerted: map[fkey]int64{}}
	fl.agg.follow = true
	var got []Finding
	fl.alert = func(f Finding) { got = append(got, f) }
	feed := func(g *loggen.Log) {
		fl.buf = []byte(strings.Join(g.Lines(), "\n") + "\n")
		fl.lines()
		fl.raise()
	}
	w := loggen.New(6, day)
	w.Worm("10.0.9.99", day.Add(10*time.Hour), 5*time.Minute, 300)
	feed(w)
	if len(got) != 1 {
		t.Fatalf("%d alerts, want 1", len(got))
	}
	n := len(fl.agg.senders)
	fl.now = day.Add(13 * time.Hour).Unix()
	fl.prune()
	if len(fl.agg.senders) != 0 || len(fl.agg.det.ordered) != 0 || len(fl.alerted) != 0 {
		t.Errorf("after prune: %d of %d senders, %d findings, %d alerted", len(fl.agg.senders), n, len(fl.agg.det.ordered), len(fl.alerted))
	}
	w = loggen.New(9, day)
	w.Worm("10.0.9.99", day.Add(14*time.Hour), 5*time.Minute, 300)
	feed(w)
	if len(got) != 2 || got[1].Subject != "10.0.9.99" || got[1].Evidence.First.Before(day.Add(13*time.Hour)) {
		t.Errorf("second episode: %+v", got)
	}
}

// TestFollowHostileLines: the tail of an over-long line is dropped, not
// read as a line of its own (it could forge one), and a line dated in the
// future does not become the follower's "now".
func TestFollowHostileLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mamori.log")
	forged := `{"time":"2026-05-04T09:00:00Z","msg":"queued","queue_id":"qF","client_ip":"10.6.6.6","from":"f@corp.test","rcpts":1,"size":9}`
	good := `{"time":"2026-05-04T09:00:01Z","msg":"queued","queue_id":"qG","client_ip":"10.0.0.7","from":"g@corp.test","rcpts":1,"size":9}`
	future := `{"time":"2099-01-01T00:00:00Z","msg":"queued","queue_id":"qZ","client_ip":"10.0.0.8","from":"z@corp.test","rcpts":1,"size":9}`
	content := good + "\n" + strings.Repeat("X", maxLine+100) + forged + "\n" + good + "\n" + future + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := &follower{path: path, f: f, o: FollowOptions{Retention: time.Hour}, agg: newAggregator(opts), st: opts.Clock.stamp(),
		alerted: map[fkey]int64{}, buf: make([]byte, 0, followChunk+maxLine)}
	fl.agg.follow = true
	fl.alert = func(Finding) {}
	if err := fl.drain(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fl.agg.clients["10.6.6.6"]; ok {
		t.Error("the tail of an over-long line was read as a line")
	}
	if _, ok := fl.agg.clients["10.0.0.7"]; !ok {
		t.Error("the lines around the over-long one were lost")
	}
	if want := time.Date(2026, 5, 4, 9, 0, 1, 0, time.UTC).Unix(); fl.now != want {
		t.Errorf("now = %v, want the last plausible line's time", time.Unix(fl.now, 0).UTC())
	}
}

// TestFollowFullTables: with the key tables full of a normal hour's
// senders and clients, a worm an hour later is still seen (idle keys make
// room), where it used to vanish into "(other)".
func TestFollowFullTables(t *testing.T) {
	o := opts
	o.MaxKeys = 50
	g := loggen.New(5, day)
	g.Hour(day.Add(9*time.Hour), 150, 20)
	w := loggen.New(6, day)
	w.Worm("10.0.9.99", day.Add(10*time.Hour), 5*time.Minute, 300)
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, nil, 0o600)
	a := &alerts{ch: make(chan Finding, 100000)}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Follow(ctx, path, FollowOptions{Options: o, Poll: 20 * time.Millisecond, Ready: func() { close(ready) }}, a.add)
	}()
	<-ready
	appendLines(t, path, append(g.Lines(), w.Lines()...))
	a.wait(t, KindWorm)
	cancel()
	<-done
	if n := a.count(KindWorm, "10.0.9.99"); n != 1 {
		t.Errorf("%d worm alerts for 10.0.9.99, want 1", n)
	}
}
