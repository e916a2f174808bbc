package content

import "testing"

const exeMsg = "From: a@outside.test\r\nTo: x@a.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
	"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"tool.exe\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n"

func TestDomainPolicies(t *testing.T) {
	lzmaMsg := mkMsg(attach("a.zip", "application/zip", rawZip(t, "a.pdf", 14, 0, []byte("x"))))
	d := NewDomainPolicies(DefaultPolicy(), Overrides{Action: Reject, Block: []string{".DOCM"}}, map[string]Overrides{
		"Lenient.TEST.": {Allow: []string{".EXE"}},
		"quiet.test":    {Action: Hold},
		"ppap.test":     {Uninspectable: Accept},
		"careful.test":  {Uninspectable: Hold},
	})
	tests := []struct {
		name  string
		rcpts []string
		msg   []byte
		want  Action
		rule  Rule
	}{
		{"default rejects exe", []string{"x@plain.test"}, []byte(exeMsg), Reject, RuleBlockedExt},
		{"domain allows exe", []string{"x@lenient.test"}, []byte(exeMsg), Accept, ""},
		{"domain matched case-insensitively", []string{"x@LENIENT.test"}, []byte(exeMsg), Accept, ""},
		{"domain holds", []string{"x@quiet.test"}, []byte(exeMsg), Hold, RuleBlockedExt},
		{"strictest of two domains: hold", []string{"x@lenient.test", "y@quiet.test"}, []byte(exeMsg), Hold, RuleBlockedExt},
		{"strictest with default: reject", []string{"x@lenient.test", "y@plain.test"}, []byte(exeMsg), Reject, RuleBlockedExt},
		{"global block list reaches domains", []string{"x@lenient.test"}, mkMsg(attach("a.docm", "application/octet-stream", []byte("x"))), Reject, RuleBlockedExt},
		{"uninspectable rejected by default", []string{"x@plain.test"}, lzmaMsg, Reject, RuleArchiveUnsupported},
		{"uninspectable accepted for one domain", []string{"x@ppap.test"}, lzmaMsg, Accept, ""},
		{"uninspectable held for one domain", []string{"x@careful.test"}, lzmaMsg, Hold, RuleArchiveUnsupported},
		{"no recipients: default", nil, []byte(exeMsg), Reject, RuleBlockedExt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := d.Check(tc.rcpts, tc.msg)
			if v.Action != tc.want || v.Rule != tc.rule {
				t.Errorf("%v: %v %q, want %v %q", tc.rcpts, v.Action, v.Rule, tc.want, tc.rule)
			}
		})
	}
	if !d.Default.BlockedExt["exe"] {
		t.Error("deriving a per-domain policy changed the default's list")
	}
}

func TestPolicyWithDoesNotShareMaps(t *testing.T) {
	base := DefaultPolicy()
	p := base.With(Overrides{Allow: []string{"exe"}, Block: []string{"docm"}})
	if !base.BlockedExt["exe"] || base.BlockedExt["docm"] {
		t.Fatal("With modified its receiver's map")
	}
	if p.BlockedExt["exe"] || !p.BlockedExt["docm"] {
		t.Fatalf("With did not apply the overrides: %v", p.BlockedExt)
	}
	if q := (Policy{}).With(Overrides{}); !q.BlockedExt["exe"] {
		t.Fatal("With on the zero Policy lost the default list")
	}
}

func TestAction(t *testing.T) {
	for _, a := range []Action{Accept, Hold, Defer, Reject} {
		b, err := a.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Action
		if err := back.UnmarshalText(b); err != nil || back != a {
			t.Errorf("%v: round trip gave %v, %v", a, back, err)
		}
	}
	if a, err := ParseAction(" HOLD "); err != nil || a != Hold {
		t.Errorf("ParseAction(HOLD) = %v, %v", a, err)
	}
	if _, err := ParseAction("drop"); err == nil {
		t.Error("ParseAction(drop) succeeded")
	}
	if !(Reject > Defer && Defer > Hold && Hold > Accept && Accept > 0) {
		t.Error("actions are not ordered by strictness")
	}
	if !RuleArchiveEncrypted.CannotInspect() || RuleBlockedExt.CannotInspect() || RuleMIMEAmbiguous.CannotInspect() {
		t.Error("CannotInspect classifies rules wrongly")
	}
}
