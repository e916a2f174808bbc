// Package mailbox knows who lives on this server and puts their mail where
// they can read it.
//
// It exists because every stage of mamori needs the same answers, fast and
// consistently: smtpd asks at RCPT time whether a local address exists (so mail
// to unknown users is refused with 550 instead of accepted and bounced, which
// would make mamori a backscatter source), at AUTH time whether a password is
// right, and at MAIL time whether a user may use a sender address; delivery
// asks where a local recipient's mail goes. Directory answers those from
// in-memory maps loaded from the store (O(1), no I/O on the hot path) and
// writes every change through to the store, so the CLI and admin API can
// change users, domains and aliases while the server runs. Maildir stores
// delivered messages with the crash-safe Maildir protocol at
// data_dir/mail/DOMAIN/LOCALPART/{tmp,new,cur}, which any IMAP server or mail
// client can read.
//
// Passwords are hashed with Argon2id (golang.org/x/crypto/argon2, the OWASP
// recommendation for new systems) and stored as PHC strings; a semaphore
// bounds concurrent hash computations so an AUTH flood queues instead of
// exhausting memory. Passwords and hashes are never logged.
//
// Dependencies:
//   - internal/store: durable state (users, aliases, runtime domains).
//   - golang.org/x/crypto/argon2: the memory-hard password hash; the
//     standard library has none.
package mailbox
