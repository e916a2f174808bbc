package guard

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeReplicator struct {
	mu  sync.Mutex
	got []Shared
}

func (r *fakeReplicator) Publish(s Shared) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *fakeReplicator) take() []Shared {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// Two nodes wired back to back: what one decides, the other applies.
func TestSharedDecisions(t *testing.T) {
	ra, rb := &fakeReplicator{}, &fakeReplicator{}
	a, _, ha := newTestGuard(t, Config{Node: "a", Replicator: ra}, nil)
	b, clkB, hb := newTestGuard(t, Config{Node: "b", Replicator: rb}, nil)
	relay := func(from *fakeReplicator, to *Guard) int {
		got := from.take()
		for _, s := range got {
			to.ApplyShared(s)
		}
		return len(got)
	}
	ip := addr("203.0.113.9")

	// A ban by the administrator of a.
	a.Ban(netip.MustParsePrefix("203.0.113.9/32"), time.Hour, "")
	if n := relay(ra, b); n != 1 {
		t.Fatalf("a published %d decisions for one ban", n)
	}
	if d, _ := b.Connect(ip, false); d.Verdict != Drop || d.Rule != "ban" {
		t.Fatalf("b after a's ban: %+v", d)
	}
	snap := b.Snapshot()
	if len(snap.Bans) != 1 || snap.Bans[0].Node != "a" || snap.Bans[0].Rule != "admin" {
		t.Fatalf("b's bans = %+v, want one by node a", snap.Bans)
	}
	if got := rb.take(); len(got) != 0 {
		t.Fatalf("b passed a's decision on: %+v (echo)", got)
	}
	b.ApplyShared(Shared{Kind: SharedBan, Node: "a", CIDR: "203.0.113.9/32", Expires: t0.Add(time.Minute), Rule: "admin"})
	if e := b.Snapshot().Bans[0].Expires; !e.Equal(t0.Add(time.Hour)) {
		t.Fatalf("a shorter shared ban shortened b's: expires %v", e)
	}

	// Unban on b reaches a.
	b.Unban(netip.MustParsePrefix("203.0.113.9/32"))
	relay(rb, a)
	if _, banned := a.Banned(ip); banned {
		t.Fatal("a still bans after b's unban")
	}

	// An isolation on a (by rule) holds b's queued mail too, without a
	// second alert.
	for i := range 31 {
		a.Message(mail(pc5, i, "x@ext.test"))
	}
	relay(ra, b)
	flush(b)
	iso := b.Snapshot().Isolated
	if len(iso) != 1 || iso[0].IP != "10.0.0.5" || iso[0].Node != "a" {
		t.Fatalf("b's isolations = %+v", iso)
	}
	if d := b.Message(mail(pc5, 99, "y@ext.test")); d.Verdict != Hold {
		t.Fatalf("b lets an isolated sender through: %+v", d)
	}
	holds, _ := hb.snapshot()
	if alerts := hb.alertsOf("isolated"); len(holds) != 1 || holds[0].ip != addr("10.0.0.5") || len(alerts) != 0 {
		t.Fatalf("b: holds %+v alerts %+v, want one hold and no alert", holds, alerts)
	}

	// A suspension by the administrator of b, then released on a.
	b.Suspend("alice@corp.test", "")
	relay(rb, a)
	if !a.IsSuspended("alice@corp.test") {
		t.Fatal("a did not apply b's suspension")
	}
	a.Release("alice@corp.test")
	a.Release("10.0.0.5")
	relay(ra, b)
	if b.IsSuspended("alice@corp.test") || len(b.Snapshot().Isolated) != 0 {
		t.Fatalf("b after a's releases: %+v", b.Snapshot())
	}

	// An expired shared ban is ignored.
	clkB.Advance(2 * time.Hour)
	b.ApplyShared(Shared{Kind: SharedBan, Node: "a", CIDR: "198.51.100.0/24", Expires: t0.Add(time.Hour), Rule: "admin"})
	if len(b.Snapshot().Bans) != 0 {
		t.Fatal("b applied an expired ban")
	}
	flush(a)
	if alerts := ha.alertsOf("isolated"); len(alerts) != 1 {
		t.Fatalf("a raised %d isolation alerts for its own isolation, want 1", len(alerts))
	}
}

// Without a Replicator nothing is published and nothing is recorded as
// another node's.
func TestNoReplicator(t *testing.T) {
	g, _, _ := newTestGuard(t, Config{}, nil)
	g.Ban(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "")
	if b := g.Snapshot().Bans; len(b) != 1 || b[0].Node != "" {
		t.Fatalf("bans = %+v", b)
	}
}
