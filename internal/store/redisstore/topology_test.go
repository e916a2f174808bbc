package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/testutil"
)

// TestTopologies runs the store's behaviour tests against a real Redis
// Cluster (three masters; a client that ignores MOVED or sends keys of two
// slots in one command fails) and through a real Sentinel (the client is
// given the Sentinel, never the master), the two other URL kinds the
// package doc promises.
func TestTopologies(t *testing.T) {
	t.Parallel()
	behaviours := []struct {
		name string
		run  func(*testing.T, string)
	}{
		{"RoundTrip", testRoundTrip},
		{"UpdateRollbackAndOwnWrites", testUpdateRollbackAndOwnWrites},
		{"UpdateAtomicAcrossClients", testUpdateAtomicAcrossClients},
		{"Watch", testWatch},
		{"AddWindows", testAddWindows},
		{"ClaimNode", testClaimNode},
	}
	topologies := []struct {
		name  string
		start func(testing.TB) string
	}{
		{"cluster", func(t testing.TB) string { return testutil.StartRedisCluster(t).URL }},
		{"sentinel", func(t testing.TB) string { return testutil.StartRedisSentinel(t).URL }},
	}
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			t.Parallel()
			url := topo.start(t)
			for _, b := range behaviours {
				t.Run(b.name, func(t *testing.T) {
					// One Redis for all behaviours: each starts from an
					// empty database.
					s := open(t, url, "flush")
					if err := s.FlushForTest(context.Background()); err != nil {
						t.Fatal(err)
					}
					b.run(t, url)
				})
			}
		})
	}
}

// TestSentinelFailover: the master dies; the Sentinel promotes the
// replica and the store follows it without being told — writes work again,
// data written before the failover (and replicated) is there, and Watch
// resubscribes with a Resync.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedisSentinel(t)
	a, b := open(t, rs.URL, "a"), open(t, rs.URL, "b")
	if err := a.Put("users", "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// The replica has it before the master goes.
	rs.WaitReplicated(t, a.key("users"), "before")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.Watch(ctx, "users")
	if c := next(t, ch); !c.Resync {
		t.Fatalf("first change %+v, want Resync", c)
	}

	rs.Master.Kill()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		if err = b.Put("users", "after", []byte("2")); err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Put during the failover: %v, want ErrUnavailable until it is over", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write accepted 30 s after the master died: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if role := rs.Replica.Role(); role != "master" {
		t.Fatalf("write accepted but the replica's role is %q", role)
	}
	if v, err := a.Get("users", "before"); err != nil || string(v) != "1" {
		t.Fatalf("data written before the failover: %q, %v", v, err)
	}
	// Watch follows to the new master: it says Resync (changes may have
	// been missed), then b's changes arrive again.
	resynced := false
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			if c.Resync {
				resynced = true
			}
			if c.Key == "later" && c.Node == "b" {
				if !resynced {
					t.Fatal("changes after the failover arrived without a Resync first")
				}
				return
			}
		case <-tick.C:
			if err := b.Put("users", "later", []byte("3")); err != nil {
				t.Logf("Put after the failover: %v", err)
			}
		case <-timeout:
			t.Fatalf("no change seen through Watch 15 s after the failover (resynced %v)", resynced)
		}
	}
}
