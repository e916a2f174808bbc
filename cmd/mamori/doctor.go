package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mamori-mail/mamori/internal/doctor"
	"github.com/mamori-mail/mamori/internal/resolver"
)

// cmdDoctor: mamori doctor --config FILE [--json] [--probe-domain D]
// [--probe HOST:PORT] [--timeout DUR] [--deadline DUR]. Exit 0 when no
// check failed (warnings allowed), 1 on a failure, 2 on usage or config
// errors.
func (e *env) cmdDoctor(args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, `JSON report: {"checks":[{"name","subject","status","detail","fix"}],"ok":bool}`)
	probeDomain := fs.String("probe-domain", doctor.DefaultProbeDomain, "outbound25 connects to port 25 of this domain's first MX")
	probe := fs.String("probe", "", "HOST:PORT for outbound25 instead of --probe-domain's MX")
	timeout := fs.Duration("timeout", doctor.DefaultTimeout, "time allowed for each check")
	deadline := fs.Duration("deadline", doctor.DefaultDeadline, "time allowed for all checks together")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("doctor", pos); err != nil {
		return err
	}
	if *timeout <= 0 || *deadline <= 0 {
		return &exitError{2, fmt.Errorf("doctor: --timeout and --deadline must be more than 0")}
	}
	if *probe != "" {
		if _, _, err := net.SplitHostPort(*probe); err != nil {
			return &exitError{2, fmt.Errorf("doctor: --probe %q: want HOST:PORT", *probe)}
		}
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return &exitError{2, err}
	}
	res, err := resolver.New(c.DNS.Resolver, c.DNS.Timeout.Duration)
	if err != nil {
		return &exitError{2, err}
	}
	rep, err := doctor.Run(context.Background(), doctor.Options{
		Config:      c,
		Resolver:    res,
		ProbeDomain: *probeDomain,
		Probe:       *probe,
		Timeout:     *timeout,
		Deadline:    *deadline,
		Now:         time.Now,
		// Only warnings: the report is the output.
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return &exitError{2, err}
	}
	if *asJSON {
		err = printJSON(e.stdout, rep)
	} else {
		err = rep.WriteText(e.stdout) // escapes what came from the network itself
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return &exitError{1, errSilent}
	}
	return nil
}
