package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/delivery"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/queue"
)

// Local delivery goes through the mailbox store; to a mailbox already full
// it is a temporary 4.2.2 failure the scheduler defers.
func TestLocalDeliveryQuota(t *testing.T) {
	st := mailbox.NewStore(filepath.Join(t.TempDir(), "mail"), mailbox.StoreOptions{
		Quota: func(string) int64 { return 200 },
	})
	defer st.Close()
	l := &localDelivery{store: st, started: time.Now()}
	m := queue.Meta{ID: "Q1", From: "b@example.test", Received: time.Now()}
	if err := l.DeliverLocal(context.Background(), "a@example.test", m, []byte("Subject: x\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	if us, _ := st.Usage("a@example.test"); us.Messages != 1 {
		t.Fatalf("usage %+v after delivery", us)
	}
	m.ID = "Q2" // room left: delivered, even past the quota
	if err := l.DeliverLocal(context.Background(), "a@example.test", m, []byte(strings.Repeat("x", 200))); err != nil {
		t.Fatal(err)
	}
	m.ID = "Q3"
	err := l.DeliverLocal(context.Background(), "a@example.test", m, []byte(strings.Repeat("x", 200)))
	if err == nil || !errors.Is(err, mailbox.ErrOverQuota) || delivery.IsPermanent(err) || !strings.HasPrefix(err.Error(), "4.2.2 ") {
		t.Fatalf("over-quota delivery: %v", err)
	}
}
