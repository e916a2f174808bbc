package content

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

// uuencode is a reference encoder (as uuencode(1) writes: 45 bytes a
// line, '`' for zero).
func uuencode(name string, data []byte) string {
	var b strings.Builder
	b.WriteString("begin 644 " + name + "\r\n")
	enc := func(c byte) byte {
		if c == 0 {
			return '`'
		}
		return c + ' '
	}
	for len(data) > 0 {
		n := min(len(data), 45)
		line := data[:n]
		data = data[n:]
		b.WriteByte(enc(byte(n)))
		for i := 0; i < n; i += 3 {
			var g [3]byte
			copy(g[:], line[i:min(i+3, n)])
			b.WriteByte(enc(g[0] >> 2))
			b.WriteByte(enc((g[0]<<4 | g[1]>>4) & 63))
			b.WriteByte(enc((g[1]<<2 | g[2]>>6) & 63))
			b.WriteByte(enc(g[2] & 63))
		}
		b.WriteString("\r\n")
	}
	b.WriteString("`\r\nend\r\n")
	return b.String()
}

// yencode is a reference yEnc encoder.
func yencode(name string, data []byte) string {
	var b strings.Builder
	b.WriteString("=ybegin line=128 size=" + strconv.Itoa(len(data)) + " name=" + name + "\r\n")
	col := 0
	for _, c := range data {
		e := c + 42
		switch e {
		case 0, '\n', '\r', '=':
			b.WriteByte('=')
			e += 64
		}
		b.WriteByte(e)
		if col++; col >= 128 {
			b.WriteString("\r\n")
			col = 0
		}
	}
	b.WriteString("\r\n=yend size=" + strconv.Itoa(len(data)) + "\r\n")
	return b.String()
}

func textMsg(body string) []byte {
	return []byte("From: a@example.org\r\nTo: b@example.net\r\nSubject: s\r\n\r\n" + body)
}

func TestUUDecodeRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 44, 45, 46, 1000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + 3)
		}
		got := findEmbedded([]byte("hello\r\n" + uuencode("f.bin", data) + "bye\r\n"))
		if len(got) != 1 || got[0].name != "f.bin" || !bytes.Equal(got[0].data, data) {
			t.Errorf("uu %d bytes: got %+v", n, got)
		}
		got = findEmbedded([]byte(yencode("y.bin", data)))
		if len(got) != 1 || got[0].name != "y.bin" || !bytes.Equal(got[0].data, data) {
			t.Errorf("yEnc %d bytes: got %d blocks", n, len(got))
		}
	}
}

func TestEncodedInText(t *testing.T) {
	pe := fakePE()
	b64 := "begin-base64 644 run.vbs\r\n" + base64.StdEncoding.EncodeToString([]byte("x")) + "\r\n====\r\n"
	stripped := strings.ReplaceAll(uuencode("tool.exe", pe), "`\r\n", "\r\n") // a mailer dropped the "`" line
	tests := []struct {
		name     string
		msg      []byte
		wantRule Rule
		wantPart string
	}{
		{name: "uuencoded exe in plain body", msg: textMsg("See the tool:\r\n\r\n" + uuencode("setup.exe", pe) + "\r\nBye\r\n"), wantRule: RuleBlockedExt, wantPart: "message body (text/plain) > setup.exe"},
		{name: "uuencoded PE named txt", msg: textMsg(uuencode("readme.txt", pe)), wantRule: RuleExecutableMagic, wantPart: "message body (text/plain) > readme.txt"},
		{name: "uuencoded zip with scr", msg: textMsg(uuencode("docs.zip", mkZip(t, entry{name: "a.scr", data: []byte("x")}))), wantRule: RuleBlockedExt, wantPart: "message body (text/plain) > docs.zip > a.scr"},
		{name: "uuencoded in multipart text part", msg: mkMsg(part{ctype: "text/plain; charset=us-ascii", cte: "7bit", body: []byte(uuencode("invoice.pdf.js", []byte("x")))}), wantRule: RuleDoubleExt},
		{name: "begin-base64", msg: textMsg(b64), wantRule: RuleBlockedExt},
		{name: "yEnc exe", msg: textMsg(yencode("crack.exe", []byte("x"))), wantRule: RuleBlockedExt},
		{name: "yEnc PE named bin", msg: textMsg(yencode("data.bin", pe)), wantRule: RuleExecutableMagic},
		{name: "uuencoded tar.gz", msg: textMsg(uuencode("a.tgz", mkGz(t, "", mkTar(t, 0, tarEntry{name: "x.hta", data: []byte("x")})))), wantRule: RuleBlockedExt},
		{name: "missing backtick line", msg: textMsg(stripped), wantRule: RuleBlockedExt},
		{name: "harmless uuencoded text", msg: textMsg(uuencode("notes.txt", []byte("just notes")))},
		{name: "prose that starts with begin", msg: textMsg("begin 10 minutes early tomorrow\r\nbegin at 9\r\n")},
		{name: "plain message", msg: textMsg("Hello,\r\nsee you.\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := DefaultPolicy().Check(tc.msg)
			checkVerdict(t, v, tc.wantRule, tc.wantPart, 0)
		})
	}
}
