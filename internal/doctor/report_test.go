package doctor

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedReport has one check of each status, a multi-line fix and text
// from the network that must not reach a terminal raw.
var fixedReport = Report{Checks: []Check{
	{Name: CheckMX, Subject: "example.test", Status: StatusOK, Detail: "MX 10 mail.example.test"},
	{Name: CheckA, Subject: "mail.example.test", Status: StatusFail, Detail: "A/AAAA: no record",
		Fix: "mail.example.test. IN A 192.0.2.10\nmail.example.test. IN AAAA 2001:db8::25"},
	{Name: CheckPTR, Subject: "192.0.2.10", Status: StatusWarn, Detail: "PTR host.isp.test, not mail.example.test",
		Fix: "10.2.0.192.in-addr.arpa. IN PTR mail.example.test."},
	{Name: CheckMTASTS, Subject: "example.test", Status: StatusSkip, Detail: "no MTA-STS record at _mta-sts.example.test (optional)",
		Fix: `_mta-sts.example.test. IN TXT "v=STSv1; id=20260101"`},
	{Name: CheckListeners, Subject: "smtp 127.0.0.1:25", Status: StatusFail, Detail: "greeting \"554 \x1b]0;pwned\x07\", want \"220…\""},
	{Name: CheckOutbound25, Subject: "sink.test:25", Status: StatusOK, Detail: "connected to 127.0.0.1:25"},
}}

func TestWriteTextGolden(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.txt")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("report differs from %s (go test -update rewrites it):\n%s", golden, b.String())
	}
	if bytes.ContainsAny(b.Bytes(), "\x1b\x07") {
		t.Error("a control character reached the text report")
	}
}

func TestJSONShape(t *testing.T) {
	b, err := json.Marshal(fixedReport)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Checks []map[string]any `json:"checks"`
		OK     *bool            `json:"ok"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.OK == nil || len(got.Checks) != len(fixedReport.Checks) {
		t.Fatalf("JSON %s", b)
	}
	for _, c := range got.Checks {
		for _, k := range []string{"name", "subject", "status", "detail", "fix"} {
			if _, ok := c[k]; !ok {
				t.Errorf("check %v lacks %q", c, k)
			}
		}
	}
}
