package content

import (
	"errors"
	"io"
)

// heldChunk is the unit in which content is held in memory: holding
// chunks instead of one growing slice means the bytes held never exceed
// what was read by more than one chunk, with no doubling copies.
const heldChunk = 64 << 10

// held is content read from a decompressor and kept in memory because
// the check needs all of it at once (a nested zip's directory is at its
// end; an SVG is searched as a whole). It is charged to the walker's
// per-message Policy.MaxHeld budget until released.
type held struct {
	chunks [][]byte // all full (heldChunk bytes) except the last
	n      int64
}

// errTooBig reports content that does not fit in what is left of
// Policy.MaxHeld.
var errTooBig = errors.New("content: entry larger than the in-memory inspection limit")

// readHeld reads r to its end into memory, at most limit bytes, and
// charges them to w.held. If r holds more, it stops reading and returns
// errTooBig with nothing charged; otherwise the caller must release the
// result.
func (w *walker) readHeld(r io.Reader, limit int64) (*held, error) {
	h := &held{}
	for {
		if h.n >= limit {
			// Full: one more byte means it does not fit.
			var one [1]byte
			n, err := io.ReadFull(r, one[:])
			if n > 0 {
				return nil, errTooBig
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			break
		}
		c := make([]byte, min(int64(heldChunk), limit-h.n))
		n, err := io.ReadFull(r, c)
		if n > 0 {
			h.chunks = append(h.chunks, c[:n])
			h.n += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	w.held += h.n
	return h, nil
}

// release gives the held bytes back to the walker's budget.
func (w *walker) release(h *held) {
	w.held -= h.n
	h.chunks, h.n = nil, 0
}

// bzip2Memory is what a bzip2 decompressor allocates, charged to
// Policy.MaxHeld while it runs: its block table is four bytes per byte
// of the largest block size (900k). The largest is charged whatever the
// stream header says, because a concatenated stream may declare another.
const bzip2Memory = 900_000*4 + 64<<10

// charge takes n bytes from the per-message MaxHeld budget; false means
// they are not available.
func (w *walker) charge(n int64) bool {
	if w.held+n > w.p.MaxHeld {
		return false
	}
	w.held += n
	return true
}

// ReadAt implements io.ReaderAt for archive/zip.
func (h *held) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("content: negative offset")
	}
	n := 0
	for n < len(p) && off < h.n {
		i, o := off/heldChunk, off%heldChunk
		k := copy(p[n:], h.chunks[i][o:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readBody reads a decoded MIME part (at most limit bytes; more is an
// error) into one slice of exactly its length. It reads in heldChunk
// chunks first, so it allocates twice the part's size at most, where
// io.ReadAll's doubling may allocate several times that.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	var chunks [][]byte
	var n int64
	var err error
	for n <= limit {
		c := make([]byte, heldChunk)
		var k int
		k, err = io.ReadFull(r, c)
		if k > 0 {
			chunks = append(chunks, c[:k])
			n += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = nil
			}
			break
		}
	}
	if len(chunks) == 1 {
		return chunks[0], err
	}
	out := make([]byte, 0, n)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, err
}
