// Package pop3d is mamori's POP3 server (RFC 1939): the [listen] pop3
// (110, STLS before any login) and pop3s (995, implicit TLS) listeners,
// over the user's INBOX in the mailbox store.
//
// It exists because POP3 is still how some mail clients, scanners and
// archivers fetch mail, and a mail server for a small organisation should
// not need a second server beside it for them. No maintained Go POP3
// server library was found: the package lists searched have none, the Go
// module proxy does not serve github.com/DevelHell/popgun, the one Go POP3
// server package known. The protocol is small, so this package is a
// small, strict implementation of its own (SMTP's and IMAP's front ends
// use libraries because their protocols are not).
//
// Supported:
//   - RFC 1939: USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT,
//     TOP and UIDL; the UPDATE state (DELE'd messages are expunged only
//     at QUIT; a dropped or timed-out connection deletes nothing); the
//     exclusive-access lock (a second POP3 session of a user in the
//     TRANSACTION state gets "-ERR [IN-USE]"; it is in-process, keyed by
//     the canonical login, and IMAP sessions do not take it: the store
//     keeps concurrent IMAP and POP3 access to one folder consistent).
//   - RFC 2449: CAPA, RESP-CODES, PIPELINING, IMPLEMENTATION; RFC 3206's
//     "[SYS/TEMP]" and "[AUTH]" codes (AUTH-RESP-CODE), and RFC 2449's
//     "[IN-USE]".
//   - RFC 2595: STLS. On the plain listener every login (USER, PASS,
//     AUTH) is refused with "-ERR [AUTH]" until STLS, and CAPA offers
//     neither USER nor SASL until then. STLS must be the last command of
//     a pipeline: octets after it would be read as if they came over TLS
//     (the STARTTLS command-injection bug), so the connection is closed.
//   - RFC 5034: AUTH PLAIN, with an initial response or after a "+ "
//     continuation, and a bare AUTH listing the mechanisms (RFC 1734
//     clients such as Outlook send it). The authorization identity must
//     be empty or the login itself.
//
// Not supported:
//   - APOP: it needs the plain-text password (or an MD5 equivalent of
//     it) on the server, while mamori keeps only Argon2id hashes; MD5
//     challenge/response is no protection today and TLS already protects
//     the password. The greeting carries no APOP timestamp.
//   - LOGIN-DELAY and EXPIRE (no policy to announce), and SASL mechanisms
//     other than PLAIN (they also need the password or a derived secret
//     on the server).
//
// Every login goes through the shared login checker (internal/login) and
// so the guard: bans, throttles and suspensions are the same as for SMTP
// AUTH and IMAP. A refused login never tells whether the account exists.
// Every input is bounded: 255 octets per command line (RFC 2449 section
// 4; a longer one is answered "-ERR" and skipped, 64 KiB without a line
// end closes the connection), 2048 octets for a response line of the AUTH
// exchange, 3 failed logins, 25 commands before a login, 10 bad commands,
// and the idle timeout (10 minutes by default, the RFC 1939 autologout
// minimum), applied to reads and writes alike. Replies to a pipeline of
// commands are sent together (PIPELINING).
//
// The maildrop is the user's INBOX as a snapshot taken at login: the
// session sees a fixed list of messages, numbered from 1, whatever is
// delivered or expunged meanwhile (a message expunged by IMAP in the
// meantime answers "-ERR" to RETR). RETR marks the message \Seen, as
// Dovecot does, so IMAP clients of the same user see it as read. RETR and
// TOP stream the file, adding CRLF to bare LF line ends and stuffing dots,
// never holding a whole message in memory.
//
// UIDL is "UIDVALIDITY.UID" in decimal. The pair identifies one message of
// one folder for good (IMAP's rule, RFC 3501 section 2.3.1.1) and the
// store keeps both across restarts in dovecot-uidlist; should the folder's
// UIDVALIDITY ever change, every id changes with it, so a client that
// keeps mail on the server downloads it again rather than missing any.
// Decimal keeps the ids short (at most 21 octets, within RFC 1939's 70)
// and readable in logs. Dovecot's default format is different (hex), so
// clients moved from a Dovecot server download kept mail once more.
package pop3d
