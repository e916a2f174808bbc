package main

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctorUsageErrorsExit2: usage and config errors exit 2, so a script
// can tell them from a failed check (1).
func TestDoctorUsageErrorsExit2(t *testing.T) {
	// Without --config: never the host's /etc/mamori/mamori.toml.
	t.Setenv("MAMORI_CONFIG", filepath.Join(t.TempDir(), "none.toml"))
	for _, args := range [][]string{
		{"doctor"},
		{"doctor", "--config", filepath.Join(t.TempDir(), "missing.toml")},
		{"doctor", "--config", "x.toml", "--probe", "no-port"},
		{"doctor", "--config", "x.toml", "--timeout", "0s"},
		{"doctor", "--config", "x.toml", "extra"},
		{"doctor", "--nope"},
	} {
		err := run(args, strings.NewReader(""), io.Discard, io.Discard)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("mamori %s: %v, want exit 2", strings.Join(args, " "), err)
		}
	}
}
