package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// fakeCoordinator writes the KV buckets the way the coordinator does, so the
// edge meets the real subjects without importing the coordinator.
type fakeCoordinator struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	kv map[string]jetstream.KeyValue
}

func startNATS(t *testing.T) (*server.Server, *fakeCoordinator) {
	t.Helper()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.ClientURL())
	fc := &fakeCoordinator{t: t, nc: nc, js: js, kv: map[string]jetstream.KeyValue{}}
	ctx := context.Background()
	for _, b := range []string{proto.BucketSites, proto.BucketHosts, proto.BucketImages} {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b, History: 5})
		if err != nil {
			t.Fatal(err)
		}
		fc.kv[b] = kv
	}
	if err := events.EnsureStream(ctx, js, 1, 64<<20); err != nil {
		t.Fatal(err)
	}
	return ns, fc
}

func (fc *fakeCoordinator) put(bucket, key string, v any) {
	data, _ := json.Marshal(v)
	if _, err := fc.kv[bucket].Put(context.Background(), key, data); err != nil {
		fc.t.Fatal(err)
	}
}

func tftpGet(t *testing.T, addr, file string) string {
	t.Helper()
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		t.Fatalf("tftp get %s: %v", file, err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		t.Fatalf("tftp get %s: %v", file, err)
	}
	return b.String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The edge follows the desired state over NATS, serves scripts and artifacts
// from it, applies changes without a restart, heartbeats and records events.
func TestEdgeServesDesiredState(t *testing.T) {
	ns, fc := startNATS(t)
	storeDir := t.TempDir()
	store, err := artifactstore.Open(context.Background(), artifactstore.Config{URL: "dir://" + storeDir})
	if err != nil {
		t.Fatal(err)
	}
	upload := func(content string) proto.Artifact {
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte(content), 0o644)
		up, err := artifactstore.UploadFile(context.Background(), store, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return proto.Artifact{Key: up.Key, Size: up.Size, SHA256: up.SHA256}
	}
	k1, i1 := upload("kernel one"), upload("initrd one")
	k1.Role, k1.Name, i1.Role, i1.Name = proto.RoleKernel, "vmlinuz", proto.RoleInitrd, "initrd.img"
	fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPFull, Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}})
	fc.put(proto.BucketImages, "one", proto.Image{V: 1, Name: "one", Arch: "x86_64", Cmdline: "console=ttyS0", Artifacts: []proto.Artifact{k1, i1}})
	fc.put(proto.BucketImages, "two", proto.Image{V: 1, Name: "two", Arch: "x86_64", Cmdline: "quiet", Artifacts: []proto.Artifact{k1, i1}})
	const mac = "52:54:00:aa:bb:01"
	key, _ := proto.HostKey("lab", mac)
	fc.put(proto.BucketHosts, key, proto.Host{V: 1, MAC: mac, Site: "lab", Image: "one", State: proto.StateBoot})

	status := make(chan proto.EdgeStatus, 16)
	sub, err := fc.nc.Subscribe(proto.StatusSubject("lab", "e1"), func(m *nats.Msg) {
		var st proto.EdgeStatus
		if json.Unmarshal(m.Data, &st) == nil {
			select {
			case status <- st:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	stateDir, cacheDir, bootDir := t.TempDir(), t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(bootDir, "undionly.kpxe"), []byte("bios loader"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Name: "e1", Site: "lab", NATSURL: ns.ClientURL(), StateDir: stateDir, CacheDir: cacheDir, CacheSize: 1 << 30,
			Store: artifactstore.Config{URL: "dir://" + storeDir}, HTTPListen: "127.0.0.1:0", TFTPListen: "127.0.0.1:0",
			BootDir: bootDir, Heartbeat: 100 * time.Millisecond,
			Ready: func(addrs Addrs) { ready <- addrs },
		})
	}()
	var addrs Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("edge: %v", err)
	}
	if addrs.HTTP == "" || addrs.TFTP == "" || addrs.DHCP != "" || strings.HasSuffix(addrs.TFTP, ":0") {
		t.Fatalf("Ready reported %+v; want the bound HTTP and TFTP addresses and no DHCP", addrs)
	}
	tftpAddr := addrs.TFTP
	base := "http://" + addrs.HTTP
	script := func() string {
		_, body := get(t, base+"/boot.ipxe?mac="+mac+"&arch=x86_64")
		return body
	}
	waitfor.True(t, "script for image one", func() bool { return strings.Contains(script(), "/artifacts/one/vmlinuz") })
	if s := script(); !strings.Contains(s, "console=ttyS0") || !strings.Contains(s, "initrd=initrd.img") {
		t.Errorf("script lacks the cmdline or initrd name:\n%s", s)
	}

	// The artifact comes from the store through the cache, byte for byte.
	code, body := get(t, base+"/artifacts/one/vmlinuz?mac="+mac)
	if code != 200 || body != "kernel one" {
		t.Errorf("artifact: %d %q", code, body)
	}
	if code, _ := get(t, base+"/artifacts/one/../../etc/passwd"); code == 200 {
		t.Error("traversal served")
	}

	// A change made at the coordinator is served without a restart.
	fc.put(proto.BucketHosts, key, proto.Host{V: 1, MAC: mac, Site: "lab", Image: "two", State: proto.StateBoot})
	waitfor.True(t, "script for image two", func() bool { return strings.Contains(script(), "/artifacts/two/vmlinuz") })

	// Heartbeats carry the applied revision and the cache size.
	waitfor.True(t, "a heartbeat with a revision", func() bool {
		select {
		case st := <-status:
			return st.Name == "e1" && st.Site == "lab" && st.Revision > 0 && st.CacheBytes > 0
		default:
			return false
		}
	})

	// Events of this MAC reach the EVENTS stream.
	kinds := func() map[string]bool {
		got := map[string]bool{}
		c, err := fc.js.OrderedConsumer(context.Background(), proto.StreamEvents, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{proto.EventSubject("lab", "e1", mac)},
		})
		if err != nil {
			return got
		}
		batch, err := c.FetchNoWait(100)
		if err != nil {
			return got
		}
		for m := range batch.Messages() {
			var ev proto.Event
			if json.Unmarshal(m.Data(), &ev) == nil && ev.MAC == mac {
				got[ev.Kind] = true
			}
		}
		return got
	}
	waitfor.True(t, "script and artifact events", func() bool {
		k := kinds()
		return k[proto.EventScript] && k[proto.EventArtifactStart] && k[proto.EventArtifactEnd]
	})
	// The coordinator's NATS goes away mid-run: the edge keeps answering
	// HTTP and TFTP for known hosts from what it holds.
	ns.Shutdown()
	ns.WaitForShutdown()
	if s := script(); !strings.Contains(s, "/artifacts/two/vmlinuz") {
		t.Errorf("script with NATS down:\n%s", s)
	}
	if code, body := get(t, base+"/artifacts/two/vmlinuz?mac="+mac); code != 200 || body != "kernel one" {
		t.Errorf("artifact with NATS down: %d %q", code, body)
	}
	if got := tftpGet(t, tftpAddr, "undionly.kpxe"); got != "bios loader" {
		t.Errorf("TFTP with NATS down: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("edge stopped with %v", err)
	}
	// The snapshot it left behind holds the host.
	snap, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil || !strings.Contains(string(snap), mac) {
		t.Errorf("snapshot: %v %s", err, snap)
	}

	// Restarted with NATS gone, the edge boots the machine from its snapshot
	// and serves the artifact from its cache.
	ns.Shutdown()
	ns.WaitForShutdown()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		done <- Run(ctx2, Config{
			Name: "e1", Site: "lab", NATSURL: ns.ClientURL(), StateDir: stateDir, CacheDir: cacheDir, CacheSize: 1 << 30,
			Store: artifactstore.Config{URL: "dir:///nonexistent-store"}, HTTPListen: "127.0.0.1:0",
			Ready: func(addrs Addrs) { ready <- addrs },
		})
	}()
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("edge without NATS: %v", err)
	}
	base = "http://" + addrs.HTTP
	if s := script(); !strings.Contains(s, "/artifacts/two/vmlinuz") {
		t.Errorf("offline edge script:\n%s", s)
	}
	if code, body := get(t, base+"/artifacts/two/vmlinuz"); code != 200 || body != "kernel one" {
		t.Errorf("offline artifact: %d %q", code, body)
	}
	cancel2()
	<-done
	sum := sha256.Sum256([]byte("kernel one"))
	if k1.SHA256 != hex.EncodeToString(sum[:]) {
		t.Error("upload recorded a wrong digest")
	}
}

func TestAdvertise(t *testing.T) {
	cases := []struct {
		name   string
		ip     net.IP
		listen string
		want   string
	}{
		{"DHCP address wins over a wildcard listener", net.IPv4(10, 77, 0, 1), "0.0.0.0:8080", "http://10.77.0.1:8080"},
		{"listener address without DHCP", nil, "10.1.2.3:80", "http://10.1.2.3:80"},
		{"wildcard and no DHCP falls back to loopback", nil, "0.0.0.0:8080", "http://127.0.0.1:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			if got := advertise(tc.ip, addr); got != tc.want {
				t.Errorf("advertise = %q, want %q", got, tc.want)
			}
		})
	}
}

// Debian links /usr/lib/ipxe/ipxe.efi to /boot/ipxe.efi: the staged copy
// serves it while the servers stay confined to one directory. Sub-folders
// (GRUB's x86_64-efi/, iPXE's qemu/) are staged whole, file links in them
// followed; links to directories are not (a loop, a foreign tree).
func TestStageBootFiles(t *testing.T) {
	outside, src, dst := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(p, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(outside, "ipxe.efi"), "efi loader")
	write(filepath.Join(outside, "etc", "shadow"), "SECRET")
	write(filepath.Join(src, "undionly.kpxe"), "bios loader")
	write(filepath.Join(src, "grub", "x86_64-efi", "http.mod"), "grub module")
	write(filepath.Join(src, "qemu", "pxe-virtio.rom"), "option rom")
	link(filepath.Join(outside, "ipxe.efi"), filepath.Join(src, "ipxe.efi"))
	link(filepath.Join(outside, "missing"), filepath.Join(src, "dangling.efi"))
	link("qemu/pxe-virtio.rom", filepath.Join(src, "virtio-net.rom"))
	link("../../ipxe.efi", filepath.Join(src, "grub", "x86_64-efi", "linked.efi"))
	link(filepath.Join(outside, "etc"), filepath.Join(src, "grub", "etc"))
	link("..", filepath.Join(src, "qemu", "loop"))
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ipxe.efi": "efi loader", "undionly.kpxe": "bios loader", "virtio-net.rom": "option rom",
		"grub/x86_64-efi/http.mod": "grub module", "grub/x86_64-efi/linked.efi": "efi loader",
		"qemu/pxe-virtio.rom": "option rom",
	}
	// The second run keeps what is already staged; the third goes
	// through a link to the directory, as --boot-dir /srv/current would.
	srcLink := filepath.Join(t.TempDir(), "current")
	link(src, srcLink)
	for round, from := range []string{src, src, srcLink} {
		n, err := stageBootFiles(from, dst)
		if err != nil || n != len(want) {
			t.Fatalf("round %d: staged %d, %v; want %d files", round, n, err, len(want))
		}
	}
	got := map[string]string{}
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if !d.Type().IsRegular() {
			t.Errorf("%s staged as %v; want a regular file", rel, d.Type())
		}
		b, err := os.ReadFile(p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("staged files (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(filepath.Join(dst, "empty")); err != nil || !fi.IsDir() {
		t.Errorf("empty sub-folder: %v, %v; want staged as a directory", fi, err)
	}
}

// A --boot-dir that is not a boot directory (too deep a tree) is refused with
// a clear error, not copied into the state directory.
func TestStageBootFilesTooDeep(t *testing.T) {
	src := t.TempDir()
	deep := filepath.Join(src, "1", "2", "3", "4", "5", "6", "7", "8", "9")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := stageBootFiles(src, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "folders deep: is --boot-dir right?") {
		t.Errorf("err = %v, want the too-deep refusal", err)
	}
	if _, err := stageBootFiles(filepath.Join(src, "nope"), t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: err = %v, want fs.ErrNotExist (the edge warns and goes on)", err)
	}
}

// A --boot-dir that holds the edge's state directory (where the copy goes)
// and cache directory: both are left out, or the copy would copy itself.
func TestStageBootFilesInsideStateDir(t *testing.T) {
	dir := t.TempDir()
	state, cache := filepath.Join(dir, "state"), filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cache, "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "sha256", "blob"), []byte("cached artifact"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("efi loader"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(state, "boot")
	for round := range 3 {
		n, err := stageBootFiles(dir, dst, state, cache)
		if err != nil || n != 1 {
			t.Fatalf("round %d: staged %d, %v; want 1 file", round, n, err)
		}
	}
	for _, p := range []string{filepath.Join(dst, "state"), filepath.Join(dst, "cache")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was staged", p)
		}
	}
}
