package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "MAMORI_QUEUE_HELPER_DIR"

func crashBody(n int) []byte { return bodyFor(n, 100+(n*131)%3000) }

// TestHelperProcess is not a real test: TestCrashSafety runs the test binary
// again with it selected. It enqueues from several goroutines forever and
// prints "ID N" for each acknowledged message, until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashSafety")
	}
	q, err := Open(dir, Options{SegmentSize: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				n := i*workers + w
				m, err := q.Enqueue(msg(fmt.Sprintf("w%d@x.test", w), "r@y.test"), crashBody(n))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				line := fmt.Sprintf("%s %d\n", m.ID, n)
				out.Lock()
				os.Stdout.WriteString(line) // one write: a line is whole or absent
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashSafety SIGKILLs a process that is enqueueing with fsync on, and
// checks that every message it acknowledged is in the reopened queue with
// its body intact.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	for round := range 3 { // later rounds crash on top of an earlier crash's log
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]int{}
		sc := bufio.NewScanner(stdout)
		killAt := 200 + round*150
		deadline := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		killed := false
		for sc.Scan() {
			id, n, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				t.Fatalf("bad line %q", sc.Text())
			}
			num, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("bad line %q", sc.Text())
			}
			acked[id] = num
			if len(acked) == killAt && !killed {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		deadline.Stop()
		cmd.Wait()
		if !killed {
			t.Fatalf("child exited after %d messages without being killed; stderr: %s", len(acked), stderr.String())
		}

		q, err := Open(dir, Options{SegmentSize: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		for id, n := range acked {
			b, err := q.Body(id)
			if err != nil {
				t.Fatalf("round %d: acknowledged message %s (#%d) lost: %v", round, id, n, err)
			}
			if !bytes.Equal(b, crashBody(n)) {
				t.Fatalf("round %d: message %s has the wrong body", round, id)
			}
		}
		t.Logf("round %d: %d acknowledged before SIGKILL, %d in queue after reopen", round, len(acked), q.Count(Filter{}))
		// Clear the queue so the next round starts from a log with removals.
		if _, err := q.Delete(Filter{}); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
