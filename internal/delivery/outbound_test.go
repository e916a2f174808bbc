package delivery

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/mimeconv"
	"github.com/mamori-mail/mamori/internal/queue"
)

// rawServer is a minimal SMTP server on a raw net.Listener that records
// exactly what arrives on the wire. It announces only the EHLO keywords
// it is given. With PIPELINING it answers a command only once no further
// command is waiting (or at DATA, RSET, QUIT), so rcptsBeforeMailReply
// tells whether the client sent its RCPTs before reading the MAIL reply.
type rawServer struct {
	addr string
	exts []string
	// rcptReply maps a RCPT address to a reply line; default "250 2.1.5 ok".
	rcptReply map[string]string
	// mailReply, when set, answers MAIL instead of "250 2.1.0 ok"; the
	// RCPTs that follow then get "503 5.5.1 MAIL first".
	mailReply string

	mu   sync.Mutex
	txns []rawTxn
	wire bytes.Buffer // every byte received
}

type rawTxn struct {
	mail                 string
	rcpts                []string
	data                 []byte // as on the wire, dot-stuffing included, without the final ".\r\n"
	rcptsBeforeMailReply int
}

func startRawServer(t *testing.T, exts ...string) *rawServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: l.Addr().String(), exts: exts, rcptReply: map[string]string{}}
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

func (s *rawServer) pipelining() bool {
	for _, e := range s.exts {
		if e == "PIPELINING" {
			return true
		}
	}
	return false
}

type recordingConn struct {
	net.Conn
	s *rawServer
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.mu.Lock()
	c.s.wire.Write(p[:n])
	c.s.mu.Unlock()
	return n, err
}

func (s *rawServer) serve(c net.Conn) {
	br := bufio.NewReader(recordingConn{c, s})
	var out []string // replies not yet sent
	flush := func() bool {
		_, err := c.Write([]byte(strings.Join(out, "")))
		out = out[:0]
		return err == nil
	}
	out = append(out, "220 raw.test ESMTP\r\n")
	flush()
	var txn *rawTxn
	mailReplied := true
	for i := 0; i < 1000; i++ {
		// With PIPELINING, hold the replies while more commands arrive.
		if len(out) > 0 {
			if s.pipelining() {
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, err := br.Peek(1); err != nil {
					if !flush() {
						return
					}
					mailReplied = true
				}
			} else {
				flush()
				mailReplied = true
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(cmd)
		switch {
		case strings.HasPrefix(verb, "EHLO"):
			r := "250-raw.test\r\n"
			for _, e := range s.exts {
				r += "250-" + e + "\r\n"
			}
			out = append(out, r+"250 HELP\r\n")
		case strings.HasPrefix(verb, "MAIL FROM:") && s.mailReply != "":
			out = append(out, s.mailReply+"\r\n")
		case strings.HasPrefix(verb, "MAIL FROM:"):
			txn = &rawTxn{mail: cmd}
			mailReplied = false
			out = append(out, "250 2.1.0 ok\r\n")
		case strings.HasPrefix(verb, "RCPT TO:"):
			if txn == nil {
				out = append(out, "503 5.5.1 MAIL first\r\n")
				continue
			}
			addr := strings.TrimSuffix(strings.TrimPrefix(cmd[len("RCPT TO:"):], "<"), ">")
			txn.rcpts = append(txn.rcpts, addr)
			if !mailReplied {
				txn.rcptsBeforeMailReply++
			}
			if r, ok := s.rcptReply[addr]; ok {
				out = append(out, r+"\r\n")
			} else {
				out = append(out, "250 2.1.5 ok\r\n")
			}
		case verb == "DATA":
			flush()
			mailReplied = true
			out = append(out, "354 go ahead\r\n")
			flush()
			var data bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(l)
				if data.Len() > 10<<20 {
					return
				}
			}
			txn.data = data.Bytes()
			s.mu.Lock()
			s.txns = append(s.txns, *txn)
			s.mu.Unlock()
			txn = nil
			out = append(out, "250 2.0.0 queued\r\n")
		case verb == "RSET":
			txn = nil
			out = append(out, "250 2.0.0 ok\r\n")
		case verb == "QUIT":
			out = append(out, "221 2.0.0 bye\r\n")
			flush()
			return
		default:
			out = append(out, "502 5.5.2 unknown command\r\n")
		}
	}
}

func (s *rawServer) transactions() []rawTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rawTxn(nil), s.txns...)
}

func (s *rawServer) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.wire.Bytes())
}

// unstuff undoes dot-stuffing.
func unstuff(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n.."), []byte("\r\n."))
	return bytes.TrimPrefix(b, []byte("."))
}

// An 8-bit message with every defect a client can send: a UTF-8 Subject
// and display name, an 8-bit body, bare LF and bare CR, an over-long line
// and an attempt at SMTP smuggling ("\n.\r\n" then a second MAIL).
var dirtyMsg = "From: Jürgen <alice@local.test>\r\n" +
	"To: bob@dest.test\r\n" +
	"Subject: Grüße\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Hallo, schöne Grüße\n" +
	"bare CR\rhere\r\n" +
	strings.Repeat("long ", 300) + "\r\n" +
	"smuggle\n.\r\nMAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n" +
	"cr smuggle\r.\r\nQUIT\r\n" +
	"end\r\n"

func routedScheduler(t *testing.T, addr string) (*Scheduler, *fakeSpool, *logBuf) {
	t.Helper()
	sp := newSpool()
	cfg := testConfig()
	cfg.Routes = map[string]string{"dest.test": addr}
	s, logs := newTestScheduler(cfg, sp, nil, nil)
	return s, sp, logs
}

// TestWireWithout8BITMIME: to a server that announces neither 8BITMIME
// nor SMTPUTF8, only 7-bit CRLF lines of at most 998 octets go out, the
// MAIL command carries neither BODY=8BITMIME nor SMTPUTF8, the smuggled
// "\n.\r\n" stays inside the one message, and the converted message still
// decodes to the original text. MAIL and RCPTs are pipelined.
func TestWireWithout8BITMIME(t *testing.T) {
	srv := startRawServer(t, "PIPELINING", "SIZE 10000000", "ENHANCEDSTATUSCODES")
	s, sp, _ := routedScheduler(t, srv.addr)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test", "carol@dest.test")}, dirtyMsg)
	fin, enq := run(t, s, sp, 1)

	for _, r := range fin[0].a.Rcpts {
		if r.Status != queue.RcptDelivered {
			t.Errorf("%s: %s %s", r.Addr, r.Status, r.Diag)
		}
	}
	if len(enq) != 0 {
		t.Errorf("%d DSNs", len(enq))
	}
	txns := srv.transactions()
	if len(txns) != 1 {
		t.Fatalf("%d transactions, want 1 (smuggling?)", len(txns))
	}
	tx := txns[0]
	if strings.Contains(tx.mail, "BODY=") || strings.Contains(tx.mail, "SMTPUTF8") {
		t.Errorf("MAIL %q: BODY= or SMTPUTF8 to a server that offers neither", tx.mail)
	}
	if tx.rcptsBeforeMailReply != 2 {
		t.Errorf("%d RCPTs arrived before the MAIL reply, want 2 (pipelining)", tx.rcptsBeforeMailReply)
	}
	wire := srv.received()
	if mimeconv.Has8bit(wire) {
		t.Errorf("8-bit octet on the wire")
	}
	if !bytes.Equal(mimeconv.NormalizeCRLF(wire), wire) {
		t.Errorf("bare CR or LF on the wire")
	}
	for _, l := range strings.Split(string(wire), "\r\n") {
		if len(l) > mimeconv.MaxLine {
			t.Errorf("line of %d octets on the wire", len(l))
		}
	}
	if !bytes.Contains(tx.data, []byte("\r\n..\r\nMAIL FROM:<evil@evil.test>")) {
		t.Errorf("the smuggled end of data was not dot-stuffed:\n%q", tx.data)
	}
	if !bytes.Contains(tx.data, []byte("cr smuggle\r\n..\r\nQUIT\r\n")) {
		t.Errorf("bare CR before a dot was not made a line end and dot-stuffed:\n%q", tx.data)
	}
	data := unstuff(tx.data)
	if !bytes.Contains(data, []byte("Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n")) ||
		!bytes.Contains(data, []byte("From: =?utf-8?Q?J=C3=BCrgen?= <alice@local.test>\r\n")) ||
		!bytes.Contains(data, []byte("Content-Transfer-Encoding: quoted-printable\r\n")) {
		t.Errorf("header not encoded:\n%s", data)
	}
	want := mimeconv.NormalizeCRLF([]byte(dirtyMsg))
	_, wantBody, _ := bytes.Cut(want, []byte("\r\n\r\n"))
	_, gotBody, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	if dec := qpDecode(t, gotBody); !bytes.Equal(dec, wantBody) {
		t.Errorf("decoded body differs:\n%q\nwant\n%q", dec, wantBody)
	}
}

// TestWireWith8BITMIMEAndSMTPUTF8: to a server that offers both, a UTF-8
// message goes out byte for byte (its DKIM signature stays valid) with
// BODY=8BITMIME and SMTPUTF8; an ASCII message gets neither parameter.
func TestWireWith8BITMIMEAndSMTPUTF8(t *testing.T) {
	srv := startRawServer(t, "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES")
	s, sp, _ := routedScheduler(t, srv.addr)
	utf8Msg := "DKIM-Signature: v=1; d=local.test; b=x\r\nFrom: Zoë <zoë@local.test>\r\nSubject: Grüße\r\n\r\nschön\r\n"
	asciiMsg := "From: a@local.test\r\nSubject: plain\r\n\r\nplain\r\n"
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, utf8Msg)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, asciiMsg)
	fin, _ := run(t, s, sp, 2)
	for _, f := range fin {
		if f.a.Rcpts[0].Status != queue.RcptDelivered {
			t.Fatalf("%+v", f.a.Rcpts)
		}
	}
	txns := srv.transactions()
	if len(txns) != 2 {
		t.Fatalf("%d transactions", len(txns))
	}
	for _, tx := range txns {
		data := string(unstuff(tx.data))
		switch data {
		case utf8Msg:
			if !strings.Contains(tx.mail, " BODY=8BITMIME") || !strings.Contains(tx.mail, " SMTPUTF8") {
				t.Errorf("UTF-8 message sent with %q", tx.mail)
			}
		case asciiMsg:
			if strings.Contains(tx.mail, "BODY=") || strings.Contains(tx.mail, "SMTPUTF8") {
				t.Errorf("ASCII message sent with %q", tx.mail)
			}
		default:
			t.Errorf("message altered on the way:\n%q", data)
		}
		if tx.rcptsBeforeMailReply != 1 {
			t.Errorf("not pipelined: %+v", tx)
		}
	}
}

// TestUTF8ToNonSMTPUTF8Bounces: a UTF-8 envelope recipient, and a UTF-8
// address in the From header, cannot go to a server without SMTPUTF8:
// they bounce with 5.6.7 and the sender gets a DSN.
func TestUTF8ToNonSMTPUTF8Bounces(t *testing.T) {
	srv := startRawServer(t, "PIPELINING", "8BITMIME")
	s, sp, _ := routedScheduler(t, srv.addr)
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("jürgen@dest.test", "bob@dest.test")},
		"From: alice@local.test\r\nSubject: hi\r\n\r\nhi\r\n")
	sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("carol@dest.test")},
		"From: Zoë <zoë@local.test>\r\nSubject: hi\r\n\r\nhi\r\n")
	fin, enq := run(t, s, sp, 2)

	status := map[string]queue.Rcpt{}
	for _, f := range fin {
		for _, r := range f.a.Rcpts {
			status[r.Addr] = r
		}
	}
	for addr, want := range map[string]string{"jürgen@dest.test": "5.6.7", "carol@dest.test": "5.6.7"} {
		r := status[addr]
		if r.Status != queue.RcptFailed || !strings.HasPrefix(r.Diag, want) {
			t.Errorf("%s: %s %q, want failed %s", addr, r.Status, r.Diag, want)
		}
	}
	if r := status["bob@dest.test"]; r.Status != queue.RcptDelivered {
		t.Errorf("bob: %s %q", r.Status, r.Diag)
	}
	if len(enq) != 2 {
		t.Fatalf("%d DSNs, want 2", len(enq))
	}
	for _, e := range enq {
		if !bytes.Contains(e.body, []byte("Status: 5.6.7")) {
			t.Errorf("DSN without Status: 5.6.7:\n%s", e.body)
		}
	}
	for _, tx := range srv.transactions() {
		if mimeconv.Has8bit(tx.data) || strings.Contains(strings.Join(tx.rcpts, ","), "jürgen") {
			t.Errorf("UTF-8 went to a server without SMTPUTF8: %+v", tx)
		}
	}
}

// TestNo8bitTo7bitServer: an octet above 127 never reaches a server that
// does not offer 8BITMIME (RFC 6152). A multipart with a non-ASCII
// boundary is converted (new ASCII boundary) and delivered 7-bit; an
// 8-bit part header to a server offering SMTPUTF8 but not 8BITMIME, which
// the conversion leaves 8-bit, is caught by the last check before MAIL
// and bounces 5.6.3 with a DSN, and nothing is sent.
func TestNo8bitTo7bitServer(t *testing.T) {
	boundary8 := "From: alice@local.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"h\u00e9llo\"\r\n\r\n" +
		"--h\u00e9llo\r\nContent-Type: text/plain\r\n\r\nok h\u00e9llo\r\n--h\u00e9llo--\r\n"
	partHdr8 := "From: alice@local.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n" +
		"--XX\r\nContent-Type: text/plain\r\nX-Note: h\u00e9llo\r\n\r\nok\r\n--XX--\r\n"
	for _, tc := range []struct {
		name      string
		ext       []string
		msg       string
		delivered bool
	}{
		{"8-bit boundary, 7-bit server", []string{"PIPELINING"}, boundary8, true},
		{"8-bit part header, SMTPUTF8 without 8BITMIME", []string{"PIPELINING", "SMTPUTF8"}, partHdr8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRawServer(t, tc.ext...)
			s, sp, _ := routedScheduler(t, srv.addr)
			sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("bob@dest.test")}, tc.msg)
			fin, enq := run(t, s, sp, 1)
			r := fin[0].a.Rcpts[0]
			for _, tx := range srv.transactions() {
				if mimeconv.Has8bit(tx.data) {
					t.Errorf("8-bit octet sent to a server without 8BITMIME (MAIL %q):\n%q", tx.mail, tx.data)
				}
			}
			if tc.delivered {
				if r.Status != queue.RcptDelivered || len(enq) != 0 {
					t.Fatalf("%s %q, %d DSNs", r.Status, r.Diag, len(enq))
				}
				return
			}
			if r.Status != queue.RcptFailed || !strings.HasPrefix(r.Diag, "5.6.3") {
				t.Fatalf("%s %q, want failed 5.6.3", r.Status, r.Diag)
			}
			if len(srv.transactions()) != 0 {
				t.Errorf("a transaction was started")
			}
			if len(enq) != 1 || !bytes.Contains(enq[0].body, []byte("Status: 5.6.3")) {
				t.Errorf("want one DSN with Status: 5.6.3, got %d", len(enq))
			}
		})
	}
}

// TestNoPipeliningAndRejectedRcpt: without PIPELINING commands go one at
// a time; with it, a rejected RCPT in the batch fails only its recipient.
func TestNoPipeliningAndRejectedRcpt(t *testing.T) {
	for _, pipe := range []bool{false, true} {
		exts := []string{"8BITMIME"}
		if pipe {
			exts = append(exts, "PIPELINING")
		}
		srv := startRawServer(t, exts...)
		srv.rcptReply["bad@dest.test"] = "550 5.1.1 no such user"
		srv.rcptReply["later@dest.test"] = "450 4.2.1 try later"
		s, sp, _ := routedScheduler(t, srv.addr)
		sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("a@dest.test", "bad@dest.test", "later@dest.test", "b@dest.test")},
			"Subject: x\r\n\r\nx\r\n")
		fin, _ := run(t, s, sp, 1)
		want := map[string]queue.RcptStatus{"a@dest.test": queue.RcptDelivered, "bad@dest.test": queue.RcptFailed,
			"later@dest.test": queue.RcptPending, "b@dest.test": queue.RcptDelivered}
		for _, r := range fin[0].a.Rcpts {
			if r.Status != want[r.Addr] {
				t.Errorf("pipelining=%v %s: %s %q", pipe, r.Addr, r.Status, r.Diag)
			}
		}
		txns := srv.transactions()
		if len(txns) != 1 {
			t.Fatalf("%d transactions", len(txns))
		}
		wantBefore := 0
		if pipe {
			wantBefore = 4
		}
		if txns[0].rcptsBeforeMailReply != wantBefore {
			t.Errorf("pipelining=%v: %d RCPTs before the MAIL reply, want %d", pipe, txns[0].rcptsBeforeMailReply, wantBefore)
		}
	}
}

// TestPipelinedMailRefused: when MAIL is refused in a pipelined batch, the
// RCPT replies (503) are matched to their commands and ignored: a 5xx
// fails every recipient with the MAIL reply, a 4xx defers them, and
// nothing is sent.
func TestPipelinedMailRefused(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  queue.RcptStatus
	}{
		{"550 5.7.1 sender refused", queue.RcptFailed},
		{"451 4.3.0 try again", queue.RcptPending},
	} {
		srv := startRawServer(t, "PIPELINING", "ENHANCEDSTATUSCODES")
		srv.mailReply = tc.reply
		s, sp, _ := routedScheduler(t, srv.addr)
		sp.add(queue.Meta{From: "alice@local.test", Rcpts: rcpts("a@dest.test", "b@dest.test")}, "Subject: x\r\n\r\nx\r\n")
		fin, _ := run(t, s, sp, 1)
		for _, r := range fin[0].a.Rcpts {
			if r.Status != tc.want || !strings.HasPrefix(r.Diag, tc.reply[:9]) {
				t.Errorf("%s → %s: %s %q", tc.reply, r.Addr, r.Status, r.Diag)
			}
		}
		if n := len(srv.transactions()); n != 0 {
			t.Errorf("%d messages sent after MAIL was refused", n)
		}
	}
}

func qpDecode(t *testing.T, b []byte) []byte {
	t.Helper()
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] == '=' && i+2 < len(b) {
			if b[i+1] == '\r' && b[i+2] == '\n' {
				i += 2
				continue
			}
			var v byte
			for _, c := range b[i+1 : i+3] {
				v <<= 4
				switch {
				case c >= '0' && c <= '9':
					v |= c - '0'
				case c >= 'A' && c <= 'F':
					v |= c - 'A' + 10
				default:
					t.Fatalf("bad QP escape in %q", b[i:i+3])
				}
			}
			out = append(out, v)
			i += 2
			continue
		}
		out = append(out, b[i])
	}
	return out
}
