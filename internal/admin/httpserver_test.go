package admin

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestIdleConnectionsCannotLockOut: one address holding idle connections
// gets at most MaxConnsPerIP of the admin listener's slots; another
// address is still answered.
func TestIdleConnectionsCannotLockOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: time.Minute}
	go srv.Serve(LimitListener(ln))
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range MaxConns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// The connections past MaxConnsPerIP were closed by the server.
	closed := 0
	for _, c := range idle {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != MaxConns-MaxConnsPerIP {
		t.Errorf("%d of %d idle connections from one address closed, want %d", closed, MaxConns, MaxConns-MaxConnsPerIP)
	}
	// Another address is answered.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}
	cl := http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 3 * time.Second}
	resp, err := cl.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatalf("another address locked out: %v", err)
	}
	resp.Body.Close()
}

// TestBrowserHost: the dashboard and cookie-authenticated API answer only
// at an IP address or localhost; a DNS name (a rebinding page) is refused.
func TestBrowserHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8025": true, "localhost:9000": true, "LOCALHOST": true, "[::1]:8025": true, "[fe80::1%eth0]:8025": true,
		"192.0.2.10": true, "evil.test:8025": false, "127.0.0.1.nip.io:8025": false, "": false, "localhost.evil.test": false,
	} {
		if got := browserHost(host); got != want {
			t.Errorf("browserHost(%q) = %v, want %v", host, got, want)
		}
	}
}
