package mailbox

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Delivery, expunge and move run at once on one mailbox, through two
// Stores on the same tree (as two processes: only the dot-locks order
// them) and many goroutines per Store (only the index mutex orders them).
// Nothing may be lost or duplicated, a message keeps its UID, and no UID
// of a folder is ever given to two messages. Run it with -race.
func TestStoreConcurrentDeliveryExpungeMove(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	stores := []*Store{NewStore(root, StoreOptions{}), NewStore(root, StoreOptions{})}
	for _, s := range stores {
		defer s.Close()
	}
	const deliverers, perDeliverer = 4, 30
	users := []*User{mustUser(t, stores[0], testAddr), mustUser(t, stores[1], testAddr)}

	// uid -> key and key -> uid of everything ever seen in a folder.
	type seen struct {
		mu     sync.Mutex
		byUID  map[uint32]string
		byKey  map[string]uint32
		errors []string
	}
	folders := map[string]*seen{
		"INBOX":   {byUID: map[uint32]string{}, byKey: map[string]uint32{}},
		"Archive": {byUID: map[uint32]string{}, byKey: map[string]uint32{}},
	}
	record := func(folder string, snap *Snapshot) {
		sn := folders[folder]
		sn.mu.Lock()
		defer sn.mu.Unlock()
		for _, m := range snap.Messages {
			if k, ok := sn.byUID[m.UID]; ok && k != m.Key {
				sn.errors = append(sn.errors, fmt.Sprintf("%s UID %d given to %s and %s", folder, m.UID, k, m.Key))
			}
			// A key may come back to a folder (moved out and in): then
			// with a new, larger UID.
			if u, ok := sn.byKey[m.Key]; ok && u > m.UID {
				sn.errors = append(sn.errors, fmt.Sprintf("%s key %s went from UID %d back to %d", folder, m.Key, u, m.UID))
			}
			sn.byUID[m.UID] = m.Key
			sn.byKey[m.Key] = m.UID
		}
	}

	var expMu sync.Mutex
	expunged := map[string]bool{}
	stop := make(chan struct{})
	var workers, deliver sync.WaitGroup
	errc := make(chan error, 64)

	for d := 0; d < deliverers; d++ {
		deliver.Add(1)
		go func() {
			defer deliver.Done()
			for i := 0; i < perDeliverer; i++ {
				s := stores[(d+i)%2]
				id := fmt.Sprintf("D%dN%d", d, i)
				if err := s.DeliverOnce(testAddr, id, "b@example.test", []byte("Subject: "+id+"\r\n\r\nx\r\n"), false); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	// Per store: an expunger, a mover and a reader of INBOX.
	for si := range stores {
		u := users[si]
		workers.Add(3)
		go func() { // expunge every third message it sees
			defer workers.Done()
			f, err := u.Open("INBOX")
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				snap, err := f.Snapshot()
				if err != nil {
					errc <- err
					return
				}
				record("INBOX", snap)
				var uids []uint32
				keys := map[uint32]string{}
				for i, m := range snap.Messages {
					if i%3 == 0 {
						uids = append(uids, m.UID)
						keys[m.UID] = m.Key
					}
				}
				got, err := f.Expunge(uids)
				if err != nil {
					errc <- err
					return
				}
				expMu.Lock()
				for _, uid := range got {
					expunged[keys[uid]] = true
				}
				expMu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
		go func() { // move every other message to Archive
			defer workers.Done()
			in, err := u.Open("INBOX")
			if err != nil {
				errc <- err
				return
			}
			defer in.Close()
			arch, err := u.Open("Archive")
			if err != nil {
				errc <- err
				return
			}
			defer arch.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				snap, err := in.Snapshot()
				if err != nil {
					errc <- err
					return
				}
				record("INBOX", snap)
				var uids []uint32
				for i, m := range snap.Messages {
					if i%2 == 1 {
						uids = append(uids, m.UID)
					}
				}
				if _, _, _, err := in.MoveTo(uids, arch); err != nil {
					errc <- err
					return
				}
				as, err := arch.Snapshot()
				if err != nil {
					errc <- err
					return
				}
				record("Archive", as)
				time.Sleep(time.Millisecond)
			}
		}()
		go func() { // read and flag
			defer workers.Done()
			f, err := u.Open("INBOX")
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				snap, err := f.Snapshot()
				if err != nil {
					errc <- err
					return
				}
				record("INBOX", snap)
				if len(snap.Messages) > 0 {
					m := snap.Messages[len(snap.Messages)-1]
					if err := f.StoreFlags([]uint32{m.UID}, FlagsAdd, []string{`\Seen`}); err != nil {
						errc <- err
						return
					}
					if r, err := f.Open(m.UID); err == nil {
						r.Close()
					}
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	deliver.Wait()
	close(stop)
	workers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// Final state, seen through a third store (a restart) and the two.
	s3 := NewStore(root, StoreOptions{})
	defer s3.Close()
	final := map[string]string{} // key -> folder
	for _, s := range append(stores, s3) {
		u := mustUser(t, s, testAddr)
		for _, name := range []string{"INBOX", "Archive"} {
			f := mustOpen(t, u, name)
			snap := mustSnap(t, f)
			record(name, snap)
			uids := map[uint32]bool{}
			for _, m := range snap.Messages {
				if uids[m.UID] {
					t.Fatalf("%s: UID %d twice in one snapshot", name, m.UID)
				}
				uids[m.UID] = true
				if s == s3 {
					if where, dup := final[m.Key]; dup {
						t.Fatalf("message %s in %s and %s", m.Key, where, name)
					}
					final[m.Key] = name
				}
			}
		}
	}
	for name, sn := range folders {
		for _, e := range sn.errors {
			t.Errorf("%s: %s", name, e)
		}
	}
	delivered := deliverers * perDeliverer
	lost := 0
	defer func() {
		if lost > 0 {
			t.Errorf("%d of %d messages lost or duplicated", lost, delivered)
		}
	}()
	for d := 0; d < deliverers; d++ {
		for i := 0; i < perDeliverer; i++ {
			needle := fmt.Sprintf(".MD%dN%dR", d, i)
			found := 0
			for k := range final {
				if strings.Contains(k, needle) {
					found++
				}
			}
			wasExpunged := false
			for k := range expunged {
				if strings.Contains(k, needle) {
					wasExpunged = true
				}
			}
			// Expunge also reports messages another process moved out
			// meanwhile: a reported one may live on in Archive.
			if found > 1 || found == 0 && !wasExpunged {
				lost++
				t.Errorf("message %s: %d copies, expunged %v", needle, found, wasExpunged)
			}
		}
	}
	us, err := s3.Usage(testAddr)
	if err != nil || us.Messages != int64(len(final)) {
		t.Errorf("Usage %+v, %v; want %d messages", us, err, len(final))
	}
	t.Logf("%d delivered, %d expunged, %d kept", delivered, len(expunged), len(final))
}

func BenchmarkSnapshot(b *testing.B) {
	const n = 10000
	s, root := newTestStore(b, StoreOptions{PerFileSync: true})
	u := mustUser(b, s, testAddr)
	cur := filepath.Join(root, "example.test", "alice", "cur")
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%d.M%dP1.bench,S=3:2,S", 1700000000+i, i)
		if err := writeFile(defaultPerm, filepath.Join(cur, name), false, []byte("x\r\n")); err != nil {
			b.Fatal(err)
		}
	}
	f := mustOpen(b, u, "INBOX")
	if snap := mustSnap(b, f); len(snap.Messages) != n {
		b.Fatalf("%d messages", len(snap.Messages))
	}
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("after-delivery", func(b *testing.B) {
		i := 0
		for b.Loop() {
			b.StopTimer()
			i++
			if _, err := s.md.Deliver(testAddr, fmt.Sprintf("B%d", i), nil, []byte("x\r\n")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := f.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
