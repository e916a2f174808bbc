package relaytest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLocalAddr: every connection of the battery comes from the configured
// source address, and a malformed one is refused before any connection.
func TestLocalAddr(t *testing.T) {
	tests := []struct {
		name    string
		local   string
		wantSrc string // "" = not checked
		wantErr string
	}{
		{name: "bound to 127.0.0.7", local: "127.0.0.7", wantSrc: "127.0.0.7"},
		{name: "bound to 127.201.3.4", local: "127.201.3.4", wantSrc: "127.201.3.4"},
		{name: "system choice", local: ""},
		{name: "not an IP", local: "localhost", wantErr: "local address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startToy(t, "220 mx.local.test ESMTP\r\n", func() handler {
				return smtpHandler("mx.local.test", closedRcpt, "")
			})
			rep, err := runBounded(t, context.Background(), Options{Addr: ts.addr(), LocalAddr: tt.local, Timeout: 5 * time.Second})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Run error = %v, want one containing %q", err, tt.wantErr)
				}
				if n := ts.connCount(); n != 0 {
					t.Errorf("%d connections made despite a bad local address", n)
				}
				return
			}
			if err != nil || rep.Relayed != 0 || len(rep.Probes) == 0 {
				t.Fatalf("Run = %d probes, %d relayed, %v", len(rep.Probes), rep.Relayed, err)
			}
			ts.mu.Lock()
			defer ts.mu.Unlock()
			if len(ts.conns) < 2 {
				t.Fatalf("only %d connections; the battery reconnects every %d probes", len(ts.conns), probesPerConn)
			}
			for _, c := range ts.conns {
				ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				if tt.wantSrc != "" && ap.Addr().String() != tt.wantSrc {
					t.Errorf("connection from %s, want %s", ap.Addr(), tt.wantSrc)
				}
			}
		})
	}
}
