package mailbox

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ---- dovecot-uidlist -------------------------------------------------

// uidlist is a parsed dovecot-uidlist. Dovecot's version 3:
//
//	3 V<uidvalidity> N<nextuid> G<guid>
//	<uid> [<ext fields>] :<basename>
//
// Version 1 ("1 <uidvalidity> <nextuid>", "<uid> <basename>") is read too.
// Extension fields (W<vsize>, S<size>, ...) of a line are kept as they are.
type uidlist struct {
	uidValidity uint32
	nextUID     uint32
	guid        string
	recs        []uidRec // ascending UID, unique UIDs and keys
}

type uidRec struct {
	uid uint32
	ext string // Dovecot's extension fields, space-separated, or ""
	key string
}

var errBadUidlist = errors.New("malformed dovecot-uidlist")

const maxUidlistSize = 64 << 20

// maxUidlistLine bounds one line; a longer one is damage and skipped.
const maxUidlistLine = 64 << 10

func parseUidlist(data []byte) (*uidlist, error) {
	if len(data) > maxUidlistSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", errBadUidlist, maxUidlistSize)
	}
	line, rest, _ := bytes.Cut(data, []byte{'\n'})
	hdr := strings.Fields(string(line))
	if len(hdr) == 0 {
		return nil, fmt.Errorf("%w: no header", errBadUidlist)
	}
	l := &uidlist{}
	var version int
	switch hdr[0] {
	case "1":
		version = 1
		if len(hdr) < 3 {
			return nil, fmt.Errorf("%w: short version 1 header", errBadUidlist)
		}
		v, err1 := strconv.ParseUint(hdr[1], 10, 32)
		n, err2 := strconv.ParseUint(hdr[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: bad version 1 header", errBadUidlist)
		}
		l.uidValidity, l.nextUID = uint32(v), uint32(n)
	case "3":
		version = 3
		for _, f := range hdr[1:] {
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case 'V', 'N':
				n, err := strconv.ParseUint(f[1:], 10, 32)
				if err != nil {
					return nil, fmt.Errorf("%w: bad header field %q", errBadUidlist, f)
				}
				if f[0] == 'V' {
					l.uidValidity = uint32(n)
				} else {
					l.nextUID = uint32(n)
				}
			case 'G':
				if validGUID(f[1:]) {
					l.guid = f[1:]
				}
			}
		}
	default:
		return nil, fmt.Errorf("%w: unsupported version %q", errBadUidlist, hdr[0])
	}
	if l.uidValidity == 0 {
		return nil, fmt.Errorf("%w: no UIDVALIDITY", errBadUidlist)
	}
	seen := make(map[string]bool)
	var last uint32
	for len(rest) > 0 {
		var b []byte
		b, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(b) == 0 || len(b) > maxUidlistLine {
			continue // a damaged line costs only itself
		}
		ln := string(b)
		num, tail, ok := strings.Cut(ln, " ")
		if !ok {
			continue
		}
		uid, err := strconv.ParseUint(num, 10, 32)
		if err != nil || uid == 0 || uint32(uid) <= last {
			continue // Dovecot refuses unordered UIDs; skip the line
		}
		var ext, key string
		if version == 1 {
			key = tail
		} else {
			i := strings.IndexByte(tail, ':')
			if i < 0 {
				continue
			}
			ext = strings.TrimSpace(tail[:i])
			key = tail[i+1:]
		}
		if !validKey(key) || seen[key] {
			continue
		}
		seen[key] = true
		last = uint32(uid)
		l.recs = append(l.recs, uidRec{uid: uint32(uid), ext: ext, key: key})
	}
	if last >= l.nextUID {
		l.nextUID = last + 1
	}
	if l.nextUID == 0 && last == 0 {
		l.nextUID = 1
	}
	// A UID or UIDNEXT at the top of the range (damage, most likely) would
	// wrap: the list is unusable, and the folder starts over with a new
	// UIDVALIDITY rather than ever giving one UID to two messages.
	if last == math.MaxUint32 || l.nextUID == 0 || l.nextUID == math.MaxUint32 {
		return nil, fmt.Errorf("%w: UIDs exhausted (UIDNEXT %d)", errBadUidlist, l.nextUID)
	}
	return l, nil
}

// marshal writes l in version 3.
func (l *uidlist) marshal() []byte {
	var b bytes.Buffer
	b.Grow(32 + 48*len(l.recs))
	fmt.Fprintf(&b, "3 V%d N%d", l.uidValidity, l.nextUID)
	if l.guid != "" {
		b.WriteString(" G")
		b.WriteString(l.guid)
	}
	b.WriteByte('\n')
	for _, r := range l.recs {
		b.WriteString(strconv.FormatUint(uint64(r.uid), 10))
		if r.ext != "" {
			b.WriteByte(' ')
			b.WriteString(r.ext)
		}
		b.WriteString(" :")
		b.WriteString(r.key)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func validGUID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// validKey reports whether s can be a message's base name.
func validKey(s string) bool {
	return s != "" && len(s) <= 255 && s[0] != '.' && !strings.ContainsAny(s, "/:") && !hasControl(s)
}

// ---- dovecot-keywords --------------------------------------------------

// maxKeywords is the number of keyword letters (a–z).
const maxKeywords = 26

// maxKeywordLen bounds a keyword's length.
const maxKeywordLen = 100

// keywordTable maps letter index (0 = 'a') to keyword; "" is unused.
type keywordTable [maxKeywords]string

// parseKeywords reads dovecot-keywords: "<index> <keyword>" lines. Bad
// lines, out-of-range indexes and duplicates are skipped.
func parseKeywords(data []byte) keywordTable {
	var t keywordTable
	if len(data) > 64<<10 {
		data = data[:64<<10]
	}
	for _, ln := range strings.Split(string(data), "\n") {
		num, kw, ok := strings.Cut(strings.TrimRight(ln, "\r"), " ")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || i >= maxKeywords || t[i] != "" || !validKeyword(kw) || t.index(kw) >= 0 {
			continue
		}
		t[i] = kw
	}
	return t
}

func (t *keywordTable) marshal() []byte {
	var b bytes.Buffer
	for i, kw := range t {
		if kw != "" {
			fmt.Fprintf(&b, "%d %s\n", i, kw)
		}
	}
	return b.Bytes()
}

// index returns kw's letter index (matched without regard to case), or -1.
func (t *keywordTable) index(kw string) int {
	for i, k := range t {
		if k != "" && strings.EqualFold(k, kw) {
			return i
		}
	}
	return -1
}

// names returns the defined keywords, sorted.
func (t *keywordTable) names() []string {
	var out []string
	for _, k := range t {
		if k != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// validKeyword reports whether kw is an IMAP atom usable as a keyword.
func validKeyword(kw string) bool {
	if kw == "" || len(kw) > maxKeywordLen {
		return false
	}
	for i := 0; i < len(kw); i++ {
		c := kw[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// ---- flags in file names -------------------------------------------------

// System flags as bits; the order is the letters' (D F P R S T).
const (
	sysDraft uint8 = 1 << iota
	sysFlagged
	sysPassed
	sysReplied
	sysSeen
	sysTrashed
)

const sysLetters = "DFPRST"

var sysNames = [...]string{FlagDraft, FlagFlagged, FlagForwarded, FlagAnswered, FlagSeen, FlagDeleted}

// sysFlag returns the bit of an IMAP system flag name (any case), or 0.
func sysFlag(name string) uint8 {
	for i, n := range sysNames {
		if strings.EqualFold(n, name) {
			return 1 << i
		}
	}
	return 0
}

// parseFileName splits a Maildir file name "BASE[:2,FLAGS]" into its key
// (BASE) and flags: system bits and keyword bits (a = bit 0). Letters that
// mean nothing here are ignored.
func parseFileName(name string) (key string, sys uint8, kw uint32, ok bool) {
	key, info, _ := strings.Cut(name, ":")
	if !validKey(key) {
		return "", 0, 0, false
	}
	if flags, ok := strings.CutPrefix(info, "2,"); ok {
		for i := 0; i < len(flags); i++ {
			c := flags[i]
			if j := strings.IndexByte(sysLetters, c); j >= 0 {
				sys |= 1 << j
			} else if c >= 'a' && c <= 'z' {
				kw |= 1 << (c - 'a')
			}
		}
	}
	return key, sys, kw, true
}

// fileName is a message's name in cur/: "KEY:2," and its flag letters in
// order (D F P R S T, then a–z).
func fileName(key string, sys uint8, kw uint32) string {
	b := make([]byte, 0, len(key)+3+6+26)
	b = append(b, key...)
	b = append(b, ":2,"...)
	for i := 0; i < len(sysLetters); i++ {
		if sys&(1<<i) != 0 {
			b = append(b, sysLetters[i])
		}
	}
	for i := 0; i < maxKeywords; i++ {
		if kw&(1<<i) != 0 {
			b = append(b, byte('a'+i))
		}
	}
	return string(b)
}

// sizeFromKey returns the ",S=<size>" field of a base name.
func sizeFromKey(key string) (int64, bool) {
	i := strings.Index(key, ",S=")
	if i < 0 {
		return 0, false
	}
	v := key[i+3:]
	if j := strings.IndexByte(v, ','); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// ---- folder names -------------------------------------------------------

// Folder name bounds. Maildir++ keeps every folder as one directory entry
// ".NAME" in modified UTF-7, so the encoded name must also fit NAME_MAX.
const (
	maxFolderLevel = 255
	maxFolderName  = 1024
	maxFolders     = 1000
	inboxName      = "INBOX"
)

// canonFolder checks a folder name of the API and returns it with a
// leading INBOX (any case) spelled "INBOX".
func canonFolder(name string) (string, error) {
	if name == "" || len(name) > maxFolderName || !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: %q", ErrBadFolderName, name)
	}
	levels := strings.Split(name, string(Delimiter))
	for _, l := range levels {
		if l == "" || len(l) > maxFolderLevel || hasControl(l) || strings.ContainsAny(l, `/\*%`) {
			return "", fmt.Errorf("%w: %q", ErrBadFolderName, name)
		}
		for _, r := range l {
			if r >= 0x80 && r < 0xa0 { // C1 controls
				return "", fmt.Errorf("%w: %q", ErrBadFolderName, name)
			}
		}
	}
	if strings.EqualFold(levels[0], inboxName) {
		levels[0] = inboxName
	}
	out := strings.Join(levels, string(Delimiter))
	if out != inboxName && len(diskFolder(out)) > 255 {
		return "", fmt.Errorf("%w: %q is too long", ErrBadFolderName, name)
	}
	return out, nil
}

// diskFolder is the directory name of a folder other than INBOX.
func diskFolder(name string) string { return "." + mutf7Encode(name) }

// folderFromDisk returns the folder name of a user directory's entry, or
// false if the entry is no folder of ours.
func folderFromDisk(entry string) (string, bool) {
	if len(entry) < 2 || entry[0] != '.' || entry == ".." {
		return "", false
	}
	name, err := mutf7Decode(entry[1:])
	if err != nil {
		return "", false
	}
	c, err := canonFolder(name)
	if err != nil || c != name || c == inboxName {
		return "", false
	}
	return c, true
}
