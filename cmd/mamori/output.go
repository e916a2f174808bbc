package main

import (
	"bytes"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/mamori-mail/mamori/internal/termsafe"
)

// writeSafe runs a text report writer and prints its output with every
// control character escaped (lines and tabs kept): reports quote remote
// servers and messages.
func (e *env) writeSafe(write func(io.Writer) error) error {
	var b bytes.Buffer
	if err := write(&b); err != nil {
		return err
	}
	_, err := io.WriteString(e.stdout, termsafe.Lines(b.String()))
	return err
}

// writeBody copies a raw message to stdout; on a terminal its control
// characters are escaped (lines kept), piped it is byte for byte.
func (e *env) writeBody(fn func(io.Writer) error) error {
	if f, ok := e.stdout.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return fn(e.stdout)
	}
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		return err
	}
	_, err := io.WriteString(e.stdout, termsafe.Lines(b.String()))
	return err
}
