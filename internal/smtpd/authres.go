package smtpd

import (
	"bytes"
	"strings"
)

// stripAuthResults removes Authentication-Results header fields (with
// their continuation lines) whose authserv-id is ours: RFC 8601 §5 — a
// forger could otherwise pre-stamp "dkim=pass" in our name. Fields of other
// authserv-ids and the body are left untouched.
func stripAuthResults(msg []byte, authservID string) []byte {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	head := msg[:end]
	if !bytes.Contains(bytes.ToLower(head), []byte("authentication-results")) {
		return msg
	}
	id := strings.ToLower(authservID)
	var out bytes.Buffer
	out.Grow(len(msg))
	skipping := false
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i+2], head[i+2:]
		} else {
			head = nil
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') { // continuation
			if !skipping {
				out.Write(line)
			}
			continue
		}
		skipping = false
		name, value, ok := strings.Cut(string(line), ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "Authentication-Results") {
			v := strings.ToLower(strings.TrimSpace(value))
			if v == id || strings.HasPrefix(v, id+";") || strings.HasPrefix(v, id+" ") || strings.HasPrefix(v, id+"\r") {
				skipping = true
				continue
			}
		}
		out.Write(line)
	}
	out.Write(msg[end:])
	return out.Bytes()
}
