// Package imapd is mamori's IMAP server (IMAP4rev1 and IMAP4rev2) over
// the mailbox store.
//
// # Why go-imap v2
//
// The protocol layer is emersion/go-imap v2's imapserver: it parses and
// writes the protocol (literals, LITERAL+, SASL-IR, STARTTLS, IDLE,
// ENABLE, ESEARCH replies, LIST-EXTENDED syntax) and leaves storage to
// a Session, which this package implements on internal/mailbox. It is
// maintained, small, has no cgo, and comes with imapclient, which the
// tests use. Version v2.0.0-beta.8 lacks the ID command (RFC 2971) and
// has a few bugs that fail Dovecot's imaptest, so it is vendored in
// third_party/go-imap with small patches listed in its MAMORI.md.
//
// # What is advertised
//
// IMAP4rev1, IMAP4rev2, NAMESPACE, UIDPLUS, ESEARCH, SEARCHRES (part of
// IMAP4rev2), LIST-EXTENDED, LIST-STATUS, MOVE, STATUS=SIZE, BINARY,
// CHILDREN, SPECIAL-USE, LITERAL+, ID and APPENDLIMIT=N, plus what
// imapserver adds itself: SASL-IR, LITERAL-, UNSELECT, ENABLE, IDLE,
// UTF8=ACCEPT, and STARTTLS with LOGINDISABLED on a plain connection or
// AUTH=PLAIN once TLS is on. Logins (LOGIN and AUTHENTICATE PLAIN, with
// the full address) go through the shared login checker, so the guard
// counts IMAP failures with SMTP's and POP3's.
//
// # How sessions see changes
//
// A selected session keeps its own view of the folder: the list of
// UIDs behind its sequence numbers and the flags it was told, taken
// from Folder.Snapshot (immutable, versioned). After each command
// (Poll) and while idling, it takes a new snapshot and, when the
// version changed, tells the client the difference: EXPUNGE for
// messages gone (only after commands that allow it — FETCH, STORE and
// SEARCH do not, RFC 3501 7.4.1 — until then they keep their sequence
// numbers), FETCH FLAGS for flag changes, FLAGS for new keywords and
// EXISTS (and RECENT) for new messages. IDLE wakes on Folder.Changed,
// which the store closes at every change it makes (a delivery reaches
// an idling client at once), and rescans every few seconds for changes
// made by other processes. \Recent is kept per process: the first
// session that selects a folder read-write, or sees a message arrive,
// gets it as recent.
//
// FETCH reads one message file at a time: BODY[] is streamed from the
// file, other sections are extracted from it one by one. APPEND reads
// the message (at most AppendLimit) to re-encode parts that hold NUL
// octets, which a BINARY APPEND may bring, as base64 (RFC 3516 4.3).
package imapd
