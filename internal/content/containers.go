package content

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// file is one file to inspect: a MIME leaf, an archive entry, the content
// of a gzip or bzip2 stream, or a uudecoded block.
type file struct {
	names []string // declared names; may be empty
	ctype string   // declared media type, for MIME leaves
	// data is the whole content when it is already in memory (r nil);
	// otherwise r yields it (metered when it comes out of a decompressor).
	data []byte
	r    io.Reader
}

// containerKind is what sniffContainer finds.
type containerKind int

const (
	notContainer containerKind = iota
	kindZip
	kindGzip
	kindBzip2
	kindTar
	kindOpaque // an archive format the standard library cannot read
)

// opaqueMagic are archive and compression formats that cannot be
// inspected with the standard library.
var opaqueMagic = []struct {
	off   int
	magic string
	name  string
}{
	{0, "7z\xbc\xaf\x27\x1c", "7z"},
	{0, "Rar!\x1a\x07", "rar"},
	{0, "\xfd7zXZ\x00", "xz"},
	{0, "\x28\xb5\x2f\xfd", "zstd"},
	{0, "LZIP", "lzip"},
	{0, "MSCF\x00\x00\x00\x00", "cab"},
	{7, "**ACE**", "ace"},
}

// opaqueExt are the extensions of such formats, for files whose first
// bytes do not say (or lie), and of formats whose magic is too short to
// trust on its own (arj, compress's .Z).
var opaqueExt = map[string]bool{
	"7z": true, "rar": true, "xz": true, "txz": true, "zst": true, "tzst": true,
	"lz": true, "lzma": true, "tlz": true, "cab": true, "ace": true, "arj": true,
	"lzh": true, "lha": true, "z": true, "zipx": true,
}

// sniffContainer identifies a container by its first bytes, then by the
// extension of any of its names: a file named .gz that is not gzip is
// read as gzip (and found corrupt), because that is what a client's
// archive tool will try too.
func sniffContainer(head []byte, names []string) (containerKind, string) {
	switch {
	case isZip(head):
		return kindZip, "zip"
	case bytes.HasPrefix(head, []byte("\x1f\x8b\x08")):
		return kindGzip, "gzip"
	case isBzip2(head):
		return kindBzip2, "bzip2"
	case isTar(head):
		return kindTar, "tar"
	}
	for _, m := range opaqueMagic {
		if len(head) >= m.off+len(m.magic) && string(head[m.off:m.off+len(m.magic)]) == m.magic {
			return kindOpaque, m.name
		}
	}
	if len(head) >= 7 && head[2] == '-' && head[3] == 'l' && head[4] == 'h' && head[6] == '-' {
		return kindOpaque, "lzh"
	}
	for _, n := range names {
		_, ext := splitExt(cleanName(n))
		switch {
		case ext == "zip":
			return kindZip, "zip"
		case ext == "gz" || ext == "tgz" || ext == "svgz":
			return kindGzip, "gzip"
		case ext == "bz2" || ext == "tbz" || ext == "tbz2":
			return kindBzip2, "bzip2"
		case ext == "tar":
			return kindTar, "tar"
		case opaqueExt[ext]:
			return kindOpaque, ext
		}
	}
	return notContainer, ""
}

func isBzip2(b []byte) bool {
	return len(b) >= 10 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h' && b[3] >= '1' && b[3] <= '9' &&
		(string(b[4:10]) == "1AY&SY" || string(b[4:10]) == "\x17rE8P\x90")
}

// isTar recognises a tar header block: the ustar magic (POSIX, pax, GNU),
// or, for old v7 archives that have none, a valid header checksum.
func isTar(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	if string(b[257:262]) == "ustar" {
		return true
	}
	field := strings.TrimRight(strings.TrimLeft(string(b[148:156]), " \x00"), " \x00")
	want, err := strconv.ParseUint(field, 8, 32)
	if err != nil || field == "" || b[0] == 0 {
		return false
	}
	var sum uint64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += uint64(c)
	}
	return sum == want
}

// inspectFile applies the content checks to one file whose names the caller
// has already checked: executable magic, active SVG, and, for a container,
// what it holds. depth is the depth of the container the file is in (0 for
// a MIME part); a container found here is at depth+1.
func (w *walker) inspectFile(f file, here []string, depth int) bool {
	head := f.data
	if f.r != nil {
		var err error
		head, err = io.ReadAll(io.LimitReader(f.r, sniffLen))
		if err != nil {
			return w.readFail(err, here)
		}
		if len(head) < sniffLen {
			f.data, f.r = head, nil // that was all of it
		}
	} else if len(head) > sniffLen {
		head = head[:sniffLen]
	}
	if kind := execKind(head); kind != "" && !w.nativeExecutable(kind, f.names) {
		what := "attachment"
		if depth > 0 {
			what = "archive entry"
		}
		if w.hit(RuleExecutableMagic, here, what+" is a "+kind+" file in disguise") {
			return true
		}
	}
	kind, format := sniffContainer(head, f.names)
	svg := kind == notContainer && isSVG(head, f.names, f.ctype)
	if kind == kindOpaque {
		return w.hit(RuleArchiveUnsupported, here, "archive format "+format+" cannot be inspected")
	}
	if kind == notContainer && !svg {
		return false
	}
	if depth+1 > w.p.MaxDepth && kind != notContainer {
		return w.hit(RuleArchiveTooDeep, here, fmt.Sprintf("archives are nested more than %d deep", w.p.MaxDepth))
	}
	if kind == kindGzip || kind == kindBzip2 || kind == kindTar {
		var src io.Reader = bytes.NewReader(f.data)
		if f.r != nil {
			src = io.MultiReader(bytes.NewReader(head), f.r)
		}
		return w.inspectStream(kind, src, f.names, here, depth+1)
	}
	// Zip (its directory is at the end) and SVG need the whole content.
	// A MIME part is in memory already; what comes out of a decompressor
	// is held only up to Policy.MaxHeld (see the package doc).
	if f.r == nil {
		if svg {
			return w.inspectSVG(bytes.NewReader(f.data), int64(len(f.data)), here)
		}
		return w.inspectZip(f.data, here, depth+1)
	}
	// An SVG check holds two more copies of it (activeSVGFrom).
	limit := w.p.MaxHeld - w.held
	if svg {
		limit /= 3
	}
	h, err := w.readHeld(io.MultiReader(bytes.NewReader(head), f.r), limit)
	if errors.Is(err, errTooBig) {
		what := "archive"
		if svg {
			what = "SVG image"
		}
		return w.hit(RuleArchiveBomb, here, "nested "+what+" is larger than the in-memory inspection limit")
	}
	if err != nil {
		return w.readFail(err, here)
	}
	defer w.release(h)
	if svg {
		w.held += 2 * h.n
		defer func() { w.held -= 2 * h.n }()
		return w.inspectSVG(io.NewSectionReader(h, 0, h.n), h.n, here)
	}
	return w.inspectZipAt(h, h.n, here, depth+1)
}

func (w *walker) inspectSVG(r io.Reader, size int64, here []string) bool {
	if what := activeSVGFrom(r, size); what != "" {
		return w.hit(RuleActiveContent, here, "SVG image carries "+what)
	}
	return false
}

// readFail turns an error while expanding an archive into a finding.
func (w *walker) readFail(err error, here []string) bool {
	switch {
	case errors.Is(err, errBudget):
		return w.hit(RuleArchiveBomb, here, "archives expand beyond the inspection limit")
	case errors.Is(err, errRatio):
		return w.hit(RuleArchiveBomb, here, "archive has an excessive compression ratio")
	}
	return w.hit(RuleArchiveMalform, here, "archive is corrupt or lies about its size")
}

// inspectStream reads a gzip, bzip2 or tar container from src. depth is
// this container's depth. A compressed stream is read to its end (that is
// how a bomb or a bad checksum shows), through a meter that charges the
// message's budget and stops an excessive expansion ratio early.
func (w *walker) inspectStream(kind containerKind, src io.Reader, names []string, here []string, depth int) bool {
	switch kind {
	case kindGzip:
		cr := &countingReader{r: src}
		zr, err := gzip.NewReader(cr)
		if err != nil {
			return w.readFail(err, here)
		}
		var inner []string
		if zr.Name != "" {
			inner = append(inner, zr.Name)
		}
		inner = append(inner, strippedNames(names, "gz")...)
		return w.inspectDecompressed(w.meter(zr, cr.count), inner, "gzip", here, depth)
	case kindBzip2:
		if !w.charge(bzip2Memory) {
			return w.hit(RuleArchiveBomb, here, "nested bzip2 stream needs more memory than the inspection limit")
		}
		defer func() { w.held -= bzip2Memory }()
		cr := &countingReader{r: src}
		return w.inspectDecompressed(w.meter(bzip2.NewReader(cr), cr.count), strippedNames(names, "bz2"), "bzip2", here, depth)
	case kindTar:
		return w.inspectTar(src, here, depth)
	}
	return false
}

// inspectDecompressed checks the single file inside a gzip or bzip2
// stream and then reads the stream to its end.
func (w *walker) inspectDecompressed(m *meter, names []string, format string, here []string, depth int) bool {
	w.entries++
	if w.entries > w.p.MaxEntries {
		return w.hit(RuleArchiveBomb, here, fmt.Sprintf("archives hold more than %d entries", w.p.MaxEntries))
	}
	label := "(" + format + " content)"
	if len(names) > 0 {
		label = names[0]
	}
	inner := append(here[:len(here):len(here)], label)
	if w.checkNames(names, inner) {
		return true
	}
	if !w.stop {
		w.atts = append(w.atts, Attachment{Path: joinPath(inner), Filename: label})
	}
	if w.inspectFile(file{names: names, r: m}, inner, depth) {
		return true
	}
	if _, err := io.Copy(io.Discard, m); err != nil {
		return w.readFail(err, here)
	}
	return false
}

// strippedNames derives the name of the file inside a compressed stream
// from the stream's names, as gunzip does: a.tar.gz → a.tar, a.tgz →
// a.tar, a.svgz → a.svg.
func strippedNames(names []string, ext string) []string {
	var out []string
	for _, n := range names {
		c := cleanName(n)
		stem, e := splitExt(c)
		switch {
		case e == ext:
			out = append(out, stem)
		case e == "tgz" || e == "tbz" || e == "tbz2":
			out = append(out, stem+".tar")
		case e == "svgz":
			out = append(out, stem+".svg")
		}
	}
	return out
}

// inspectTar checks every entry of a tar stream (ustar, pax and GNU long
// names are read by archive/tar).
func (w *walker) inspectTar(src io.Reader, here []string, depth int) bool {
	tr := tar.NewReader(src)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return w.readFail(err, here)
		}
		w.entries++
		if w.entries > w.p.MaxEntries {
			return w.hit(RuleArchiveBomb, here, fmt.Sprintf("archives hold more than %d entries", w.p.MaxEntries))
		}
		inner := append(here[:len(here):len(here)], hdr.Name)
		names := []string{hdr.Name}
		if hdr.Linkname != "" {
			names = append(names, hdr.Linkname)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		if w.checkNames(names, inner) {
			return true
		}
		if !w.stop {
			w.atts = append(w.atts, Attachment{Path: joinPath(inner), Filename: hdr.Name, Size: hdr.Size})
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		default:
			continue // links, devices, fifos: no content of their own
		}
		if w.inspectFile(file{names: names[:1], r: tr}, inner, depth) {
			return true
		}
	}
}

// Errors of the meter; readFail turns them into archive.bomb.
var (
	errBudget = errors.New("content: decompressed-bytes budget exhausted")
	errRatio  = errors.New("content: compression ratio too high")
)

// meter charges every byte a decompressor produces to the message's
// budget (Policy.MaxExpanded) and fails once the budget is spent or the
// output outgrows its compressed input by more than maxRatio. A stream
// that expands 10 GB is thus stopped after about 1 MiB of output.
type meter struct {
	r        io.Reader
	w        *walker
	produced int64
	consumed func() int64 // compressed bytes behind the output so far
}

func (w *walker) meter(r io.Reader, consumed func() int64) *meter {
	return &meter{r: r, w: w, consumed: consumed}
}

func (m *meter) Read(p []byte) (int, error) {
	left := m.w.p.MaxExpanded - m.w.expanded
	if left <= 0 {
		var one [1]byte
		if n, err := m.r.Read(one[:]); n == 0 && errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, errBudget
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := m.r.Read(p)
	m.w.expanded += int64(n)
	m.produced += int64(n)
	if m.produced >= ratioFloor && m.produced/max(m.consumed(), 1) > maxRatio {
		return n, errRatio
	}
	return n, err
}

// countingReader counts the compressed bytes a decompressor consumes.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) count() int64 { return c.n }
