package logscan

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Format names a log format.
type Format string

// The formats logscan reads.
const (
	FormatAuto     Format = "auto"
	FormatPostfix  Format = "postfix"
	FormatSendmail Format = "sendmail"
	FormatExim     Format = "exim"
	FormatMamori   Format = "mamori"
)

// Formats are the formats --format takes, auto first.
var Formats = []Format{FormatAuto, FormatPostfix, FormatSendmail, FormatExim, FormatMamori}

// Input is one log to read: Name is shown in reports ("-" for stdin).
type Input struct {
	Name string
	R    io.Reader
}

// Options tune a scan. The zero value works.
type Options struct {
	Format       Format
	Clock        Clock
	Since, Until time.Time // zero: unbounded
	MaxOpen      int       // queue ids kept open for joining (default 200000)
	// MaxKeys caps the distinct keys counted per table (senders, clients,
	// users) and tracked by each detector (default 200000): a log of
	// unique return paths (VERP, SRS) or of rotating IPv6 clients cannot
	// make memory grow with its size. The rest is counted under Overflow.
	MaxKeys    int
	Workers    int // parser goroutines (default GOMAXPROCS)
	Thresholds Thresholds
	// LocalDomains are domains of this server, added to those the log
	// shows receiving local delivery (for the open-relay finding).
	LocalDomains []string
	// Progress, when set, is called from the reading goroutine with the
	// bytes just read from a file (as stored: compressed for gzip).
	Progress func(n int)
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r  io.Reader
	fn func(int)
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(n)
	}
	return n, err
}

const chunkSize = 256 << 10
const maxLine = 64 << 10

type chunk struct {
	format Format
	data   []byte
	events chan parsed
}

// parsed is what a worker made of a chunk. The events' strings point into
// the chunk's data, which nobody changes after it is cut.
type parsed struct {
	events []Event
	lines  int64
}

// ScanFiles opens paths (oldest rotation first, see OrderFiles) and scans
// them; "-" is stdin.
func ScanFiles(paths []string, stdin io.Reader, o Options) (*Report, error) {
	var ins []Input
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, p := range OrderFiles(paths) {
		if p == "-" {
			ins = append(ins, Input{"-", stdin})
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("logscan: %w", err)
		}
		closers = append(closers, f)
		var r io.Reader = f
		if o.Progress != nil {
			r = progressReader{f, o.Progress}
		}
		ins = append(ins, Input{p, r})
	}
	return Scan(ins, o)
}

// Scan reads the inputs in order and returns the report.
func Scan(ins []Input, o Options) (*Report, error) {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	fl := newFreeList(4 * workers)
	work := make(chan *chunk, workers)
	ordered := make(chan *chunk, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			st := o.Clock.stamp()
			for c := range work {
				c.events <- parseChunk(c.format, c.data, st, fl.events())
			}
		})
	}
	agg := newAggregator(o)
	go func() {
		defer close(ordered)
		defer close(work)
		for _, in := range ins {
			agg.rep.Files = append(agg.rep.Files, in.Name)
			if err := split(in, o.Format, fl.buf, func(f Format, data []byte) {
				c := &chunk{format: f, data: data, events: make(chan parsed, 1)}
				ordered <- c
				work <- c
			}); err != nil {
				// A damaged file (a cut gzip) still gives what it had.
				agg.rep.Warnings = append(agg.rep.Warnings, fmt.Sprintf("%s: %v", in.Name, err))
			}
		}
	}()
	for c := range ordered {
		p := <-c.events
		agg.yearFix = c.format != FormatExim && c.format != FormatMamori
		for i := range p.events {
			agg.add(&p.events[i])
		}
		agg.rep.Lines += p.lines
		// The aggregator copied what it keeps: the chunk and its events
		// can be reused.
		fl.put(c.data, p.events)
	}
	wg.Wait()
	return agg.report(), nil
}

// freeList recycles chunk buffers and event slices: a scan of any size
// then runs on the same few megabytes, and the garbage collector has
// little to do. Only the aggregator returns buffers, after it has copied
// every string it keeps out of them.
type freeList struct {
	bufs chan []byte
	evs  chan []Event
}

func newFreeList(n int) *freeList {
	return &freeList{bufs: make(chan []byte, n), evs: make(chan []Event, n)}
}

func (f *freeList) buf() []byte {
	select {
	case b := <-f.bufs:
		return b[:0]
	default:
		return make([]byte, 0, chunkSize+maxLine)
	}
}

func (f *freeList) events() []Event {
	select {
	case e := <-f.evs:
		return e[:0]
	default:
		// About one event per two lines of 120 bytes in a Postfix log.
		return make([]Event, 0, chunkSize/200)
	}
}

func (f *freeList) put(b []byte, e []Event) {
	clear(e) // drop the strings into the old chunk
	if cap(b) >= chunkSize+maxLine {
		select {
		case f.bufs <- b:
		default:
		}
	}
	select {
	case f.evs <- e:
	default:
	}
}

// split streams one input in chunks of whole lines, gunzipping it if it
// starts with the gzip magic bytes, and detecting its format.
func split(in Input, format Format, newBuf func() []byte, emit func(Format, []byte)) error {
	br := bufio.NewReaderSize(in.R, maxLine)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return err
		}
		r = zr
	}
	lr := bufio.NewReaderSize(r, maxLine)
	if format == "" || format == FormatAuto {
		head, _ := lr.Peek(4096)
		format = Detect(head)
	}
	buf := newBuf()
	skipping := false
	for {
		line, err := lr.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			// A line longer than maxLine: keep its head, drop the rest.
			if !skipping {
				buf = append(buf, line...)
				buf = append(buf, '\n')
			}
			skipping = true
			continue
		case skipping:
			skipping = false
		default:
			buf = append(buf, line...)
			if len(line) > 0 && line[len(line)-1] != '\n' {
				buf = append(buf, '\n') // a truncated last line
			}
		}
		if len(buf) >= chunkSize || (err != nil && len(buf) > 0) {
			emit(format, buf)
			buf = newBuf()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func parseChunk(f Format, data []byte, st *stamp, evs []Event) parsed {
	p := parsed{events: evs}
	s := unsafe.String(unsafe.SliceData(data), len(data))
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		line := s[:i]
		s = s[i+1:]
		p.lines++
		p.events = st.appendLine(f, p.events, line)
	}
	return p
}

// appendLine appends the events of one line of format f to evs; their
// strings point into line.
func (st *stamp) appendLine(f Format, evs []Event, line string) []Event {
	var ev Event
	switch f {
	case FormatMamori:
		ev = ParseMamori(unsafe.Slice(unsafe.StringData(line), len(line)))
	case FormatSendmail:
		return st.appendSendmail(evs, line) // a to= line may list many recipients
	case FormatExim:
		ev = st.parseExim(line)
	default:
		ev = st.parsePostfix(line)
	}
	if ev.Kind != KindNone && ev.Kind != KindMessageID { // the aggregator has no use for message-ids
		evs = append(evs, ev)
	}
	return evs
}

// Detect guesses the format from the first lines of a log: lines that
// start with {"time": are mamori's JSON log, lines that start with
// "YYYY-MM-DD hh:mm:ss " Exim's main log, and syslog lines are Postfix's or
// Sendmail's by their program (the first line of either decides; lines of
// other programs are skipped). Anything else is read as Postfix.
func Detect(head []byte) Format {
	st := Clock{Year: 2000}.stamp()
	for line := range bytes.Lines(head) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"time":`)) {
			return FormatMamori
		}
		s := unsafe.String(unsafe.SliceData(line), len(line))
		if _, _, ok := st.eximTime(s); ok {
			return FormatExim
		}
		if _, prog, _, ok := st.syslogHeader(s); ok {
			switch {
			case strings.HasPrefix(prog, "postfix"):
				return FormatPostfix
			case isSendmailProg(prog):
				return FormatSendmail
			}
		}
	}
	return FormatPostfix
}

// OrderFiles puts rotated files oldest first: maillog.2.gz, maillog.1,
// maillog. Files of different logs keep the order of their first mention.
func OrderFiles(paths []string) []string {
	type f struct {
		path, base string
		rot, group int
	}
	groups := map[string]int{}
	var fs []f
	for _, p := range paths {
		base, rot := rotation(filepath.Base(p))
		base = filepath.Join(filepath.Dir(p), base)
		g, ok := groups[base]
		if !ok {
			g = len(groups)
			groups[base] = g
		}
		fs = append(fs, f{p, base, rot, g})
	}
	slices.SortStableFunc(fs, func(a, b f) int {
		if a.group != b.group {
			return a.group - b.group
		}
		return b.rot - a.rot
	})
	out := make([]string, len(fs))
	for i, x := range fs {
		out[i] = x.path
	}
	return out
}

// rotation splits "maillog.2.gz" into "maillog" and 2; "maillog" is 0.
func rotation(name string) (string, int) {
	name = strings.TrimSuffix(name, ".gz")
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil && n >= 0 {
			return name[:i], n
		}
	}
	return name, 0
}
