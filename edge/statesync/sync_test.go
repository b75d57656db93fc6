package statesync

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

func startServer(t *testing.T, port int, dir string) *server.Server {
	return natstest.StartAt(t, port, dir)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writer plays the coordinator: it writes the buckets directly.
type writer struct {
	t  *testing.T
	kv map[string]jetstream.KeyValue
}

func newWriter(t *testing.T, url string) *writer {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	w := &writer{t: t, kv: map[string]jetstream.KeyValue{}}
	for _, b := range []string{proto.BucketSites, proto.BucketHosts, proto.BucketImages, proto.BucketLoaders} {
		kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: b, History: 5, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		w.kv[b] = kv
	}
	return w
}

func (w *writer) put(bucket, key string, v any) {
	data, _ := json.Marshal(v)
	if _, err := w.kv[bucket].Put(context.Background(), key, data); err != nil {
		w.t.Fatal(err)
	}
}

func (w *writer) host(site, mac, image string) {
	k, _ := proto.HostKey(site, mac)
	w.put(proto.BucketHosts, k, proto.Host{V: 1, MAC: mac, Site: site, Image: image, State: proto.StateBoot})
}

func hostImage(st *state.State, mac string) string {
	h, ok := st.Host(mac)
	if !ok {
		return ""
	}
	return h.Image
}

func TestSyncSnapshotAndPartition(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	ns := startServer(t, port, dir)
	url := ns.ClientURL()
	w := newWriter(t, url)
	w.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPFull, Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}})
	w.put(proto.BucketSites, "other", proto.Site{V: 1, Name: "other"})
	w.put(proto.BucketImages, "deb", proto.Image{V: 1, Name: "deb"})
	w.host("lab", "52:54:00:00:00:01", "deb")
	w.host("other", "52:54:00:00:00:99", "deb") // another site's host: never seen

	snapPath := t.TempDir() + "/state.json"
	st := state.New()
	sy, err := New(Config{Site: "lab", State: st, SnapshotPath: snapPath, Reconcile: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sy.Run(ctx, js); close(done) }()

	waitfor.True(t, "initial state", func() bool { return hostImage(st, "52:54:00:00:00:01") == "deb" })
	if _, ok := st.Host("52:54:00:00:00:99"); ok {
		t.Fatal("edge of site lab received a host of site other")
	}
	w.put(proto.BucketImages, "deb2", proto.Image{V: 1, Name: "deb2"})
	w.host("lab", "52:54:00:00:00:01", "deb2")
	waitfor.True(t, "live change", func() bool { return hostImage(st, "52:54:00:00:00:01") == "deb2" })

	// Partition: the server goes away, a change is made while it is back
	// but before the edge reconnected, and must arrive.
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = startServer(t, port, dir)
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	w2 := newWriter(t, ns.ClientURL())
	w2.host("lab", "52:54:00:00:00:02", "deb")
	k, _ := proto.HostKey("lab", "52:54:00:00:00:01")
	if err := w2.kv[proto.BucketHosts].Delete(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "change made during the partition", func() bool {
		_, gone := st.Host("52:54:00:00:00:01")
		return hostImage(st, "52:54:00:00:00:02") == "deb" && !gone
	})
	cancel()
	<-done

	// A restarted edge with NATS down serves from the snapshot.
	st2 := state.New()
	if _, err := New(Config{Site: "lab", State: st2, SnapshotPath: snapPath}); err != nil {
		t.Fatal(err)
	}
	if hostImage(st2, "52:54:00:00:00:02") != "deb" {
		t.Fatalf("snapshot lacks the host: %+v", st2.Hosts())
	}
	if _, ok := st2.Host("52:54:00:00:00:01"); ok {
		t.Fatal("snapshot kept a deleted host")
	}
	if site, ok := st2.Site(); !ok || site.Name != "lab" {
		t.Fatalf("snapshot site = %+v", site)
	}
	if st2.Revision() == 0 {
		t.Fatal("snapshot has no revision to resume from")
	}
}

// A restarted edge resumes from its snapshot revision: it does not replay
// what it already has, and it still gets what changed while it was down.
func TestResumeFromSnapshotRevision(t *testing.T) {
	ns := startServer(t, -1, t.TempDir())
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	w := newWriter(t, ns.ClientURL())
	w.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab"})
	w.put(proto.BucketImages, "deb", proto.Image{V: 1, Name: "deb"})
	for i := range 20 {
		w.host("lab", fmt.Sprintf("52:54:00:00:01:%02x", i), "deb")
	}
	snapPath := t.TempDir() + "/state.json"
	run := func(st *state.State, until func() bool) *Syncer {
		sy, err := New(Config{Site: "lab", State: st, SnapshotPath: snapPath})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { sy.Run(ctx, js); close(done) }()
		waitfor.True(t, "state", until)
		cancel()
		<-done
		return sy
	}
	st := state.New()
	run(st, func() bool { return len(st.Hosts()) == 20 })

	w.host("lab", "52:54:00:00:02:00", "deb")
	var applied atomic.Int32
	st2 := state.New()
	sy, err := New(Config{Site: "lab", State: st2, SnapshotPath: snapPath})
	if err != nil {
		t.Fatal(err)
	}
	st2.OnChange(func() { applied.Add(1) })
	nc, _ := nats.Connect(ns.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sy.Run(ctx, js); close(done) }()
	// Stop it before the temporary directory goes: Run writes a last snapshot.
	defer func() { cancel(); <-done }()
	waitfor.True(t, "the new host", func() bool { _, ok := st2.Host("52:54:00:00:02:00"); return ok })
	if n := applied.Load(); n > 3 {
		t.Errorf("resume applied %d changes; want only the new one (no full reload)", n)
	}
}

// A change applied while a snapshot is being taken must not be recorded as
// held unless the snapshot holds it: otherwise an edge restarted from that
// snapshot resumes past the change and never applies it.
func TestSnapshotInterleavedWithChange(t *testing.T) {
	ns := startServer(t, -1, t.TempDir())
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	w := newWriter(t, ns.ClientURL())
	const mac = "52:54:00:00:03:01"
	w.host("lab", mac, "deb")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	hosts := func(sy *Syncer) watch {
		return watch{proto.BucketHosts, "lab.>", sy.applyHost}
	}

	snapPath := t.TempDir() + "/state.json"
	st := state.New()
	sy, err := New(Config{Site: "lab", State: st, SnapshotPath: snapPath})
	if err != nil {
		t.Fatal(err)
	}
	// Only the hosts watch runs, without the snapshot loop: the one snapshot
	// written is the test's.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sy.follow(ctx, js, hosts(sy)); close(done) }()
	waitfor.True(t, "initial host", func() bool { return hostImage(st, mac) == "deb" })

	sy.betweenReads = func() {
		w.host("lab", mac, "deb2")
		waitfor.True(t, "change applied mid-snapshot", func() bool {
			return hostImage(st, mac) == "deb2" && sy.rev(proto.BucketHosts) >= 2
		})
	}
	if err := sy.WriteSnapshot(); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done

	// Restart from that snapshot with NATS up: the change must be there once
	// the watch has caught up.
	st2 := state.New()
	sy2, err := New(Config{Site: "lab", State: st2, SnapshotPath: snapPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { sy2.follow(ctx2, js, hosts(sy2)); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	waitfor.True(t, "restarted watch caught up", func() bool {
		sy2.mu.Lock()
		defer sy2.mu.Unlock()
		return sy2.live[proto.BucketHosts]
	})
	if got := hostImage(st2, mac); got != "deb2" {
		t.Fatalf("after a restart from the snapshot the host boots %q, want deb2: the change was skipped", got)
	}
}

// TestLoadersSynced: the edge follows the loaders bucket (put, delete) and
// keeps its loaders in the snapshot, for the DHCP answer of a restarted
// edge with NATS down.
func TestLoadersSynced(t *testing.T) {
	ns := startServer(t, -1, t.TempDir())
	w := newWriter(t, ns.ClientURL())
	w.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", Loader: "shim"})
	shim := proto.Loader{V: 1, Name: "shim", Kind: proto.LoaderShimGrub, Files: []proto.LoaderFile{
		{Firmware: proto.FirmwareX64, Artifact: proto.Artifact{Role: proto.RoleShim, Name: "bootx64.efi"}},
	}}
	w.put(proto.BucketLoaders, "shim", shim)
	w.put(proto.BucketLoaders, "old", proto.Loader{V: 1, Name: "old", Kind: proto.LoaderGrub})

	snapPath := t.TempDir() + "/state.json"
	st := state.New()
	sy, err := New(Config{Site: "lab", State: st, SnapshotPath: snapPath, Reconcile: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, ns.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sy.Run(ctx, js); close(done) }()
	waitfor.True(t, "loaders synced", func() bool { return len(st.Loaders()) == 2 })
	if err := w.kv[proto.BucketLoaders].Delete(context.Background(), "old"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "deleted loader gone", func() bool { _, ok := st.Loader("old"); return !ok })
	cancel()
	<-done

	st2 := state.New()
	if _, err := New(Config{Site: "lab", State: st2, SnapshotPath: snapPath}); err != nil {
		t.Fatal(err)
	}
	got, ok := st2.Loader("shim")
	if !ok || len(got.Files) != 1 || got.Files[0].Name != "bootx64.efi" {
		t.Fatalf("snapshot loader shim = %+v, %v", got, ok)
	}
	if _, ok := st2.Loader("old"); ok {
		t.Fatal("snapshot kept a deleted loader")
	}
}
