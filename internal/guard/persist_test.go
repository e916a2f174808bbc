package guard

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestStateSurvivesRestart(t *testing.T) {
	store := &memStore{}
	g1, clk, _ := newTestGuard(t, Config{}, store)

	g1.Ban(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "")
	g1.Suspend("dave@corp.test", "admin")
	for i := range 31 { // isolates 10.0.0.5
		g1.Message(mail(pc5, i, "x@ext.test"))
	}
	for i := range 20 { // 10.0.0.6 used 20 of its 30
		wantVerdict(t, "pc6", g1.Message(mail(pc6, i, "y@ext.test")), Accept, "")
	}
	nat := addr("198.51.100.20")
	g1.AuthResult(nat, "alice@corp.test", true)
	before := g1.Snapshot()
	if err := g1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g1.Close(); err != nil || store.count() != 1 {
		t.Fatalf("second Close: %v, saves %d, want 1", err, store.count())
	}

	clk.Advance(10 * time.Second) // a quick restart, same minute
	g2, err := New(Config{Now: clk.Now}, &fakeHooks{}, store, testLogger(t))
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	if after := g2.Snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("snapshot changed across restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, ok := g2.Banned(addr("192.0.2.9")); !ok {
		t.Fatal("ban lost")
	}
	if !g2.IsSuspended("dave@corp.test") {
		t.Fatal("suspension lost")
	}
	wantVerdict(t, "isolated sender", g2.Message(mail(pc5, 99, "x@ext.test")), Hold, "rate.msgs_per_minute")
	for i := range 10 {
		wantVerdict(t, "pc6 rest of allowance", g2.Message(mail(pc6, 20+i, "y@ext.test")), Accept, "")
	}
	wantVerdict(t, "pc6 over", g2.Message(mail(pc6, 30, "y@ext.test")), Hold, "rate.msgs_per_minute")
	if ll := g2.LastLogins(); !ll["alice@corp.test"].Equal(t0) {
		t.Fatalf("LastLogins = %v", ll)
	}
	// The network alice logged in from is still known: an attacker there
	// cannot block her.
	for range 10 {
		g2.AuthResult(nat, "alice@corp.test", false)
	}
	wantVerdict(t, "alice on her network", g2.AuthCheck(nat, "alice@corp.test"), Accept, "")
}

func TestStrikesSurviveRestart(t *testing.T) {
	store := &memStore{}
	g1, clk, _ := newTestGuard(t, Config{}, store)
	p := netip.MustParsePrefix("203.0.113.66/32")
	g1.Ban(p, 0, "test")
	clk.Advance(11 * time.Minute)
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	g2, err := New(Config{Now: clk.Now}, nil, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	g2.Ban(p, 0, "test")
	if b, _ := g2.Banned(p.Addr()); b.Strikes != 2 || !b.Expires.Equal(clk.Now().Add(40*time.Minute)) {
		t.Fatalf("second ban after restart = %+v, want strike 2, 40 minutes", b)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		store *memStore
	}{
		{"store error", &memStore{err: errBoom}},
		{"not JSON", &memStore{data: []byte("{")}},
		{"future version", &memStore{data: []byte(`{"version": 99}`)}},
		{"bad ban", &memStore{data: []byte(`{"version": 1, "bans": [{"cidr": "nope"}]}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Config{}, nil, tc.store, nil); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	if g, err := New(Config{}, nil, &memStore{}, nil); err != nil || g == nil {
		t.Fatalf("empty store: %v", err)
	}
}

func TestSavedStateSkipsIdleCounters(t *testing.T) {
	store := &memStore{}
	g, clk, _ := newTestGuard(t, Config{}, store)
	g.Message(mail(pc5, 0, "x@ext.test"))
	clk.Advance(3 * 24 * time.Hour)
	g.Message(mail(pc6, 0, "x@ext.test"))
	if err := g.save(); err != nil {
		t.Fatal(err)
	}
	var s savedState
	if err := json.Unmarshal(store.data, &s); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, ss := range s.Senders {
		keys = append(keys, ss.Kind+":"+ss.Key)
	}
	want := []string{"ip:10.0.0.6", "sender:pc6@corp.test"}
	if len(keys) != 2 || !(keys[0] == want[0] && keys[1] == want[1] || keys[0] == want[1] && keys[1] == want[0]) {
		t.Fatalf("saved senders = %v, want %v", keys, want)
	}
}

func TestRun(t *testing.T) {
	store := &memStore{}
	clk := &fakeClock{now: t0}
	hooks := &fakeHooks{}
	g, err := New(Config{Now: clk.Now, SaveInterval: 10 * time.Millisecond}, hooks, store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		g.Run(ctx)
		close(done)
	}()
	for i := range 31 {
		g.Message(mail(pc5, i, "x@ext.test"))
	}
	waitFor(t, "isolation alert", func() bool { return len(hooks.alertsOf("isolated")) == 1 })
	waitFor(t, "periodic save", func() bool { return store.count() > 0 })

	// Saves stop while nothing changes.
	time.Sleep(30 * time.Millisecond)
	n := store.count()
	time.Sleep(50 * time.Millisecond)
	if store.count() != n {
		t.Fatalf("saved %d times while idle", store.count()-n)
	}

	g.Suspend("erin@corp.test", "")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if len(hooks.alertsOf("suspended")) != 1 {
		t.Fatal("pending alert not delivered before Run returned")
	}
	var s savedState
	store.mu.Lock()
	err = json.Unmarshal(store.data, &s)
	store.mu.Unlock()
	if err != nil || len(s.Suspended) != 1 || s.Suspended[0].User != "erin@corp.test" {
		t.Fatalf("final save = %+v, %v", s.Suspended, err)
	}
}

func TestSaveErrorKeepsDirty(t *testing.T) {
	store := &memStore{}
	g, _, _ := newTestGuard(t, Config{}, store)
	g.Suspend("x@corp.test", "")
	store.err = errBoom
	if err := g.save(); err == nil {
		t.Fatal("save succeeded")
	}
	g.mu.Lock()
	dirty := g.dirty
	g.mu.Unlock()
	if !dirty {
		t.Fatal("failed save cleared the dirty flag")
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
