package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamori-mail/mamori/internal/admin/dashboard"
)

// Browser sessions for the dashboard. The login form takes the admin token
// once and sets a session cookie (a random id; the server keeps the session
// and its CSRF token in memory). A session opens the dashboard and the
// /api/ endpoints; every request that is not GET or HEAD must also carry the
// session's CSRF token, in the X-CSRF-Token header or (for the logout form)
// a csrf form field. The bearer token keeps working as before and needs no
// CSRF token: a browser never sends it by itself.

const (
	// SessionCookie names the dashboard's session cookie.
	SessionCookie = "mamori_session"
	// CSRFHeader carries a session's CSRF token on API calls.
	CSRFHeader = "X-CSRF-Token"
	// csrfField carries it in a form post.
	csrfField = "csrf"

	// SessionIdle ends a session nobody has used for this long (the open
	// dashboard polls every 2 s, so only a closed tab goes idle).
	SessionIdle = 30 * time.Minute
	// SessionMaxAge ends any session this long after the login.
	SessionMaxAge = 12 * time.Hour
	// MaxSessions bounds the sessions kept; a login past it ends the
	// least recently used.
	MaxSessions = 32

	// Wrong tokens at the login form: each one makes its client IP wait
	// before the next try, 1 s doubling up to loginMaxWait; a right token
	// clears the count. At most maxLoginClients IPs are remembered.
	loginFirstWait  = time.Second
	loginMaxWait    = time.Minute
	loginForget     = 15 * time.Minute
	maxLoginClients = 1024
)

var errCSRF = errors.New("missing or wrong CSRF token (X-CSRF-Token): reload the dashboard")

// session is one logged-in browser.
type session struct {
	csrf     string
	created  time.Time
	lastSeen time.Time
}

// sessionKey is the map key of a session: the hash of its cookie value,
// so looking a session up reveals nothing of the ids through timing.
type sessionKey [sha256.Size]byte

func keyOf(id string) sessionKey { return sha256.Sum256([]byte(id)) }

// sessions is the server-side session map, bounded by MaxSessions.
type sessions struct {
	mu  sync.Mutex
	m   map[sessionKey]*session
	now func() time.Time
}

func newSessions() *sessions {
	return &sessions{m: map[sessionKey]*session{}, now: time.Now}
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its cookie value and CSRF token.
func (st *sessions) create() (id, csrf string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	st.prune(now)
	for len(st.m) >= MaxSessions {
		var oldest sessionKey
		first := true
		for k, s := range st.m {
			if first || s.lastSeen.Before(st.m[oldest].lastSeen) {
				oldest, first = k, false
			}
		}
		delete(st.m, oldest)
	}
	id, csrf = randomToken(), randomToken()
	st.m[keyOf(id)] = &session{csrf: csrf, created: now, lastSeen: now}
	return id, csrf
}

// get returns the CSRF token of a live session and marks it used.
func (st *sessions) get(id string) (csrf string, ok bool) {
	if id == "" {
		return "", false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	k := keyOf(id)
	s := st.m[k]
	if s == nil {
		return "", false
	}
	if expired(s, now) {
		delete(st.m, k)
		return "", false
	}
	s.lastSeen = now
	return s.csrf, true
}

// end forgets a session.
func (st *sessions) end(id string) {
	st.mu.Lock()
	delete(st.m, keyOf(id))
	st.mu.Unlock()
}

func (st *sessions) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

func (st *sessions) prune(now time.Time) {
	for k, s := range st.m {
		if expired(s, now) {
			delete(st.m, k)
		}
	}
}

func expired(s *session, now time.Time) bool {
	return now.Sub(s.lastSeen) >= SessionIdle || now.Sub(s.created) >= SessionMaxAge
}

// loginLimiter slows down guessing at the login form, per client IP.
type loginLimiter struct {
	mu  sync.Mutex
	m   map[string]*loginFailures
	now func() time.Time
}

type loginFailures struct {
	n     int
	until time.Time // no attempt before this
	last  time.Time
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{m: map[string]*loginFailures{}, now: time.Now}
}

// wait returns how long ip must still wait before its next attempt.
func (l *loginLimiter) wait(ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.m[ip]; f != nil {
		if d := f.until.Sub(l.now()); d > 0 {
			return d
		}
	}
	return 0
}

// fail records a wrong token from ip and returns the failures so far.
func (l *loginLimiter) fail(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.m[ip]
	if f == nil {
		if len(l.m) >= maxLoginClients {
			l.evict(now)
		}
		f = &loginFailures{}
		l.m[ip] = f
	}
	f.n++
	f.last = now
	d := loginFirstWait
	for i := 1; i < f.n && d < loginMaxWait; i++ {
		d *= 2
	}
	f.until = now.Add(min(d, loginMaxWait))
	return f.n
}

// ok clears ip's failures after a right token.
func (l *loginLimiter) ok(ip string) {
	l.mu.Lock()
	delete(l.m, ip)
	l.mu.Unlock()
}

// evict drops forgotten entries, or else the one idle longest.
func (l *loginLimiter) evict(now time.Time) {
	var oldest string
	for ip, f := range l.m {
		if now.Sub(f.last) >= loginForget {
			delete(l.m, ip)
			continue
		}
		if oldest == "" || f.last.Before(l.m[oldest].last) {
			oldest = ip
		}
	}
	if len(l.m) >= maxLoginClients {
		delete(l.m, oldest)
	}
}

// clientIP is the host part of the request's remote address.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// sessionOf returns the request's session id and CSRF token, if its cookie
// names a live session.
func (s *Server) sessionOf(r *http.Request) (id, csrf string, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", "", false
	}
	csrf, ok = s.sessions.get(c.Value)
	return c.Value, csrf, ok
}

// csrfOK reports whether a state-changing request carries the session's
// CSRF token: the header, or the form field of a form post.
func csrfOK(r *http.Request, want string) bool {
	got := r.Header.Get(CSRFHeader)
	if got == "" && isForm(r) {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// safeMethod: requests that change nothing and need no CSRF token.
func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// sameOrigin refuses a browser request that another site made: its
// Sec-Fetch-Site says so, or its Origin names another host. SameSite=Strict
// already keeps the cookie off those; this also covers the login form,
// which has no cookie yet. Under Referrer-Policy: no-referrer browsers send
// "Origin: null" on their own same-origin posts, so "null" is left to
// Sec-Fetch-Site. Clients that send neither header (curl, the CLI) pass.
func sameOrigin(r *http.Request) bool {
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs != "" && sfs != "same-origin" && sfs != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && u.Host == r.Host
}

// setSessionCookie sets (or, with an empty id, clears) the session cookie.
// It is Secure when the request came over TLS.
func setSessionCookie(w http.ResponseWriter, r *http.Request, id string) {
	c := &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
	if id == "" {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(SessionMaxAge / time.Second)
	}
	http.SetCookie(w, c)
}

// login handles POST /login: the admin token from the form, compared in
// constant time; wrong tokens make the client IP wait. The token is never
// logged.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	if !sameOrigin(r) {
		s.log.Warn("admin login refused: cross-origin form", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		s.loginPage(w, r, http.StatusForbidden, "This form was sent from another site.")
		return
	}
	if d := s.logins.wait(ip); d > 0 {
		secs := int((d + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.loginPage(w, r, http.StatusTooManyRequests, "Too many wrong tokens: wait "+strconv.Itoa(secs)+" s and try again.")
		return
	}
	tok := r.PostFormValue("token")
	if s.token == "" || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.token)) != 1 {
		n := s.logins.fail(ip)
		s.log.Warn("admin login failed: wrong token", "remote", r.RemoteAddr, "failures", n)
		s.loginPage(w, r, http.StatusUnauthorized, "Wrong token.")
		return
	}
	s.logins.ok(ip)
	id, _ := s.sessions.create()
	setSessionCookie(w, r, id)
	s.log.Info("admin login", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout handles POST /logout (session and CSRF token required).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id, csrf, ok := s.sessionOf(r)
	if ok {
		if !csrfOK(r, csrf) {
			writeErr(w, http.StatusForbidden, errCSRF)
			return
		}
		s.sessions.end(id)
		s.log.Info("admin logout", "remote", r.RemoteAddr)
	}
	setSessionCookie(w, r, "")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// webRoutes serves the dashboard's pages; ServeHTTP sends them here
// without authentication, and each decides for itself.
func (s *Server) webRoutes() {
	m := s.web
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		_, csrf, ok := s.sessionOf(r)
		if !ok {
			s.loginPage(w, r, http.StatusOK, "")
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := dashboard.Index(w, csrf); err != nil {
			s.log.Error("dashboard page", "err", err)
		}
	})
	m.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.logout)
	m.HandleFunc("GET /static/", dashboard.ServeAsset)
}

// loginPage answers with the login form (and a message above it).
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := dashboard.Login(w, msg); err != nil {
		s.log.Error("login page", "err", err)
	}
}
