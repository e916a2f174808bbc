// Package content decides, at the end of DATA, whether a message carries a
// dangerous attachment (scenario S4): an executable or script by name, by a
// disguised name (double extension, right-to-left override), by declared
// Content-Type, by magic bytes, or hidden inside (nested) zip archives.
//
// It exists as a pure package (no network, no global state) so the SMTP
// server can call it synchronously on the received bytes and so it can be
// fuzzed in isolation. Every input is untrusted: the walk is bounded in MIME
// parts, nesting depth, archive entries and decompressed bytes, a zip bomb is
// refused from its declared sizes before anything is expanded, and Check
// never panics.
//
// Dependencies:
//   - github.com/emersion/go-message parses the MIME tree, decodes
//     transfer encodings (base64, quoted-printable) and RFC 2047/2231
//     parameters; it is maintained by the go-smtp author and avoids hand
//     parsing of MIME.
//   - archive/zip (standard library) reads archives from a bytes.Reader of
//     the decoded part; decompression always goes through an io.LimitReader.
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

// Action is what the server should do with the message.
type Action string

// Possible actions.
const (
	Accept Action = "accept"
	Reject Action = "reject"
	Hold   Action = "hold"
)

// Rules reported in Verdict.Rule.
const (
	RuleBlockedExt      = "attachment.blocked_ext"
	RuleDoubleExt       = "attachment.double_ext"
	RuleRTLOverride     = "attachment.rtl_override"
	RuleBlockedType     = "attachment.blocked_type"
	RuleExecutableMagic = "attachment.executable_magic"
	RuleArchiveTooDeep  = "archive.too_deep"
	RuleArchiveBomb     = "archive.bomb"
	RuleArchiveMalform  = "archive.malformed"
	RuleMIMEMalformed   = "mime.malformed"
	RuleMIMETooDeep     = "mime.too_deep"
	RuleMIMETooMany     = "mime.too_many_parts"
)

// Verdict is the outcome of Policy.Check.
type Verdict struct {
	Action Action
	// Rule names the check that fired; empty when Action is Accept.
	Rule string
	// Part is the human path of the offending part, e.g.
	// `invoice.zip > inner.zip > setup.scr`. Printable ASCII only (other
	// characters become '?'), at most 200 characters.
	Part string
	// Reason is one short sentence, safe to put in an SMTP reply: printable
	// ASCII, no CR/LF, at most 200 characters.
	Reason string
}

// Policy configures the checks. The zero value of a numeric field, a nil
// BlockedExt and an empty Action mean the defaults of DefaultPolicy.
type Policy struct {
	// BlockedExt holds blocked file extensions, lower-case, without the dot.
	// nil means DefaultBlockedExt(); an empty non-nil map blocks none.
	BlockedExt map[string]bool
	// Action is what a hit does: Reject (default) or Hold.
	Action Action
	// MaxDepth bounds nesting of containers that hide content: zip
	// archives and embedded messages (message/rfc822). Default 4.
	// Plain multipart nesting is bounded separately (16 levels), because
	// ordinary mail already nests multipart/mixed > alternative > related.
	MaxDepth int
	// MaxEntries bounds the zip entries inspected per message. Default 1000.
	MaxEntries int
	// MaxExpanded bounds the total decompressed bytes examined per message.
	// Default 64 MiB.
	MaxExpanded int64
	// MaxParts bounds the MIME parts per message. Default 500.
	MaxParts int
}

const (
	defaultMaxDepth    = 4
	defaultMaxEntries  = 1000
	defaultMaxExpanded = 64 << 20
	defaultMaxParts    = 500
	maxMultipartDepth  = 16
)

// defaultBlockedExt is the documented default list: Windows executables and
// installers, script hosts, shortcuts and disk images that auto-mount.
var defaultBlockedExt = []string{
	"exe", "pif", "scr", "com", "bat", "cmd", "vbs", "vbe", "js", "jse",
	"wsf", "wsh", "hta", "lnk", "msi", "msp", "ps1", "psm1", "jar", "cpl",
	"reg", "scf", "inf", "iso", "img", "vhd", "vhdx", "application",
	"gadget", "chm", "dll", "sys",
}

// blockedTypes are declared Content-Types that only executables use.
var blockedTypes = map[string]bool{
	"application/x-msdownload":                      true,
	"application/x-dosexec":                         true,
	"application/x-msdos-program":                   true,
	"application/x-ms-dos-executable":               true,
	"application/x-executable":                      true,
	"application/vnd.microsoft.portable-executable": true,
	"application/x-ms-installer":                    true,
	"application/x-msi":                             true,
	"application/x-ms-shortcut":                     true,
	"application/x-ms-application":                  true,
	"application/hta":                               true,
	"application/x-bat":                             true,
	"application/x-msdos-batch":                     true,
	"application/java-archive":                      true,
	"application/x-java-archive":                    true,
	"application/x-vbscript":                        true,
	"text/vbscript":                                 true,
	"application/javascript":                        true,
	"application/x-javascript":                      true,
	"text/javascript":                               true,
	"application/x-mach-binary":                     true,
	"application/x-elf":                             true,
	"application/x-sharedlib":                       true,
}

// DefaultBlockedExt returns a fresh copy of the default blocked extensions:
// exe pif scr com bat cmd vbs vbe js jse wsf wsh hta lnk msi msp ps1 psm1
// jar cpl reg scf inf iso img vhd vhdx application gadget chm dll sys.
func DefaultBlockedExt() map[string]bool {
	m := make(map[string]bool, len(defaultBlockedExt))
	for _, e := range defaultBlockedExt {
		m[e] = true
	}
	return m
}

// DefaultPolicy returns the default policy: reject, depth 4, 1000 zip
// entries, 64 MiB expanded, 500 MIME parts, DefaultBlockedExt.
func DefaultPolicy() Policy {
	return Policy{
		BlockedExt:  DefaultBlockedExt(),
		Action:      Reject,
		MaxDepth:    defaultMaxDepth,
		MaxEntries:  defaultMaxEntries,
		MaxExpanded: defaultMaxExpanded,
		MaxParts:    defaultMaxParts,
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
	return p
}

// Check inspects msg, a full RFC 5322 message, and returns the first hit as
// a Verdict with the policy's Action, or an Accept verdict. It never panics
// and its time and memory are bounded by len(msg) and the policy's limits.
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
	if len(w.hits) == 0 {
		return Verdict{Action: Accept}
	}
	return w.hits[0]
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

// Attachments lists the leaf parts and zip entries of msg within the bounds
// of p. It returns an error only when the top-level header cannot be parsed.
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
