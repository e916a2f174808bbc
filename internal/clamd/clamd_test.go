package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClamd is a loopback TCP server speaking just enough of clamd's
// protocol to check the client's framing. handle gets each connection.
type fakeClamd struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newFake(t *testing.T, handle func(net.Conn)) *fakeClamd {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClamd{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeClamd) addr() string { return f.ln.Addr().String() }

// readInstream reads a zINSTREAM command and its chunks, returning the
// reassembled data, or an error for any framing mistake.
func readInstream(c net.Conn) ([]byte, error) {
	cmd := make([]byte, len("zINSTREAM\x00"))
	if _, err := io.ReadFull(c, cmd); err != nil {
		return nil, err
	}
	if string(cmd) != "zINSTREAM\x00" {
		return nil, errors.New("bad command " + string(cmd))
	}
	var data bytes.Buffer
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			return data.Bytes(), nil
		}
		if n > chunkSize {
			return nil, errors.New("chunk larger than chunkSize")
		}
		if _, err := io.CopyN(&data, c, int64(n)); err != nil {
			return nil, err
		}
	}
}

func TestScanFraming(t *testing.T) {
	sizes := []int{0, 1, 68, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 17}
	for _, size := range sizes {
		data := bytes.Repeat([]byte("abcdefghij"), size/10+1)[:size]
		got := make(chan []byte, 1)
		f := newFake(t, func(c net.Conn) {
			d, err := readInstream(c)
			if err != nil {
				t.Errorf("size %d: server: %v", size, err)
				return
			}
			got <- d
			io.WriteString(c, "stream: OK\x00")
		})
		cl := &Client{Addr: f.addr(), Timeout: 5 * time.Second}
		res, err := cl.Scan(context.Background(), bytes.NewReader(data))
		if err != nil {
			t.Fatalf("size %d: Scan: %v", size, err)
		}
		if res.Infected {
			t.Errorf("size %d: Infected for OK reply", size)
		}
		if d := <-got; !bytes.Equal(d, data) {
			t.Errorf("size %d: server received %d bytes, want the %d sent", size, len(d), len(data))
		}
	}
}

func TestScanReplies(t *testing.T) {
	tests := []struct {
		name      string
		reply     string
		want      Result
		wantErr   error
		notErr    error
		wantInErr string
	}{
		{name: "clean", reply: "stream: OK\x00", want: Result{}},
		{name: "clean without NUL then EOF", reply: "stream: OK", want: Result{}},
		{name: "found", reply: "stream: Eicar-Signature FOUND\x00", want: Result{Infected: true, Signature: "Eicar-Signature"}},
		{name: "found with spaces in name", reply: "stream: Some Sig.UNOFFICIAL FOUND\x00", want: Result{Infected: true, Signature: "Some Sig.UNOFFICIAL"}},
		{name: "size limit", reply: "INSTREAM size limit exceeded. ERROR\x00", wantErr: ErrTooLarge, notErr: ErrUnavailable},
		{name: "other error", reply: "stream: Can't allocate memory ERROR\x00", wantErr: ErrUnavailable, wantInErr: "allocate"},
		{name: "garbage", reply: "HELLO\x00", wantErr: ErrUnavailable},
		{name: "empty FOUND", reply: "stream:  FOUND\x00", wantErr: ErrUnavailable},
		{name: "no reply at all", reply: "", wantErr: ErrUnavailable},
		{name: "reply too long", reply: strings.Repeat("x", maxReply+100), wantErr: ErrUnavailable, wantInErr: "longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(c net.Conn) {
				if _, err := readInstream(c); err != nil {
					t.Errorf("server: %v", err)
					return
				}
				io.WriteString(c, tt.reply)
			})
			cl := &Client{Addr: f.addr(), Timeout: 5 * time.Second}
			res, err := cl.Scan(context.Background(), strings.NewReader("some data"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.notErr != nil && errors.Is(err, tt.notErr) {
					t.Errorf("err %v must not wrap %v", err, tt.notErr)
				}
				if tt.wantInErr != "" && !strings.Contains(err.Error(), tt.wantInErr) {
					t.Errorf("err %q does not mention %q", err, tt.wantInErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if res != tt.want {
				t.Errorf("result = %+v, want %+v", res, tt.want)
			}
		})
	}
}

func TestPingFake(t *testing.T) {
	tests := []struct {
		reply string
		ok    bool
	}{
		{"PONG\x00", true},
		{"PONG", true},
		{"PANG\x00", false},
		{"", false},
	}
	for _, tt := range tests {
		f := newFake(t, func(c net.Conn) {
			cmd := make([]byte, 6)
			if _, err := io.ReadFull(c, cmd); err != nil || string(cmd) != "zPING\x00" {
				t.Errorf("server got %q, %v", cmd, err)
				return
			}
			io.WriteString(c, tt.reply)
		})
		err := (&Client{Addr: f.addr(), Timeout: 5 * time.Second}).Ping(context.Background())
		if tt.ok && err != nil {
			t.Errorf("reply %q: Ping: %v", tt.reply, err)
		}
		if !tt.ok && !errors.Is(err, ErrUnavailable) {
			t.Errorf("reply %q: err = %v, want ErrUnavailable", tt.reply, err)
		}
	}
}

// silentServer accepts connections and reads everything but never answers.
func silentServer(t *testing.T) string {
	f := newFake(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	return f.addr()
}

func TestNeverAnswers(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cl := &Client{Addr: silentServer(t), Timeout: timeout}
	for name, call := range map[string]func() error{
		"Ping": func() error { return cl.Ping(context.Background()) },
		"Scan": func() error {
			_, err := cl.Scan(context.Background(), strings.NewReader("data"))
			return err
		},
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want ErrUnavailable and DeadlineExceeded", name, err)
		}
		// A generous bound: the call must end because of Timeout, not hang.
		if el := time.Since(start); el < timeout || el > timeout+10*time.Second {
			t.Errorf("%s returned after %v, want about %v", name, el, timeout)
		}
	}
}

func TestContextCancel(t *testing.T) {
	cl := &Client{Addr: silentServer(t), Timeout: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := cl.Scan(ctx, strings.NewReader("data"))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnavailable and Canceled", err)
	}
}

func TestClientMaxSize(t *testing.T) {
	f := newFake(t, func(c net.Conn) {
		if _, err := readInstream(c); err == nil {
			io.WriteString(c, "stream: OK\x00")
		}
	})
	tests := []struct {
		size    int
		tooBig  bool
		maxSize int64
	}{
		{size: 1000, maxSize: 1000},
		{size: 1001, maxSize: 1000, tooBig: true},
		{size: 5 * chunkSize, maxSize: 5 * chunkSize},
		{size: 5*chunkSize + 1, maxSize: 5 * chunkSize, tooBig: true},
	}
	for _, tt := range tests {
		cl := &Client{Addr: f.addr(), Timeout: 5 * time.Second, MaxSize: tt.maxSize}
		_, err := cl.Scan(context.Background(), bytes.NewReader(make([]byte, tt.size)))
		if tt.tooBig {
			if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnavailable) {
				t.Errorf("size %d max %d: err = %v, want ErrTooLarge only", tt.size, tt.maxSize, err)
			}
		} else if err != nil {
			t.Errorf("size %d max %d: %v", tt.size, tt.maxSize, err)
		}
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestReaderError(t *testing.T) {
	f := newFake(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	boom := errors.New("spool read failed")
	_, err := (&Client{Addr: f.addr(), Timeout: 5 * time.Second}).Scan(context.Background(), failingReader{boom})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("a local read error must not look like clamd being down: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	// A port that was free a moment ago: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, addr := range []string{
		"unix:" + t.TempDir() + "/missing.sock",
		t.TempDir() + "/missing.sock",
		closed,
		"",
	} {
		cl := &Client{Addr: addr, Timeout: 5 * time.Second}
		if err := cl.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Ping %q: err = %v, want ErrUnavailable", addr, err)
		}
		if _, err := cl.Scan(context.Background(), strings.NewReader("x")); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Scan %q: err = %v, want ErrUnavailable", addr, err)
		}
	}
}

func TestNetwork(t *testing.T) {
	tests := []struct{ addr, network, address string }{
		{"unix:/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"[::1]:3310", "tcp", "[::1]:3310"},
	}
	for _, tt := range tests {
		n, a, err := (&Client{Addr: tt.addr}).network()
		if err != nil || n != tt.network || a != tt.address {
			t.Errorf("%q: got %q %q %v, want %q %q", tt.addr, n, a, err, tt.network, tt.address)
		}
	}
}
