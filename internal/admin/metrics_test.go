package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMetricsNeedsBearerToken: /metrics answers the right Bearer token
// only; no token, a wrong one or another scheme get 401.
func TestMetricsNeedsBearerToken(t *testing.T) {
	s := NewServer(nil, nil, "secret-token-0123456789", nil)
	s.SetMetrics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "mamori_up 1\n")
	}))
	ts := httptest.NewServer(s)
	defer ts.Close()
	for _, c := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong-token-0123456789", http.StatusUnauthorized},
		{"Basic c2VjcmV0LXRva2VuLTAxMjM0NTY3ODk=", http.StatusUnauthorized},
		{"Bearer secret-token-0123456789", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", ts.URL+"/metrics", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.auth, resp.StatusCode, c.want)
		}
		if c.want == http.StatusOK && string(b) != "mamori_up 1\n" {
			t.Errorf("body %q", b)
		}
		if c.want != http.StatusOK && string(b) == "mamori_up 1\n" {
			t.Errorf("Authorization %q: metrics served", c.auth)
		}
	}
}
