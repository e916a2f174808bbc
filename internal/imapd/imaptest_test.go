package imapd

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// TestImaptest runs Dovecot's imaptest compliance suite against the
// server over implicit TLS, with testdata/imaptest.allow as the tests
// that must pass. It runs only when MAMORI_IMAPTEST names a directory
// built by ../shared/tools/imaptest/build.sh; MAMORI_IMAPTEST_ARGS adds
// arguments to imap-compliance (e.g. "-v --only select,fetch").
func TestImaptest(t *testing.T) {
	dir := os.Getenv("MAMORI_IMAPTEST")
	if dir == "" {
		t.Skip("MAMORI_IMAPTEST not set")
	}
	allow, err := filepath.Abs("testdata/imaptest.allow")
	if err != nil {
		t.Fatal(err)
	}
	store := mailbox.NewStore(t.TempDir(), mailbox.StoreOptions{})
	defer store.Close()
	const user, pass = "imaptest@ours.test", "imaptest-pass"
	var log *slog.Logger
	if os.Getenv("MAMORI_IMAPTEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	tlsConf := testTLS(t)
	srv := New(Config{
		Hostname:    "imap.ours.test",
		TLS:         tlsConf,
		Store:       store,
		Login:       &fakeLogin{users: map[string]string{user: pass}},
		AppendLimit: 64 << 20,
		Log:         log,
	})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(tls.NewListener(raw, tlsConf))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	_, port, _ := net.SplitHostPort(raw.Addr().String())
	args := []string{"127.0.0.1", port, user, pass, "--tls", "--allow-list", allow, "--log-dir", t.TempDir()}
	args = append(args, strings.Fields(os.Getenv("MAMORI_IMAPTEST_ARGS"))...)
	cmd := exec.Command(filepath.Join(dir, "imap-compliance"), args...)
	out, err := cmd.CombinedOutput()
	t.Logf("imap-compliance:\n%s", out)
	if err != nil {
		t.Fatalf("imap-compliance: %v", err)
	}
}
