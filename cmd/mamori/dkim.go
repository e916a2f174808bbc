package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/mamori-mail/mamori/internal/msgauth"
)

// cmdDKIM: mamori dkim keygen --domain D [--selector mamori]
// [--algo rsa|ed25519] --config FILE.
func (e *env) cmdDKIM(args []string) error {
	if len(args) == 0 || args[0] != "keygen" {
		return &exitError{2, errors.New("dkim: want keygen")}
	}
	fs := flag.NewFlagSet("dkim keygen", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	domain := fs.String("domain", "", "domain to sign for")
	selector := fs.String("selector", "mamori", "DKIM selector")
	algo := fs.String("algo", "rsa", "key algorithm: rsa (2048 bits) or ed25519")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &exitError{2, fmt.Errorf("dkim keygen: unexpected argument %q", pos[0])}
	}
	if *domain == "" {
		return &exitError{2, errors.New("dkim keygen: --domain is required")}
	}
	if *algo != "rsa" && *algo != "ed25519" {
		return &exitError{2, fmt.Errorf("dkim keygen: --algo %q: want rsa or ed25519", *algo)}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if err := asServiceUser(cfg); err != nil {
		return err
	}
	keyPath, name, value, err := msgauth.Keygen(*domain, *selector, *algo, filepath.Join(cfg.DataDir, "dkim"))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", keyPath)
	fmt.Fprintf(e.stdout, "publish this DNS record:\n")
	fmt.Fprintf(e.stdout, "%s IN TXT %s\n", name, msgauth.TXTStrings(value))
	return nil
}
