package admin

import (
	"log/slog"
	"net"
	"net/http"
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

// LimitListener caps the connections the admin server handles at once.
func LimitListener(l net.Listener) net.Listener { return netutil.LimitListener(l, MaxConns) }
