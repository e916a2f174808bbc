package smtpd

import "time"

// SessionSummary is what one SMTP session did, kept as evidence (the
// incident timeline) when it ends. It is bounded: at most
// maxSummaryTransactions transactions are listed, the rest only counted.
type SessionSummary struct {
	Start        time.Time            `json:"start"`
	End          time.Time            `json:"end"`
	Listener     string               `json:"listener"`
	ClientIP     string               `json:"client_ip"`
	Helo         string               `json:"helo,omitempty"`
	TLS          bool                 `json:"tls"`
	Trusted      bool                 `json:"trusted"`
	User         string               `json:"user,omitempty"`
	AuthFailures int                  `json:"auth_failures,omitempty"`
	Rejects      map[string]int       `json:"rejects,omitempty"` // by stage: mail, rcpt, data, auth
	Transactions []SummaryTransaction `json:"transactions,omitempty"`
	More         int                  `json:"more_transactions,omitempty"`
}

// SummaryTransaction is one accepted message.
type SummaryTransaction struct {
	QueueID string   `json:"queue_id"`
	From    string   `json:"from"`
	Rcpts   int      `json:"rcpts"`
	Sample  []string `json:"rcpt_sample,omitempty"` // up to 3
	Subject string   `json:"subject,omitempty"`
	State   string   `json:"state"`
	Rule    string   `json:"rule,omitempty"`
}

const maxSummaryTransactions = 50

// Recorder receives session summaries. It must not block for long.
type Recorder interface {
	RecordSession(SessionSummary)
}

func (s *session) noteReject(stage string) {
	if s.sum.Rejects == nil {
		s.sum.Rejects = make(map[string]int)
	}
	s.sum.Rejects[stage]++
}

func (s *session) noteQueued(id, from string, rcpts []string, subject, state, rule string) {
	if len(s.sum.Transactions) >= maxSummaryTransactions {
		s.sum.More++
		return
	}
	sample := rcpts
	if len(sample) > 3 {
		sample = sample[:3]
	}
	if len(subject) > 200 {
		subject = subject[:200]
	}
	s.sum.Transactions = append(s.sum.Transactions, SummaryTransaction{
		QueueID: id, From: from, Rcpts: len(rcpts), Sample: append([]string(nil), sample...),
		Subject: subject, State: state, Rule: rule,
	})
}
