package content

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

const (
	// sniffLen is how much of each archive entry is expanded to look for
	// executable magic; PE headers sit well within it.
	sniffLen = 8 << 10
	// maxRatio is the compression ratio above which a large entry is a
	// bomb: ordinary documents and logs stay far below it, while runs of
	// zeros reach about 1000.
	maxRatio = 200
	// ratioFloor is the expanded size below which the ratio is not judged.
	ratioFloor = 1 << 20
)

// inspectZip checks the entries of a zip archive held in data. depth is
// the container depth of this archive. Nothing is expanded past the
// remaining MaxExpanded budget, and declared sizes are judged first so a
// bomb is refused without decompressing it.
func (w *walker) inspectZip(data []byte, here []string, depth int) bool {
	if depth > w.p.MaxDepth {
		return w.hit(RuleArchiveTooDeep, here, fmt.Sprintf("archives are nested more than %d deep", w.p.MaxDepth))
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		// A client or 7-Zip may still open what archive/zip refuses, so an
		// archive that cannot be inspected is not let through.
		return w.hit(RuleArchiveMalform, here, "archive cannot be read")
	}
	w.entries += len(zr.File)
	if w.entries > w.p.MaxEntries {
		return w.hit(RuleArchiveBomb, here, fmt.Sprintf("archives hold more than %d entries", w.p.MaxEntries))
	}
	for _, f := range zr.File {
		if w.inspectEntry(f, here, depth) {
			return true
		}
	}
	return false
}

func (w *walker) inspectEntry(f *zip.File, parent []string, depth int) bool {
	here := append(parent[:len(parent):len(parent)], f.Name)
	if strings.HasSuffix(f.Name, "/") {
		return false // directory
	}
	if h, ok := w.p.classifyName(f.Name); ok {
		if w.hit(h.rule, here, nameReason(h)) {
			return true
		}
	}
	if !w.stop {
		w.atts = append(w.atts, Attachment{Path: joinPath(here), Filename: f.Name, Size: int64(min(f.UncompressedSize64, 1<<62))})
	}
	if f.Flags&0x1 != 0 {
		return false // encrypted: only the name can be checked
	}
	size, csize := f.UncompressedSize64, f.CompressedSize64
	remaining := w.p.MaxExpanded - w.expanded
	if size > uint64(w.p.MaxExpanded)*16 {
		return w.hit(RuleArchiveBomb, here, "archive entry expands to an excessive size")
	}
	if size >= ratioFloor && (csize == 0 || size/csize > maxRatio) {
		return w.hit(RuleArchiveBomb, here, "archive entry has an excessive compression ratio")
	}
	rc, err := f.Open()
	if err != nil {
		if errors.Is(err, zip.ErrAlgorithm) {
			return false // unsupported method: the name was all we could check
		}
		return w.hit(RuleArchiveMalform, here, "archive entry cannot be read")
	}
	defer rc.Close()

	n := min(remaining, int64(sniffLen))
	head, err := io.ReadAll(io.LimitReader(rc, n))
	w.expanded += int64(len(head))
	if err != nil {
		return w.hit(RuleArchiveMalform, here, "archive entry is corrupt or lies about its size")
	}
	kind := execKind(head)
	nested := isZip(head)
	if !nested {
		if _, ext := splitExt(f.Name); ext == "zip" {
			nested = true
		}
	}
	if kind == "" && !nested {
		if uint64(len(head)) < size && remaining <= int64(len(head)) {
			return w.hit(RuleArchiveBomb, here, "archives expand beyond the inspection limit")
		}
		return false
	}
	if kind != "" && !w.nativeExecutable(kind, []string{f.Name}) {
		if w.hit(RuleExecutableMagic, here, "archive entry is a "+kind+" executable in disguise") {
			return true
		}
	}
	if !nested {
		return false
	}
	// A nested archive must be read whole (its directory is at the end).
	if size > uint64(w.p.MaxExpanded-w.expanded) {
		return w.hit(RuleArchiveBomb, here, "nested archive expands beyond the inspection limit")
	}
	left := w.p.MaxExpanded - w.expanded
	rest, err := io.ReadAll(io.LimitReader(rc, left+1))
	w.expanded += min(int64(len(rest)), left)
	if int64(len(rest)) > left {
		return w.hit(RuleArchiveBomb, here, "nested archive expands beyond the inspection limit")
	}
	if err != nil {
		return w.hit(RuleArchiveMalform, here, "archive entry is corrupt or lies about its size")
	}
	inner := append(head, rest...)
	return w.inspectZip(inner, here, depth+1)
}
