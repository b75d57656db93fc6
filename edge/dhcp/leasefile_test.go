package dhcp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

var journalNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func journalPool() *pool {
	return &pool{prefix: netip.MustParsePrefix("10.9.0.0/16"), start: netip.MustParseAddr("10.9.0.10"), end: netip.MustParseAddr("10.9.255.250"),
		reserved: func(netip.Addr) (string, bool) { return "", false }}
}

// bindN binds n MACs, each offered then bound (DISCOVER, REQUEST), and
// returns their addresses by MAC.
func bindN(t *testing.T, l *Leases, n int) map[string]string {
	t.Helper()
	p := journalPool()
	got := map[string]string{}
	for i := range n {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)
		a, _ := l.Offer(p, mac, netip.Addr{}, journalNow, journalNow.Add(time.Minute))
		if !a.IsValid() {
			t.Fatalf("no offer for %s", mac)
		}
		if ok, err := l.Bind(p, a, mac, journalNow, time.Hour); !ok || err != nil {
			t.Fatalf("bind %s %s: %v %v", mac, a, ok, err)
		}
		got[mac] = a.String()
	}
	return got
}

func leasesByMAC(l *Leases) map[string]string {
	out := map[string]string{}
	for _, le := range l.All() {
		if le.State == leaseBound {
			out[le.MAC] = le.IP.String()
		}
	}
	return out
}

// TestLeaseJournal: commits append to the journal (the snapshot is not
// rewritten per ACK); a restart replays it and folds it into the snapshot;
// past its size bound the journal is compacted; a release and a dropped
// offer survive a restart like a bind.
func TestLeaseJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	want := bindN(t, l, 20)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("snapshot written by small commits (%v): each ACK should only append", err)
	}
	st, err := os.Stat(journalPath(path))
	if err != nil || st.Size() == 0 {
		t.Fatalf("journal after 20 binds: %v %v", st, err)
	}
	// A release is a change clients rely on: it survives too.
	var released string
	for mac, a := range want {
		if ok, err := l.Release(netip.MustParseAddr(a), mac, journalNow); !ok || err != nil {
			t.Fatalf("release: %v %v", ok, err)
		}
		released = mac
		delete(want, mac)
		break
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, leasesByMAC(l2)); diff != "" {
		t.Errorf("after restart (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(journalPath(path)); !os.IsNotExist(err) {
		t.Errorf("journal still there after the restart folded it in: %v", err)
	}
	for _, le := range l2.All() {
		if le.MAC == released && le.State != leaseReleased {
			t.Errorf("released lease came back as %s", le.State)
		}
	}

	// Compaction: with a small bound, the snapshot is rewritten and the
	// journal emptied while commits go on.
	l2.compactMin = 512
	more := bindN(t, l2, 60)
	for mac, a := range more {
		if _, dup := want[mac]; !dup {
			want[mac] = a
		}
	}
	l2.lockSettled() // the snapshot is written beside the commits
	l2.flushMu.Unlock()
	var journalSize int64 // none: the last commit moved it aside
	if st, err := os.Stat(journalPath(path)); err == nil {
		journalSize = st.Size()
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	snap, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if journalSize > max(512, snap.Size())+4096 {
		t.Errorf("journal %d bytes beside a %d-byte snapshot: never compacted", journalSize, snap.Size())
	}
	if _, err := os.Stat(oldJournalPath(path)); !os.IsNotExist(err) {
		t.Errorf("old journal left after its snapshot was written: %v", err)
	}
	l2.Close()
	l3, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(leasesByMAC(l2), leasesByMAC(l3)); diff != "" {
		t.Errorf("after compaction and restart (-before +after):\n%s", diff)
	}
}

// TestLeaseJournalCrash: what a crash can leave on disk.
func TestLeaseJournalCrash(t *testing.T) {
	ip := func(s string) string { return s }
	line := func(n int, ipS, mac, state string) string {
		return fmt.Sprintf(`{"n":%d,"ip":%q,"mac":%q,"state":%q,"expires":"2026-11-27T13:00:00Z"}`+"\n", n, ipS, mac, state)
	}
	for _, tc := range []struct {
		name     string
		snapshot string // "" = none
		journal  string
		want     map[string]string // bound leases by MAC
		fails    string
		old      string // the journal a compaction had moved aside
	}{
		{"a commit cut short: its partial line is dropped", "",
			line(1, "10.9.0.10", "02:00:00:00:00:01", leaseBound) + `{"n":2,"ip":"10.9.0.11","ma`,
			map[string]string{"02:00:00:00:00:01": ip("10.9.0.10")}, "", ""},
		{"a whole last line without its newline is dropped too (its fsync never returned)", "",
			line(1, "10.9.0.10", "02:00:00:00:00:01", leaseBound) + strings.TrimSuffix(line(2, "10.9.0.11", "02:00:00:00:00:02", leaseBound), "\n"),
			map[string]string{"02:00:00:00:00:01": ip("10.9.0.10")}, "", ""},
		{"crash between snapshot and emptying the journal: older records are not replayed",
			`{"v":1,"seq":2,"leases":[{"ip":"10.9.0.10","mac":"02:00:00:00:00:01","state":"released","expires":"2026-11-27T12:00:00Z"}]}`,
			line(1, "10.9.0.10", "02:00:00:00:00:01", leaseBound) + line(2, "10.9.0.11", "02:00:00:00:00:02", leaseOffered) +
				line(3, "10.9.0.12", "02:00:00:00:00:03", leaseBound),
			map[string]string{"02:00:00:00:00:03": ip("10.9.0.12")}, "", ""},
		{"crash during a compaction: the old journal, then the journal, over the older snapshot",
			`{"v":1,"seq":1,"leases":[{"ip":"10.9.0.10","mac":"02:00:00:00:00:01","state":"bound","expires":"2026-11-27T13:00:00Z"}]}`,
			line(4, "10.9.0.15", "02:00:00:00:00:05", leaseBound),
			map[string]string{"02:00:00:00:00:01": ip("10.9.0.10"), "02:00:00:00:00:02": ip("10.9.0.11"), "02:00:00:00:00:03": ip("10.9.0.13"),
				"02:00:00:00:00:05": ip("10.9.0.15")}, "",
			line(1, "10.9.0.14", "02:00:00:00:00:04", leaseBound) + line(2, "10.9.0.11", "02:00:00:00:00:02", leaseBound) +
				line(3, "10.9.0.13", "02:00:00:00:00:03", leaseBound)},
		{"a dropped offer is replayed as gone", "",
			line(1, "10.9.0.10", "02:00:00:00:00:01", leaseOffered) + line(2, "10.9.0.11", "02:00:00:00:00:02", leaseBound) +
				`{"n":3,"ip":"10.9.0.10","state":"gone","expires":"0001-01-01T00:00:00Z"}` + "\n",
			map[string]string{"02:00:00:00:00:02": ip("10.9.0.11")}, "", ""},
		{"a bad line with more after it is corruption", "",
			line(1, "10.9.0.10", "02:00:00:00:00:01", leaseBound) + "garbage\n" + line(2, "10.9.0.11", "02:00:00:00:00:02", leaseBound),
			nil, "lease journal", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			if tc.snapshot != "" {
				if err := os.WriteFile(path, []byte(tc.snapshot), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(journalPath(path), []byte(tc.journal), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.old != "" {
				if err := os.WriteFile(oldJournalPath(path), []byte(tc.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, err := OpenLeases(path)
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) || !strings.Contains(err.Error(), "line 2") {
					t.Fatalf("OpenLeases = %v, want a refusal naming the %s and its line", err, tc.fails)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, leasesByMAC(l)); diff != "" {
				t.Errorf("bound leases (-want +got):\n%s", diff)
			}
			// New commits number on from the replayed ones: after another
			// restart nothing is lost or replayed twice.
			if ok, err := l.Bind(journalPool(), netip.MustParseAddr("10.9.0.20"), "02:00:00:00:00:20", journalNow, time.Hour); !ok || err != nil {
				t.Fatalf("bind after replay: %v %v", ok, err)
			}
			l.Close()
			l2, err := OpenLeases(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{journalPath(path), oldJournalPath(path)} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s left after the start folded it into the snapshot", filepath.Base(p))
				}
			}
			tc.want["02:00:00:00:00:20"] = ip("10.9.0.20")
			if diff := cmp.Diff(tc.want, leasesByMAC(l2)); diff != "" {
				t.Errorf("after another restart (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGroupCommit: REQUESTs that arrive while a journal write is in progress
// share the next fsync, and no Bind returns (no ACK is sent) before the
// fsync covering its lease returned. The first fsync is held until every
// client's change is in memory, so exactly one more covers all the others;
// then the files are read back as after a crash (the database never
// closed): every lease a Bind returned for is bound there.
func TestGroupCommit(t *testing.T) {
	const clients = 64
	file := filepath.Join(t.TempDir(), "leases.json")
	l, err := OpenLeases(file)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		durable = map[netip.Addr]bool{}
		syncs   int
		release = make(chan struct{})
	)
	l.synced = func(recs []Lease) {
		mu.Lock()
		syncs++
		first := syncs == 1
		for _, r := range recs {
			if r.State == leaseBound {
				durable[r.IP] = true
			}
		}
		mu.Unlock()
		if first {
			<-release
		}
	}
	p := journalPool()
	now := journalNow
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, 1, byte(i)}) }
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			mac := fmt.Sprintf("52:54:00:00:10:%02x", i)
			ok, err := l.Bind(p, ip(i), mac, now, time.Hour)
			if err != nil || !ok {
				errs <- fmt.Errorf("bind %s: %v %v", ip(i), ok, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !durable[ip(i)] {
				errs <- fmt.Errorf("Bind of %s returned before an fsync covered it", ip(i))
				return
			}
			errs <- nil
		}()
	}
	waitfor.True(t, "every client's lease changed in memory", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.gen == clients
	})
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	mu.Lock()
	if syncs != 2 {
		t.Errorf("%d clients took %d fsyncs, want 2: the first, and one for everyone who waited on it", clients, syncs)
	}
	mu.Unlock()

	again, err := OpenLeases(file)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]string{}
	for _, le := range again.All() {
		if le.State == leaseBound {
			got[le.IP] = le.MAC
		}
	}
	for i := range clients {
		if want := fmt.Sprintf("52:54:00:00:10:%02x", i); got[ip(i)] != want {
			t.Errorf("after a crash %s is bound to %q, want %s (it was ACKed)", ip(i), got[ip(i)], want)
		}
	}
}

// TestCompactionBesideCommits: clients bind from many goroutines while the
// journal is compacted again and again (a tiny bound); every ACKed lease
// survives a restart, whichever commit a compaction fell between.
func TestCompactionBesideCommits(t *testing.T) {
	const workers, each = 8, 100
	path := filepath.Join(t.TempDir(), "leases.json")
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	l.compactMin = 256
	p := journalPool()
	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				mac := fmt.Sprintf("02:00:00:%02x:%02x:%02x", w, i>>8, i&0xff)
				a, _ := l.Offer(p, mac, netip.Addr{}, journalNow, journalNow.Add(time.Minute))
				if ok, err := l.Bind(p, a, mac, journalNow, time.Hour); !ok || err != nil {
					t.Errorf("bind %s %s: %v %v", mac, a, ok, err)
					return
				}
				mu.Lock()
				acked[mac] = a.String()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.seq == 0 {
		t.Fatal("no snapshot was written: the test never compacted")
	}
	again, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acked, leasesByMAC(again)); diff != "" {
		t.Errorf("after compactions and a restart (-acked +on disk):\n%s", diff)
	}
}

// TestCompactionFailure: a snapshot that cannot be written leaves the old
// journal in place, and the next compaction does not move the journal over
// it; a start after that replays both and loses nothing that was ACKed.
func TestCompactionFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	l, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	l.compactMin = 256
	// A non-empty directory where the snapshot goes: its rename fails.
	if err := os.MkdirAll(filepath.Join(path, "blocker"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := journalPool()
	acked := map[string]string{}
	bind := func(prefix, n int) {
		for i := range n {
			mac := fmt.Sprintf("02:00:00:%02x:00:%02x", prefix, i)
			a, _ := l.Offer(p, mac, netip.Addr{}, journalNow, journalNow.Add(time.Minute))
			if ok, err := l.Bind(p, a, mac, journalNow, time.Hour); !ok || err != nil {
				t.Fatalf("bind %s: %v %v", mac, ok, err)
			}
			acked[mac] = a.String()
		}
	}
	retryNow := func() {
		l.lockSettled()
		l.compactAfter = time.Time{}
		l.flushMu.Unlock()
	}
	bind(1, 30)
	retryNow()
	if _, err := os.Stat(oldJournalPath(path)); err != nil {
		t.Fatalf("old journal after a failed snapshot: %v", err)
	}
	bind(2, 30) // compacts again, and fails again
	retryNow()
	// A crash now: the next start finds no snapshot, the old journal and
	// the journal.
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	again, err := OpenLeases(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acked, leasesByMAC(again)); diff != "" {
		t.Errorf("after failed compactions and a crash (-acked +on disk):\n%s", diff)
	}
}
