package pop3d

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		verb    string
		arg     string
		wantErr bool
	}{
		{line: "STAT", verb: "STAT"},
		{line: "stat", verb: "STAT"},
		{line: "Top 1 10", verb: "TOP", arg: "1 10"},
		{line: "PASS secret with  spaces ", verb: "PASS", arg: "secret with  spaces "},
		{line: "USER alice@corp.test", verb: "USER", arg: "alice@corp.test"},
		{line: "", wantErr: true},
		{line: "ST", wantErr: true},
		{line: "STATS", wantErr: true},
		{line: "ST4T", wantErr: true},
		{line: " STAT", wantErr: true},
		{line: "RETR\t1", wantErr: true},
		{line: "PASS a\x00b", wantErr: true},
		{line: "NOOP\x7f", wantErr: true},
		{line: "PASS pässwörd", verb: "PASS", arg: "pässwörd"},
	}
	for _, tt := range tests {
		got, err := parseCommand(tt.line)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseCommand(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			continue
		}
		if err == nil && (got.verb != tt.verb || got.arg != tt.arg) {
			t.Errorf("parseCommand(%q) = %+v, want verb %q arg %q", tt.line, got, tt.verb, tt.arg)
		}
	}
}

func TestCommandArgs(t *testing.T) {
	tests := []struct {
		arg    string
		lo, hi int
		want   []string
		ok     bool
	}{
		{"", 0, 1, nil, true},
		{"", 1, 1, nil, false},
		{"1", 0, 1, []string{"1"}, true},
		{"1 2", 2, 2, []string{"1", "2"}, true},
		{"1  2", 2, 2, nil, false},
		{"1 ", 1, 1, nil, false},
		{"1 2 3", 2, 2, nil, false},
	}
	for _, tt := range tests {
		got, ok := command{verb: "TOP", arg: tt.arg}.args(tt.lo, tt.hi)
		if ok != tt.ok || strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("args(%q, %d, %d) = %q, %v; want %q, %v", tt.arg, tt.lo, tt.hi, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"0042", 42, true},
		{"4294967295", 4294967295, true},
		{"9999999999", 9999999999, true},
		{"12345678901", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1a", 0, false},
		{"１", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseNumber(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseNumber(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 300)
	huge := strings.Repeat("y", maxDiscard+10)
	tests := []struct {
		name  string
		input string
		want  []string // "" entries with errs
		errs  []error
	}{
		{"crlf", "STAT\r\nNOOP\r\n", []string{"STAT", "NOOP"}, []error{nil, nil}},
		{"bare lf", "STAT\nNOOP\n", []string{"STAT", "NOOP"}, []error{nil, nil}},
		{"too long then fine", long + "\r\nNOOP\r\n", []string{"", "NOOP"}, []error{errLineTooLong, nil}},
		{"longer than the buffer", strings.Repeat("z", 5000) + "\r\nNOOP\r\n", []string{"", "NOOP"}, []error{errLineTooLong, nil}},
		{"flood", huge, []string{""}, []error{errFlood}},
		{"partial at eof", "NOO", []string{""}, []error{io.ErrUnexpectedEOF}},
		{"eof", "", []string{""}, []error{io.EOF}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tt.input), 4096)
			for i := range tt.want {
				got, err := readLine(r, maxCommandLine)
				if !errors.Is(err, tt.errs[i]) || got != tt.want[i] {
					t.Fatalf("line %d: got %q, %v; want %q, %v", i, got, err, tt.want[i], tt.errs[i])
				}
			}
		})
	}
}

func TestReadLineLimitIncludesCRLF(t *testing.T) {
	ok := strings.Repeat("a", maxCommandLine-2) + "\r\n"
	over := strings.Repeat("a", maxCommandLine-1) + "\r\n"
	if _, err := readLine(bufio.NewReader(strings.NewReader(ok)), maxCommandLine); err != nil {
		t.Errorf("255-octet line refused: %v", err)
	}
	if _, err := readLine(bufio.NewReader(strings.NewReader(over)), maxCommandLine); !errors.Is(err, errLineTooLong) {
		t.Errorf("256-octet line: err = %v, want errLineTooLong", err)
	}
}
