// Command qfill fills a mail server's queue over SMTP for bench/queue-surgery.sh.
//
// It exists because Postfix's smtp-source sets one envelope sender per run,
// and the queue-surgery benchmark needs 90,000 messages from about 1,000
// different senders plus 10,000 from one. qfill sends N messages over
// several concurrent SMTP sessions, several messages per connection, and
// cycles the sender through a pattern. It uses only the standard library
// (net/smtp is frozen but complete for plain, unauthenticated SMTP on
// loopback, which is all this needs).
//
// Example:
//
//	qfill -addr 127.0.0.1:2525 -n 90000 -from 'user%d@senders.test' -senders 1000 -to 'rcpt%d@dest.test'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	addr     string
	n        int
	sessions int
	perConn  int
	from     string
	senders  int
	to       string
	rcpts    int
	size     int
	timeout  time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:25", "SMTP server host:port")
	flag.IntVar(&c.n, "n", 1000, "messages to send")
	flag.IntVar(&c.sessions, "s", 50, "concurrent SMTP sessions")
	flag.IntVar(&c.perConn, "per-conn", 50, "messages per connection")
	flag.StringVar(&c.from, "from", "sender@outside.test", "envelope sender; a %d in it is replaced by i mod -senders")
	flag.IntVar(&c.senders, "senders", 1, "number of distinct senders when -from has %d")
	flag.StringVar(&c.to, "to", "rcpt@dest.test", "recipient; a %d in it is replaced by i mod -rcpts")
	flag.IntVar(&c.rcpts, "rcpts", 100, "number of distinct recipients when -to has %d")
	flag.IntVar(&c.size, "size", 1024, "approximate message size in bytes")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if c.n < 0 || c.sessions < 1 || c.perConn < 1 || c.senders < 1 || c.rcpts < 1 {
		fmt.Fprintln(os.Stderr, "qfill: -n must be >= 0; -s, -per-conn, -senders, -rcpts >= 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	if err := run(ctx, c); err != nil {
		slog.Error("qfill failed", "err", err)
		os.Exit(1)
	}
	el := time.Since(start)
	slog.Info("qfill done", "messages", c.n, "seconds", el.Seconds(), "per_second", float64(c.n)/el.Seconds())
}

func expand(pattern string, i, mod int) string {
	if strings.Contains(pattern, "%d") {
		return fmt.Sprintf(pattern, i%mod)
	}
	return pattern
}

// run hands out message numbers to c.sessions workers; each worker keeps a
// connection open for up to c.perConn messages.
func run(ctx context.Context, c config) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c.sessions)
	body := makeBody(c.size)
	for w := 0; w < c.sessions; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				first := int(next.Add(int64(c.perConn))) - c.perConn
				if first >= c.n {
					return
				}
				last := min(first+c.perConn, c.n)
				if err := sendBatch(ctx, c, body, first, last); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(<-errs, ctx.Err()); err != nil {
		return err
	}
	return nil
}

func makeBody(size int) string {
	var b strings.Builder
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}

// sendBatch sends messages first..last-1 on one connection.
func sendBatch(ctx context.Context, c config, body string, first, last int) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", c.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(c.addr)
	cl, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("greeting from %s: %w", c.addr, err)
	}
	defer cl.Close()
	if err := cl.Hello("qfill.bench.local"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	for i := first; i < last; i++ {
		from, to := expand(c.from, i, c.senders), expand(c.to, i, c.rcpts)
		if err := sendOne(cl, from, to, i, body); err != nil {
			return fmt.Errorf("message %d (%s -> %s): %w", i, from, to, err)
		}
	}
	if err := cl.Quit(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

func sendOne(cl *smtp.Client, from, to string, i int, body string) error {
	if err := cl.Mail(from); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := cl.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := cl.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	_, err = fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: qfill %d\r\nMessage-ID: <qfill.%d.%d@bench.local>\r\n\r\n%s",
		from, to, i, time.Now().UnixNano(), i, body)
	if err != nil {
		return fmt.Errorf("write body: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return nil
}
