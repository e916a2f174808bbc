package admin

import (
	"net/http"
	"time"

	"github.com/mamori-mail/mamori/internal/guard"
)

// The live view: what the dashboard and `mamori top` show, refreshed
// every second or so. GET /api/v1/live returns one Live. These types are
// the API's (JSON) shape; the packages that fill them keep their own.

// Live is one snapshot of the server's activity.
type Live struct {
	Time time.Time `json:"time"`
	// Traffic is the last hour, one entry per minute, oldest first; the
	// last entry is the current (partial) minute.
	Traffic []TrafficMinute `json:"traffic"`
	// TopIPs and TopUsers are the busiest local senders right now (client
	// IPs of trusted networks and authenticated users, and outside client
	// IPs on port 25), by messages in the last minute, at most 10 each.
	TopIPs   []TopSender `json:"top_ips"`
	TopUsers []TopSender `json:"top_users"`
	// Guard is what /api/v1/guard returns — isolations, suspensions,
	// bans — but at most LiveListCap of each (the most recent; bans: the
	// longest-lasting); GuardTotals counts them all.
	Guard       guard.Snapshot `json:"guard"`
	GuardTotals GuardTotals    `json:"guard_totals"`
	// Alerts are the most recent alerts, newest first, at most 20.
	Alerts []AlertItem `json:"alerts"`
	// Queue counts messages and bytes by state.
	Queue QueueCounts `json:"queue"`
	// Sessions counts open sessions by listener ("smtp", "submission",
	// "submissions", "imap", "imaps", "pop3", "pop3s").
	Sessions map[string]int `json:"sessions"`
}

// LiveListCap bounds each guard list of the live view: it is fetched every
// second or two by every viewer, and automatic bans may number 100,000.
const LiveListCap = 100

// GuardTotals counts what the guard has in force.
type GuardTotals struct {
	Isolated  int `json:"isolated"`
	Suspended int `json:"suspended"`
	Bans      int `json:"bans"`
}

// TrafficMinute counts one minute of traffic and guard activity.
type TrafficMinute struct {
	Time     time.Time `json:"t"`        // start of the minute
	In       int       `json:"in"`       // messages accepted (all origins)
	Out      int       `json:"out"`      // deliveries made (remote and local)
	Refused  int       `json:"refused"`  // messages or recipients refused (5xx/4xx at RCPT or DATA)
	Held     int       `json:"held"`     // messages accepted into held
	Bounced  int       `json:"bounced"`  // recipients failed permanently
	Guard    int       `json:"guard"`    // guard decisions other than accept
	Isolated int       `json:"isolated"` // isolations and suspensions started
}

// TopSender is one sender's current rate against its limits.
type TopSender struct {
	// Key is the client IP or the user address.
	Key     string `json:"key"`
	Trusted bool   `json:"trusted,omitempty"` // an IP of the trusted networks
	Outside bool   `json:"outside,omitempty"` // an outside client on port 25
	// MsgsPerMin and RcptsPerMin count the last 60 seconds.
	MsgsPerMin  int `json:"msgs_per_min"`
	RcptsPerMin int `json:"rcpts_per_min"`
	// LimitMsgs and LimitRcpts are the per-minute limits that apply to
	// this sender (0: none).
	LimitMsgs  int  `json:"limit_msgs"`
	LimitRcpts int  `json:"limit_rcpts"`
	Isolated   bool `json:"isolated,omitempty"`
}

// AlertItem is one alert as the guard raised it.
type AlertItem struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Rule   string    `json:"rule"`
	IP     string    `json:"ip,omitempty"`
	User   string    `json:"user,omitempty"`
	Detail string    `json:"detail"`
}

// QueueCounts is the queue by state.
type QueueCounts struct {
	Messages map[string]int   `json:"messages"` // "active", "deferred", "held"
	Bytes    map[string]int64 `json:"bytes"`
}

// LiveSource produces the live view.
type LiveSource interface {
	Live() Live
}

// SetLive enables GET /api/v1/live.
func (s *Server) SetLive(src LiveSource) {
	s.mux.HandleFunc("GET /api/v1/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, src.Live())
	})
}
