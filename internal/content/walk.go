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
	stop     bool // stop at the first Reject (Check) or list everything
	parts    int
	entries  int
	expanded int64
	held     int64 // bytes held by readHeld, at most p.MaxHeld
	hits     []Verdict
	atts     []Attachment
	topErr   error
	markers  int // -1 unknown, 0 no, 1 yes: raw message has attachment-like params
}

func newWalker(p Policy, raw []byte, stop bool) *walker {
	return &walker{p: p, raw: raw, stop: stop, markers: -1}
}

// hit records a verdict and reports whether the walk must end: in Check
// mode at the first Reject, since nothing found later can be stricter.
// A "cannot inspect" finding under Policy.Uninspectable == Accept is not
// recorded; the walk goes on.
func (w *walker) hit(rule Rule, path []string, reason string) bool {
	action := w.p.Action
	if rule.CannotInspect() {
		action = w.p.Uninspectable
		if action == Accept {
			return false
		}
	}
	part := joinPath(path)
	r := reason
	if part != "" {
		r = safeASCII(lastLabel(path), 60) + ": " + reason
	}
	w.hits = append(w.hits, Verdict{
		Action: action,
		Rule:   rule,
		Part:   part,
		Reason: safeASCII(r, maxReply),
	})
	return w.stop && action == Reject
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
		// Lower-cased a window at a time, not as a copy of the message;
		// windows overlap by more than the longest marker.
		const win, overlap = 32 << 10, 64
		buf := make([]byte, 0, win)
		for off := 0; off < len(w.raw) && w.markers == 0; off += win - overlap {
			buf = append(buf[:0], w.raw[off:min(off+win, len(w.raw))]...)
			for i, c := range buf {
				if 'A' <= c && c <= 'Z' {
					buf[i] = c + 'a' - 'A'
				}
			}
			for _, m := range []string{"filename=", "filename*", "name=", "name*=", "name*0", "content-disposition: attachment", "content-disposition:attachment"} {
				if bytes.Contains(buf, []byte(m)) {
					w.markers = 1
					break
				}
			}
			if off+win >= len(w.raw) {
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
	cte        string
	names      []string
	attachLike bool
	// ambiguous says why the headers can be read in more than one way,
	// or is empty.
	ambiguous string
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
	// Every header instance, not only the first that go-message reads:
	// a client may honour another one.
	for _, v := range h.Values("Content-Disposition") {
		for _, n := range headerNames(v) {
			add(n)
		}
	}
	for _, v := range h.Values("Content-Type") {
		for _, n := range headerNames(v) {
			add(n)
		}
	}
	pi.cte = strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	pi.attachLike = len(pi.names) > 0 || pi.disp == "attachment" ||
		!(strings.HasPrefix(pi.mediaType, "text/") || strings.HasPrefix(pi.mediaType, "multipart/") ||
			strings.HasPrefix(pi.mediaType, "message/"))
	pi.ambiguous = ambiguity(h, pi.names)
	return pi
}

// ambiguity reports why a header can be read in more than one way: a
// Content-Type, Content-Transfer-Encoding or Content-Disposition repeated
// with another value (parsers disagree on which one counts, so the scanner and the
// recipient's client may see different types, encodings or names), or
// file names (Content-Type name=, Content-Disposition filename=, plain or
// RFC 2231) whose extensions differ. Names that differ only in their stem
// are not ambiguous: mailers legitimately give an ASCII fallback next to
// an RFC 2231 name, or convert charsets differently, and every name is
// checked against the list anyway; a different extension is what makes a
// client open another type than the scanner judged.
func ambiguity(h *message.Header, names []string) string {
	for _, f := range []string{"Content-Type", "Content-Transfer-Encoding", "Content-Disposition"} {
		vals := h.Values(f)
		for _, v := range vals[min(1, len(vals)):] {
			// A repeated identical header (a common web-form mailer bug)
			// reads the same whichever copy a parser takes.
			if normHeaderValue(v) != normHeaderValue(vals[0]) {
				return "part has conflicting " + f + " headers"
			}
		}
	}
	first := ""
	for _, n := range names {
		_, ext := splitExt(cleanName(n))
		if ext == "" {
			continue
		}
		if first == "" {
			first = ext
		} else if ext != first {
			return "part declares file names with different extensions"
		}
	}
	return ""
}

// normHeaderValue folds case and white space and drops a trailing ';'.
func normHeaderValue(v string) string {
	return strings.TrimRight(strings.Join(strings.Fields(strings.ToLower(v)), " "), "; ")
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
		if pi.ambiguous != "" {
			if w.hit(RuleMIMEAmbiguous, append(path, label), pi.ambiguous) {
				return true
			}
		}
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
	if w.checkNames(pi.names, here) {
		return true
	}
	if ext, ok := blockedTypes[pi.mediaType]; ok && w.p.BlockedExt[ext] {
		if w.hit(RuleBlockedType, here, "attachment has a blocked content type "+pi.mediaType) {
			return true
		}
	}
	if pi.ambiguous != "" {
		if w.hit(RuleMIMEAmbiguous, here, pi.ambiguous) {
			return true
		}
	}

	if pi.mediaType == "message/rfc822" || pi.mediaType == "message/global" {
		// Streamed, not read into memory first: each level of embedded
		// message would otherwise hold another copy of the message.
		if contDepth+1 > w.p.MaxDepth {
			return w.hit(RuleMIMETooDeep, here, "embedded messages are nested too deeply")
		}
		if pi.attachLike && entErr != nil && message.IsUnknownEncoding(entErr) {
			if w.hit(RuleMIMEMalformed, here, "attachment cannot be decoded") {
				return true
			}
		}
		cr := &countingReader{r: e.Body}
		att := len(w.atts)
		if !w.stop {
			w.atts = append(w.atts, Attachment{Path: joinPath(here), ContentType: pi.mediaType})
			if len(pi.names) > 0 {
				w.atts[att].Filename = pi.names[0]
			}
		}
		inner, err := message.Read(cr)
		stop := inner != nil && w.walkEntity(inner, err, "", here, mimeDepth+1, contDepth+1)
		if stop {
			return true
		}
		if _, err := io.Copy(io.Discard, cr); pi.attachLike && err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			if w.hit(RuleMIMEMalformed, here, "attachment cannot be decoded") {
				return true
			}
		}
		if !w.stop {
			w.atts[att].Size = cr.n
		}
		return false
	}

	// Decode the body: decoded data is never larger than the raw message.
	data, readErr := readBody(e.Body, int64(len(w.raw)))
	uuCTE := uuEncodings[pi.cte]
	if pi.attachLike && !uuCTE && (entErr != nil && message.IsUnknownEncoding(entErr) || readErr != nil && !errors.Is(readErr, io.ErrUnexpectedEOF)) {
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

	if uuCTE {
		// The part itself is uuencoded (Content-Transfer-Encoding:
		// x-uuencode); go-message left it raw. What a client decodes from
		// it is what must be checked.
		if w.inspectEncoded(data, here, contDepth, pi.attachLike) {
			return true
		}
		return false
	}
	if w.inspectFile(file{names: pi.names, ctype: pi.mediaType, data: data}, here, contDepth) {
		return true
	}
	if pi.mediaType == "" || strings.HasPrefix(pi.mediaType, "text/") {
		// Mail clients turn uuencoded and yEnc blocks in a text body into
		// attachments.
		return w.inspectEncoded(data, here, contDepth, false)
	}
	return false
}

// checkNames applies the name rules to every name a part or entry
// declares; it reports whether the walk must stop.
func (w *walker) checkNames(names []string, here []string) bool {
	for _, n := range names {
		if h, ok := w.p.classifyName(n); ok {
			return w.hit(h.rule, here, nameReason(h))
		}
	}
	return false
}

// nativeExecutable reports whether a program carries an honest extension
// for its kind that the administrator chose to allow.
func (w *walker) nativeExecutable(kind string, names []string) bool {
	native := nativeExt[kind]
	if native == nil || len(names) == 0 {
		return false
	}
	for _, n := range names {
		_, ext := splitExt(cleanName(n))
		if !native[ext] || w.p.BlockedExt[ext] {
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
