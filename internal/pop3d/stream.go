package pop3d

import (
	"bufio"
	"bytes"
	"io"
)

// dotWriter writes a message as the body of a POP3 multi-line response
// (RFC 1939 section 3): every line ends in CRLF (a bare LF gets its CR), a
// line that starts with "." gets a second one, and Close ends the body
// with the terminating ".".
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
	cr  bool // the last octet written was CR
}

func newDotWriter(w *bufio.Writer) *dotWriter {
	return &dotWriter{w: w, bol: true}
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return 0, err
			}
			d.bol, d.cr = false, p[len(p)-1] == '\r'
			break
		}
		cr := d.cr
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		if _, err := d.w.Write(p[:i]); err != nil {
			return 0, err
		}
		eol := "\r\n"
		if cr {
			eol = "\n"
		}
		if _, err := d.w.WriteString(eol); err != nil {
			return 0, err
		}
		d.bol, d.cr = true, false
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the last line if it has no line end and writes the
// terminating line. It does not flush.
func (d *dotWriter) Close() error {
	end := ".\r\n"
	switch {
	case d.bol:
	case d.cr:
		end = "\n" + end
	default:
		end = "\r\n" + end
	}
	_, err := d.w.WriteString(end)
	return err
}

// topReader passes a message's header, the empty line after it and then
// the first lines of its body (TOP, RFC 1939 section 7), then reports EOF.
// A message without an empty line is all header and passed whole.
type topReader struct {
	r        io.Reader
	lines    uint64 // body lines still to pass
	inHeader bool
	empty    bool // the current line has had no octet but CR so far
	done     bool
}

func newTopReader(r io.Reader, lines uint64) *topReader {
	return &topReader{r: r, lines: lines, inHeader: true, empty: true}
}

func (t *topReader) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	n, err := t.r.Read(p)
	for i := 0; i < n; i++ {
		switch p[i] {
		case '\r':
			continue
		case '\n':
		default:
			t.empty = false
			continue
		}
		if t.inHeader {
			if t.empty {
				t.inHeader = false
				if t.lines == 0 {
					t.done = true
					return i + 1, nil
				}
			}
		} else {
			t.lines--
			if t.lines == 0 {
				t.done = true
				return i + 1, nil
			}
		}
		t.empty = true
	}
	return n, err
}
