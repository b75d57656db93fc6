package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/miniotest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// An image rolled back to its previous revision is served from the edge's
// cache: no store GET, although the cache was full enough to evict since.
// The previous revision's files are kept longest (pinned) while the image
// is assigned, so eviction takes an unassigned image's files instead; the
// LRU alone would have evicted them first, being the oldest.
func TestRollbackServedFromCache(t *testing.T) {
	ns, fc := startNATS(t)
	minio := miniotest.Start(t)
	proxy, proxyAddr := startCountingProxy(t, minio.Endpoint)
	storeCfg := artifactstore.Config{URL: "s3://artifacts?endpoint=" + proxyAddr + "&region=us-east-1",
		AccessKey: minio.AccessKey, SecretKey: minio.SecretKey}
	ctx := context.Background()
	store, err := artifactstore.Open(ctx, storeCfg)
	if err != nil {
		t.Fatal(err)
	}
	// Four contents of 320 KiB each (kernel 256 KiB, initrd 64 KiB): web
	// revisions 1 and 2, and images old and new for another host.
	mkImage := func(name string, seed byte) proto.Image {
		im := proto.Image{V: 1, Name: name, Arch: "x86_64", Cmdline: "console=ttyS0"}
		for j, f := range []struct {
			role, name string
			size       int
		}{{proto.RoleKernel, "vmlinuz", 256 << 10}, {proto.RoleInitrd, "initrd.img", 64 << 10}} {
			b := make([]byte, f.size)
			rand.NewChaCha8([32]byte{seed, byte(j)}).Read(b)
			sum := sha256.Sum256(b)
			a := proto.Artifact{Role: f.role, Name: f.name, Key: "sha256/" + hex.EncodeToString(sum[:]), Size: int64(f.size), SHA256: hex.EncodeToString(sum[:])}
			if err := store.Put(ctx, a.Key, bytes.NewReader(b), a.Size); err != nil {
				t.Fatal(err)
			}
			im.Artifacts = append(im.Artifacts, a)
		}
		return im
	}
	web1, web2 := mkImage("web", 1), mkImage("web", 2)
	web1.Revision, web2.Revision = 1, 2
	old, fresh := mkImage("old", 3), mkImage("new", 4)
	putRevision := func(im proto.Image) {
		fc.put(proto.BucketImages, proto.ImageRevisionKey(im.Name, im.Revision), im)
	}
	putRevision(web1)
	fc.put(proto.BucketImages, "web", web1)
	fc.put(proto.BucketImages, "old", old)
	fc.put(proto.BucketImages, "new", fresh)
	fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPOff})
	const macWeb, macOther = "52:54:00:aa:00:01", "52:54:00:aa:00:02"
	setHost := func(mac, image string) {
		key, _ := proto.HostKey("lab", mac)
		fc.put(proto.BucketHosts, key, proto.Host{V: 1, MAC: mac, Site: "lab", Image: image, State: proto.StateBoot})
	}
	setHost(macWeb, "web")
	setHost(macOther, "old")

	cfg := baseConfig(t)
	cfg.NATSURL = ns.ClientURL()
	cfg.Store = storeCfg
	// Room for three of the four contents and a half.
	cfg.CacheSize = 1100 << 10
	ready := make(chan Addrs, 1)
	cfg.Ready = func(addrs Addrs) { ready <- addrs }
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.prefetchPause = 10 * time.Millisecond
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + (<-ready).HTTP
	cached := func(im proto.Image) func() bool {
		return func() bool {
			for _, ar := range im.Artifacts {
				if !a.cache.Contains(ar.SHA256) {
					return false
				}
			}
			return true
		}
	}
	serves := func(path string, want proto.Image) func() bool {
		return func() bool {
			code, body := get(t, base+path+"?mac="+macWeb)
			sum := sha256.Sum256([]byte(body))
			return code == 200 && hex.EncodeToString(sum[:]) == want.Artifacts[0].SHA256
		}
	}
	waitfor.True(t, "web@1 and old prefetched", func() bool { return cached(web1)() && cached(old)() })
	waitfor.True(t, "web serves revision 1", serves("/artifacts/web/vmlinuz", web1))
	// old is used after web@1: the LRU's oldest is now web@1.
	for _, ar := range old.Artifacts {
		if code, _ := get(t, base+"/artifacts/old/"+ar.Name+"?mac="+macOther); code != 200 {
			t.Fatalf("old/%s: %d", ar.Name, code)
		}
	}

	// Revision 2 becomes current; then the other host moves to image new,
	// whose prefetch needs room: something must go.
	putRevision(web2)
	fc.put(proto.BucketImages, "web", web2)
	waitfor.True(t, "web serves revision 2", serves("/artifacts/web/vmlinuz", web2))
	waitfor.True(t, "web@2 prefetched", cached(web2))
	setHost(macOther, "new")
	waitfor.True(t, "new prefetched", cached(fresh))
	if !cached(web1)() {
		t.Fatalf("web@1, the revision a rollback returns to, was evicted (old's files still cached: %v)", cached(old)())
	}

	// Rollback: web points at revision 1 again; its files come from the
	// cache, not the store.
	fc.put(proto.BucketImages, "web", web1)
	waitfor.True(t, "web serves revision 1 again", serves("/artifacts/web/vmlinuz", web1))
	if code, body := get(t, base+"/artifacts/web/initrd.img?mac="+macWeb); code != 200 || len(body) != 64<<10 {
		t.Errorf("initrd after rollback: %d, %d bytes", code, len(body))
	}
	for _, ar := range web1.Artifacts {
		if n := proxy.count(ar.Key); n != 1 {
			t.Errorf("store GETs of web@1's %s: %d, want 1 (the first fetch only)", ar.Name, n)
		}
	}
	// A host pinned to revision 2 boots it under its pinned name.
	setHost(macWeb, "web@2")
	waitfor.True(t, "a pinned host's script names web@2", func() bool {
		_, body := get(t, base+"/boot.ipxe?mac="+macWeb+"&arch=x86_64")
		return strings.Contains(body, "/artifacts/web@2/vmlinuz")
	})
	waitfor.True(t, "web@2 served to its pinned host", serves("/artifacts/web@2/vmlinuz", web2))
}
