package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFullPort25LeavesOtherDoorsOpen (review item 6): outsiders fill port
// 25's whole connection budget and are refused past it, yet an
// authenticated user still submits on 587, the trusted LAN still sends on
// port 25, and the admin API answers: each listener and class of client
// has its own budget.
func TestFullPort25LeavesOtherDoorsOpen(t *testing.T) {
	requireTool(t, "swaks")
	const budget = 200
	in := newInstance(t, "ours.test", func(cfg string) string {
		cfg = setKey(cfg, "trusted_networks", `["127.0.0.1/32"]`)
		return strings.Replace(cfg, "[guard]\n", fmt.Sprintf("[guard]\nmax_connections = %d\n", budget), 1)
	})
	in.addUser("carol@ours.test", pw)
	in.start()

	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	greet := func(src string) string {
		c, err := dialFrom(src, in.smtp)
		if err != nil {
			return "dial: " + err.Error()
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		l, _ := bufio.NewReader(c).ReadString('\n')
		_ = c.SetReadDeadline(time.Time{})
		return strings.TrimSpace(l)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	refused := 0
	for i := range budget {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if l := greet(fmt.Sprintf("127.101.%d.%d", i/10, i%10+1)); !strings.HasPrefix(l, "220") {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if refused != 0 {
		t.Fatalf("%d of %d outsiders refused before the budget was full", refused, budget)
	}
	if l := greet("127.102.0.1"); !strings.HasPrefix(l, "421") {
		t.Fatalf("outsider past port 25's budget: %q, want 421", l)
	}

	host, port, _ := net.SplitHostPort(in.submission)
	if out, code := swaks(t, "--server", host, "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", "carol@ours.test",
		"--auth-password", pw, "--from", "carol@ours.test", "--to", "carol@ours.test", "--h-Subject", "submitted"); code != 0 {
		t.Errorf("submission while port 25 is full: %s", out)
	}
	host, port, _ = net.SplitHostPort(in.smtp)
	if out, code := swaks(t, "--server", host, "--port", port, "--local-interface", "127.0.0.1",
		"--from", "printer@ours.test", "--to", "carol@ours.test", "--h-Subject", "from the LAN"); code != 0 {
		t.Errorf("trusted LAN client on port 25 while outsiders fill it: %s", out)
	}
	in.waitMail("carol@ours.test", 2, 30*time.Second)
	in.guardList()
}
