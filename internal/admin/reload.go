package admin

import (
	"net/http"
)

// ReloadResult says what a reload did.
type ReloadResult struct {
	// NeedRestart names the changed settings a reload cannot apply
	// (listeners, data_dir, ...); they take effect at the next start.
	NeedRestart []string `json:"need_restart"`
}

// SetReload serves POST /api/v1/reload (mamori reload): fn re-reads the
// config and applies it; on error the old configuration stays in force
// and the answer is 422 with the reason.
func (s *Server) SetReload(fn func() (ReloadResult, error)) {
	s.mux.HandleFunc("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		s.audit(r, "reload", "")
		res, err := fn()
		if err != nil {
			writeErr(w, http.StatusUnprocessableEntity, err)
			return
		}
		if res.NeedRestart == nil {
			res.NeedRestart = []string{}
		}
		writeJSON(w, res)
	})
}

// Reload asks the running server to re-read its config.
func (c *Client) Reload() (ReloadResult, error) {
	var res ReloadResult
	err := c.do(http.MethodPost, "/api/v1/reload", nil, struct{}{}, &res)
	return res, err
}
