package queue

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseFilter(t *testing.T) {
	ok := []struct {
		name string
		in   FilterSpec
		want Filter
	}{
		{"empty", FilterSpec{}, Filter{}},
		{"cidr canonical", FilterSpec{ClientIP: " 10.1.2.3/8 "}, Filter{ClientIP: "10.0.0.0/8"}},
		{"single ip", FilterSpec{ClientIP: "::ffff:192.0.2.1"}, Filter{ClientIP: "192.0.2.1/32"}},
		{"age days", FilterSpec{OlderThan: "2d"}, Filter{OlderThan: 48 * time.Hour}},
		{"age go", FilterSpec{OlderThan: "90m"}, Filter{OlderThan: 90 * time.Minute}},
		{"age zero is every message", FilterSpec{OlderThan: "0s"}, Filter{}},
		{"state any case", FilterSpec{State: "HELD"}, Filter{State: StateHeld}},
		{"sizes", FilterSpec{LargerThan: "10k", SmallerThan: "2M"}, Filter{MinSize: 10 << 10, MaxSize: 2 << 20}},
		{"larger than 0", FilterSpec{LargerThan: "0"}, Filter{}},
		{"ids", FilterSpec{IDs: []string{"0123456789abcdev"}}, Filter{IDs: []string{"0123456789abcdev"}}},
		{"addresses", FilterSpec{From: "<>", To: "@Example.TEST", User: "a@b.test", Subject: "Invoice", Rule: "rate"},
			Filter{From: "<>", To: "@Example.TEST", User: "a@b.test", Subject: "Invoice", Rule: "rate"}},
		{"globs", FilterSpec{From: "*@*.example", To: "<b?b@x.test>"}, Filter{From: "*@*.example", To: "<b?b@x.test>"}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFilter(tc.in)
			if err != nil {
				t.Fatalf("ParseFilter(%+v): %v", tc.in, err)
			}
			if f.ClientIP != tc.want.ClientIP || f.OlderThan != tc.want.OlderThan || f.State != tc.want.State ||
				f.MinSize != tc.want.MinSize || f.MaxSize != tc.want.MaxSize || f.From != tc.want.From ||
				f.To != tc.want.To || f.User != tc.want.User || f.Subject != tc.want.Subject || f.Rule != tc.want.Rule ||
				strings.Join(f.IDs, ",") != strings.Join(tc.want.IDs, ",") {
				t.Errorf("got %+v, want %+v", f, tc.want)
			}
		})
	}

	bad := []struct {
		name  string
		in    FilterSpec
		field string
	}{
		{"cidr /33", FilterSpec{ClientIP: "10.0.0.0/33"}, "client-ip"},
		{"not an ip", FilterSpec{ClientIP: "10.0.0"}, "client-ip"},
		{"hostname", FilterSpec{ClientIP: "mx.example.test"}, "client-ip"},
		{"mapped too short", FilterSpec{ClientIP: "::ffff:0:0/80"}, "client-ip"},
		{"unknown state", FilterSpec{State: "frozen"}, "state"},
		{"bad duration", FilterSpec{OlderThan: "3 days"}, "older-than"},
		{"negative duration", FilterSpec{OlderThan: "-1h"}, "older-than"},
		{"nan days", FilterSpec{OlderThan: "NaNd"}, "older-than"},
		{"inf days", FilterSpec{OlderThan: "infd"}, "older-than"},
		{"huge days", FilterSpec{OlderThan: "1e300d"}, "older-than"},
		{"huge duration", FilterSpec{OlderThan: "2000000h"}, "older-than"},
		{"size word", FilterSpec{LargerThan: "big"}, "larger-than"},
		{"size negative", FilterSpec{LargerThan: "-5"}, "larger-than"},
		{"size overflow", FilterSpec{SmallerThan: "99999999999999999g"}, "smaller-than"},
		{"smaller than 0", FilterSpec{SmallerThan: "0"}, "smaller-than"},
		{"size range", FilterSpec{LargerThan: "10", SmallerThan: "5"}, "size"},
		{"bad id", FilterSpec{IDs: []string{"nope"}}, "id"},
		{"id bad alphabet", FilterSpec{IDs: []string{"0123456789abcdez"}}, "id"},
		{"from control", FilterSpec{From: "a\x1b[2J@x.test"}, "from"},
		{"from unbalanced", FilterSpec{From: "<a@x.test"}, "from"},
		{"to empty domain", FilterSpec{To: "@"}, "to"},
		{"to two ats", FilterSpec{To: "@a@b"}, "to"},
		{"subject newline", FilterSpec{Subject: "a\r\nb"}, "subject"},
		{"subject bad utf8", FilterSpec{Subject: "\xff"}, "subject"},
		{"user control", FilterSpec{User: "u\x00@x"}, "user"},
		{"rule too long", FilterSpec{Rule: strings.Repeat("r", 600)}, "rule"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFilter(tc.in)
			var fe *FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseFilter(%+v) = %v, want a FilterError", tc.in, err)
			}
			if fe.Field != tc.field || !fe.Invalid() || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q names field %q, want %q", err, fe.Field, tc.field)
			}
		})
	}
}

func TestFilterIsEmpty(t *testing.T) {
	if !(Filter{}).IsEmpty() {
		t.Error("zero filter not empty")
	}
	for _, f := range []Filter{{IDs: []string{"x"}}, {State: StateHeld}, {MaxSize: 1}, {OlderThan: time.Second}, {Subject: "x"}} {
		if f.IsEmpty() {
			t.Errorf("%+v reported empty", f)
		}
	}
}

func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"2d", "1.5d", "30m", "NaNd", "-0d", "1e300d", "0x1p4d", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseAge(s)
		if err == nil && (d < 0 || d > MaxAge) {
			t.Fatalf("ParseAge(%q) = %v: out of range", s, d)
		}
	})
}

func FuzzParseFilter(f *testing.F) {
	f.Add("a@b.test", "10.0.0.0/8", "2d", "held", "10k", "")
	f.Add("<>", "::ffff:0:0/96", "0s", "HELD", "-1", "0")
	f.Fuzz(func(t *testing.T, from, ip, age, state, larger, smaller string) {
		flt, err := ParseFilter(FilterSpec{From: from, ClientIP: ip, OlderThan: age, State: state, LargerThan: larger, SmallerThan: smaller})
		if err != nil {
			return
		}
		if err := flt.Validate(); err != nil {
			t.Fatalf("ParseFilter accepted a filter Validate refuses: %v", err)
		}
		if _, err := compileFilter(flt, time.Now()); err != nil {
			t.Fatalf("accepted filter does not compile: %v", err)
		}
	})
}
