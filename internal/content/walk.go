package content

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/emersion/go-message"
)

// walker carries the per-message budgets across the MIME tree and archives.
type walker struct {
	p        Policy
	raw      []byte
	stop     bool // stop at the first hit (Check) or list everything
	parts    int
	entries  int
	expanded int64
	hits     []Verdict
	atts     []Attachment
	topErr   error
	markers  int // -1 unknown, 0 no, 1 yes: raw message has attachment-like params
}

func newWalker(p Policy, raw []byte, stop bool) *walker {
	return &walker{p: p, raw: raw, stop: stop, markers: -1}
}

// hit records a verdict and reports whether the walk must end.
func (w *walker) hit(rule string, path []string, reason string) bool {
	part := joinPath(path)
	r := reason
	if part != "" {
		r = safeASCII(lastLabel(path), 60) + ": " + reason
	}
	w.hits = append(w.hits, Verdict{
		Action: w.p.Action,
		Rule:   rule,
		Part:   part,
		Reason: safeASCII(r, maxReply),
	})
	return w.stop
}

func lastLabel(path []string) string {
	if len(path) == 0 {
		return ""
	}
	return path[len(path)-1]
}

func (w *walker) run() {
	e, err := message.Read(bytes.NewReader(w.raw))
	if e == nil {
		w.topErr = err
		if w.rawHasAttachmentMarkers() {
			w.hit(RuleMIMEMalformed, nil, "message header cannot be parsed and it declares attachments")
		}
		return
	}
	w.walkEntity(e, err, "", nil, 0, 0)
}

// rawHasAttachmentMarkers searches the raw message for header parameters
// that only attachments carry. It is the fallback when the MIME structure
// cannot be followed: then what we could not see may be an attachment.
func (w *walker) rawHasAttachmentMarkers() bool {
	if w.markers < 0 {
		w.markers = 0
		low := bytes.ToLower(w.raw)
		for _, m := range []string{"filename=", "filename*", "name=", "name*=", "name*0", "content-disposition: attachment", "content-disposition:attachment"} {
			if bytes.Contains(low, []byte(m)) {
				w.markers = 1
				break
			}
		}
	}
	return w.markers == 1
}

// partInfo is what the headers of one entity declare.
type partInfo struct {
	mediaType  string
	disp       string
	names      []string
	attachLike bool
}

func readPartInfo(h *message.Header) partInfo {
	var pi partInfo
	mt, params, err := h.ContentType()
	if err != nil {
		mt, _, _ = strings.Cut(mt, ";")
	}
	pi.mediaType = strings.ToLower(strings.TrimSpace(mt))
	seen := map[string]bool{}
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			pi.names = append(pi.names, n)
		}
	}
	disp, dparams, _ := h.ContentDisposition()
	disp, _, _ = strings.Cut(disp, ";")
	pi.disp = strings.ToLower(strings.TrimSpace(disp))
	add(dparams["filename"])
	add(params["name"])
	for _, n := range headerNames(h.Get("Content-Disposition")) {
		add(n)
	}
	for _, n := range headerNames(h.Get("Content-Type")) {
		add(n)
	}
	pi.attachLike = len(pi.names) > 0 || pi.disp == "attachment" ||
		!(strings.HasPrefix(pi.mediaType, "text/") || strings.HasPrefix(pi.mediaType, "multipart/") ||
			strings.HasPrefix(pi.mediaType, "message/"))
	return pi
}

// walkEntity inspects one MIME entity. idx is its MIME part number ("" for
// the root), path the labels of the enclosing attachments, mimeDepth the
// multipart nesting and contDepth the archive/embedded-message nesting.
// It returns true when the walk must stop.
func (w *walker) walkEntity(e *message.Entity, entErr error, idx string, path []string, mimeDepth, contDepth int) bool {
	w.parts++
	if w.parts > w.p.MaxParts {
		return w.hit(RuleMIMETooMany, path, fmt.Sprintf("message has more than %d MIME parts", w.p.MaxParts))
	}
	pi := readPartInfo(&e.Header)
	label := partLabel(pi, idx)

	if strings.HasPrefix(pi.mediaType, "multipart/") {
		if mimeDepth >= maxMultipartDepth {
			return w.hit(RuleMIMETooDeep, append(path, label), "MIME structure is nested too deeply")
		}
		mr := e.MultipartReader()
		if mr == nil {
			return false
		}
		for i := 1; ; i++ {
			child, err := mr.NextPart()
			if child == nil {
				if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return false
				}
				if w.rawHasAttachmentMarkers() {
					return w.hit(RuleMIMEMalformed, append(path, label), "MIME structure cannot be parsed and it declares attachments")
				}
				return false
			}
			if w.walkEntity(child, err, childIndex(idx, i), path, mimeDepth+1, contDepth) {
				return true
			}
		}
	}

	here := append(path[:len(path):len(path)], label)
	stop := false
	for _, n := range pi.names {
		if h, ok := w.p.classifyName(n); ok {
			if w.hit(h.rule, here, nameReason(h)) {
				return true
			}
			stop = true
			break
		}
	}
	if !stop && blockedTypes[pi.mediaType] {
		if w.hit(RuleBlockedType, here, "attachment has a blocked content type "+pi.mediaType) {
			return true
		}
	}

	// Decode the body: decoded data is never larger than the raw message.
	data, readErr := io.ReadAll(io.LimitReader(e.Body, int64(len(w.raw))+1))
	if pi.attachLike && (entErr != nil && message.IsUnknownEncoding(entErr) || readErr != nil && !errors.Is(readErr, io.ErrUnexpectedEOF)) {
		if w.hit(RuleMIMEMalformed, here, "attachment cannot be decoded") {
			return true
		}
	}
	if !w.stop {
		fn := ""
		if len(pi.names) > 0 {
			fn = pi.names[0]
		}
		w.atts = append(w.atts, Attachment{Path: joinPath(here), Filename: fn, ContentType: pi.mediaType, Size: int64(len(data))})
	}

	if pi.mediaType == "message/rfc822" || pi.mediaType == "message/global" {
		if contDepth+1 > w.p.MaxDepth {
			return w.hit(RuleMIMETooDeep, here, "embedded messages are nested too deeply")
		}
		inner, err := message.Read(bytes.NewReader(data))
		if inner == nil {
			return false // not a message after all; nothing to open
		}
		return w.walkEntity(inner, err, "", here, mimeDepth+1, contDepth+1)
	}
	return w.inspectData(data, pi.names, here, contDepth)
}

// inspectData applies the content checks (magic bytes, archives) to a
// decoded leaf or archive entry.
func (w *walker) inspectData(data []byte, names []string, here []string, contDepth int) bool {
	if kind := execKind(data); kind != "" && !w.nativeExecutable(kind, names) {
		if w.hit(RuleExecutableMagic, here, "attachment is a "+kind+" executable in disguise") {
			return true
		}
	}
	zipNamed := false
	for _, n := range names {
		if _, ext := splitExt(strings.TrimRight(n, ". ")); ext == "zip" {
			zipNamed = true
		}
	}
	if isZip(data) || zipNamed {
		return w.inspectZip(data, here, contDepth+1)
	}
	return false
}

// nativeExecutable reports whether a program carries an honest executable
// extension that the administrator chose to allow.
func (w *walker) nativeExecutable(kind string, names []string) bool {
	if kind != "PE" || len(names) == 0 {
		return false
	}
	for _, n := range names {
		_, ext := splitExt(strings.TrimRight(n, ". "))
		if !peNativeExt[ext] || w.p.BlockedExt[ext] {
			return false
		}
	}
	return true
}

func nameReason(h nameHit) string {
	switch h.rule {
	case RuleRTLOverride:
		return "file name hides its real extension with a direction override"
	case RuleDoubleExt:
		return "file name hides a blocked ." + h.ext + " behind another extension"
	default:
		return "blocked file type ." + h.ext
	}
}

func partLabel(pi partInfo, idx string) string {
	if len(pi.names) > 0 {
		return pi.names[0]
	}
	if idx == "" {
		return "message body (" + pi.mediaType + ")"
	}
	return "part " + idx + " (" + pi.mediaType + ")"
}

func childIndex(parent string, i int) string {
	if parent == "" {
		return strconv.Itoa(i)
	}
	return parent + "." + strconv.Itoa(i)
}
