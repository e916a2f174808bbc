// Package admin is mamori's management surface: an HTTP API on loopback
// (or a LAN address over TLS), authenticated by the bearer token that
// `mamori init` writes; the web dashboard at / (session.go: a login form
// takes the same token once); and the client the CLI uses to talk to it.
//
// Management commands go through the running server (rather than opening
// its database) because the server holds the embedded store's lock and its
// in-memory indexes; going through the API keeps one writer and makes a
// change visible at once. When no server answers, the CLI falls back to a
// Local manager over the store itself.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Manager is the management surface shared by the HTTP API, the Client
// and the offline Local manager.
type Manager interface {
	Users() ([]mailbox.User, error)
	AddUser(addr, password string) error
	DelUser(addr string) error
	SetPassword(addr, password string) error
	// SetQuota sets a user's own quota: bytes, 0 for the configured
	// default, mailbox.QuotaNone for none.
	SetQuota(addr string, quota int64) error
	// SetDisabled disables logins of a user (its open sessions end; mail
	// to it is still delivered) or enables them again.
	SetDisabled(addr string, disabled bool) error
	Domains() ([]string, error)
	AddDomain(domain string) error
	DelDomain(domain string) error
	Aliases() ([]mailbox.Alias, error)
	AddAlias(alias string, targets []string) error
	DelAlias(alias string) error
}

// Queue is what the API needs of the spool. *queue.Queue implements it.
type Queue interface {
	List(f queue.Filter) []queue.Meta
	Count(f queue.Filter) int
	Get(id string) (queue.Meta, bool)
	Body(id string) ([]byte, error)
	Hold(f queue.Filter, rule string) (int, error)
	Release(f queue.Filter) (int, error)
	Delete(f queue.Filter) (int, error)
	Retry(f queue.Filter) (int, error)
}

// QueueItem is the JSON shape of a queued message (DESIGN.md contract).
type QueueItem struct {
	ID          string       `json:"id"`
	From        string       `json:"from"`
	To          []string     `json:"to"`
	ClientIP    string       `json:"client_ip"`
	User        string       `json:"user"`
	State       queue.State  `json:"state"`
	Subject     string       `json:"subject"`
	Size        int64        `json:"size"`
	AgeS        int64        `json:"age_s"`
	Rule        string       `json:"rule,omitempty"`
	Received    time.Time    `json:"received"`
	Origin      queue.Origin `json:"origin"`
	Attempts    int          `json:"attempts"`
	NextAttempt *time.Time   `json:"next_attempt,omitempty"`
	LastError   string       `json:"last_error,omitempty"`
	Rcpts       []queue.Rcpt `json:"rcpts"`
}

// ItemOf converts queue metadata to its API shape.
func ItemOf(m queue.Meta, now time.Time) QueueItem {
	it := QueueItem{
		ID: m.ID, From: m.From, ClientIP: m.ClientIP, User: m.User, State: m.State,
		Subject: m.Subject, Size: m.Size, AgeS: int64(now.Sub(m.Received) / time.Second),
		Rule: m.Rule, Received: m.Received, Origin: m.Origin, Attempts: m.Attempts,
		LastError: m.LastError, Rcpts: m.Rcpts, To: make([]string, 0, len(m.Rcpts)),
	}
	for _, r := range m.Rcpts {
		if r.Status == queue.RcptPending {
			it.To = append(it.To, r.Addr)
		}
	}
	if !m.NextAttempt.IsZero() {
		t := m.NextAttempt
		it.NextAttempt = &t
	}
	return it
}

// Server serves the API.
type Server struct {
	mgr   Manager
	queue Queue
	token string
	log   *slog.Logger
	mux   *http.ServeMux

	// The dashboard: its pages, and the browser sessions and login
	// attempts (session.go).
	web      *http.ServeMux
	sessions *sessions
	logins   *loginLimiter

	onQueueOp func(op, filter string, n int, remote string)
}

// OnQueueOp sets a function told about every bulk queue operation (the
// evidence journal records who did what to how many).
func (s *Server) OnQueueOp(fn func(op, filter string, n int, remote string)) { s.onQueueOp = fn }

// maxBody bounds request bodies.
const maxBody = 1 << 20

// NewServer returns the API handler. token must be non-empty.
func NewServer(mgr Manager, q Queue, token string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{mgr: mgr, queue: q, token: token, log: log, mux: http.NewServeMux(),
		web: http.NewServeMux(), sessions: newSessions(), logins: newLoginLimiter()}
	s.routes()
	s.webRoutes()
	return s
}

// Handle adds another endpoint that takes the bearer token (metrics).
// Only /api/ paths also take a dashboard session.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP authenticates and dispatches. The rules:
//   - /healthz needs nothing;
//   - the dashboard's pages (/, /login, /logout, /static/…) are served to
//     anyone; / shows the login form until the browser has a session;
//   - every other path takes the bearer token, as the CLI sends it;
//   - /api/ paths also take a session cookie, and then, for any method
//     but GET and HEAD, the session's CSRF token too: a cookie alone
//     never changes anything.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	switch r.URL.Path {
	case "/healthz":
		w.Write([]byte("ok\n"))
		return
	case "/", "/login", "/logout", "/static/app.js", "/static/app.css":
		if !browserHost(r.Host) {
			writeErr(w, http.StatusMisdirectedRequest, errBadHost)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		s.web.ServeHTTP(w, r)
		return
	}
	if !s.authorized(r) {
		_, csrf, ok := s.sessionOf(r)
		if !ok || !strings.HasPrefix(r.URL.Path, "/api/") || !browserHost(r.Host) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mamori"`)
			writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		if !safeMethod(r.Method) && (!csrfOK(r, csrf) || !sameOrigin(r)) {
			s.log.Warn("admin request refused: no CSRF token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeErr(w, http.StatusForbidden, errCSRF)
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	s.mux.ServeHTTP(w, r)
}

var errBadHost = errors.New("the dashboard answers only at an IP address or localhost")

// browserHost reports whether a browser request's Host is an IP literal
// or localhost (with any port, for SSH forwarding). A DNS name is refused:
// that is how a DNS-rebinding page would reach a listener on 127.0.0.1 as
// its own origin, with its own cookies and Origin header.
func browserHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i] // zone
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

// securityHeaders go on every answer: a strict Content-Security-Policy
// (scripts and styles only from the server's own files, nothing inline, no
// framing), no referrer, no sniffing, and nothing cached — API answers
// and pages carry queue contents and tokens.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || s.token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.token)) == 1
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.mgr.Users()
		reply(w, v, err)
	})
	m.HandleFunc("POST /api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Address, Password string }
		if !decode(w, r, &req) {
			return
		}
		s.audit(r, "user add", req.Address)
		done(w, s.mgr.AddUser(req.Address, req.Password))
	})
	m.HandleFunc("DELETE /api/v1/users/{addr}", func(w http.ResponseWriter, r *http.Request) {
		s.audit(r, "user del", r.PathValue("addr"))
		done(w, s.mgr.DelUser(r.PathValue("addr")))
	})
	m.HandleFunc("PUT /api/v1/users/{addr}/password", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Password string }
		if !decode(w, r, &req) {
			return
		}
		s.audit(r, "user passwd", r.PathValue("addr"))
		done(w, s.mgr.SetPassword(r.PathValue("addr"), req.Password))
	})
	m.HandleFunc("PUT /api/v1/users/{addr}/quota", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Quota int64 }
		if !decode(w, r, &req) {
			return
		}
		s.audit(r, "user quota", r.PathValue("addr"))
		done(w, s.mgr.SetQuota(r.PathValue("addr"), req.Quota))
	})
	m.HandleFunc("PUT /api/v1/users/{addr}/disabled", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Disabled *bool }
		if !decode(w, r, &req) {
			return
		}
		if req.Disabled == nil {
			writeErr(w, http.StatusBadRequest, errors.New(`bad request body: want {"disabled": true|false}`))
			return
		}
		op := "user enable"
		if *req.Disabled {
			op = "user disable"
		}
		s.audit(r, op, r.PathValue("addr"))
		done(w, s.mgr.SetDisabled(r.PathValue("addr"), *req.Disabled))
	})
	m.HandleFunc("GET /api/v1/domains", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.mgr.Domains()
		reply(w, v, err)
	})
	m.HandleFunc("POST /api/v1/domains", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Domain string }
		if !decode(w, r, &req) {
			return
		}
		s.audit(r, "domain add", req.Domain)
		done(w, s.mgr.AddDomain(req.Domain))
	})
	m.HandleFunc("DELETE /api/v1/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		s.audit(r, "domain del", r.PathValue("domain"))
		done(w, s.mgr.DelDomain(r.PathValue("domain")))
	})
	m.HandleFunc("GET /api/v1/aliases", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.mgr.Aliases()
		reply(w, v, err)
	})
	m.HandleFunc("POST /api/v1/aliases", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Alias   string
			Targets []string
		}
		if !decode(w, r, &req) {
			return
		}
		s.audit(r, "alias add", req.Alias)
		done(w, s.mgr.AddAlias(req.Alias, req.Targets))
	})
	m.HandleFunc("DELETE /api/v1/aliases/{alias}", func(w http.ResponseWriter, r *http.Request) {
		s.audit(r, "alias del", r.PathValue("alias"))
		done(w, s.mgr.DelAlias(r.PathValue("alias")))
	})

	m.HandleFunc("GET /api/v1/queue", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := checkParams(q, filterParams, listParams); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		f, err := FilterFromQuery(q)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		if q.Get("count") != "" {
			writeJSON(w, map[string]int{"count": s.queue.Count(f)})
			return
		}
		limit := 0
		if v := q.Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
				writeErr(w, http.StatusBadRequest, &queue.FilterError{Field: "limit", Value: v, Msg: "want a number of messages, 1 or more"})
				return
			}
		}
		now := time.Now()
		list := s.queue.List(f)
		if limit > 0 && len(list) > limit {
			list = list[:limit]
		}
		items := make([]QueueItem, len(list))
		for i, m := range list {
			items[i] = ItemOf(m, now)
		}
		writeJSON(w, items)
	})
	m.HandleFunc("GET /api/v1/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), showParams); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		id := r.PathValue("id")
		if !queue.ValidID(id) {
			writeErr(w, http.StatusBadRequest, &queue.FilterError{Field: "id", Value: id, Msg: "not a queue ID (16 characters 0-9 a-v, as queue list prints)"})
			return
		}
		m, ok := s.queue.Get(id)
		if !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no message %q in the queue", r.PathValue("id")))
			return
		}
		if r.URL.Query().Get("body") != "" {
			b, err := s.queue.Body(m.ID)
			if err != nil {
				writeErr(w, http.StatusInternalServerError, err)
				return
			}
			w.Header().Set("Content-Type", "message/rfc822")
			w.Write(b)
			return
		}
		writeJSON(w, ItemOf(m, time.Now()))
	})
	m.HandleFunc("POST /api/v1/queue/{op}", func(w http.ResponseWriter, r *http.Request) {
		op := r.PathValue("op")
		switch op {
		case "hold", "release", "delete", "retry":
		default:
			writeErr(w, http.StatusNotFound, fmt.Errorf("unknown queue operation %q", op))
			return
		}
		q := r.URL.Query()
		if err := checkParams(q, filterParams, opParams); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		f, err := FilterFromQuery(q)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		all := false
		if v := q.Get("all"); v != "" {
			if all, err = strconv.ParseBool(v); err != nil {
				writeErr(w, http.StatusBadRequest, &queue.FilterError{Field: "all", Value: v, Msg: "want true or false"})
				return
			}
		}
		if f.IsEmpty() && !all {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("queue %s: give a filter or ids, or all=true for the whole queue", op))
			return
		}
		rule := "admin"
		if v := q.Get("reason"); v != "" {
			if op != "hold" {
				writeErr(w, http.StatusBadRequest, &queue.FilterError{Field: "reason", Value: v, Msg: "only a hold takes a reason"})
				return
			}
			if err := queue.CheckRule(v); err != nil {
				writeErr(w, http.StatusBadRequest, &queue.FilterError{Field: "reason", Value: v, Msg: err.Error()})
				return
			}
			rule = strings.TrimSpace(v)
		}
		var n int
		switch op {
		case "hold":
			n, err = s.queue.Hold(f, rule)
		case "release":
			n, err = s.queue.Release(f)
		case "delete":
			n, err = s.queue.Delete(f)
		case "retry":
			n, err = s.queue.Retry(f)
		}
		s.log.Info("admin queue "+op, "filter", r.URL.RawQuery, "count", n, "remote", r.RemoteAddr)
		if s.onQueueOp != nil && err == nil {
			s.onQueueOp(op, r.URL.RawQuery, n, r.RemoteAddr)
		}
		if err != nil {
			code := http.StatusInternalServerError
			var fe *queue.FilterError
			if errors.As(err, &fe) {
				code = http.StatusBadRequest
			}
			writeErr(w, code, err)
			return
		}
		writeJSON(w, map[string]int{"count": n})
	})
}

func (s *Server) audit(r *http.Request, what, subject string) {
	s.log.Info("admin", "op", what, "subject", subject, "remote", r.RemoteAddr)
}

// Query parameters of the queue endpoints: the filter fields (FilterFromQuery)
// and the few that steer the request. Any other parameter is refused, so a
// misspelt filter ("client-ip=") is an error rather than no filter at all.
var (
	filterParams = map[string]bool{"from": true, "to": true, "client_ip": true, "user": true, "older_than": true,
		"state": true, "subject": true, "rule": true, "min_size": true, "max_size": true, "id": true}
	listParams = map[string]bool{"count": true, "limit": true}
	showParams = map[string]bool{"body": true}
	opParams   = map[string]bool{"all": true, "reason": true}
)

// checkParams refuses parameters outside the allowed sets and repeated
// single-valued ones (only id may repeat).
func checkParams(q url.Values, allowed ...map[string]bool) error {
	for k, vs := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || a[k]
		}
		if !ok {
			return &queue.FilterError{Field: k, Msg: "unknown parameter"}
		}
		if len(vs) > 1 && k != "id" {
			return &queue.FilterError{Field: k, Msg: "given more than once"}
		}
	}
	return nil
}

// FilterFromQuery reads a queue filter from URL query parameters through
// queue.ParseFilter, the same parser the CLI uses.
func FilterFromQuery(q url.Values) (queue.Filter, error) {
	if err := checkParams(q, filterParams, listParams, showParams, opParams); err != nil {
		return queue.Filter{}, err
	}
	return queue.ParseFilter(queue.FilterSpec{
		IDs: q["id"], From: q.Get("from"), To: q.Get("to"), ClientIP: q.Get("client_ip"), User: q.Get("user"),
		OlderThan: q.Get("older_than"), State: q.Get("state"), Subject: q.Get("subject"), Rule: q.Get("rule"),
		LargerThan: q.Get("min_size"), SmallerThan: q.Get("max_size"),
	})
}

// FilterQuery is the inverse of FilterFromQuery.
func FilterQuery(f queue.Filter) url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("from", f.From)
	set("to", f.To)
	set("client_ip", f.ClientIP)
	set("user", f.User)
	set("subject", f.Subject)
	set("rule", f.Rule)
	set("state", string(f.State))
	if f.OlderThan > 0 {
		v.Set("older_than", f.OlderThan.String())
	}
	if f.MinSize > 0 {
		v.Set("min_size", strconv.FormatInt(f.MinSize, 10))
	}
	if f.MaxSize > 0 {
		v.Set("max_size", strconv.FormatInt(f.MaxSize, 10))
	}
	for _, id := range f.IDs {
		v.Add("id", id)
	}
	return v
}

// ParseAge accepts Go durations plus a "d" suffix for days ("2d", "36h");
// see queue.ParseAge, which it is.
func ParseAge(s string) (time.Duration, error) { return queue.ParseAge(s) }

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, v)
}

func done(w http.ResponseWriter, err error) {
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, map[string]bool{"ok": true})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, mailbox.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, mailbox.ErrExists), errors.Is(err, mailbox.ErrInUse), errors.Is(err, mailbox.ErrStatic):
		return http.StatusConflict
	case errors.Is(err, mailbox.ErrUnknownDomain), errors.Is(err, mailbox.ErrWeakPassword):
		return http.StatusBadRequest
	}
	var ve interface{ Invalid() bool }
	if errors.As(err, &ve) && ve.Invalid() {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
