package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mamori-mail/mamori/internal/admin"
	"github.com/mamori-mail/mamori/internal/incident"
)

// cmdIncident: mamori incident export --since DUR|TIME [--sender A]
// [--client-ip IP|CIDR] --out FILE.tar.gz --config FILE.
func (e *env) cmdIncident(args []string) error {
	if len(args) == 0 || args[0] != "export" {
		return &exitError{2, errors.New("incident: want export")}
	}
	fs := flag.NewFlagSet("incident export", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	since := fs.String("since", "", "start of the incident: a duration before now (2h, 3d) or an RFC 3339 time")
	sender := fs.String("sender", "", "envelope sender: address, @domain or glob")
	clientIP := fs.String("client-ip", "", "client IP or CIDR")
	out := fs.String("out", "", "archive to write (.tar.gz); must not exist")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("incident export: unexpected argument %q", pos[0])}
	}
	if *out == "" {
		return &exitError{2, errors.New("incident export: --out FILE.tar.gz is required")}
	}
	// Resolve the time here, so the manifest records the exact start.
	start, err := admin.ParseSince(*since, time.Now())
	if err != nil {
		return &exitError{2, fmt.Errorf("incident export: %w", err)}
	}
	if err := (incident.Filter{ClientIP: *clientIP}).Validate(); err != nil {
		return &exitError{2, fmt.Errorf("incident export: %w", err)}
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("incident export: %s already exists; evidence is never overwritten", *out)
	}
	cl, closeFn, err := runningClient(*cfgPath, "incident export")
	if err != nil {
		return err
	}
	defer closeFn()

	m, sum, err := exportTo(*out, func(w io.Writer) error {
		return cl.IncidentExport(start.UTC().Format(time.RFC3339Nano), *sender, *clientIP, w)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", *out)
	fmt.Fprintf(e.stdout, "  messages: %d held\n", m.Messages)
	if len(m.Missing) > 0 {
		fmt.Fprintf(e.stdout, "  missing:  %d (released or deleted during the export)\n", len(m.Missing))
	}
	fmt.Fprintf(e.stdout, "  events:   %d\n", m.Events)
	fmt.Fprintf(e.stdout, "  since:    %s\n", m.Filter.Since.UTC().Format(time.RFC3339))
	fmt.Fprintf(e.stdout, "  files:    %d, checksums verified\n", len(m.Files))
	fmt.Fprintf(e.stdout, "  sha256:   %s\n", sum)
	return nil
}

// exportTo writes an archive with write into a temporary file next to path,
// fsyncs it, verifies it against its manifest, and only then renames it to
// path. It returns the manifest and the archive's SHA-256.
func exportTo(path string, write func(io.Writer) error) (incident.Manifest, string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mamori-incident-*.tar.gz")
	if err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	if err := write(io.MultiWriter(tmp, h)); err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
	}
	m, err := incident.Verify(tmp)
	if err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: the received archive does not verify: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
	}
	// Link rather than rename, so an archive created meanwhile at path is
	// not replaced.
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return incident.Manifest{}, "", fmt.Errorf("incident export: %s appeared meanwhile; not overwritten", path)
	} else if err != nil {
		// No hard links on this file system: a plain rename.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return incident.Manifest{}, "", fmt.Errorf("incident export: %w", err)
		}
	}
	keep = true
	os.Remove(tmp.Name())
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return m, hex.EncodeToString(h.Sum(nil)), nil
}
