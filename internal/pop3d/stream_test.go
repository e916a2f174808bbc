package pop3d

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// dotStuff runs in through a dotWriter, fed in chunks of size chunk.
func dotStuff(t *testing.T, in string, chunk int) string {
	t.Helper()
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	dw := newDotWriter(w)
	for p := []byte(in); len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := dw.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestDotWriter(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ".\r\n"},
		{"crlf", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"bare lf", "a\nb\n", "a\r\nb\r\n.\r\n"},
		{"no final line end", "a\r\nb", "a\r\nb\r\n.\r\n"},
		{"final cr only", "a\r", "a\r\n.\r\n"},
		{"leading dots", ".a\r\n..b\r\n.\r\nc.d\r\n", "..a\r\n...b\r\n..\r\nc.d\r\n.\r\n"},
		{"first octet a dot", ".", "..\r\n.\r\n"},
		{"dot after bare lf", "x\n.y\n", "x\r\n..y\r\n.\r\n"},
		{"cr inside a line", "a\rb\r\n", "a\rb\r\n.\r\n"},
		{"empty lines", "\r\n\n\r\n", "\r\n\r\n\r\n.\r\n"},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 2, 3, 1 << 20} {
			if got := dotStuff(t, tt.in, chunk); got != tt.want {
				t.Errorf("%s (chunk %d): got %q, want %q", tt.name, chunk, got, tt.want)
			}
		}
	}
}

func TestTopReader(t *testing.T) {
	msg := "Subject: x\r\nFrom: y\r\n\r\nl1\r\nl2\r\nl3\r\n"
	tests := []struct {
		name  string
		in    string
		lines uint64
		want  string
	}{
		{"header only", msg, 0, "Subject: x\r\nFrom: y\r\n\r\n"},
		{"one line", msg, 1, "Subject: x\r\nFrom: y\r\n\r\nl1\r\n"},
		{"all lines", msg, 3, msg},
		{"more than there are", msg, 100, msg},
		{"bare lf", "A: b\n\nl1\nl2\n", 1, "A: b\n\nl1\n"},
		{"no body separator", "A: b\r\nC: d\r\n", 0, "A: b\r\nC: d\r\n"},
		{"empty body line counts", "A: b\r\n\r\n\r\nl2\r\n", 1, "A: b\r\n\r\n\r\n"},
	}
	for _, tt := range tests {
		for _, r := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
			iotest.HalfReader,
		} {
			got, err := io.ReadAll(newTopReader(r(strings.NewReader(tt.in)), tt.lines))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
			}
		}
	}
}
