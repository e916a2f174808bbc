package logscan

import (
	"encoding/json"
	"strings"
	"time"
)

// mamoriLine is the part of a mamori JSON log line (log.format = "json")
// that logscan reads.
type mamoriLine struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	QueueID  string    `json:"queue_id"`
	ClientIP string    `json:"client_ip"`
	User     string    `json:"user"`
	From     *string   `json:"from"`
	Rcpt     string    `json:"rcpt"`
	Relay    string    `json:"relay"`
	Rcpts    int       `json:"rcpts"`
	Size     int64     `json:"size"`
	Stage    string    `json:"stage"`
	Arg      string    `json:"arg"`
	Reason   string    `json:"reason"`
}

// ParseMamori parses one line of mamori's JSON log: "queued" (smtpd),
// "delivered", "deferred", "bounced" (delivery), "rejected" (smtpd) and
// "login failed"/"login refused" (login).
func ParseMamori(line []byte) Event {
	var l mamoriLine
	if err := json.Unmarshal(line, &l); err != nil {
		return Event{}
	}
	ev := Event{QueueID: l.QueueID, Client: l.ClientIP, User: l.User}
	if !l.Time.IsZero() {
		ev.Time = l.Time.Unix()
	}
	from := "<>"
	if l.From != nil {
		from = sender(*l.From)
	}
	switch l.Msg {
	case "queued":
		ev.Kind, ev.From, ev.Size, ev.Nrcpt = KindQueued, from, l.Size, l.Rcpts
	case "delivered", "deferred", "bounced":
		ev.Kind, ev.From, ev.To = KindRcpt, from, strings.ToLower(l.Rcpt)
		ev.Status = map[string]Status{"delivered": StatusSent, "deferred": StatusDeferred, "bounced": StatusBounced}[l.Msg]
		switch {
		case l.Relay == "local":
			ev.Dest = DestLocal
		case l.Relay != "":
			ev.Dest = DestRemote
		}
	case "rejected":
		ev.Kind, ev.Text = KindReject, l.Reason
		ev.Relay = strings.Contains(l.Reason, "Relay access denied")
		switch l.Stage {
		case "mail":
			ev.From = sender(l.Arg)
		case "rcpt":
			ev.To = strings.ToLower(l.Arg)
		}
	case "login failed", "login refused", "auth failed":
		ev.Kind = KindAuthFail
	default:
		return Event{}
	}
	if ev.QueueID != "" || ev.Kind == KindReject || ev.Kind == KindAuthFail {
		return ev
	}
	return Event{}
}
