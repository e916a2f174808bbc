package admin

import (
	"errors"
	"net/http"
)

// SetMetrics serves h (the Prometheus registry) at GET /metrics. The
// endpoint takes the admin token as a Bearer token, like the API, and
// only that: a dashboard session does not open it, so a scraper's
// credentials and a browser's stay separate.
func (s *Server) SetMetrics(h http.Handler) {
	s.mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mamori"`)
			writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		h.ServeHTTP(w, r)
	}))
}
