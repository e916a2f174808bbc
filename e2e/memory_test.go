package e2e

import (
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// procStatusKB reads a "VmXXX:  N kB" line of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSuffix(statusField(t, pid, field), " kB"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInflightMemoryBound: 30 clients send a 25 MB message each at the
// same time. The in-flight bound covers every copy made while receiving,
// checking and queueing, so the server's peak resident memory stays within
// about twice the bound (above what it used idle); clients over the bound
// get 452 4.3.1 and retry, and every message arrives.
func TestInflightMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 750 MB")
	}
	const bound = 192 << 20
	const clients = 30
	const size = 25_000_000
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "max_inflight_bytes", strconv.Itoa(bound))
		cfg = setKey(cfg, "verify_inbound", "false")
		cfg = setKey(cfg, "concurrency", "2") // delivery reads whole bodies; see docs
		return strings.Replace(cfg, "[guard]\n", "[guard]\nmax_conns_per_ip = 200\nmax_conns_per_net = 200\nconns_per_minute = 1000\ninbound_msgs_per_minute = 1000\n", 1)
	})
	in.addUser("bob@ours.test", pw)
	in.start()
	in.mu.Lock()
	pid := in.cmd.Process.Pid
	in.mu.Unlock()
	idle := procStatusKB(t, pid, "VmRSS")

	line := strings.Repeat("0123456789abcdef", 4) + "\r\n" // 66 octets
	var body strings.Builder
	body.WriteString("From: x@outside.test\r\nSubject: big\r\n\r\n")
	for body.Len() < size {
		body.WriteString(line)
	}
	msg := []byte(body.String())

	var wg sync.WaitGroup
	var delivered, retried atomic.Int64
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(3 * time.Minute)
			for time.Now().Before(deadline) {
				err := sendOnce(in.smtp, fmt.Sprintf("127.0.0.%d", 10+i), msg)
				if err == nil {
					delivered.Add(1)
					return
				}
				if !strings.Contains(err.Error(), "452") {
					errs <- err
					return
				}
				retried.Add(1)
				time.Sleep(200 * time.Millisecond)
			}
			errs <- fmt.Errorf("client %d: still refused after 3 minutes", i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peak := procStatusKB(t, pid, "VmHWM")
	t.Logf("%d messages of %d bytes, %d retries after 452; RSS idle %d MiB, peak %d MiB; bound %d MiB",
		delivered.Load(), size, retried.Load(), idle>>10, peak>>10, bound>>20)
	if delivered.Load() != clients {
		t.Fatalf("%d of %d messages accepted", delivered.Load(), clients)
	}
	if limit := int64(2*bound>>10 + 64<<10); peak > limit {
		t.Errorf("peak RSS %d MiB exceeds twice the bound of %d MiB (+64 MiB for the rest of the process)", peak>>10, bound>>20)
	}
}

// sendOnce sends msg with Go's net/smtp client from the given local
// address.
func sendOnce(server, local string, msg []byte) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", server)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(server)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	// MAIL FROM with SIZE (RFC 1870), as MTAs send it: a server short of
	// memory can say 452 before the message is sent.
	id, err := c.Text.Cmd("MAIL FROM:<x@outside.test> SIZE=%d", len(msg))
	if err != nil {
		return err
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(250)
	c.Text.EndResponse(id)
	if err != nil {
		return err
	}
	if err := c.Rcpt("bob@ours.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
