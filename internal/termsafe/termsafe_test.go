package termsafe

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Invoice 42", "Invoice 42"},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"a\nb\r\tc", `a\nb\r\tc`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m", `c1 \u009b31m`},
		{"invoice\u202egpj.exe", `invoice\u202egpj.exe`},
		{"\u2066iso\u2069 \u200f", `\u2066iso\u2069 \u200f`},
		{"line\u2028sep", `line\u2028sep`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{`back\slash`, `back\\slash`},
		{`\x1b`, `\\x1b`}, // a literal escape in the text cannot pass for an escaped ESC
		{"\x00", `\x00`},
	}
	for _, tc := range tests {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLines(t *testing.T) {
	in := "error one\nerror\ttwo\r\nthree\rx \x1b[1m"
	want := "error one\nerror\ttwo\r\nthree\\rx \\x1b[1m"
	if got := Lines(in); got != want {
		t.Errorf("Lines = %q, want %q", got, want)
	}
}

func TestJSON(t *testing.T) {
	v := map[string]string{"subject": "a\x7f\u009b\u202e\x1bz ok"}
	b, _ := json.Marshal(v)
	out := JSON(b)
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil || back["subject"] != v["subject"] {
		t.Fatalf("JSON changed the value: %s (%v)", out, err)
	}
	for _, r := range string(out) {
		if r < 0x20 || unsafeRune(r) {
			t.Fatalf("JSON output holds %U: %s", r, out)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[31mred", "\u202e", "\xc2\x9b", "\xff", `\`, "a\r\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, fn := range map[string]func(string) string{"String": String, "Lines": Lines} {
			out := fn(s)
			if !utf8.ValidString(out) {
				t.Fatalf("%s(%q) = %q: not UTF-8", name, s, out)
			}
			for i, r := range out {
				if name == "Lines" && (r == '\n' || r == '\t' || (r == '\r' && strings.HasPrefix(out[i+1:], "\n"))) {
					continue
				}
				if unsafeRune(r) {
					t.Fatalf("%s(%q) = %q holds %U", name, s, out, r)
				}
			}
			if clean(s, name == "Lines") && out != s {
				t.Fatalf("%s changed clean text %q", name, s)
			}
		}
	})
}

func FuzzJSON(f *testing.F) {
	f.Add("\x7f\u0085\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := json.Marshal(s)
		if err != nil {
			return
		}
		out := JSON(b)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("JSON(%s) = %s: %v", b, out, err)
		}
		var orig string
		json.Unmarshal(b, &orig)
		if back != orig {
			t.Fatalf("value changed: %q → %q", orig, back)
		}
		for _, r := range string(out) {
			if unsafeRune(r) {
				t.Fatalf("JSON output %s holds %U", out, r)
			}
		}
	})
}
