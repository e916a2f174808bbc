// Package clamd is a client for the ClamAV daemon (clamd), used by mamori to
// have every accepted message scanned for malware before it is queued.
//
// It speaks the two clamd commands mamori needs, over a unix or TCP socket:
// zPING (health check) and zINSTREAM (stream the message in length-prefixed
// chunks, read one verdict line). That protocol is a handful of bytes, so the
// client is written directly on net.Conn instead of pulling in a third-party
// clamd library: the existing ones either lack context support and bounded
// reads, or wrap many commands we do not use. Owning the ~200 lines lets us
// guarantee the two properties a mail server needs from a scanner:
//
//   - every call is bounded in time (Client.Timeout and the caller's
//     context both end it) and in memory (the reply read is capped at 4 KiB);
//   - every failure that is clamd's fault (cannot connect, timeout, garbage
//     reply, clamd-side error) wraps ErrUnavailable, so the caller can apply
//     its configured fail-open or fail-closed policy with errors.Is.
//
// The package has no dependencies beyond the standard library.
package clamd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Defaults applied when the corresponding Client field is zero.
const (
	DefaultTimeout = 30 * time.Second
	DefaultMaxSize = 25 << 20 // 25 MiB; clamd's StreamMaxLength must be at least this
)

const (
	// chunkSize is the size of INSTREAM chunks we send. clamd accepts any
	// chunk up to StreamMaxLength; 32 KiB keeps our buffer small.
	chunkSize = 32 << 10
	// maxReply bounds how much of a reply we read. Real replies are one
	// short line ("stream: Name FOUND").
	maxReply = 4 << 10
)

// ErrUnavailable is wrapped by every error that means "clamd could not give
// a verdict": connection refused, missing socket, timeout, cancelled
// context, a connection dropped mid-scan, an unexpected reply or an ERROR
// reply from clamd. Callers decide fail-open or fail-closed on it.
var ErrUnavailable = errors.New("clamd unavailable")

// ErrTooLarge is returned (wrapped) when the data is larger than
// Client.MaxSize, or when clamd itself refuses it because it exceeds its
// StreamMaxLength ("INSTREAM size limit exceeded"). It does not wrap
// ErrUnavailable: clamd works, the message is just too big to scan, and
// what to do with an unscanned large message is a separate policy choice.
var ErrTooLarge = errors.New("clamd: data exceeds scan size limit")

// Client talks to one clamd. The zero value is not usable: Addr is required.
// A Client holds no connection between calls and is safe for concurrent use.
type Client struct {
	// Addr is "unix:/path/to/clamd.ctl" (an absolute path without the
	// prefix is accepted too) or "host:port" for clamd's TCPSocket.
	Addr string
	// Timeout bounds a whole call (connect, send, verdict). Zero means
	// DefaultTimeout. The caller's context can end a call earlier.
	Timeout time.Duration
	// MaxSize is the most bytes Scan sends. It must not exceed clamd's
	// StreamMaxLength, or clamd answers with a size-limit error instead.
	// Zero means DefaultMaxSize.
	MaxSize int64
}

// Result is clamd's verdict on scanned data.
type Result struct {
	// Infected is true when clamd reported a signature match.
	Infected bool
	// Signature is the name clamd reported, e.g. "Win.Test.EICAR_HDB-1";
	// signatures from local (unsigned) databases carry clamd's
	// ".UNOFFICIAL" suffix. Empty when not infected.
	Signature string
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) maxSize() int64 {
	if c.MaxSize > 0 {
		return c.MaxSize
	}
	return DefaultMaxSize
}

// network splits Addr into a net.Dial network and address.
func (c *Client) network() (network, address string, err error) {
	switch {
	case c.Addr == "":
		return "", "", errors.New("clamd: empty address")
	case strings.HasPrefix(c.Addr, "unix:"):
		return "unix", strings.TrimPrefix(c.Addr, "unix:"), nil
	case strings.HasPrefix(c.Addr, "/"):
		return "unix", c.Addr, nil
	default:
		return "tcp", c.Addr, nil
	}
}

// dial connects to clamd and arranges for the connection to be closed when
// the call ends, and its I/O to fail once ctx is done. The returned stop
// function must be called (it closes the connection).
func (c *Client) dial(ctx context.Context) (net.Conn, func(), error) {
	network, address, err := c.network()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: connect %s: %w", ErrUnavailable, c.Addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("%w: set deadline: %w", ErrUnavailable, err)
		}
	}
	// A cancellation without deadline must also unblock reads and writes.
	stopAfter := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Unix(1, 0))
	})
	return conn, func() {
		stopAfter()
		conn.Close()
	}, nil
}

// unavailable wraps an I/O error, preferring the context's error when the
// context ended (the I/O error is then only a consequence).
func unavailable(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, cerr)
	}
	// The connection deadline is the context's deadline, and may fire a
	// moment before the context's own timer does.
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w: %w", ErrUnavailable, what, context.DeadlineExceeded, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// Ping checks that clamd is up and answering (zPING → PONG).
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, stop, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := io.WriteString(conn, "zPING\x00"); err != nil {
		return unavailable(ctx, "send PING", err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return unavailable(ctx, "read PING reply", err)
	}
	if reply != "PONG" {
		return fmt.Errorf("%w: unexpected PING reply %q", ErrUnavailable, reply)
	}
	return nil
}

// Scan streams r to clamd with zINSTREAM and returns its verdict. At most
// MaxSize bytes are accepted: if r holds more, Scan stops sending and
// returns ErrTooLarge. Errors reading r are returned as is (wrapped, but
// not as ErrUnavailable: clamd is not at fault).
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, stop, err := c.dial(ctx)
	if err != nil {
		return Result{}, err
	}
	defer stop()

	if err := c.send(conn, r); err != nil {
		var se *sendError
		if !errors.As(err, &se) {
			return Result{}, err // local: reader failed or data too large
		}
		// clamd may have stopped reading because it refused the stream
		// (size limit) and already said why: prefer its reply.
		if reply, rerr := readReply(conn); rerr == nil && reply != "" {
			if res, perr := parseScanReply(reply); perr != nil || res.Infected {
				return res, perr
			}
		}
		return Result{}, unavailable(ctx, "send INSTREAM", se.err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return Result{}, unavailable(ctx, "read INSTREAM reply", err)
	}
	return parseScanReply(reply)
}

// sendError marks a failure writing to clamd (as opposed to reading r).
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// send writes the INSTREAM command, r as length-prefixed chunks, and the
// terminating zero-length chunk.
func (c *Client) send(conn net.Conn, r io.Reader) error {
	w := bufio.NewWriterSize(conn, chunkSize+4)
	if _, err := w.WriteString("zINSTREAM\x00"); err != nil {
		return &sendError{err}
	}
	limit := c.maxSize()
	var (
		sent int64
		buf  = make([]byte, 4+chunkSize)
	)
	for {
		n, rerr := io.ReadFull(r, buf[4:])
		if n > 0 {
			if sent+int64(n) > limit {
				return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
			}
			binary.BigEndian.PutUint32(buf[:4], uint32(n))
			if _, err := w.Write(buf[:4+n]); err != nil {
				return &sendError{err}
			}
			sent += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("clamd: read data to scan: %w", rerr)
		}
	}
	if _, err := w.Write([]byte{0, 0, 0, 0}); err != nil {
		return &sendError{err}
	}
	if err := w.Flush(); err != nil {
		return &sendError{err}
	}
	return nil
}

// readReply reads one NUL-terminated reply (z-commands), at most maxReply
// bytes. EOF after some bytes is accepted as the end of the reply.
func readReply(conn net.Conn) (string, error) {
	var buf bytes.Buffer
	lr := io.LimitReader(conn, maxReply+1)
	b := make([]byte, 512)
	for {
		n, err := lr.Read(b)
		if i := bytes.IndexByte(b[:n], 0); i >= 0 {
			buf.Write(b[:i])
			return strings.TrimSpace(buf.String()), nil
		}
		buf.Write(b[:n])
		if buf.Len() > maxReply {
			return "", fmt.Errorf("reply longer than %d bytes", maxReply)
		}
		if err == io.EOF {
			if buf.Len() == 0 {
				return "", io.ErrUnexpectedEOF
			}
			return strings.TrimSpace(buf.String()), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// parseScanReply interprets an INSTREAM reply:
//
//	stream: OK
//	stream: Eicar-Signature FOUND
//	INSTREAM size limit exceeded. ERROR
//	stream: <reason> ERROR
func parseScanReply(reply string) (Result, error) {
	switch {
	case reply == "stream: OK":
		return Result{}, nil
	case strings.HasPrefix(reply, "stream: ") && strings.HasSuffix(reply, " FOUND"):
		sig := strings.TrimSuffix(strings.TrimPrefix(reply, "stream: "), " FOUND")
		if sig == "" {
			return Result{}, fmt.Errorf("%w: malformed reply %q", ErrUnavailable, reply)
		}
		return Result{Infected: true, Signature: sig}, nil
	case strings.Contains(reply, "size limit exceeded"):
		return Result{}, fmt.Errorf("%w: clamd: %s (raise StreamMaxLength or lower MaxSize)", ErrTooLarge, reply)
	case strings.HasSuffix(reply, "ERROR"):
		return Result{}, fmt.Errorf("%w: clamd error: %s", ErrUnavailable, reply)
	default:
		return Result{}, fmt.Errorf("%w: unexpected reply %q", ErrUnavailable, reply)
	}
}
