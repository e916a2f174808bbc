// Package incident exports the evidence of an incident as one archive, so
// that it is kept before an administrator purges held mail or the journal
// rotates it away (DESIGN.md S10, issue 4).
//
// The archive is a gzip-compressed tar, written as a stream:
//
//	messages/<queue-id>.eml  every held message matching the filter, as queued
//	messages.jsonl           the queue metadata (envelope, client, rule) of each
//	timeline.jsonl           the related journal events, oldest first
//	manifest.json            last: the filter, counts, and the size and SHA-256
//	                         of every other file
//
// The manifest comes last because the checksums are only known once the
// files are written; a reader verifies an archive with Verify.
//
// Dependencies: only the standard library (archive/tar, compress/gzip,
// crypto/sha256), plus mamori's queue (the held messages) and journal (the
// timeline).
package incident

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"hash"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/journal"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Queue is what the export needs of the spool. *queue.Queue implements it.
type Queue interface {
	List(queue.Filter) []queue.Meta
	Body(id string) ([]byte, error)
}

// Filter selects what to export. Zero fields match everything.
type Filter struct {
	Since    time.Time `json:"since"`
	Sender   string    `json:"sender,omitempty"`    // address, "@domain" or glob with * and ?
	ClientIP string    `json:"client_ip,omitempty"` // IP or CIDR
}

// Validate reports whether the filter can be used.
func (f Filter) Validate() error {
	if f.ClientIP != "" {
		if _, err := ipnet.ParsePrefix(f.ClientIP); err != nil {
			return fmt.Errorf("incident filter: client IP %q is neither an IP nor a CIDR", f.ClientIP)
		}
	}
	return nil
}

// File is one archive member listed in the manifest.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// Manifest describes an export. It is the archive's last member.
type Manifest struct {
	Created  time.Time `json:"created"`
	Filter   Filter    `json:"filter"`
	Messages int       `json:"messages"`
	Events   int       `json:"events"`
	// Missing lists held messages that disappeared (released, deleted or
	// expired) between listing and reading them.
	Missing []string `json:"missing,omitempty"`
	Files   []File   `json:"files"`
}

// Archive member names.
const (
	ManifestName = "manifest.json"
	TimelineName = "timeline.jsonl"
	MetaName     = "messages.jsonl"
	MessagesDir  = "messages/"
)

// Export writes the archive for f to w. j may be nil (no journal): the
// timeline is then empty. Bodies are read and written one at a time; the
// timeline is staged in a temporary file because tar needs its size first.
// On error, w holds a truncated archive.
func Export(w io.Writer, q Queue, j *journal.Journal, f Filter, now time.Time) (Manifest, error) {
	if err := f.Validate(); err != nil {
		return Manifest{}, err
	}
	m := Manifest{Created: now.UTC(), Filter: f, Files: []File{}}
	var msgs []queue.Meta
	for _, meta := range q.List(queue.Filter{State: queue.StateHeld, From: f.Sender, ClientIP: f.ClientIP}) {
		if !meta.Received.Before(f.Since) {
			msgs = append(msgs, meta)
		}
	}

	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	aw := &archive{tw: tw, now: now, m: &m}

	var exported []queue.Meta
	for _, meta := range msgs {
		body, err := q.Body(meta.ID)
		if errors.Is(err, queue.ErrNotFound) {
			m.Missing = append(m.Missing, meta.ID)
			continue
		}
		if err != nil {
			return m, fmt.Errorf("incident export: %w", err)
		}
		if err := aw.add(MessagesDir+meta.ID+".eml", meta.Received, int64(len(body)), bytes.NewReader(body)); err != nil {
			return m, err
		}
		exported = append(exported, meta)
	}
	m.Messages = len(exported)

	var metaBuf bytes.Buffer
	enc := json.NewEncoder(&metaBuf)
	for _, meta := range exported {
		if err := enc.Encode(meta); err != nil {
			return m, fmt.Errorf("incident export: encode metadata: %w", err)
		}
	}
	if err := aw.add(MetaName, now, int64(metaBuf.Len()), &metaBuf); err != nil {
		return m, err
	}

	if err := aw.timeline(j, newRelation(f, exported)); err != nil {
		return m, err
	}

	man, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, fmt.Errorf("incident export: encode manifest: %w", err)
	}
	man = append(man, '\n')
	if err := tw.WriteHeader(header(ManifestName, now, int64(len(man)))); err != nil {
		return m, fmt.Errorf("incident export: %w", err)
	}
	if _, err := tw.Write(man); err != nil {
		return m, fmt.Errorf("incident export: %w", err)
	}
	if err := tw.Close(); err != nil {
		return m, fmt.Errorf("incident export: %w", err)
	}
	if err := gz.Close(); err != nil {
		return m, fmt.Errorf("incident export: %w", err)
	}
	return m, nil
}

type archive struct {
	tw  *tar.Writer
	now time.Time
	m   *Manifest
}

func header(name string, mod time.Time, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: mod.UTC().Truncate(time.Second), Format: tar.FormatPAX}
}

// add writes one member and lists it in the manifest with its checksum.
func (a *archive) add(name string, mod time.Time, size int64, r io.Reader) error {
	if err := a.tw.WriteHeader(header(name, mod, size)); err != nil {
		return fmt.Errorf("incident export: %s: %w", name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(a.tw, h), r)
	if err != nil {
		return fmt.Errorf("incident export: %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("incident export: %s: wrote %d bytes, expected %d", name, n, size)
	}
	a.m.Files = append(a.m.Files, File{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// timeline stages the related events in a temporary file, then adds it.
func (a *archive) timeline(j *journal.Journal, rel *relation) error {
	tmp, err := os.CreateTemp("", "mamori-timeline-*.jsonl")
	if err != nil {
		return fmt.Errorf("incident export: timeline: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	bw := bufio.NewWriter(tmp)
	enc := json.NewEncoder(bw)
	var encErr error
	if j != nil {
		err = j.Scan(rel.since, func(e journal.Event) bool {
			if !rel.match(e) {
				return true
			}
			if encErr = enc.Encode(e); encErr != nil {
				return false
			}
			a.m.Events++
			return true
		})
		if err == nil {
			err = encErr
		}
		if err != nil {
			return fmt.Errorf("incident export: timeline: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("incident export: timeline: %w", err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("incident export: timeline: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("incident export: timeline: %w", err)
	}
	return a.add(TimelineName, a.now, size, tmp)
}

// relation decides which journal events belong to the incident: those of
// the filter's client IP/CIDR and sender, those naming an exported message,
// and those of the client IPs, senders and users of the exported messages.
// A filter with neither sender nor client IP relates every event since
// Since.
type relation struct {
	since   time.Time
	all     bool
	prefix  netip.Prefix
	hasIP   bool
	sender  string // lower-case pattern
	ids     map[string]bool
	ips     map[netip.Addr]bool
	senders map[string]bool // lower case
	users   map[string]bool // lower case
}

func newRelation(f Filter, msgs []queue.Meta) *relation {
	r := &relation{
		since:   f.Since,
		all:     f.Sender == "" && f.ClientIP == "",
		sender:  normAddrPattern(f.Sender),
		ids:     make(map[string]bool),
		ips:     make(map[netip.Addr]bool),
		senders: make(map[string]bool),
		users:   make(map[string]bool),
	}
	if f.ClientIP != "" {
		r.prefix, _ = ipnet.ParsePrefix(f.ClientIP) // checked by Validate
		r.hasIP = true
	}
	for _, m := range msgs {
		r.ids[m.ID] = true
		if p, err := ipnet.ParsePrefix(m.ClientIP); err == nil && p.IsSingleIP() {
			r.ips[p.Addr()] = true
		}
		if m.From != "" {
			r.senders[strings.ToLower(m.From)] = true
		}
		if m.User != "" {
			r.users[strings.ToLower(m.User)] = true
		}
	}
	return r
}

func (r *relation) match(e journal.Event) bool {
	if r.all {
		return true
	}
	for _, id := range e.QueueIDs {
		if r.ids[id] {
			return true
		}
	}
	if e.IP != "" {
		if p, err := ipnet.ParsePrefix(e.IP); err == nil {
			if r.hasIP && r.prefix.Overlaps(p) {
				return true
			}
			if p.IsSingleIP() {
				if r.ips[p.Addr()] {
					return true
				}
			} else {
				for a := range r.ips {
					if p.Contains(a) {
						return true
					}
				}
			}
		}
	}
	for _, s := range strings.FieldsFunc(e.Sender, func(c rune) bool { return c == ',' || c == ' ' || c == ';' }) {
		s = strings.ToLower(strings.Trim(s, "<>"))
		if r.senders[s] || r.sender != "" && matchAddr(r.sender, s) {
			return true
		}
	}
	if u := strings.ToLower(e.User); u != "" && (r.users[u] || r.sender != "" && matchAddr(r.sender, u)) {
		return true
	}
	return false
}

// normAddrPattern lower-cases a sender pattern and drops angle brackets,
// as the queue's From filter does.
func normAddrPattern(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	if len(p) > 2 && p[0] == '<' && p[len(p)-1] == '>' {
		p = p[1 : len(p)-1]
	}
	return p
}

// matchAddr matches a lower-case address against a lower-case pattern with
// the queue filter's forms: exact, "@domain", or a glob with * and ?.
func matchAddr(pat, addr string) bool {
	switch {
	case strings.ContainsAny(pat, "*?"):
		return glob(pat, addr)
	case strings.HasPrefix(pat, "@"):
		i := strings.LastIndexByte(addr, '@')
		return i >= 0 && addr[i:] == pat
	default:
		return addr == pat
	}
}

// glob matches byte-wise with * and ?, backtracking only to the last star.
func glob(pat, s string) bool {
	px, sx, starP, starS := 0, 0, -1, 0
	for sx < len(s) {
		switch {
		case px < len(pat) && (pat[px] == '?' || pat[px] == s[sx]):
			px++
			sx++
		case px < len(pat) && pat[px] == '*':
			starP, starS = px, sx
			px++
		case starP >= 0:
			starS++
			px, sx = starP+1, starS
		default:
			return false
		}
	}
	for px < len(pat) && pat[px] == '*' {
		px++
	}
	return px == len(pat)
}

// Verify reads an archive written by Export, checks every member against
// the manifest (size and SHA-256, nothing missing, nothing unlisted) and
// returns the manifest.
func Verify(r io.Reader) (Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("incident archive: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	seen := map[string]File{}
	var m Manifest
	gotManifest := false
	for {
		hd, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Manifest{}, fmt.Errorf("incident archive: %w", err)
		}
		if gotManifest {
			return Manifest{}, fmt.Errorf("incident archive: %s after the manifest", hd.Name)
		}
		if hd.Name == ManifestName {
			if err := json.NewDecoder(io.LimitReader(tr, 256<<20)).Decode(&m); err != nil {
				return Manifest{}, fmt.Errorf("incident archive: manifest: %w", err)
			}
			gotManifest = true
			continue
		}
		var h hash.Hash = sha256.New()
		n, err := io.Copy(h, tr)
		if err != nil {
			return Manifest{}, fmt.Errorf("incident archive: %s: %w", hd.Name, err)
		}
		seen[hd.Name] = File{Name: hd.Name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return Manifest{}, fmt.Errorf("incident archive: %w", err)
	}
	if !gotManifest {
		return Manifest{}, errors.New("incident archive: no manifest (truncated?)")
	}
	if len(m.Files) != len(seen) {
		return m, fmt.Errorf("incident archive: manifest lists %d files, archive holds %d", len(m.Files), len(seen))
	}
	for _, f := range m.Files {
		got, ok := seen[f.Name]
		if !ok {
			return m, fmt.Errorf("incident archive: %s is listed but missing", f.Name)
		}
		if got != f {
			return m, fmt.Errorf("incident archive: %s: size %d sha256 %s, manifest says size %d sha256 %s", f.Name, got.Size, got.SHA256, f.Size, f.SHA256)
		}
	}
	return m, nil
}
