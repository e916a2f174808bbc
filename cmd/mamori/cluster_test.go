package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/server"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// TestOfflineUserCommandsUseSharedStore: with [store] backend = "redis"
// and no server running, user commands work on the shared directory, not
// on the node's own database.
func TestOfflineUserCommandsUseSharedStore(t *testing.T) {
	r := testutil.StartRedis(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close() // nothing answers on the admin port: the CLI works offline
	p, _ := strconv.Atoi(port)
	res, err := config.Init(config.InitOptions{Dir: t.TempDir(), Domain: "example.test", ListenHost: "127.0.0.1", AdminPort: p,
		SMTPPort: 1, SubmissionPort: 2, SubmissionsPort: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(res.ConfigPath)
	cfg := strings.Replace(string(b), `backend = "embedded"`, `backend = "redis"`+"\nurl = "+strconv.Quote(r.URL)+"\nnode = \"cli\"", 1)
	if err := os.WriteFile(res.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"user", "add", "alice@example.test", "--password-stdin", "--config", res.ConfigPath},
		strings.NewReader("correct horse battery\n"), &out, &errb); err != nil {
		t.Fatalf("user add: %v\n%s", err, errb.String())
	}
	rs, err := redisstore.Open(context.Background(), redisstore.Options{URL: r.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if v, err := rs.Get("mailbox.users", "alice@example.test"); err != nil || v == nil {
		t.Fatalf("alice not in the shared store: %q, %v", v, err)
	}
	c, err := config.Load(res.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(server.StorePath(c)); !os.IsNotExist(err) {
		t.Error("the node's own database was created: the CLI wrote there")
	}
}
