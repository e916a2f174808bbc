package mimeconv

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range ins {
		base := strings.TrimSuffix(filepath.Base(in), ".in")
		t.Run(base, func(t *testing.T) {
			msg, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			down, err := Downgrade8bit(msg)
			if err != nil {
				golden(t, base+".downgrade.err", []byte(err.Error()+"\n"))
			} else {
				golden(t, base+".downgrade.golden", down)
				checkInvariants(t, msg, down, true)
			}
			fold := FoldLongLines(msg)
			golden(t, base+".fold.golden", fold)
			checkInvariants(t, msg, fold, false)
			hdr, err := DowngradeHeaders(msg)
			if err != nil {
				golden(t, base+".headers.err", []byte(err.Error()+"\n"))
			} else {
				golden(t, base+".headers.golden", hdr)
				if HeaderHas8bit(hdr) {
					t.Errorf("DowngradeHeaders left 8-bit in the header")
				}
			}
		})
	}
}

// TestUntouched: a message that needs no change comes back as the same
// slice (so its DKIM signature stays valid).
func TestUntouched(t *testing.T) {
	msg := []byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n\tb=abc\r\nFrom: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
	for name, f := range map[string]func([]byte) ([]byte, error){
		"Downgrade8bit":    Downgrade8bit,
		"DowngradeHeaders": DowngradeHeaders,
		"FoldLongLines":    func(b []byte) ([]byte, error) { return FoldLongLines(b), nil },
		"NormalizeCRLF":    func(b []byte) ([]byte, error) { return NormalizeCRLF(b), nil },
	} {
		out, err := f(msg)
		if err != nil || &out[0] != &msg[0] || len(out) != len(msg) {
			t.Errorf("%s: changed or copied an ASCII message (err %v)", name, err)
		}
	}
	// A multipart whose only 8-bit part is converted keeps its other
	// parts byte for byte.
	mp, _ := os.ReadFile("testdata/multipart.in")
	down, err := Downgrade8bit(mp)
	if err != nil {
		t.Fatal(err)
	}
	keep := "--outer\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii part stays\r\n--outer--"
	if !bytes.Contains(down, []byte(keep)) {
		t.Errorf("untouched ASCII part was rewritten")
	}
}

func TestNormalizeCRLF(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb\r", "a\r\nb\r\n"},
		// The smuggling sequences become plain line ends; dot-stuffing
		// then protects the ".".
		{"x\n.\r\nMAIL FROM:<a@b>\r\n", "x\r\n.\r\nMAIL FROM:<a@b>\r\n"},
		{"x\r.\r\n", "x\r\n.\r\n"},
		{"x\r\n.\n", "x\r\n.\r\n"},
		{"\r\r\n\n", "\r\n\r\n\r\n"},
		{"", ""},
	} {
		if got := string(NormalizeCRLF([]byte(tc.in))); got != tc.want {
			t.Errorf("NormalizeCRLF(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHeaderEncoding(t *testing.T) {
	for _, tc := range []struct {
		name, hdr string
		wantErr   string // status code
		wantName  string // display name after decoding (address fields)
		wantAddr  string
		wantText  string // decoded value (unstructured)
		wantParam string // decoded name or filename parameter
	}{
		{name: "display name", hdr: "From: Jürgen Müller <j@example.com>", wantName: "Jürgen Müller", wantAddr: "j@example.com"},
		{name: "quoted display name", hdr: `From: "Müller, Jürgen" <j@example.com>`, wantName: "Müller, Jürgen", wantAddr: "j@example.com"},
		{name: "utf8 local part", hdr: "From: Jürgen <jürgen@example.com>", wantErr: "5.6.7"},
		{name: "utf8 bare address", hdr: "To: jürgen@example.com", wantErr: "5.6.7"},
		{name: "utf8 domain", hdr: "Cc: <j@bücher.example>", wantErr: "5.6.7"},
		{name: "subject", hdr: "Subject: Re: Grüße aus Köln", wantText: "Re: Grüße aus Köln"},
		{name: "latin1 subject", hdr: "Subject: caf\xe9 ok", wantText: "caf\xe9 ok"},
		{name: "message-id", hdr: "Message-ID: <ü@example.com>", wantErr: "5.6.9"},
		{name: "received", hdr: "Received: from hü by x", wantText: "from h? by x"},
		{name: "date", hdr: "Date: Mon, 1 Jan 2026 00:00:00 +0000 (Zürich)", wantErr: "5.6.9"},
		{name: "quoted utf8 parameter", hdr: `Content-Type: text/plain; name="héllo.txt"`, wantParam: "héllo.txt"},
		{name: "unquoted utf8 parameter", hdr: "Content-Type: text/plain; name=héllo.txt", wantParam: "héllo.txt"},
		{name: "unquoted utf8 parameter, more after", hdr: "Content-Disposition: attachment; filename=héllo.txt ; size=3", wantParam: "héllo.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := []byte(tc.hdr + "\r\n\r\nbody\r\n")
			out, err := DowngradeHeaders(msg)
			if tc.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || e.Status != tc.wantErr || !errors.Is(err, ErrNeedsSMTPUTF8) {
					t.Fatalf("err = %v, want status %s", err, tc.wantErr)
				}
				if tc.wantErr == "5.6.7" && !NeedsSMTPUTF8(msg) {
					t.Errorf("NeedsSMTPUTF8 = false")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if Has8bit(out) || hasLongLine(out) {
				t.Fatalf("output not 7-bit: %q", out)
			}
			m, err := mail.ReadMessage(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantAddr != "" {
				for k := range m.Header {
					a, err := mail.ParseAddress(m.Header.Get(k))
					if err != nil {
						t.Fatalf("%q does not parse: %v", out, err)
					}
					if a.Name != tc.wantName || a.Address != tc.wantAddr {
						t.Errorf("got %q <%s>, want %q <%s>", a.Name, a.Address, tc.wantName, tc.wantAddr)
					}
				}
			}
			if tc.wantParam != "" {
				ct := m.Header.Get("Content-Type") + m.Header.Get("Content-Disposition")
				_, params, err := mime.ParseMediaType(ct)
				if got := params["name"] + params["filename"]; err != nil || got != tc.wantParam {
					t.Errorf("parameter %q (%v), want %q; raw %q", got, err, tc.wantParam, out)
				}
			}
			if tc.wantText != "" {
				dec := mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}
				v := m.Header.Get("Subject")
				if v == "" {
					v = m.Header.Get("Received")
				}
				got, err := dec.DecodeHeader(v)
				if err != nil || !strings.HasPrefix(got, tc.wantText) {
					t.Errorf("decoded %q (%v), want %q; raw %q", got, err, tc.wantText, out)
				}
			}
		})
	}
}

func TestForPeer(t *testing.T) {
	msg := []byte("From: Zoë <z@example.com>\r\nSubject: ß\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody ä\n")
	for _, tc := range []struct {
		peer               Peer
		eight, utf8, conv  bool
		bodyHas8bit, hdr8b bool
	}{
		{Peer{}, false, false, true, false, false},
		{Peer{EightBitMIME: true}, true, false, true, true, false},
		{Peer{EightBitMIME: true, SMTPUTF8: true}, true, true, false, true, true},
		{Peer{SMTPUTF8: true}, true, true, true, false, true},
	} {
		r, err := ForPeer(msg, tc.peer)
		if err != nil {
			t.Fatalf("%+v: %v", tc.peer, err)
		}
		_, _, body := splitMessage(r.Msg)
		if r.EightBit != tc.eight || r.UTF8 != tc.utf8 || r.Converted != tc.conv ||
			Has8bit(body) != tc.bodyHas8bit || HeaderHas8bit(r.Msg) != tc.hdr8b {
			t.Errorf("%+v: got %+v body8=%v hdr8=%v\n%s", tc.peer, r, Has8bit(body), HeaderHas8bit(r.Msg), r.Msg)
		}
		if bytes.Contains(r.Msg, []byte("ä\n")) {
			t.Errorf("%+v: bare LF left", tc.peer)
		}
	}
}

// TestGoMessageReadsOutput cross-checks the converted golden message with
// an independent MIME reader: every text part decodes to the original.
func TestGoMessageReadsOutput(t *testing.T) {
	msg, _ := os.ReadFile("testdata/multipart.in")
	down, err := Downgrade8bit(msg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := gomessage.Read(bytes.NewReader(down))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	err = e.Walk(func(_ []int, part *gomessage.Entity, err error) error {
		if err != nil {
			return err
		}
		if mt, _, _ := part.Header.ContentType(); strings.HasPrefix(mt, "text/") {
			b, err := io.ReadAll(part.Body)
			if err != nil {
				return err
			}
			texts = append(texts, string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Hallo Jürgen,\r\nschöne Grüße.", "plain ascii part stays"}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Errorf("text parts %q, want %q", texts, want)
	}
}

// checkInvariants: out has only CRLF line ends, no line over 998 octets,
// no 8-bit octet when sevenBit, and every leaf part of out decodes to the
// same bytes as the corresponding part of in.
func checkInvariants(t testing.TB, in, out []byte, sevenBit bool) {
	t.Helper()
	if sevenBit && Has8bit(out) {
		t.Fatalf("8-bit octet in downgraded output:\n%q", out)
	}
	if hasLongLine(out) {
		t.Fatalf("line over %d octets in output", MaxLine)
	}
	if !bytes.Equal(NormalizeCRLF(out), out) {
		t.Fatalf("bare CR or LF in output: %q", out)
	}
	if bytes.Contains(out, []byte("message/global")) && !bytes.Contains(in, []byte("message/global")) {
		return // an encapsulated message was wrapped whole
	}
	a := leaves(NormalizeCRLF(in), "text/plain", 0)
	b := leaves(out, "text/plain", 0)
	if len(a) != len(b) {
		t.Fatalf("%d parts in, %d out\nin:  %q\nout: %q", len(a), len(b), in, out)
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("part %d decodes differently:\nin:  %q\nout: %q\nmsg: %q", i, a[i], b[i], out)
		}
	}
}

// leaves walks a message like the converter and returns each leaf body
// decoded (leniently for QP, alphabet-only for base64).
func leaves(ent []byte, defType string, depth int) [][]byte {
	fields, _, body := splitMessage(ent)
	ctv, _ := get(fields, "content-type")
	mt, params := parseType(ctv, defType)
	cte, _ := get(fields, "content-transfer-encoding")
	cte = strings.ToLower(cte)
	identity := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" && identity && depth < maxDepth {
		if parts, _, _, ok := splitMultipart(body, params["boundary"]); ok {
			child := "text/plain"
			if mt == "multipart/digest" {
				child = "message/rfc822"
			}
			var out [][]byte
			for _, p := range parts {
				out = append(out, leaves(body[p.start:p.end], child, depth+1)...)
			}
			return out
		}
	}
	if mt == "message/rfc822" && identity && depth < maxDepth {
		return leaves(body, "text/plain", depth+1)
	}
	switch cte {
	case "quoted-printable":
		return [][]byte{lenientQP(body)}
	case "base64":
		return [][]byte{base64Alphabet(body)}
	}
	return [][]byte{body}
}

func lenientQP(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] == '=' {
			if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
				i += 2
				continue
			}
			if i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]) {
				var v byte
				for _, c := range b[i+1 : i+3] {
					v <<= 4
					switch {
					case c <= '9':
						v |= c - '0'
					case c <= 'F':
						v |= c - 'A' + 10
					default:
						v |= c - 'a' + 10
					}
				}
				out = append(out, v)
				i += 2
				continue
			}
		}
		out = append(out, b[i])
	}
	return out
}

// base64Alphabet returns the decoded bytes when b is valid base64 (line
// breaks aside), else only its alphabet characters.
func base64Alphabet(b []byte) []byte {
	clean := rewrapBase64(b)
	clean = bytes.ReplaceAll(clean, []byte("\r\n"), nil)
	if d, err := base64.StdEncoding.DecodeString(string(clean)); err == nil {
		return d
	}
	return clean
}

// TestLargeInputs: pathological shapes stay linear (the test would time
// out otherwise) and keep the invariants.
func TestLargeInputs(t *testing.T) {
	big := func(parts ...string) []byte { return []byte(strings.Join(parts, "")) }
	for name, msg := range map[string][]byte{
		"header of spaces": big("X: a", strings.Repeat(" ", 2<<20), "b\r\n\r\nbody\r\n"),
		"header no spaces": big("X: ", strings.Repeat("a", 2<<20), "\r\n\r\nbody\r\n"),
		"long 8-bit body":  big("Subject: x\r\n\r\n", strings.Repeat("ä", 1<<20), "\r\n"),
		"many parts": big("Content-Type: multipart/mixed; boundary=b\r\n\r\n",
			strings.Repeat("--b\r\nContent-Type: text/plain\r\n\r\nü\r\n", 5000), "--b--\r\n"),
		"deep nesting": big(strings.Repeat("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n", 200), "\r\nü\r\n"),
		"lone CRs":     big("Subject: x\r\n\r\n", strings.Repeat("\r", 1<<20)),
	} {
		t.Run(name, func(t *testing.T) {
			down, err := Downgrade8bit(msg)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, msg, down, true)
			checkInvariants(t, msg, FoldLongLines(msg), false)
		})
	}
}

// TestBoundary8bit: a multipart with a non-ASCII boundary, for a server
// without 8BITMIME, gets a new ASCII boundary in its header and on every
// delimiter line, and still reads as the same parts.
func TestBoundary8bit(t *testing.T) {
	for _, tc := range []struct{ name, msg string }{
		{"quoted", "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"héllo\"\r\n\r\n--héllo\r\nContent-Type: text/plain\r\n\r\nok héllo\r\n--héllo\r\n\r\nsecond\r\n--héllo--\r\n"},
		{"unquoted", "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=héllo\r\n\r\n--héllo\r\n\r\nok\r\n--héllo--\r\n"},
		{"nested", "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: multipart/alternative; boundary=\"ünter\"\r\n\r\n--ünter\r\n\r\nä\r\n--ünter--\r\n--XX--\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.msg)
			for _, p := range []Peer{{}, {SMTPUTF8: true}} {
				r, err := ForPeer(in, p)
				if err != nil {
					t.Fatalf("%+v: %v", p, err)
				}
				if err := CheckWire(r.Msg, p); err != nil {
					t.Fatalf("%+v: %v\n%s", p, err, r.Msg)
				}
				if Has8bit(r.Msg[headerEnd(r.Msg):]) {
					t.Fatalf("%+v: 8-bit body:\n%s", p, r.Msg)
				}
				if len(leaves(r.Msg, "text/plain", 0)) != len(leaves(NormalizeCRLF(in), "text/plain", 0)) {
					t.Fatalf("%+v: parts changed:\n%s", p, r.Msg)
				}
			}
			out, err := Downgrade8bit(in)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, in, out, true)
		})
	}
}

// TestCheckWire: the last check before the bytes are sent (RFC 6152).
func TestCheckWire(t *testing.T) {
	hdr8 := []byte("Subject: é\r\n\r\nok\r\n")
	body8 := []byte("Subject: e\r\n\r\né\r\n")
	ascii := []byte("Subject: e\r\n\r\nok\r\n")
	for _, tc := range []struct {
		name string
		msg  []byte
		peer Peer
		ok   bool
	}{
		{"ascii, 7-bit peer", ascii, Peer{}, true},
		{"8-bit body, 7-bit peer", body8, Peer{}, false},
		{"8-bit header, 7-bit peer", hdr8, Peer{}, false},
		{"8-bit body, 8BITMIME", body8, Peer{EightBitMIME: true}, true},
		{"8-bit header, SMTPUTF8 only", hdr8, Peer{SMTPUTF8: true}, true},
		{"8-bit body, SMTPUTF8 only", body8, Peer{SMTPUTF8: true}, false},
	} {
		err := CheckWire(tc.msg, tc.peer)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		var e *Error
		if err != nil && (!errors.As(err, &e) || e.Status != "5.6.3" || !errors.Is(err, ErrNeeds8BITMIME)) {
			t.Errorf("%s: untyped error %v", tc.name, err)
		}
	}
}
