package e2e

import (
	"strings"
	"testing"
)

// attachScript sends one message per case over port 25 and prints the
// reply: it builds real MIME attachments with Python's email package,
// including a .scr inside a zip inside a zip and a PE file renamed .txt.
const attachScript = `
import binascii, io, smtplib, sys, tarfile, zipfile
from email.message import EmailMessage
h, p = sys.argv[1].split(":")
PE = b"MZ" + b"\x90" * 58 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
def zipof(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return b.getvalue()
def targz(name, data):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as t:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    return b.getvalue()
def uu(name, data):
    out = "begin 644 " + name + "\n"
    for i in range(0, len(data), 45):
        out += binascii.b2a_uu(data[i:i+45], backtick=True).decode()
    return out + chr(96) + "\nend\n"
DOCX = zipof("[Content_Types].xml", b"<Types/>")
cases = {
    "plain": None,
    "docx": ("letter.docx", "application", "vnd.openxmlformats-officedocument.wordprocessingml.document", DOCX),
    "targz": ("backup.tar.gz", "application", "gzip", targz("bin/setup.exe", PE)),
    "uu": "uu",
    "pdf": ("report.pdf", "application", "pdf", PDF),
    "exe": ("setup.exe", "application", "octet-stream", PE),
    "double": ("invoice.pdf.exe", "application", "octet-stream", PE),
    "zipzip": ("docs.zip", "application", "zip", zipof("inner.zip", zipof("screensaver.scr", PE))),
    "renamed": ("notes.txt", "text", "plain", PE),
}
for name, att in cases.items():
    m = EmailMessage()
    m["From"] = "sender@outside.test"
    m["To"] = "rcpt@ours.test"
    m["Subject"] = "case " + name
    if att == "uu":
        m.set_content("the tool you asked for:\n\n" + uu("tool.exe", PE))
        att = None
    else:
        m.set_content("hello\n")
    if att:
        fn, mt, st, data = att
        m.add_attachment(data, maintype=mt, subtype=st, filename=fn)
    s = smtplib.SMTP(h, int(p), timeout=20)
    s.ehlo("sender.test")
    try:
        s.send_message(m, from_addr="sender@outside.test", to_addrs=["rcpt@ours.test"])
        print(name, "ACCEPTED")
    except smtplib.SMTPDataError as e:
        print(name, e.smtp_code, e.smtp_error.decode())
    s.quit()
`

// TestAttachmentPolicy (S4): a plain message, a PDF and a .docx (a zip)
// pass; an .exe, a double extension, a .scr inside a zip inside a zip, a
// PE renamed .txt, an .exe inside a .tar.gz and a uuencoded .exe in the
// text body are refused at end of DATA with 550 5.7.1 naming the part;
// with action = "hold" they are quarantined instead.
func TestAttachmentPolicy(t *testing.T) {
	for _, mode := range []string{"reject", "hold"} {
		t.Run(mode, func(t *testing.T) {
			in := newInstance(t, "ours.test", func(cfg string) string {
				return setKey(cfg, "action", `"`+mode+`"`)
			})
			in.addUser("rcpt@ours.test", pw)
			in.start()
			out, err := python(t, attachScript, in.smtp)
			if err != nil {
				t.Fatalf("python: %v\n%s", err, out)
			}
			res := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				k, v, _ := strings.Cut(l, " ")
				res[k] = v
			}
			for _, ok := range []string{"plain", "pdf", "docx"} {
				if res[ok] != "ACCEPTED" {
					t.Errorf("%s: %q, want accepted", ok, res[ok])
				}
			}
			bad := map[string]string{"exe": "setup.exe", "double": "invoice.pdf.exe", "zipzip": "screensaver.scr", "renamed": "notes.txt",
				"targz": "setup.exe", "uu": "tool.exe"}
			for k, part := range bad {
				switch mode {
				case "reject":
					if !strings.HasPrefix(res[k], "550 5.7.1") || !strings.Contains(res[k], part) {
						t.Errorf("%s: %q, want 550 5.7.1 naming %s", k, res[k], part)
					}
				case "hold":
					if res[k] != "ACCEPTED" {
						t.Errorf("%s: %q, want accepted into hold", k, res[k])
					}
				}
			}
			if mode == "hold" {
				if n := in.queueCount("--state", "held"); n != len(bad) {
					t.Errorf("%d held, want %d", n, len(bad))
				}
			}
			delivered := in.waitMail("rcpt@ours.test", 3, 20e9)
			if len(delivered) != 3 {
				t.Errorf("%d delivered, want only the plain, PDF and docx messages", len(delivered))
			}
		})
	}
}

// TestContentHitsIsolateLocalSender: a PC on the trusted network that
// suddenly mails executables trips the guard (content.dangerous) and is
// isolated; its later mail is held, not delivered.
func TestContentHitsIsolateLocalSender(t *testing.T) {
	in := newInstance(t, "ours.test", func(cfg string) string {
		return setKey(cfg, "trusted_networks", `["127.0.0.0/8"]`)
	})
	in.addUser("rcpt@ours.test", pw)
	in.start()
	if out, err := python(t, attachScript, in.smtp); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	snap := in.guardList()
	iso, ok := isolationOf(snap, "127.0.0.1", "")
	if !ok || iso.Rule != "content.dangerous" {
		t.Fatalf("127.0.0.1 not isolated by content.dangerous: %+v", snap.Isolated)
	}
	// A harmless message from the isolated PC is now held, not delivered.
	before := len(readMaildir(in.maildirNew("rcpt@ours.test")))
	host, port, _ := strings.Cut(in.smtp, ":")
	if out, code := swaks(t, "--server", host, "--port", port, "--from", "pc@ours.test", "--to", "rcpt@ours.test",
		"--h-Subject", "after isolation"); code != 0 {
		t.Fatalf("send: %s", out)
	}
	if n := in.queueCount("--state", "held", "--client-ip", "127.0.0.1", "--subject", "after isolation"); n != 1 {
		t.Errorf("the message after isolation: %d held, want 1", n)
	}
	if after := len(readMaildir(in.maildirNew("rcpt@ours.test"))); after != before {
		t.Errorf("isolated PC's mail delivered (%d → %d)", before, after)
	}
}
