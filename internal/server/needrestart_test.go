package server

import (
	"slices"
	"testing"

	"github.com/mamori-mail/mamori/internal/config"
)

// TestNeedRestart: a reload names exactly the settings it cannot apply.
func TestNeedRestart(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{Hostname: "mx.example.test", Store: config.Store{Backend: "redis", URL: "redis://h:1", Node: "mx1"}}
	}
	tests := []struct {
		name string
		edit func(*config.Config)
		want []string
	}{
		{"nothing", func(*config.Config) {}, nil},
		{"peers apply at once", func(c *config.Config) { c.Store.Peers = []string{"10.0.0.2"} }, nil},
		{"store url", func(c *config.Config) { c.Store.URL = "redis://other:1" }, []string{"store"}},
		{"node", func(c *config.Config) { c.Store.Node = "mx2" }, []string{"store"}},
		{"hostname", func(c *config.Config) { c.Hostname = "mx2.example.test" }, []string{"hostname"}},
		{"max message size applies to IMAP APPEND too", func(c *config.Config) { c.Limits.MaxMessageSize = 1 << 20 }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old, new := base(), base()
			tc.edit(new)
			if got := needRestart(old, new); !slices.Equal(got, tc.want) {
				t.Fatalf("needRestart = %q, want %q", got, tc.want)
			}
		})
	}
}
