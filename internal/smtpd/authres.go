package smtpd

import (
	"strings"

	"github.com/mamori-mail/mamori/internal/msgheader"
)

// ourAuthResults returns the Authentication-Results fields whose
// authserv-id is ours: RFC 8601 section 5 — a forger could otherwise
// pre-stamp "dkim=pass" in our name. Fields of other authserv-ids are kept.
func ourAuthResults(h *msgheader.Header, authservID string) []msgheader.Field {
	id := strings.ToLower(authservID)
	var out []msgheader.Field
	for _, f := range h.Fields {
		if !strings.EqualFold(f.Name, "Authentication-Results") {
			continue
		}
		v := strings.ToLower(f.Value)
		if v == id || strings.HasPrefix(v, id+";") || strings.HasPrefix(v, id+" ") || strings.HasPrefix(v, id+"\t") {
			out = append(out, f)
		}
	}
	return out
}

// withoutFields returns msg as slices of itself that leave out the given
// header fields (in header order), without copying the message.
func withoutFields(msg []byte, drop []msgheader.Field) [][]byte {
	if len(drop) == 0 {
		return [][]byte{msg}
	}
	out := make([][]byte, 0, len(drop)+1)
	at := 0
	for _, f := range drop {
		out = append(out, msg[at:f.Start])
		at = f.End
	}
	return append(out, msg[at:])
}
