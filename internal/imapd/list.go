package imapd

import (
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// listEntry is one name LIST may return.
type listEntry struct {
	name        string
	exists      bool // a folder (else a parent of one, or a subscription only)
	specialUse  string
	subscribed  bool
	hasChildren bool
}

func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailbox.Delimiter})
	}
	folders, err := s.user.Folders()
	if err != nil {
		return s.storeErr("list", err)
	}
	entries := listEntries(folders)
	ref = canonicalInbox(ref)
	for i := range patterns {
		patterns[i] = canonicalInbox(patterns[i])
	}
	matches := func(name string) bool {
		for _, p := range patterns {
			if matchList(name, ref, p) {
				return true
			}
		}
		return false
	}

	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "INBOX") != (names[j] == "INBOX") {
			return names[i] == "INBOX"
		}
		return names[i] < names[j]
	})

	// Parents with a subscribed descendant the patterns do not match:
	// LSUB lists them \Noselect, LIST (SUBSCRIBED RECURSIVEMATCH) with
	// CHILDINFO.
	subParents := map[string]bool{}
	if options.SelectSubscribed {
		for _, name := range names {
			if !entries[name].subscribed || matches(name) {
				continue
			}
			for p := parentName(name); p != ""; p = parentName(p) {
				subParents[p] = true
			}
		}
	}

	for _, name := range names {
		e := entries[name]
		if !matches(name) {
			continue
		}
		data := &imap.ListData{Mailbox: name, Delim: mailbox.Delimiter}
		switch {
		case options.SelectSubscribed && !e.subscribed:
			if !subParents[name] {
				continue
			}
			// Without RECURSIVEMATCH this is LSUB's rule (RFC 3501 6.3.9),
			// which the session cannot tell from LIST (SUBSCRIBED).
			if options.SelectRecursiveMatch {
				data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
			} else {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
			}
		case options.SelectSpecialUse && e.specialUse == "":
			continue
		}
		if !e.exists {
			if e.subscribed || !e.hasChildren {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
			} else if data.ChildInfo == nil && !hasAttr(data.Attrs, imap.MailboxAttrNoSelect) {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
			}
		}
		if e.subscribed && (options.SelectSubscribed || options.ReturnSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if e.hasChildren {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else if e.exists {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if e.specialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(e.specialUse))
		}
		if options.ReturnStatus != nil && e.exists {
			if st, err := s.Status(name, options.ReturnStatus); err == nil {
				data.Status = st
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// listEntries is every name LIST can return: the folders and their
// parents (a Maildir++ folder "a.b" may exist without "a").
func listEntries(folders []mailbox.FolderInfo) map[string]*listEntry {
	entries := make(map[string]*listEntry, len(folders))
	for _, f := range folders {
		entries[f.Name] = &listEntry{
			name:        f.Name,
			exists:      true,
			specialUse:  f.SpecialUse,
			subscribed:  f.Subscribed,
			hasChildren: f.HasChildren,
		}
	}
	for _, f := range folders {
		for p := parentName(f.Name); p != ""; p = parentName(p) {
			e, ok := entries[p]
			if !ok {
				e = &listEntry{name: p}
				entries[p] = e
			}
			e.hasChildren = true
		}
	}
	return entries
}

func parentName(name string) string {
	i := strings.LastIndexByte(name, mailbox.Delimiter)
	if i <= 0 {
		return ""
	}
	return name[:i]
}

// canonicalInbox spells a leading INBOX (case-insensitive) as INBOX.
func canonicalInbox(s string) string {
	if len(s) >= 5 && strings.EqualFold(s[:5], "INBOX") && (len(s) == 5 || s[5] == mailbox.Delimiter) {
		return "INBOX" + s[5:]
	}
	return s
}

func hasAttr(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, b := range attrs {
		if strings.EqualFold(string(a), string(b)) {
			return true
		}
	}
	return false
}

// maxPattern bounds a LIST pattern: longer ones match nothing.
const maxPattern = 1024

// matchList is imapserver.MatchList (reference and pattern against a
// name) in O(len(pattern)·len(name)) time: upstream's backtracking is
// exponential in the number of wildcards.
func matchList(name, ref, pattern string) bool {
	delim := string(mailbox.Delimiter)
	if strings.HasPrefix(pattern, delim) {
		ref = ""
		pattern = strings.TrimPrefix(pattern, delim)
	}
	if ref != "" {
		if !strings.HasSuffix(ref, delim) {
			ref += delim
		}
		if !strings.HasPrefix(name, ref) {
			return false
		}
		name = strings.TrimPrefix(name, ref)
	}
	if len(pattern) > maxPattern {
		return false
	}
	return wildMatch(name, pattern, mailbox.Delimiter)
}

// wildMatch matches name against pattern, where '*' matches anything
// and '%' anything but delim.
func wildMatch(name, pattern string, delim byte) bool {
	// cur[j]: pattern[:i] matches name[:j].
	cur := make([]bool, len(name)+1)
	next := make([]bool, len(name)+1)
	cur[0] = true
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch c {
		case '*', '%':
			reach := false
			for j := 0; j <= len(name); j++ {
				if c == '%' && j > 0 && name[j-1] == delim {
					reach = false
				}
				reach = reach || cur[j]
				next[j] = reach
			}
		default:
			next[0] = false
			for j := 1; j <= len(name); j++ {
				next[j] = cur[j-1] && name[j-1] == c
			}
		}
		cur, next = next, cur
	}
	return cur[len(name)]
}
