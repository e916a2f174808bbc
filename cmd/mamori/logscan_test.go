package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const logscanSample = `May  4 09:00:01 mx1 postfix/smtpd[1]: 4ABCDEF01: client=pc[10.0.0.5]
May  4 09:00:02 mx1 postfix/qmgr[3]: 4ABCDEF01: from=<alice@corp.test>, size=1500, nrcpt=2 (queue active)
May  4 09:00:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<bob@ext.example>, relay=mx[192.0.2.1]:25, status=sent (ok)
May  4 09:00:03 mx1 postfix/smtp[4]: 4ABCDEF01: to=<carol@ext.example>, relay=mx[192.0.2.1]:25, status=sent (ok)
May  4 09:00:04 mx1 postfix/qmgr[3]: 4ABCDEF01: removed
May  4 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@far.example>: Relay access denied; from=<` + "evil\x1b[2J\xff" + `@spam.example> to=<x@far.example> proto=ESMTP helo=<h>
`

func TestLogscanJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"logscan", "--json", "--year", "2026", "-"}, strings.NewReader(logscanSample), &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	var r struct {
		Senders []struct {
			Address    string `json:"address"`
			Messages   *int   `json:"messages"`
			Recipients *int   `json:"recipients"`
		} `json:"senders"`
		Clients []struct {
			IP       string `json:"ip"`
			Messages *int   `json:"messages"`
		} `json:"clients"`
		Findings []struct {
			Kind     string          `json:"kind"`
			Subject  string          `json:"subject"`
			Evidence json.RawMessage `json:"evidence"`
		} `json:"findings"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(r.Senders) != 2 || r.Senders[0].Address != "alice@corp.test" || *r.Senders[0].Messages != 1 || *r.Senders[0].Recipients != 2 {
		t.Errorf("senders: %s", out.String())
	}
	if len(r.Clients) != 2 || r.Clients[0].IP != "10.0.0.5" || *r.Clients[0].Messages != 1 {
		t.Errorf("clients: %s", out.String())
	}
	if r.Findings == nil || len(r.Findings) != 0 {
		t.Errorf("findings should be an empty list: %s", out.String())
	}
	if bytes.ContainsRune(out.Bytes(), 0x1b) {
		t.Error("escape byte in JSON output")
	}
}

func TestLogscanText(t *testing.T) {
	p := filepath.Join(t.TempDir(), "maillog")
	if err := os.WriteFile(p, []byte(logscanSample), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"logscan", p, "--year", "2026"}, nil, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	s := out.String()
	if !strings.Contains(s, "FINDINGS (0)") || !strings.Contains(s, "alice@corp.test") || !strings.Contains(s, "10.0.0.5") {
		t.Errorf("report:\n%s", s)
	}
	if strings.ContainsRune(s, 0x1b) {
		t.Errorf("raw escape reached the terminal:\n%s", s)
	}
	if err := run([]string{"logscan", "--format", "qmail", p}, nil, &out, &errb); err == nil {
		t.Error("--format qmail accepted")
	}
}
