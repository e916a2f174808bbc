package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mamori-mail/mamori/internal/alert"
	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/logscan"
	"github.com/mamori-mail/mamori/internal/queue"
)

// followTargets are where --follow sends its alerts.
type followTargets struct{ config, webhook, postmaster, smtp string }

// followLog tails path and turns each finding into an alert: logged to
// stderr, POSTed to the webhook, mailed to the postmaster through an SMTP
// server (mamori's own listener with --config). It runs until SIGINT or
// SIGTERM.
func (e *env) followLog(path string, o logscan.Options, t followTargets) error {
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	cfg := alert.Config{Webhook: t.webhook, Postmaster: t.postmaster}
	relay := t.smtp
	if t.config != "" {
		c, err := config.Load(t.config)
		if err != nil {
			return fmt.Errorf("logscan --follow: %w", err)
		}
		cfg.Hostname = c.Hostname
		if cfg.Webhook == "" {
			cfg.Webhook = c.Guard.Webhook
		}
		if cfg.Postmaster == "" {
			cfg.Postmaster = c.Postmaster
			if cfg.Postmaster == "" && len(c.Domains) > 0 {
				cfg.Postmaster = "postmaster@" + c.Domains[0]
			}
		}
		if relay == "" && c.Listen.SMTP != "" {
			relay = dialable(c.Listen.SMTP) // see drill.go
		}
		// From stays postmaster@HOSTNAME: mail from outside the server
		// (this is a client of it) in the name of a local domain must be
		// DKIM-signed, and the keys are the server's.
		o.LocalDomains = append(o.LocalDomains, c.Domains...)
	}
	var enq alert.Enqueuer
	if cfg.Postmaster != "" {
		if relay == "" {
			return &exitError{2, errors.New("logscan --follow: --postmaster needs --smtp HOST:PORT (or --config)")}
		}
		enq = &smtpEnqueuer{addr: relay, helo: cfg.Hostname, log: log}
	}
	n := alert.New(cfg, enq, log.With("stage", "alert"))
	defer n.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fo := logscan.FollowOptions{Options: o, Log: log, Ready: func() {
		log.Info("watching for findings", "file", path, "webhook", cfg.Webhook != "", "postmaster", cfg.Postmaster)
	}}
	return logscan.Follow(ctx, path, fo, func(f logscan.Finding) { n.Alert(findingAlert(f)) })
}

// findingAlert is a finding as the alert package carries it: kind
// "logscan", rule "logscan.KIND", the subject as IP or sender.
func findingAlert(f logscan.Finding) guard.Alert {
	ev := f.Evidence
	a := guard.Alert{
		Time: time.Now(), Kind: "logscan", Rule: "logscan." + f.Kind,
		Detail: fmt.Sprintf("%s %s, %s %s: %s; %s – %s", f.Severity, f.Kind, f.SubjectType, f.Subject, findingCounts(f),
			ev.First.Format(time.RFC3339), ev.Last.Format(time.RFC3339)),
		Counts: map[string]int{},
		Rcpts:  ev.SampleRecipients,
		Extra: map[string]string{"subject": f.Subject, "subject_type": f.SubjectType, "severity": f.Severity,
			"window": ev.Window, "first": ev.First.Format(time.RFC3339), "last": ev.Last.Format(time.RFC3339)},
		Subjects: ev.SampleSubjects,
	}
	switch f.SubjectType {
	case "ip":
		a.IP = f.Subject
	case "address":
		a.Sender = f.Subject
	}
	for k, v := range map[string]int{"messages": ev.Messages, "recipients": ev.Recipients, "rejects": ev.Rejects,
		"auth_failures": ev.AuthFailures, "distinct_ips": ev.DistinctIPs, "peak_per_window": ev.Peak} {
		if v > 0 {
			a.Counts[k] = v
		}
	}
	for i, s := range ev.SampleIPs {
		a.Extra["sample_ip_"+strconv.Itoa(i+1)] = s
	}
	for i, s := range ev.SampleSenders {
		a.Extra["sample_sender_"+strconv.Itoa(i+1)] = s
	}
	return a
}

// smtpEnqueuer hands alert mail to an SMTP server (mamori's own listener,
// which delivers to the local postmaster): logscan --follow has no queue
// of its own.
type smtpEnqueuer struct {
	addr, helo string
	log        *slog.Logger
}

func (s *smtpEnqueuer) Enqueue(m queue.Meta, parts ...[]byte) (queue.Meta, error) {
	conn, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
	if err != nil {
		return m, fmt.Errorf("alert mail: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return m, fmt.Errorf("alert mail: %w", err)
	}
	host, _, _ := net.SplitHostPort(s.addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return m, fmt.Errorf("alert mail: %w", err)
	}
	defer c.Close()
	helo := s.helo
	if helo == "" {
		helo, _ = os.Hostname()
	}
	if err := c.Hello(helo); err != nil {
		return m, fmt.Errorf("alert mail: HELO: %w", err)
	}
	if err := c.Mail(m.From); err != nil {
		return m, fmt.Errorf("alert mail: MAIL: %w", err)
	}
	for _, r := range m.Rcpts {
		if err := c.Rcpt(r.Addr); err != nil {
			return m, fmt.Errorf("alert mail: RCPT %s: %w", r.Addr, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return m, fmt.Errorf("alert mail: DATA: %w", err)
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return m, fmt.Errorf("alert mail: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return m, fmt.Errorf("alert mail: end of DATA: %w", err)
	}
	if err := c.Quit(); err != nil {
		s.log.Warn("alert mail: QUIT", "err", err)
	}
	return m, nil
}
