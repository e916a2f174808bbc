package logscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"
	"unsafe"
)

// FollowOptions tune Follow. The zero value works.
type FollowOptions struct {
	Options
	// Poll is how often the file is checked for new lines, truncation
	// and rotation (default 250 ms).
	Poll time.Duration
	// FromStart reads what the file already holds first; by default
	// following starts at its end, as tail -F -n 0 does.
	FromStart bool
	// Retention is how long a sender, client or user without a new line
	// is remembered (default 24 h): the baseline of the rate-change
	// finding. Findings are forgotten two windows after their last event.
	Retention time.Duration
	// Ready is called once the file is open and read up to where
	// following starts.
	Ready func()
	Log   *slog.Logger
}

// followChunk is what one read may take.
const followChunk = 64 << 10

// Follow tails the log at path like tail -F: it reads the lines appended
// to it, reopens it when it is replaced (rotation by rename: the name
// points to another file) and starts over when it shrinks (truncation).
// It waits for the file to appear. Every new finding is passed to alert
// as soon as the lines that raise it are read; a finding whose pattern
// goes on is passed again once per Window at most, so an episode makes a
// handful of alerts, not a storm. State is bounded: the tables of
// Options.MaxKeys, findings and idle keys forgotten (see Retention). It
// returns when ctx is done (nil), or on an error reading the file.
func Follow(ctx context.Context, path string, o FollowOptions, alert func(Finding)) error {
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fl := &follower{path: path, o: o, log: log, alert: alert, agg: newAggregator(o.Options),
		st: o.Clock.stamp(), alerted: map[fkey]int64{}, buf: make([]byte, 0, followChunk+maxLine)}
	fl.agg.follow = true
	defer fl.close()
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for fl.f == nil {
		err := fl.open(!o.FromStart)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	if o.FromStart {
		if err := fl.drain(); err != nil {
			return err
		}
	}
	if o.Ready != nil {
		o.Ready()
	}
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := fl.drain(); err != nil {
			return err
		}
		if err := fl.reopenIfMoved(); err != nil {
			return err
		}
		if time.Since(lastPrune) >= time.Minute {
			fl.prune()
			lastPrune = time.Now()
		}
	}
}

type follower struct {
	path     string
	o        FollowOptions
	log      *slog.Logger
	alert    func(Finding)
	agg      *aggregator
	st       *stamp
	f        *os.File
	fi       os.FileInfo // of f, for os.SameFile
	off      int64
	format   Format
	buf      []byte // bytes read, from the start of a line
	skipping bool   // dropping the rest of an over-long line
	evs      []Event
	now      int64 // the latest line's time
	alerted  map[fkey]int64
}

func (fl *follower) close() {
	if fl.f != nil {
		fl.f.Close()
	}
}

// open opens the file, at its end or its start.
func (fl *follower) open(atEnd bool) error {
	f, err := os.Open(fl.path)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("follow: %w", err)
	}
	fl.close()
	fl.f, fl.fi, fl.off, fl.buf = f, fi, 0, fl.buf[:0]
	fl.format = fl.o.Format
	if fl.format == FormatAuto {
		fl.format = ""
	}
	if atEnd {
		// Detect the format from the head of what is there.
		head := make([]byte, 4096)
		n, _ := f.ReadAt(head, 0)
		if fl.format == "" && n > 0 {
			fl.format = Detect(head[:n])
		}
		if fl.off, err = f.Seek(0, io.SeekEnd); err != nil {
			return fmt.Errorf("follow: %w", err)
		}
	}
	fl.log.Info("following", "file", fl.path, "offset", fl.off, "format", string(fl.format))
	return nil
}

// reopenIfMoved reopens the file when its name now points to another
// file (rotated by rename; the old one was read to its end first), and
// starts over when it is shorter than what was read (truncated).
func (fl *follower) reopenIfMoved() error {
	fi, err := os.Stat(fl.path)
	if err != nil {
		return nil // rotated and not yet recreated: keep the old one
	}
	if !os.SameFile(fi, fl.fi) {
		if err := fl.drain(); err != nil {
			return err
		}
		fl.flushPartial()
		fl.log.Info("log rotated, reopening", "file", fl.path)
		return fl.open(false)
	}
	if fi.Size() < fl.off {
		fl.log.Info("log truncated, reading from its start", "file", fl.path)
		if _, err := fl.f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		fl.off, fl.buf = 0, fl.buf[:0]
	}
	return nil
}

// drain reads what was appended, line by line, and raises the alerts.
func (fl *follower) drain() error {
	for {
		if len(fl.buf) >= maxLine {
			// Keep an over-long line's head and drop the rest of it up
			// to its newline, as the batch scan does: its tail is never
			// read as lines of its own.
			fl.buf = append(fl.buf[:maxLine-1], '\n')
			fl.lines()
			fl.skipping = true
		}
		start := len(fl.buf)
		n, err := fl.f.Read(fl.buf[start : start+min(followChunk, cap(fl.buf)-start)])
		fl.buf = fl.buf[:start+n]
		fl.off += int64(n)
		if fl.skipping && n > 0 {
			if i := bytes.IndexByte(fl.buf[start:], '\n'); i >= 0 {
				fl.buf = fl.buf[:start+copy(fl.buf[start:], fl.buf[start+i+1:])]
				fl.skipping = false
			} else {
				fl.buf = fl.buf[:start]
			}
		}
		if n > 0 {
			fl.lines()
		}
		if err == io.EOF || n == 0 {
			fl.raise()
			return nil
		}
		if err != nil {
			return fmt.Errorf("follow %s: %w", fl.path, err)
		}
	}
}

// flushPartial takes a last line without its newline (the old file of a
// rotation).
func (fl *follower) flushPartial() {
	if len(fl.buf) > 0 {
		fl.buf = append(fl.buf, '\n')
		fl.lines()
		fl.raise()
	}
}

// lines parses and counts the whole lines in buf and keeps the rest.
func (fl *follower) lines() {
	end := bytes.LastIndexByte(fl.buf, '\n')
	if end < 0 {
		return
	}
	if fl.format == "" {
		fl.format = Detect(fl.buf[:end+1])
	}
	s := unsafe.String(unsafe.SliceData(fl.buf), end+1)
	evs := fl.evs[:0]
	for len(s) > 0 {
		i := bytes.IndexByte(unsafe.Slice(unsafe.StringData(s), len(s)), '\n')
		evs = fl.st.appendLine(fl.format, evs, s[:i])
		s = s[i+1:]
	}
	fl.agg.yearFix = fl.format != FormatExim && fl.format != FormatMamori
	// A line dated in the future (a wrong clock at boot, a forged line)
	// must not become "now": every prune would then forget everything.
	horizon := time.Now().Add(5 * time.Minute).Unix()
	for i := range evs {
		fl.agg.add(&evs[i])
		if evs[i].Time <= horizon {
			fl.now = max(fl.now, evs[i].Time)
		}
	}
	clear(evs) // the events point into buf
	fl.evs = evs
	fl.buf = fl.buf[:copy(fl.buf, fl.buf[end+1:])]
}

// raise passes the new findings, and those that went on for another
// window since they were last passed, to alert.
func (fl *follower) raise() {
	win := int64(fl.agg.th.Window / time.Second)
	for _, f := range fl.agg.det.ordered {
		k := fkey{f.Kind, f.Subject}
		last := f.Evidence.Last.Unix()
		if at, ok := fl.alerted[k]; ok && last < at+win {
			continue
		}
		fl.alerted[k] = last
		fl.alert(*f)
	}
}

// prune forgets findings two windows after their last event, and keys
// idle for longer than Retention, so that following for months holds
// what a few hours need.
func (fl *follower) prune() {
	if fl.now == 0 {
		return
	}
	a := fl.agg
	a.det.expire(fl.now - 2*int64(a.th.Window/time.Second))
	for k := range fl.alerted {
		if a.det.found[k] == nil {
			delete(fl.alerted, k)
		}
	}
	cut := fl.now - int64(fl.o.Retention/time.Second)
	for _, m := range [...]map[string]*stat{a.senders, a.clients, a.users} {
		for k, s := range m {
			if s.last < cut {
				delete(m, k)
			}
		}
	}
	for h := range a.hours {
		if h < cut-3600 {
			delete(a.hours, h)
		}
	}
	a.hourKey = -1
}
