package server

import (
	"testing"

	"github.com/mamori-mail/mamori/internal/content"
)

const exeMsg = "From: a@outside.test\r\nTo: x@a.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
	"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"tool.exe\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n"

func TestPerDomainContentPolicy(t *testing.T) {
	def := policyWith(content.DefaultPolicy(), "reject", nil, nil)
	per := map[string]content.Policy{
		"lenient.test": policyWith(def, "reject", nil, []string{".EXE"}),
		"quiet.test":   policyWith(def, "hold", nil, nil),
	}
	tests := []struct {
		rcpts []string
		want  content.Action
	}{
		{[]string{"x@plain.test"}, content.Reject},
		{[]string{"x@lenient.test"}, content.Accept},
		{[]string{"x@quiet.test"}, content.Hold},
		{[]string{"x@lenient.test", "y@quiet.test"}, content.Hold},
		{[]string{"x@lenient.test", "y@plain.test"}, content.Reject},
	}
	for _, tc := range tests {
		v := strictest(def, per, tc.rcpts, []byte(exeMsg))
		if v.Action != tc.want && !(tc.want == content.Accept && v.Action == "") {
			t.Errorf("%v: %q (%s), want %q", tc.rcpts, v.Action, v.Rule, tc.want)
		}
	}
	if !def.BlockedExt["exe"] {
		t.Error("deriving a per-domain policy changed the default's list")
	}
}
