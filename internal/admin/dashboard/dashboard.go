// Package dashboard holds the admin web dashboard: two HTML pages (the
// login form and the dashboard), one script and one style sheet, all
// embedded in the binary (no CDN: the server may be offline). The script
// is plain JavaScript (fetch and the DOM, no framework, no build step);
// it polls GET /api/v1/live and calls the admin API with the session's
// CSRF token. internal/admin serves these and does the authentication.
package dashboard

import (
	"embed"
	"html/template"
	"io"
	"net/http"
)

//go:embed index.html login.html app.js app.css
var files embed.FS

var pages = template.Must(template.ParseFS(files, "index.html", "login.html"))

// Index writes the dashboard page; csrf is the session's CSRF token, which
// the page hands to its script (a meta tag) and to the logout form.
func Index(w io.Writer, csrf string) error {
	return pages.ExecuteTemplate(w, "index.html", struct{ CSRF string }{csrf})
}

// Login writes the login form, with msg (if any) said above it.
func Login(w io.Writer, msg string) error {
	return pages.ExecuteTemplate(w, "login.html", struct{ Message string }{msg})
}

// Assets are the static files, by URL path.
var Assets = map[string]string{
	"/static/app.js":  "app.js",
	"/static/app.css": "app.css",
}

// ServeAsset serves one of Assets.
func ServeAsset(w http.ResponseWriter, r *http.Request) {
	name, ok := Assets[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeFileFS(w, r, files, name)
}
