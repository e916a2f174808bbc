package admin

import (
	"fmt"
	"github.com/mamori-mail/mamori/internal/ipnet"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Guard is what the API needs of the guard engine. *guard.Guard implements it.
type Guard interface {
	Snapshot() guard.Snapshot
	Ban(p netip.Prefix, d time.Duration, rule string)
	Unban(p netip.Prefix) bool
	Release(ipOrUser string) bool
}

// SetGuard enables the /api/v1/guard endpoints.
func (s *Server) SetGuard(g Guard, ports []int) {
	s.mux.HandleFunc("GET /api/v1/guard", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, normalise(g.Snapshot()))
	})
	s.mux.HandleFunc("GET /api/v1/guard/nft", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		WriteNft(w, g.Snapshot().Bans, ports, time.Now())
	})
	s.mux.HandleFunc("POST /api/v1/guard/ban", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			CIDR string
			For  string
		}
		if !decode(w, r, &req) {
			return
		}
		p, err := ipnet.ParsePrefix(req.CIDR)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		var d time.Duration
		if req.For != "" {
			if d, err = ParseBanDuration(req.For); err != nil {
				writeErr(w, http.StatusBadRequest, err)
				return
			}
		}
		s.audit(r, "guard ban", p.String())
		g.Ban(p, d, "admin")
		writeJSON(w, map[string]any{"ok": true, "cidr": p.String()})
	})
	s.mux.HandleFunc("POST /api/v1/guard/unban", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ CIDR string }
		if !decode(w, r, &req) {
			return
		}
		p, err := ipnet.ParsePrefix(req.CIDR)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		s.audit(r, "guard unban", p.String())
		if !g.Unban(p) {
			writeErr(w, http.StatusNotFound, fmt.Errorf("%s is not banned", p))
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	s.mux.HandleFunc("POST /api/v1/guard/release", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Target      string
			ReleaseMail bool `json:"release_mail"`
		}
		if !decode(w, r, &req) {
			return
		}
		t, err := ParseReleaseTarget(req.Target)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		s.audit(r, "guard release", t)
		if !g.Release(t) {
			writeErr(w, http.StatusNotFound, fmt.Errorf("%s is neither isolated nor suspended", t))
			return
		}
		out := map[string]any{"ok": true}
		if req.ReleaseMail && s.queue != nil {
			f := heldFilterFor(t)
			n, err := s.queue.Release(f)
			if err != nil {
				writeErr(w, http.StatusInternalServerError, err)
				return
			}
			out["released_messages"] = n
		}
		writeJSON(w, out)
	})
}

// ParseBanDuration reads the length of a ban ("30m", "2h", "7d"): more than
// zero and at most queue.MaxAge. The CLI and the API both use it.
func ParseBanDuration(s string) (time.Duration, error) {
	d, err := queue.ParseAge(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("ban duration %q: want a length of time such as 30m, 2h or 7d", s)
	}
	return d, nil
}

// ParseReleaseTarget checks what guard release names: an IP address
// (returned canonical and unmapped, as the guard keys isolations) or a user
// address (lower case). A CIDR or anything else is an error rather than a
// release that silently finds nothing. The CLI and the API both use it.
func ParseReleaseTarget(s string) (string, error) {
	t := strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(t, "["), "]")); err == nil {
		return a.Unmap().WithZone("").String(), nil
	}
	if strings.Contains(t, "/") {
		return "", fmt.Errorf("%q: release takes one IP address or a user address, not a CIDR", s)
	}
	at := strings.LastIndexByte(t, '@')
	if at <= 0 || at == len(t)-1 || len(t) > 320 || !utf8.ValidString(t) ||
		strings.ContainsAny(t, " \t<>,;") || strings.IndexFunc(t, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("%q is neither an IP address nor a user address", s)
	}
	return strings.ToLower(t), nil
}

// heldFilterFor selects the held mail of an IP or a user.
func heldFilterFor(target string) (f queue.Filter) {
	f.State = "held"
	if _, err := netip.ParseAddr(target); err == nil {
		f.ClientIP = target
	} else {
		f.User = target
	}
	return f
}

// normalise makes empty lists print as [] rather than null.
func normalise(s guard.Snapshot) guard.Snapshot {
	if s.Isolated == nil {
		s.Isolated = []guard.Isolation{}
	}
	if s.Suspended == nil {
		s.Suspended = []guard.Suspension{}
	}
	if s.Bans == nil {
		s.Bans = []guard.Ban{}
	}
	return s
}

// WriteNft renders the current bans as an nftables table with two
// timeout sets, so the firewall drops banned clients before they reach
// mamori: `mamori guard export --nft | nft -f -`.
func WriteNft(w io.Writer, bans []guard.Ban, ports []int, now time.Time) {
	var v4, v6 []string
	sort.Slice(bans, func(i, j int) bool { return bans[i].CIDR < bans[j].CIDR })
	for _, b := range bans {
		p, err := ipnet.ParsePrefix(b.CIDR)
		if err != nil || !b.Expires.After(now) {
			continue
		}
		secs := int(b.Expires.Sub(now).Seconds()) + 1
		el := fmt.Sprintf("%s timeout %ds", p, secs)
		if p.IsSingleIP() {
			el = fmt.Sprintf("%s timeout %ds", p.Addr(), secs)
		}
		if p.Addr().Is4() {
			v4 = append(v4, el)
		} else {
			v6 = append(v6, el)
		}
	}
	portList := make([]string, len(ports))
	for i, p := range ports {
		portList[i] = fmt.Sprint(p)
	}
	fmt.Fprintf(w, "# mamori bans, generated %s; load with: nft -f FILE\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "table inet mamori {")
	writeSet := func(name, typ string, els []string) {
		fmt.Fprintf(w, "\tset %s {\n\t\ttype %s\n\t\tflags interval,timeout\n", name, typ)
		if len(els) > 0 {
			fmt.Fprintf(w, "\t\telements = { %s }\n", strings.Join(els, ", "))
		}
		fmt.Fprintln(w, "\t}")
	}
	writeSet("banned_v4", "ipv4_addr", v4)
	writeSet("banned_v6", "ipv6_addr", v6)
	fmt.Fprintln(w, "\tchain input {")
	fmt.Fprintln(w, "\t\ttype filter hook input priority -10; policy accept;")
	if len(portList) > 0 {
		dports := "{ " + strings.Join(portList, ", ") + " }"
		fmt.Fprintf(w, "\t\tip saddr @banned_v4 tcp dport %s drop\n", dports)
		fmt.Fprintf(w, "\t\tip6 saddr @banned_v6 tcp dport %s drop\n", dports)
	} else {
		fmt.Fprintln(w, "\t\tip saddr @banned_v4 drop")
		fmt.Fprintln(w, "\t\tip6 saddr @banned_v6 drop")
	}
	fmt.Fprintln(w, "\t}")
	fmt.Fprintln(w, "}")
}
