package pop3d

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
)

var (
	errLineTooLong = errors.New("line too long")
	errBadSyntax   = errors.New("syntax error")
	// errFlood is a line so long that skipping it is not worth it.
	errFlood = errors.New("too much input without a line end")
)

// command is one parsed command line.
type command struct {
	verb string // upper case, 3 or 4 letters
	arg  string // everything after the first space; "" if none
}

// parseCommand parses a command line without its line end. A keyword is 3
// or 4 letters, in any case (RFC 2449 section 3); control characters are
// refused anywhere in the line.
func parseCommand(line string) (command, error) {
	for i := 0; i < len(line); i++ {
		if b := line[i]; b < 0x20 || b == 0x7f {
			return command{}, errBadSyntax
		}
	}
	verb, arg, _ := strings.Cut(line, " ")
	if len(verb) < 3 || len(verb) > 4 {
		return command{}, errBadSyntax
	}
	for i := 0; i < len(verb); i++ {
		if b := verb[i] | 0x20; b < 'a' || b > 'z' {
			return command{}, errBadSyntax
		}
	}
	return command{verb: strings.ToUpper(verb), arg: arg}, nil
}

// args splits c's argument into between lo and hi single-space-separated,
// non-empty words.
func (c command) args(lo, hi int) ([]string, bool) {
	if c.arg == "" {
		return nil, lo == 0
	}
	f := strings.Split(c.arg, " ")
	if len(f) < lo || len(f) > hi {
		return nil, false
	}
	for _, a := range f {
		if a == "" {
			return nil, false
		}
	}
	return f, true
}

// parseNumber parses a decimal number of at most 10 digits, without sign.
func parseNumber(s string) (uint64, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// readLine reads one line of at most limit octets, line end included, and
// returns it without the line end (CRLF, or a bare LF). A longer line is
// skipped and errLineTooLong returned, unless it runs past maxDiscard
// (errFlood). A partial line at EOF is io.ErrUnexpectedEOF.
func readLine(r *bufio.Reader, limit int) (string, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case err == nil && len(line) <= limit:
		s := strings.TrimSuffix(string(line), "\n")
		return strings.TrimSuffix(s, "\r"), nil
	case err == nil:
		return "", errLineTooLong
	case errors.Is(err, bufio.ErrBufferFull):
		skipped := len(line)
		for {
			line, err = r.ReadSlice('\n')
			skipped += len(line)
			if skipped > maxDiscard {
				return "", errFlood
			}
			if err == nil {
				return "", errLineTooLong
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return "", err
			}
		}
	case errors.Is(err, io.EOF) && len(line) > 0:
		return "", io.ErrUnexpectedEOF
	default:
		return "", err
	}
}
