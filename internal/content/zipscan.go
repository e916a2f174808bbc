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
// bomb is refused without decompressing it. An entry is expanded only as
// far as its first sniffLen bytes unless it is itself a container.
func (w *walker) inspectZip(data []byte, here []string, depth int) bool {
	return w.inspectZipAt(bytes.NewReader(data), int64(len(data)), here, depth)
}

// inspectZipAt is inspectZip for an archive read through r: a MIME part
// already in memory, or a nested zip held by readHeld.
func (w *walker) inspectZipAt(r io.ReaderAt, size int64, here []string, depth int) bool {
	if depth > w.p.MaxDepth {
		return w.hit(RuleArchiveTooDeep, here, fmt.Sprintf("archives are nested more than %d deep", w.p.MaxDepth))
	}
	// archive/zip reads the whole central directory before we see a
	// single entry, some hundred bytes per entry: count the directory
	// headers first, so a directory of a million empty entries is refused
	// before it is parsed.
	if left := w.p.MaxEntries - w.entries; countCentralHeaders(r, size, left+1) > left {
		return w.hit(RuleArchiveBomb, here, fmt.Sprintf("archives hold more than %d entries", w.p.MaxEntries))
	}
	zr, err := zip.NewReader(r, size)
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
	if w.checkNames([]string{f.Name}, here) {
		return true
	}
	if !w.stop {
		w.atts = append(w.atts, Attachment{Path: joinPath(here), Filename: f.Name, Size: int64(min(f.UncompressedSize64, 1<<62))})
	}
	if f.Flags&0x1 != 0 {
		// Traditional or AES encryption: only the name could be checked,
		// and a password in the message text is all the recipient needs.
		return w.hit(RuleArchiveEncrypted, here, "archive entry is encrypted and cannot be inspected")
	}
	size, csize := f.UncompressedSize64, f.CompressedSize64
	if size > uint64(w.p.MaxExpanded)*16 {
		return w.hit(RuleArchiveBomb, here, "archive entry expands to an excessive size")
	}
	if size >= ratioFloor && (csize == 0 || size/csize > maxRatio) {
		return w.hit(RuleArchiveBomb, here, "archive entry has an excessive compression ratio")
	}
	rc, err := f.Open()
	if err != nil {
		if errors.Is(err, zip.ErrAlgorithm) {
			return w.hit(RuleArchiveUnsupported, here, fmt.Sprintf("archive entry uses compression method %d, which cannot be inspected", f.Method))
		}
		return w.hit(RuleArchiveMalform, here, "archive entry cannot be read")
	}
	defer rc.Close()
	m := w.meter(rc, func() int64 { return int64(min(csize, 1<<62)) })
	return w.inspectFile(file{names: []string{f.Name}, r: m}, here, depth)
}

// centralSig starts each central directory header of a zip archive.
var centralSig = []byte("PK\x01\x02")

// countCentralHeaders counts the central directory signatures in the
// size bytes of r, stopping at limit. archive/zip parses no more headers
// than there are signatures. Stored data may contain the signature too (a
// stored zip inside the zip), so this over-counts at worst.
func countCentralHeaders(r io.ReaderAt, size int64, limit int) int {
	const win = 32 << 10
	buf := make([]byte, win)
	n := 0
	for off := int64(0); off < size && n < limit; off += win - int64(len(centralSig)-1) {
		k, _ := r.ReadAt(buf, off)
		n += bytes.Count(buf[:k], centralSig)
		if off+int64(k) >= size || k < len(centralSig) {
			break
		}
	}
	return n
}
