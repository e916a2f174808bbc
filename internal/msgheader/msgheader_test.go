package msgheader

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func TestParseFields(t *testing.T) {
	tests := []struct {
		name   string
		msg    string
		fields []string // "Name=Value"
		body   string
		err    bool
	}{
		{"simple", "From: a@x.test\nSubject: hi\n\nbody\n", []string{"From=a@x.test", "Subject=hi"}, "body\r\n", false},
		{"folded", "Subject: a\n  b\n\tc\nTo: t@x\n\nb", []string{"Subject=a   b \tc", "To=t@x"}, "b", false},
		{"obsolete space before colon", "From : a@x.test\n\n", []string{"From=a@x.test"}, "", false},
		{"tab before colon", "From\t: a@x.test\n\n", []string{"From=a@x.test"}, "", false},
		{"empty value", "From:\nFrom: b@y\n\n", []string{"From=", "From=b@y"}, "", false},
		{"no body separator", "From: a@x\nTo: b@y", []string{"From=a@x", "To=b@y"}, "", false},
		{"bare LF", "From: a@x\n\nx", []string{"From=a@x"}, "x", false},
		{"no colon", "From: a@x\nthis is not a header\n\n", nil, "", true},
		{"leading continuation", " From: a@x\n\n", nil, "", true},
		{"space inside name", "Fr om: a@x\n\n", nil, "", true},
		{"empty name", ": a@x\n\n", nil, "", true},
		{"8-bit name", "Fr\xc3\xb6m: a@x\n\n", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.msg
			if tt.name != "bare LF" {
				msg = string(crlf(msg))
			}
			h, err := Parse([]byte(msg), Limits{})
			if tt.err {
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("want SyntaxError, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range h.Fields {
				got = append(got, f.Name+"="+f.Value)
				if !strings.HasPrefix(msg[f.Start:f.End], f.Name) {
					t.Errorf("field %q offsets %d..%d cover %q", f.Name, f.Start, f.End, msg[f.Start:f.End])
				}
			}
			if !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
			body := strings.ReplaceAll(tt.body, "\r\n", "\n")
			if tt.name != "bare LF" {
				body = string(crlf(body))
			}
			if msg[h.BodyStart:] != body {
				t.Errorf("body = %q, want %q", msg[h.BodyStart:], body)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	var b strings.Builder
	for range 20 {
		b.WriteString("X-A: 1\r\n")
	}
	if _, err := Parse([]byte(b.String()), Limits{MaxFields: 10}); !errors.Is(err, ErrTooManyFields) {
		t.Errorf("20 fields with a limit of 10: %v", err)
	}
	long := "Subject: " + strings.Repeat("a", 200) + "\r\n\r\n"
	if _, err := Parse([]byte(long), Limits{MaxLineBytes: 100}); err == nil {
		t.Error("over-long line accepted")
	}
}

// TestAuthorsAmbiguity is the class of DMARC bypasses found in review:
// every header shape that lets two readers disagree about the author is
// refused with a typed problem.
func TestAuthorsAmbiguity(t *testing.T) {
	tests := []struct {
		name    string
		head    string
		problem Problem
		domains []string
	}{
		{"plain", "From: A <a@Bank.Test>\n", 0, []string{"bank.test"}},
		{"trailing dot is not RFC 5322", "From: A <a@bank.test.>\n", MalformedFrom, nil},
		{"obsolete colon form", "From : a@bank.test\n", 0, []string{"bank.test"}},
		{"lower-case name", "from: a@bank.test\n", 0, []string{"bank.test"}},
		{"no From", "Subject: x\n", NoFrom, nil},
		{"two From", "From: a@evil.test\nFrom: b@bank.test\n", MultipleFrom, nil},
		{"empty then real", "From:\nFrom: b@bank.test\n", MultipleFrom, nil},
		{"space-colon duplicate", "From: a@evil.test\nFrom : b@bank.test\n", MultipleFrom, nil},
		{"case duplicate", "From: a@evil.test\nFROM: b@bank.test\n", MultipleFrom, nil},
		{"empty", "From: \n", EmptyFrom, nil},
		{"group only", "From: undisclosed-recipients:;\n", EmptyFrom, nil},
		{"two mailboxes no Sender", "From: a@evil.test, b@bank.test\n", MissingSender, nil},
		{"two mailboxes with Sender", "From: a@evil.test, b@bank.test\nSender: a@evil.test\n", 0, []string{"evil.test", "bank.test"}},
		{"two Sender", "From: a@x.test\nSender: a@x.test\nSender: b@y.test\n", MultipleSender, nil},
		{"Sender list", "From: a@x.test\nSender: a@x.test, b@y.test\n", MalformedSender, nil},
		{"no domain", "From: root\n", MalformedFrom, nil},
		// Anything that does not parse is refused, never guessed at.
		{"malformed with two addresses", "From: a@evil.test <b@bank.test>\n", MalformedFrom, nil},
		{"malformed comma in name", "From: John Smith, Jr. <j@Bank.test>\n", MalformedFrom, nil},
		// RFC 5322 CFWS around the tokens: read as a mail reader reads it.
		{"space around at", "From: \"x@evil.test\" <ceo @ ours.test>\n", 0, []string{"ours.test"}},
		{"comment inside domain", "From: Boss <ceo@(x@evil.test)ours.test>\n", 0, []string{"ours.test"}},
		{"nested comment", "From: ceo@((a)b)ours.test (note)\n", 0, []string{"ours.test"}},
		{"space in angle brackets", "From: Boss < ceo@ours.test >\n", 0, []string{"ours.test"}},
		{"obsolete dotted domain", "From: ceo@ours . test\n", 0, []string{"ours.test"}},
		{"quoted local part keeps its at", "From: \"a@b\"@ours.test\n", 0, []string{"ours.test"}},
		{"comment with at in display", "From: (ceo@bank.test) x@evil.test\n", 0, []string{"evil.test"}},
		{"quoted paren", "From: \"a (b\" <x@evil.test>\n", 0, []string{"evil.test"}},
		{"unknown charset display name", "From: =?x-weird?q?Bob?= <b@bank.test>\n", 0, []string{"bank.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(crlf(tt.head+"\nbody\n"), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			a, err := h.Authors()
			if tt.problem != 0 {
				var ae *AuthorError
				if !errors.As(err, &ae) || ae.Problem != tt.problem {
					t.Fatalf("want problem %d, got %v", tt.problem, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Domains(); !reflect.DeepEqual(got, tt.domains) {
				t.Errorf("domains = %q, want %q", got, tt.domains)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"From: a@x\r\n\r\nbody", "From : a@x\r\nFrom: b@y\r\n\r\n", " x\r\n", "a\r\n", "From: =?utf-8?q?x?= <a@b>\n\n",
		"From: a@b, c@d\r\nSender: a@b\r\n\r\n", "Subject: x\r\n\tfolded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := Parse(msg, Limits{MaxFields: 100})
		if err != nil {
			return
		}
		if h.BodyStart < 0 || h.BodyStart > len(msg) {
			t.Fatalf("BodyStart %d out of range", h.BodyStart)
		}
		prev := 0
		for _, fl := range h.Fields {
			if fl.Start < prev || fl.End < fl.Start || fl.End > h.BodyStart {
				t.Fatalf("field offsets %d..%d after %d, body at %d", fl.Start, fl.End, prev, h.BodyStart)
			}
			prev = fl.End
			if strings.ContainsAny(fl.Name, " \t:\r\n") {
				t.Fatalf("field name %q", fl.Name)
			}
		}
		a, err := h.Authors()
		if err != nil {
			return
		}
		// Accepted authors: exactly one From field, at least one mailbox,
		// every mailbox with a domain.
		if h.Count("From") != 1 || len(a.From) == 0 || h.Count("Sender") > 1 {
			t.Fatalf("ambiguous header accepted: %d From, %d mailboxes", h.Count("From"), len(a.From))
		}
		for _, m := range a.From {
			if m.Domain == "" {
				t.Fatalf("mailbox %q without domain accepted", m.Address)
			}
		}
	})
}
