package imapd

import (
	"fmt"
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

// maxListPatterns bounds the patterns of one LIST (RFC 5258 allows a
// list of them): each is matched against every folder.
const maxListPatterns = 64

func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) > maxListPatterns {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
			Text: fmt.Sprintf("At most %d patterns per LIST", maxListPatterns)}
	}
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailbox.Delimiter})
	}
	folders, err := s.user.Folders()
	if err != nil {
		return s.storeErr("list", err)
	}
	var subs []string
	if options.SelectSubscribed {
		// Subscribed names need not be folders (RFC 3501 6.3.6).
		if subs, err = s.user.Subscriptions(); err != nil {
			return s.storeErr("list", err)
		}
	}
	entries := listEntries(folders, subs)
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

	// Names with a subscribed descendant that the patterns do not match:
	// LSUB lists them \Noselect when not subscribed themselves (RFC 3501
	// 6.3.9), LIST (SUBSCRIBED RECURSIVEMATCH) with CHILDINFO (RFC 5258
	// 3.5), whether they exist or not. Plain LIST (SUBSCRIBED) does not.
	lsub := w.LSub()
	subParents := map[string]bool{}
	if options.SelectSubscribed && (lsub || options.SelectRecursiveMatch) {
		for _, name := range subs {
			if matches(name) {
				continue
			}
			for p := parentName(name); p != ""; p = parentName(p) {
				subParents[p] = true
				if entries[p] == nil {
					entries[p] = &listEntry{name: p}
				}
			}
		}
	}

	names := make([]string, 0, len(entries))
	for name := range entries {
		if matches(name) {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "INBOX") != (names[j] == "INBOX") {
			return names[i] == "INBOX"
		}
		return names[i] < names[j]
	})

	for _, name := range names {
		e := entries[name]
		if options.SelectSubscribed && !e.subscribed && !subParents[name] {
			continue
		}
		if options.SelectSpecialUse && e.specialUse == "" {
			continue
		}
		data := &imap.ListData{Mailbox: name, Delim: mailbox.Delimiter}
		if lsub {
			// LSUB attributes say only whether the name can be selected.
			if !e.subscribed || !e.exists {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
			}
			if err := w.WriteList(data); err != nil {
				return err
			}
			continue
		}
		if options.SelectRecursiveMatch && subParents[name] {
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if !e.exists {
			// A Maildir++ folder "a.b" may exist without "a": then "a"
			// is a \Noselect parent; any other name LIST returns that is
			// no folder (a subscription only, or a parent of one) is
			// \NonExistent (RFC 5258 3), which implies \Noselect.
			if e.hasChildren {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
			} else {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
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

// listEntries is every name LIST can return: the folders, their parents
// (a Maildir++ folder "a.b" may exist without "a") and the subscribed
// names subs, which need not be folders. hasChildren counts folders
// only.
func listEntries(folders []mailbox.FolderInfo, subs []string) map[string]*listEntry {
	entries := make(map[string]*listEntry, len(folders)+len(subs))
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
	for _, name := range subs {
		e, ok := entries[name]
		if !ok {
			e = &listEntry{name: name}
			entries[name] = e
		}
		e.subscribed = true
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
