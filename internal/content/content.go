// Package content decides, at the end of DATA, whether a message carries a
// dangerous attachment (scenario S4): an executable or script by name, by a
// disguised name (double extension, right-to-left override), by declared
// Content-Type, by magic bytes, a scripted SVG image, or any of these hidden
// inside containers: zip, tar (ustar, pax, GNU), gzip, bzip2 and any nesting
// of them (.tar.gz, zip in tar.gz, ...), embedded messages, and uuencoded or
// yEnc blocks in text bodies.
//
// It exists as a pure package (no network, no global state) so the SMTP
// server can call it synchronously on the received bytes and so it can be
// fuzzed in isolation. Every input is untrusted: the walk is bounded in MIME
// parts, container depth, archive entries and decompressed bytes (one
// budget per message shared by every archive and nesting level), a zip bomb
// is refused from its declared sizes before anything is expanded, a stream
// (gzip, bzip2) is cut off as soon as its expansion ratio or the budget is
// exceeded, and Check never panics.
//
// What the scanner cannot see is not let through by default: encrypted
// entries, formats the standard library cannot read (7z, rar, xz, cab, ...),
// unsupported zip methods (LZMA, PPMd, deflate64, ...), corrupt archives and
// exceeded budgets are "cannot inspect" findings (Rule.CannotInspect), acted
// on like any other hit unless Policy.Uninspectable says otherwise. So is
// ambiguous MIME (two Content-Type, Content-Transfer-Encoding or
// Content-Disposition headers, or file names whose extensions disagree),
// because the scanner and the recipient's client may then read different
// things.
//
// Memory: Check must not let a small message claim a lot of memory (a
// 3.8 MB message once made it hold 64 MiB), because the server reserves
// memory for it from a fixed budget before calling it. So nothing
// decompressed is held whole except where the format demands it:
// archive entries stream through the checks (names need no bytes,
// magic checks the first 8 KiB, tar, gzip and bzip2 are read as
// streams). A zip's directory is at its end, so a zip nested in gzip or
// tar must be held; so must an SVG, searched as a whole. Those are held
// in 64 KiB chunks, charged with bzip2's block tables to one per-message
// budget, Policy.MaxHeld (default 4 MiB); what does not fit is a "cannot
// inspect" finding (archive.bomb), acted on per Policy.Uninspectable. We
// chose this over spilling to a temporary file: no disk I/O, no temp
// directory to configure or leak, and a multi-megabyte zip inside a
// .tar.gz is rare in mail, while an administrator who must accept it can
// raise MaxHeld. MIME parts themselves are decoded into memory (never
// larger than the message); embedded messages are streamed.
//
// Worst case, one Check holds on top of msg (Policy.MemoryBound):
//
//	4*len(msg) + 2*MaxHeld + 2 MiB
//
// 4*len(msg): a decoded part (read in chunks, then joined: twice its size
// while reading), plus for an SVG its lower-cased and compacted copies,
// or for a text body its uuencoded/yEnc blocks, or for a zip the
// names in its directory. 2*MaxHeld: the held bytes plus the directory
// names of held zips. 2 MiB: decompressor windows, zip directory entries
// (bounded by MaxEntries, counted before the directory is parsed) and
// parser state. DomainPolicies.Check runs one Check at a time, so its
// bound is the largest of its policies' (DomainPolicies.MemoryBound).
//
// Dependencies:
//   - github.com/emersion/go-message parses the MIME tree, decodes
//     transfer encodings (base64, quoted-printable) and RFC 2047/2231
//     parameters; it is maintained by the go-smtp author and avoids hand
//     parsing of MIME.
//   - archive/zip, archive/tar, compress/gzip and compress/bzip2 (standard
//     library) read the containers; every decompressed byte goes through a
//     meter that charges the per-message budget.
//   - uuencode and yEnc have no maintained Go decoder; the small decoders
//     in uu.go are fuzzed.
//
// Malformed MIME: a part whose header or body cannot be decoded is refused
// (rule mime.malformed) only when it looks like an attachment (a file name,
// an "attachment" disposition or a non-text type), because that is where an
// attacker would hide a payload from the scanner while a lenient mail client
// still opens it. If the MIME structure itself breaks (unparseable part
// header, bad boundary) the raw message is searched for attachment-like
// header parameters; if there are none the message is accepted, since plain
// text that a sloppy mailer mangled is not an attachment threat.
package content

import (
	"fmt"
	"log/slog"
	"maps"
	"strings"
)

// Action is what the server should do with a message. The zero value is
// "unset" (a Policy field left to its default); the order of the defined
// values is their strictness, used when several verdicts apply to one
// message: Reject over Defer over Hold over Accept.
type Action int

// Possible actions.
const (
	Accept Action = iota + 1 // deliver
	Hold                     // queue as held (quarantine), with the rule that fired
	Defer                    // 451: try again later (a scanner is unavailable)
	Reject                   // 550 5.7.1 at the end of DATA
)

var actionNames = map[Action]string{Accept: "accept", Hold: "hold", Defer: "defer", Reject: "reject"}

// String returns the configuration spelling: accept, hold, defer, reject,
// or "" for the zero value.
func (a Action) String() string { return actionNames[a] }

// MarshalText implements encoding.TextMarshaler (JSON, TOML, logs).
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseAction.
func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ParseAction parses accept, hold, defer or reject (any case); "" is the
// zero value (unset).
func ParseAction(s string) (Action, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return 0, nil
	}
	for a, n := range actionNames {
		if n == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("content: unknown action %q (want accept, hold, defer or reject)", s)
}

// Rule names the check that fired. Its string form is stable: it appears
// in logs, in the queue's "rule" of held mail and in guard signals.
type Rule string

// Rules reported in Verdict.Rule.
const (
	RuleBlockedExt      Rule = "attachment.blocked_ext"
	RuleDoubleExt       Rule = "attachment.double_ext"
	RuleRTLOverride     Rule = "attachment.rtl_override"
	RuleBlockedType     Rule = "attachment.blocked_type"
	RuleExecutableMagic Rule = "attachment.executable_magic"
	RuleActiveContent   Rule = "attachment.active_content"
	RuleMIMEMalformed   Rule = "mime.malformed"
	RuleMIMEAmbiguous   Rule = "mime.ambiguous"
	RuleMIMETooDeep     Rule = "mime.too_deep"
	RuleMIMETooMany     Rule = "mime.too_many_parts"

	// The "cannot inspect" rules: a container whose content the scanner
	// could not see. See Rule.CannotInspect and Policy.Uninspectable.
	RuleArchiveTooDeep     Rule = "archive.too_deep"
	RuleArchiveBomb        Rule = "archive.bomb"
	RuleArchiveMalform     Rule = "archive.malformed"
	RuleArchiveEncrypted   Rule = "archive.encrypted"
	RuleArchiveUnsupported Rule = "archive.unsupported"

	// Rules of the virus scanner stage (set by the server, not by Check).
	RuleVirus              Rule = "virus"
	RuleScannerUnavailable Rule = "clamd.unavailable"
)

// CannotInspect reports whether r is a "cannot inspect" finding: an
// archive that is encrypted, in a format or compression method the
// standard library cannot read (7z, rar, LZMA or PPMd zip entries, ...),
// corrupt, nested too deeply or over the decompression budgets. What the
// scanner could not see may be anything, so by default these are as
// dangerous as an executable; Policy.Uninspectable can relax them.
func (r Rule) CannotInspect() bool {
	switch r {
	case RuleArchiveTooDeep, RuleArchiveBomb, RuleArchiveMalform, RuleArchiveEncrypted, RuleArchiveUnsupported:
		return true
	}
	return false
}

// Verdict is the outcome of Policy.Check (and of the server's content
// stage as a whole).
type Verdict struct {
	Action Action
	// Rule names the check that fired; empty when Action is Accept.
	Rule Rule
	// Part is the human path of the offending part, e.g.
	// `invoice.zip > inner.zip > setup.scr`. Printable ASCII only (other
	// characters become '?'), at most 200 characters.
	Part string
	// Reason is one short sentence, safe to put in an SMTP reply: printable
	// ASCII, no CR/LF, at most 200 characters.
	Reason string
}

// stricter reports whether v should win over w when both apply.
func (v Verdict) stricter(w Verdict) bool { return v.Action > w.Action }

// Policy configures the checks. The zero value of a numeric field, a nil
// BlockedExt and a zero Action mean the defaults of DefaultPolicy.
type Policy struct {
	// BlockedExt holds blocked file extensions, lower-case, without the dot.
	// nil means DefaultBlockedExt(); an empty non-nil map blocks none.
	BlockedExt map[string]bool
	// Action is what a hit does: Reject (default) or Hold.
	Action Action
	// Uninspectable is what a "cannot inspect" finding (Rule.CannotInspect)
	// does: zero means the same as Action; Accept lets such archives
	// through (the name checks on their entries still apply); Hold or
	// Reject.
	Uninspectable Action
	// MaxDepth bounds nesting of containers that hide content: archives
	// (zip, tar, gzip, bzip2; a .tar.gz is two levels) and embedded
	// messages (message/rfc822). Default 4.
	// Plain multipart nesting is bounded separately (16 levels), because
	// ordinary mail already nests multipart/mixed > alternative > related.
	MaxDepth int
	// MaxEntries bounds the archive entries inspected per message. Default 1000.
	MaxEntries int
	// MaxExpanded bounds the total decompressed bytes examined per message,
	// over all archives and nesting levels. Default 64 MiB.
	MaxExpanded int64
	// MaxParts bounds the MIME parts per message. Default 500.
	MaxParts int
	// MaxHeld bounds the decompressed bytes held in memory at once per
	// message: a zip or SVG found inside another archive must be read
	// whole, and one larger than what is left of MaxHeld is a "cannot
	// inspect" finding (archive.bomb). Everything else is streamed.
	// A bzip2 decompressor's tables (3.6 MB) are charged to it too.
	// Default 4 MiB. MaxExpanded bounds the work (CPU); MaxHeld the
	// memory. See the package doc for the memory of one Check.
	MaxHeld int64
}

const (
	defaultMaxDepth    = 4
	defaultMaxEntries  = 1000
	defaultMaxExpanded = 64 << 20
	defaultMaxParts    = 500
	defaultMaxHeld     = 4 << 20
	maxMultipartDepth  = 16
)

// DefaultBlockedExt returns a fresh copy of the default blocked extensions
// (the list and the reasons for it are in lists.go).
func DefaultBlockedExt() map[string]bool {
	m := make(map[string]bool, len(defaultBlockedExt))
	for _, e := range defaultBlockedExt {
		m[e] = true
	}
	return m
}

// DefaultPolicy returns the default policy: reject, depth 4, 1000 zip
// entries, 64 MiB expanded, 4 MiB held, 500 MIME parts, DefaultBlockedExt.
func DefaultPolicy() Policy {
	return Policy{
		BlockedExt:  DefaultBlockedExt(),
		Action:      Reject,
		MaxDepth:    defaultMaxDepth,
		MaxEntries:  defaultMaxEntries,
		MaxExpanded: defaultMaxExpanded,
		MaxParts:    defaultMaxParts,
		MaxHeld:     defaultMaxHeld,
	}
}

// normalized fills defaults and canonicalises BlockedExt keys (lower-case,
// no leading dot) on a copy, so callers' maps are never modified.
func (p Policy) normalized() Policy {
	if p.BlockedExt == nil {
		p.BlockedExt = DefaultBlockedExt()
	} else {
		m := make(map[string]bool, len(p.BlockedExt))
		for k, v := range maps.All(p.BlockedExt) {
			if v {
				m[strings.TrimLeft(strings.ToLower(strings.TrimSpace(k)), ".")] = true
			}
		}
		p.BlockedExt = m
	}
	if p.Action != Hold {
		p.Action = Reject
	}
	switch p.Uninspectable {
	case Accept, Hold, Reject:
	default:
		p.Uninspectable = p.Action
	}
	if p.MaxDepth <= 0 {
		p.MaxDepth = defaultMaxDepth
	}
	if p.MaxEntries <= 0 {
		p.MaxEntries = defaultMaxEntries
	}
	if p.MaxExpanded <= 0 {
		p.MaxExpanded = defaultMaxExpanded
	}
	if p.MaxParts <= 0 {
		p.MaxParts = defaultMaxParts
	}
	if p.MaxHeld <= 0 {
		p.MaxHeld = defaultMaxHeld
	}
	return p
}

// Check inspects msg, a full RFC 5322 message, and returns the first hit as
// a Verdict with the policy's Action, or an Accept verdict. When hits with
// different actions occur (Policy.Uninspectable differs from Action), the
// strictest wins. It never panics, its time is bounded by len(msg) and
// the policy's limits, and its memory by p.MemoryBound(len(msg)).
func (p Policy) Check(msg []byte) (v Verdict) {
	p = p.normalized()
	defer func() {
		if r := recover(); r != nil {
			// A bug, not an input problem: fail closed, loudly.
			slog.Error("content: panic while inspecting message", "panic", fmt.Sprint(r))
			v = Verdict{Action: p.Action, Rule: RuleMIMEMalformed, Reason: "message could not be inspected"}
		}
	}()
	w := newWalker(p, msg, true)
	w.run()
	v = Verdict{Action: Accept}
	for _, h := range w.hits {
		if h.stricter(v) {
			v = h
		}
	}
	return v
}

// Attachment describes one leaf part or archive entry, for logging.
type Attachment struct {
	// Path is the human path, like Verdict.Part.
	Path string
	// Filename is the declared file name (or archive entry name), raw.
	Filename string
	// ContentType is the declared media type; empty for archive entries.
	ContentType string
	// Size is the decoded size in bytes (declared uncompressed size for
	// archive entries).
	Size int64
}

// Attachments lists the leaf parts, archive entries and uuencoded or yEnc
// blocks of msg within the bounds of p. It returns an error only when the top-level header cannot be parsed.
func Attachments(msg []byte, p Policy) (atts []Attachment, err error) {
	p = p.normalized()
	defer func() {
		if r := recover(); r != nil {
			slog.Error("content: panic while listing attachments", "panic", fmt.Sprint(r))
			err = fmt.Errorf("content: listing attachments: internal error: %v", r)
		}
	}()
	w := newWalker(p, msg, false)
	w.run()
	if w.topErr != nil {
		return w.atts, fmt.Errorf("content: parsing message header: %w", w.topErr)
	}
	return w.atts, nil
}

// MemoryBound is the most memory one Check of a msgLen-byte message
// under p holds at once, on top of msg itself, and also what the
// regression tests hold it to in total allocations for the worst shapes
// they know (see "Memory" in the package doc). A caller that budgets
// memory reserves this much before calling Check.
func (p Policy) MemoryBound(msgLen int) int64 {
	p = p.normalized()
	return 4*int64(msgLen) + 2*p.MaxHeld + 2<<20
}
