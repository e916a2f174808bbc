package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server of a test's own: loopback only, a free port, its
// data (an append-only file, fsynced on every write, so a restart keeps it)
// in a temporary directory. No system service is used.
type Redis struct {
	Addr string // 127.0.0.1:PORT
	URL  string // redis://127.0.0.1:PORT

	t     testing.TB
	bin   string
	dir   string
	cmd   *exec.Cmd
	fsync string
	extra []string // further redis-server arguments (cluster mode)
	// exited is closed when the running server's process has been
	// waited for.
	exited chan struct{}
}

// StartRedis starts a redis-server for t and stops it when t ends. Without
// redis-server on PATH the test is skipped, or fails when
// MAMORI_REQUIRE_TOOLS is set (CI).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return startRedis(t, "always")
}

// StartRedisEverySec is StartRedis with Redis's default durability
// (appendfsync everysec), as a production server runs: for benchmarks.
// Writes of the last second may be lost when it is killed.
func StartRedisEverySec(t testing.TB) *Redis {
	t.Helper()
	return startRedis(t, "everysec")
}

func startRedis(t testing.TB, fsync string, extra ...string) *Redis {
	t.Helper()
	return startRedisWith(t, fsync, func() []string { return extra })
}

// startRedisWith starts a server whose further arguments extra gives
// (called again for each attempt: it may name ports of its own). A port
// found free can be taken by another process before redis-server binds
// it; the start is then tried again on other ports.
func startRedisWith(t testing.TB, fsync string, extra func() []string) *Redis {
	t.Helper()
	bin := redisServer(t)
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		addr := freeAddr(t)
		r := &Redis{Addr: addr, URL: "redis://" + addr, t: t, bin: bin, dir: dir, fsync: fsync, extra: extra()}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.Kill)
			return r
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
		os.Remove(filepath.Join(dir, "nodes.conf")) // a cluster node's identity from the failed try
	}
	t.Fatal(lastErr)
	return nil
}

// redisServer finds redis-server, or skips t (fails it in CI).
func redisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatalf("redis-server is required (MAMORI_REQUIRE_TOOLS set) but not installed")
		}
		t.Skip("redis-server not installed")
	}
	return bin
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start (re)starts the server on the same port and data directory and
// waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatal(err)
	}
}

// start is Start, returning its error (with the server's log).
func (r *Redis) start() error {
	if r.cmd != nil {
		return errors.New("redis-server already running")
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1", "--port", port, "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", r.fsync,
		"--daemonize", "no", "--protected-mode", "yes",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	cmd.Args = append(cmd.Args, r.extra...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.cmd = cmd
	exited := make(chan struct{})
	r.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.ping()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			deadline = time.Time{} // it gave up (a port taken, say): no need to wait
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.Kill()
			return fmt.Errorf("redis-server on %s does not answer: %v\n%s", r.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL), as a crash would. Calling it
// on a stopped server does nothing.
func (r *Redis) Kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// Do sends one command and returns its reply: a status, an integer or a
// bulk string (a test convenience: PING, DBSIZE, CLUSTER INFO…; of an
// array reply only the header line).
func (r *Redis) Do(args ...string) (string, error) {
	return redisDo(r.Addr, args...)
}

func redisDo(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(line, "$")); err == nil && strings.HasPrefix(line, "$") {
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return strings.TrimLeft(line, "+:"), nil
}

func (r *Redis) ping() error {
	s, err := r.Do("PING")
	if err != nil {
		return err
	}
	if s != "PONG" {
		return fmt.Errorf("PING answered %q", s)
	}
	return nil
}
