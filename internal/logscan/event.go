package logscan

// Kind says what a log line reported.
type Kind uint8

// The kinds of event a line parser returns. KindNone is a line that says
// nothing logscan counts (connect, disconnect, other programs, garbage).
const (
	KindNone      Kind = iota
	KindClient         // a queue id got its client (and SASL user): Postfix smtpd "QID: client="
	KindMessageID      // cleanup "QID: message-id=<...>"
	KindFrom           // the message entered the queue: qmgr "from=, size=, nrcpt="
	KindQueued         // mamori "queued": client, user, from, size and recipient count in one line
	KindRcpt           // one delivery attempt for one recipient; Status says how it went
	KindRemoved        // the queue id is done
	KindReject         // a refusal before queueing (Postfix NOQUEUE reject, mamori "rejected")
	KindAuthFail       // a failed SMTP AUTH or login
	KindSubject        // a logged Subject header (Postfix header_checks WARN/INFO): Text
)

// Status is the outcome of a delivery attempt.
type Status uint8

// Delivery outcomes.
const (
	StatusNone Status = iota
	StatusSent
	StatusDeferred
	StatusBounced
)

// Dest is where a delivery attempt went.
type Dest uint8

// Delivery destinations. DestFilter is a content filter on the loopback
// interface (amavis, a milter-less spam filter): not a delivery, the
// message comes back with a second queue id.
const (
	DestUnknown Dest = iota
	DestLocal        // local, virtual, LMTP or a delivery agent (dovecot, maildrop)
	DestRemote       // SMTP to another host
	DestFilter       // SMTP to 127.0.0.1 / ::1
)

// Event is one parsed log line. Unset fields are zero. Time is Unix
// seconds (0 when the line had no readable time).
type Event struct {
	Kind    Kind
	Status  Status
	Time    int64
	QueueID string
	Client  string // client IP
	User    string // authenticated (SASL) user, or the user a login tried
	From    string // envelope sender, lowercased; "<>" for the null sender
	To      string // recipient, lowercased
	Size    int64
	Nrcpt   int
	Helo    string // the client's HELO name, where the line has it
	Relay   bool   // KindReject: the refusal was "Relay access denied"
	Dest    Dest   // KindRcpt: where the attempt went
	Forward bool   // KindRcpt: the recipient is a forward of a local one (orig_to=)
	// Text is the message-id, the reject reason, the subject (KindSubject),
	// or for a KindRcpt handed to a loopback content filter the queue id it
	// came back as (the reinjected copy, which is not counted again).
	Text string
}
