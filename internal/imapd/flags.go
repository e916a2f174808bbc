package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// codeExpungeIssued is RFC 9051's EXPUNGEISSUED, which go-imap lacks.
const codeExpungeIssued imap.ResponseCode = "EXPUNGEISSUED"

// flagRecent is IMAP4rev1's session flag; the store does not keep it.
const flagRecent = `\Recent`

// systemFlags are the flags every folder takes, in the order the FLAGS
// reply lists them.
var systemFlags = []string{
	mailbox.FlagAnswered, mailbox.FlagFlagged, mailbox.FlagDeleted,
	mailbox.FlagSeen, mailbox.FlagDraft,
}

// hasFlag reports whether flags holds f; flags are case-insensitive.
func hasFlag(flags []string, f string) bool {
	for _, g := range flags {
		if strings.EqualFold(g, f) {
			return true
		}
	}
	return false
}

// storeFlagNames is what a client's flag list means to the store:
// system flags in their canonical spelling, keywords in the spelling the
// folder already uses, no \Recent (not settable) and no duplicates.
func storeFlagNames(flags []imap.Flag, keywords []string) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		name := canonicalFlag(string(f), keywords)
		if name == "" || hasFlag(out, name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

func canonicalFlag(f string, keywords []string) string {
	if strings.EqualFold(f, flagRecent) || f == string(imap.FlagWildcard) {
		return ""
	}
	for _, sf := range systemFlags {
		if strings.EqualFold(f, sf) {
			return sf
		}
	}
	if strings.EqualFold(f, mailbox.FlagForwarded) {
		return mailbox.FlagForwarded
	}
	for _, kw := range keywords {
		if strings.EqualFold(f, kw) {
			return kw
		}
	}
	return f
}

// imapFlags is a message's FLAGS as the session shows them.
func imapFlags(flags []string, recent bool) []imap.Flag {
	out := make([]imap.Flag, 0, len(flags)+1)
	for _, f := range flags {
		out = append(out, imap.Flag(f))
	}
	if recent {
		out = append(out, imap.Flag(flagRecent))
	}
	return out
}

// folderFlags is the FLAGS reply of a folder: the system flags and the
// keywords in use.
func folderFlags(keywords []string) []imap.Flag {
	out := make([]imap.Flag, 0, len(systemFlags)+len(keywords))
	for _, f := range systemFlags {
		out = append(out, imap.Flag(f))
	}
	for _, kw := range keywords {
		if !hasFlag(systemFlags, kw) {
			out = append(out, imap.Flag(kw))
		}
	}
	return out
}

func sameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
