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
// Store (store.go, store_*.go) is the one owner of that tree once IMAP and
// POP3 read it too. It exists because three users of one Maildir — local
// delivery, imapd and pop3d, with many sessions each — need the same
// answers: stable UIDs and UIDVALIDITY (IMAP clients cache by them and
// delete local copies when they change), flags, folders, quota. Rather than
// each session rescanning directories, a process keeps one index per open
// folder, shared by every session (refcounted by Open/Close, guarded by a
// mutex); Snapshot hands out immutable copy-on-write views whose Version
// grows with every change, and checks the disk with two stats (the mtimes
// of new/ and cur/), rescanning only when they moved. Delivery wakes the
// INBOX's watchers (Changed) at once; a poller finds other processes'
// changes within a second. Usage is cached per user, kept current by every
// store operation and rescanned when a folder's directories change.
//
// The on-disk formats are Dovecot's — Maildir++ folders named in modified
// UTF-7, dovecot-uidlist version 3 written under Dovecot's dot-lock
// protocol (dovecot-uidlist.lock created O_EXCL, written, fsynced, renamed
// over), dovecot-keywords for the letters a–z, dovecot-uidvalidity, sizes
// in ",S=" — so that a Dovecot (or a backup, or a migration to or from one)
// on the same tree sees the same UIDs, keywords and folders, and nothing
// mamori-specific has to be invented, documented or converted. Flags live
// in the file names (Maildir's ":2," info, letters sorted), so a flag change
// is one rename; a rename that races with another process finds the file
// again by its base name after a rescan.
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
