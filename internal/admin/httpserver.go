package admin

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// HTTP limits of the admin listener. The admin API must keep answering
// while the SMTP side is under attack, and must not itself be an easy
// target: every phase of a request is timed, headers are bounded, and at
// most MaxConns connections are served at once (more wait in the kernel's
// backlog until a slot frees).
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	// WriteTimeout covers the longest answer: an incident export of a
	// large queue.
	WriteTimeout   = 5 * time.Minute
	IdleTimeout    = 60 * time.Second
	MaxHeaderBytes = 64 << 10
	MaxConns       = 64
	// MaxConnsPerIP keeps one address from taking every slot (a browser
	// opens about six; idle or slow connections only hold one each).
	MaxConnsPerIP = 16
)

// NewHTTPServer returns the admin HTTP server with its limits set.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// LimitListener caps the connections the admin server handles at once:
// MaxConns in all (more wait in the kernel's backlog) and MaxConnsPerIP
// from one address (more are closed at once), so that one client holding
// idle connections cannot lock the administrator out.
func LimitListener(l net.Listener) net.Listener {
	return &perIPListener{Listener: netutil.LimitListener(l, MaxConns), perIP: MaxConnsPerIP, open: map[netip.Addr]int{}}
}

type perIPListener struct {
	net.Listener
	perIP int
	mu    sync.Mutex
	open  map[netip.Addr]int
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := netip.Addr{}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			ip = ap.Addr().Unmap()
		}
		l.mu.Lock()
		if l.open[ip] >= l.perIP {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &perIPConn{Conn: c, l: l, ip: ip}, nil
	}
}

type perIPConn struct {
	net.Conn
	l    *perIPListener
	ip   netip.Addr
	once sync.Once
}

func (c *perIPConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.ip]--; c.l.open[c.ip] <= 0 {
			delete(c.l.open, c.ip)
		}
		c.l.mu.Unlock()
	})
	return err
}
