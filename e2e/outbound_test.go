package e2e

import (
	"bufio"
	"bytes"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// sink7 is an SMTP server that announces neither 8BITMIME nor SMTPUTF8
// (only PIPELINING) and records each transaction; RCPTs to reject get 550.
type sink7 struct {
	addr   string
	reject map[string]bool

	mu   sync.Mutex
	txns []sinkTxn
}

type sinkTxn struct {
	mail  string
	rcpts []string
	data  []byte
}

func startSink7(t *testing.T, reject ...string) *sink7 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink7{addr: l.Addr().String(), reject: map[string]bool{}}
	for _, r := range reject {
		s.reject[r] = true
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	return s
}

func (s *sink7) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	say := func(r string) { _, _ = c.Write([]byte(r + "\r\n")) }
	say("220 sink7.test ESMTP")
	var tx *sinkTxn
	for i := 0; i < 1000; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		up := strings.ToUpper(cmd)
		switch {
		case strings.HasPrefix(up, "EHLO"):
			say("250-sink7.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
		case strings.HasPrefix(up, "MAIL FROM:"):
			tx = &sinkTxn{mail: cmd}
			say("250 2.1.0 ok")
		case strings.HasPrefix(up, "RCPT TO:") && tx != nil:
			addr := strings.Trim(cmd[len("RCPT TO:"):], "<>")
			if s.reject[addr] {
				say("550 5.1.1 no such user")
				continue
			}
			tx.rcpts = append(tx.rcpts, addr)
			say("250 2.1.5 ok")
		case up == "DATA" && tx != nil:
			say("354 go ahead")
			var data bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil || data.Len() > 10<<20 {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(l)
			}
			tx.data = data.Bytes()
			s.mu.Lock()
			s.txns = append(s.txns, *tx)
			s.mu.Unlock()
			tx = nil
			say("250 2.0.0 queued")
		case up == "RSET":
			tx = nil
			say("250 2.0.0 ok")
		case up == "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			say("502 5.5.2 no")
		}
	}
}

func (s *sink7) wait(t *testing.T, n int) []sinkTxn {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s.mu.Lock()
		got := append([]sinkTxn(nil), s.txns...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
	}
	t.Fatalf("sink got fewer than %d messages", n)
	return nil
}

// TestOutboundTo7bitPeerAndSignedDSNs: mail submitted with a UTF-8
// subject and an 8-bit body reaches a server without 8BITMIME/SMTPUTF8
// 7-bit, with the subject RFC 2047-encoded; the bounce for a rejected
// recipient and the 5.6.7 bounce for a UTF-8 recipient that server cannot
// take come back to the sender DKIM-signed by our domain (verifiable with
// the published key), the latter as an RFC 6533 global DSN.
func TestOutboundTo7bitPeerAndSignedDSNs(t *testing.T) {
	sink := startSink7(t, "bad@dest.test")
	in := newInstance(t, "ours.test", func(cfg string) string {
		return setRoutes(cfg, map[string]string{"dest.test": sink.addr})
	})
	out := in.mustCLI("", "dkim", "keygen", "--domain", "ours.test")
	var txt string
	for _, l := range strings.Split(out, "\n") {
		if _, rr, ok := strings.Cut(l, "._domainkey.ours.test. IN TXT "); ok {
			for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(rr, -1) {
				txt += m[1]
			}
		}
	}
	if !strings.Contains(txt, "p=") {
		t.Fatalf("keygen printed no TXT record:\n%s", out)
	}
	in.addUser("alice@ours.test", pw)
	in.start()

	script := `
import smtplib, ssl, sys
sub, pw = sys.argv[1], sys.argv[2]
ctx = ssl._create_unverified_context()
h, p = sub.split(":")
msg = "From: Jürgen <alice@ours.test>\r\nTo: bob@dest.test\r\nSubject: Grüße aus Köln\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nschöne Grüße\r\n".encode()
with smtplib.SMTP(h, int(p), timeout=20) as s:
    s.ehlo("client.test")
    s.starttls(context=ctx)
    s.ehlo("client.test")
    s.login("alice@ours.test", pw)
    print("SEND1", s.sendmail("alice@ours.test", ["bob@dest.test", "bad@dest.test"], msg, mail_options=["BODY=8BITMIME"]))
    print("SEND2", s.sendmail("alice@ours.test", ["jürgen@dest.test"], b"From: alice@ours.test\r\nSubject: utf8 rcpt\r\n\r\nhi\r\n", mail_options=["SMTPUTF8"]))
`
	if out, err := python(t, script, in.submission, pw); err != nil || !strings.Contains(out, "SEND2") {
		t.Fatalf("python: %v\n%s", err, out)
	}

	tx := sink.wait(t, 1)[0]
	if strings.Join(tx.rcpts, ",") != "bob@dest.test" {
		t.Errorf("sink recipients %q", tx.rcpts)
	}
	if strings.Contains(tx.mail, "BODY=") || strings.Contains(tx.mail, "SMTPUTF8") {
		t.Errorf("MAIL %q to a server that offers neither 8BITMIME nor SMTPUTF8", tx.mail)
	}
	for i, b := range tx.data {
		if b >= 0x80 {
			t.Fatalf("8-bit octet at %d sent to a 7-bit server:\n%s", i, tx.data)
		}
	}
	for _, want := range []string{"Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n",
		"Content-Transfer-Encoding: quoted-printable\r\n", "sch=C3=B6ne Gr=C3=BC=C3=9Fe"} {
		if !bytes.Contains(tx.data, []byte(want)) {
			t.Errorf("no %q in what the sink got:\n%s", want, tx.data)
		}
	}

	dsns := in.waitMail("alice@ours.test", 2, 30*time.Second)
	var plain, global string
	for _, m := range dsns {
		switch {
		case strings.Contains(m, "report-type=global-delivery-status"):
			global = m
		case strings.Contains(m, "report-type=delivery-status"):
			plain = m
		}
	}
	if !strings.Contains(plain, "Status: 5.1.1") {
		t.Errorf("no 5.1.1 DSN for bad@dest.test:\n%s", strings.Join(dsns, "\n-----\n"))
	}
	if !strings.Contains(global, "Status: 5.6.7") || !strings.Contains(global, "utf-8; j=C3=BCrgen@dest.test") {
		t.Errorf("no RFC 6533 5.6.7 DSN for jürgen@dest.test:\n%s", strings.Join(dsns, "\n-----\n"))
	}
	for _, m := range []string{plain, global} {
		if m == "" {
			continue
		}
		vs, err := dkim.VerifyWithOptions(strings.NewReader(m), &dkim.VerifyOptions{
			LookupTXT: func(string) ([]string, error) { return []string{txt}, nil },
		})
		ok := err == nil && len(vs) == 1
		for _, v := range vs {
			ok = ok && v.Domain == "ours.test" && v.Err == nil
		}
		if !ok {
			t.Errorf("DSN not validly DKIM-signed by ours.test (%v %+v):\n%.2000s", err, vs, m)
		}
	}
}
