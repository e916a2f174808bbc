// Command imapidle holds many idle, logged-in IMAPS connections open for
// bench/imap-stress.sh, so the benchmark can read what each one costs a
// server in memory.
//
// It opens -n implicit-TLS connections (certificates are not checked: the
// benchmark's servers have self-signed ones), logs each in with LOGIN, and
// prints one line on stdout:
//
//	open 500 failed 0 secs 12.3
//	open 88 failed 412 secs 9.1 first-error: conn 100: LOGIN: a1 NO [...] Maximum number of connections ...
//
// Then it holds them, idle, until a line or EOF arrives on stdin or -hold
// passes, says LOGOUT on each and exits. Every step is bounded: -timeout per
// connection and login, -deadline for opening all of them.
//
// With -hash it instead reads a password from stdin and prints a Dovecot
// passwd-file scheme string, {ARGON2ID}$argon2id$v=19$m=...,t=...,p=...$salt$key,
// by default with mamori's own Argon2id parameters (m=19456 KiB, t=2, p=1;
// internal/mailbox/password.go), so both servers pay the same for a LOGIN.
//
// Examples:
//
//	imapidle -addr 127.0.0.1:9993 -user bench@bench.test -password-file pw -n 500
//	printf %s secret | imapidle -hash
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

func main() {
	var (
		addr     = flag.String("addr", "", "IMAPS server, host:port")
		user     = flag.String("user", "", "login name")
		pwFile   = flag.String("password-file", "", "file holding the password (first line)")
		n        = flag.Int("n", 500, "connections to open")
		workers  = flag.Int("workers", 4, "connections opened in parallel")
		timeout  = flag.Duration("timeout", 60*time.Second, "limit for one connection's TLS handshake and LOGIN")
		deadline = flag.Duration("deadline", 600*time.Second, "limit for opening all connections")
		hold     = flag.Duration("hold", 600*time.Second, "release the connections after this long even without a line on stdin")
		hash     = flag.Bool("hash", false, "print an {ARGON2ID} hash of the password on stdin and exit")
		argonM   = flag.Uint("argon-m", 19456, "with -hash: Argon2id memory in KiB")
		argonT   = flag.Uint("argon-t", 2, "with -hash: Argon2id passes")
		argonP   = flag.Uint("argon-p", 1, "with -hash: Argon2id lanes")
	)
	flag.Parse()
	if *hash {
		if err := printHash(uint32(*argonM), uint32(*argonT), uint8(*argonP)); err != nil {
			fail(err)
		}
		return
	}
	if *addr == "" || *user == "" || *pwFile == "" || *n < 1 || *workers < 1 {
		fail(errors.New("need -addr, -user, -password-file, -n >= 1 and -workers >= 1"))
	}
	b, err := os.ReadFile(*pwFile)
	if err != nil {
		fail(err)
	}
	password := strings.SplitN(string(b), "\n", 2)[0]

	start := time.Now()
	conns, failed, firstErr := openAll(*addr, *user, password, *n, *workers, *timeout, *deadline)
	line := fmt.Sprintf("open %d failed %d secs %.1f", len(conns), failed, time.Since(start).Seconds())
	if firstErr != "" {
		line += " first-error: " + firstErr
	}
	fmt.Println(line)

	released := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // a line or EOF
		close(released)
	}()
	select {
	case <-released:
	case <-time.After(*hold):
	}
	closeAll(conns, *workers)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "imapidle:", err)
	os.Exit(2)
}

// printHash reads a password from stdin and prints it hashed with Argon2id
// in the form Dovecot's passwd-file reads ({ARGON2ID} and the PHC string).
func printHash(m, t uint32, p uint8) error {
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
	if err != nil {
		return err
	}
	password := strings.TrimRight(string(b), "\r\n")
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	key := argon2.IDKey([]byte(password), salt, t, m, p, 32)
	enc := base64.RawStdEncoding
	fmt.Printf("{ARGON2ID}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s\n",
		argon2.Version, m, t, p, enc.EncodeToString(salt), enc.EncodeToString(key))
	return nil
}

// openAll opens n logged-in connections with the given parallelism and
// returns those that succeeded, how many failed, and the first failure.
// After deadline no new connection is started.
func openAll(addr, user, password string, n, workers int, timeout, deadline time.Duration) ([]net.Conn, int, string) {
	var (
		mu       sync.Mutex
		conns    []net.Conn
		failed   int
		firstErr string
		wg       sync.WaitGroup
	)
	jobs := make(chan int)
	stop := time.Now().Add(deadline)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var c net.Conn
				err := errors.New("deadline for opening connections passed")
				if time.Now().Before(stop) {
					c, err = openOne(addr, user, password, timeout)
				}
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = fmt.Sprintf("conn %d: %v", i+1, err)
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return conns, failed, firstErr
}

// openOne dials addr with implicit TLS, reads the greeting and logs in.
// The connection is left idle in the authenticated state.
func openOne(addr, user, password string, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // benchmark against self-signed local servers
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(greeting, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting: %q", strings.TrimSpace(greeting))
	}
	if _, err := fmt.Fprintf(c, "a1 LOGIN %s %s\r\n", quote(user), quote(password)); err != nil {
		c.Close()
		return nil, err
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("LOGIN: %w", err)
		}
		if strings.HasPrefix(l, "a1 ") {
			if !strings.HasPrefix(l, "a1 OK") {
				c.Close()
				return nil, fmt.Errorf("LOGIN: %s", strings.TrimSpace(l))
			}
			break
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// closeAll says LOGOUT on every connection (waiting at most 5 s for the
// reply) and closes it.
func closeAll(conns []net.Conn, workers int) {
	var wg sync.WaitGroup
	jobs := make(chan net.Conn)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, "a2 LOGOUT\r\n"); err == nil {
					r := bufio.NewReader(c)
					for {
						l, err := r.ReadString('\n')
						if err != nil || strings.HasPrefix(l, "a2 ") {
							break
						}
					}
				}
				c.Close()
			}
		}()
	}
	for _, c := range conns {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
}
