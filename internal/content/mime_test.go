package content

import "testing"

func TestAmbiguousMIME(t *testing.T) {
	const top = "From: a@example.org\r\nTo: b@example.net\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
	leaf := func(hdr string) []byte {
		return []byte(top + "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\n" +
			hdr + "\r\nSGVsbG8=\r\n--B--\r\n")
	}
	tests := []struct {
		name     string
		msg      []byte
		wantRule Rule
	}{
		{name: "two content-types at top", wantRule: RuleMIMEAmbiguous, msg: []byte(top +
			"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B--\r\n")},
		{name: "two content-types in a part", wantRule: RuleMIMEAmbiguous, msg: leaf(
			"Content-Type: application/pdf\r\nContent-Type: application/x-dosexec\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "second content-type carries the name", wantRule: RuleBlockedExt, msg: leaf(
			"Content-Type: application/pdf\r\nContent-Type: application/octet-stream; name=run.exe\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "two transfer encodings", wantRule: RuleMIMEAmbiguous, msg: leaf(
			"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: quoted-printable\r\n")},
		{name: "two dispositions", wantRule: RuleMIMEAmbiguous, msg: leaf(
			"Content-Type: application/pdf\r\nContent-Disposition: inline\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "name and filename disagree on extension", wantRule: RuleMIMEAmbiguous, msg: leaf(
			"Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.docm\"\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "rfc2231 filename disagrees with plain one", wantRule: RuleMIMEAmbiguous, msg: leaf(
			"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"; filename*=utf-8''report.xlsm\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "identical duplicate content-type", msg: []byte(top + "Content-type: text/html; charset=UTF-8\r\nContent-Type: text/html;  charset=utf-8;\r\n\r\n<p>hello</p>\r\n")},
		{name: "same name in both", msg: leaf(
			"Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "stems differ only (charset fallback)", msg: leaf(
			"Content-Type: application/pdf; name=\"=?utf-8?B?csOpc3Vtw6kucGRm?=\"\r\nContent-Disposition: attachment; filename=\"resume.PDF\"; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\nContent-Transfer-Encoding: base64\r\n")},
		{name: "plain message", msg: []byte(top + "Content-Type: text/plain\r\n\r\nhello\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := DefaultPolicy().Check(tc.msg)
			checkVerdict(t, v, tc.wantRule, "", 0)
		})
	}
}
