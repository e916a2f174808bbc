package e2e

import (
	"strings"
	"testing"

	"github.com/mamori-mail/mamori/internal/clamd/clamdtest"
)

const virusScript = `
import smtplib, sys
from email.message import EmailMessage
h, p = sys.argv[1].split(":")
eicar = sys.argv[2].encode()
for name in ["clean", "virus"]:
    m = EmailMessage()
    m["From"] = "sender@outside.test"; m["To"] = "rcpt@ours.test"; m["Subject"] = "scan " + name
    m.set_content("hello\n")
    if name == "virus":
        m.add_attachment(eicar, maintype="application", subtype="octet-stream", filename="readme.dat")
    s = smtplib.SMTP(h, int(p), timeout=20)
    s.ehlo("sender.test")
    try:
        s.send_message(m, from_addr="sender@outside.test", to_addrs=["rcpt@ours.test"])
        print(name, "ACCEPTED")
    except smtplib.SMTPDataError as e:
        print(name, e.smtp_code, e.smtp_error.decode())
    s.quit()
`

// TestClamd (S4): a real clamd, started by the test with a locally built
// signature database, refuses the EICAR test virus at end of DATA; when
// clamd is down, clamd_fail decides: "closed" answers 451, "open" accepts.
func TestClamd(t *testing.T) {
	clamdtest.Binary(t) // skips without clamd, fails under MAMORI_REQUIRE_TOOLS
	srv := clamdtest.Start(t, clamdtest.Options{})
	for _, fail := range []string{"closed", "open"} {
		t.Run("fail_"+fail, func(t *testing.T) {
			in := newInstance(t, "ours.test", func(cfg string) string {
				cfg = strings.Replace(cfg, "# clamd = \"unix:/run/clamav/clamd.ctl\"", "clamd = \""+srv.Addr()+"\"", 1)
				return setKey(cfg, "clamd_fail", `"`+fail+`"`)
			})
			in.addUser("rcpt@ours.test", pw)
			in.start()
			if fail == "closed" {
				out, err := python(t, virusScript, in.smtp, clamdtest.EICAR)
				if err != nil {
					t.Fatalf("python: %v\n%s", err, out)
				}
				if !strings.Contains(out, "clean ACCEPTED") {
					t.Errorf("clean message refused:\n%s", out)
				}
				if !strings.Contains(out, "virus 550 5.7.1") || !strings.Contains(out, "virus found") {
					t.Errorf("EICAR not refused with 550 5.7.1 naming the virus:\n%s", out)
				}
				srv.Stop()
			}
			// clamd is down from here on.
			out, err := python(t, virusScript, in.smtp, "no virus here")
			if err != nil {
				t.Fatalf("python: %v\n%s", err, out)
			}
			want := map[string]string{"closed": "clean 451 4.3.0", "open": "clean ACCEPTED"}[fail]
			if !strings.Contains(out, want) {
				t.Errorf("clamd down with clamd_fail=%s: want %q:\n%s", fail, want, out)
			}
		})
	}
}
