package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// TestEmbeddedSyncsEveryWrite: the embedded server (started the way Run
// starts it) fsyncs every JetStream write, so an acknowledged `host set` or
// audit record survives a power loss on a single-node coordinator.
func TestEmbeddedSyncsEveryWrite(t *testing.T) {
	ns, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	cfg := ns.JetStreamConfig()
	if cfg == nil {
		t.Fatal("embedded server has no JetStream")
	}
	if !cfg.SyncAlways {
		t.Fatalf("embedded JetStream SyncAlways = false (sync interval %s): an acknowledged write may be lost on power loss", cfg.SyncInterval)
	}
}

// benchmarkHostSet measures `host set`/s through the service against the
// embedded server with the given sync interval (0: sync every write).
func benchmarkHostSet(b *testing.B, syncInterval time.Duration) {
	ns, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: b.TempDir(), SyncInterval: syncInterval})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	_, js := natstest.Connect(b, ns.ClientURL())
	ctx := context.Background()
	svc, err := service.New(ctx, service.Config{JS: js})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.AddSite(ctx, proto.Site{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/16"}}}); err != nil {
		b.Fatal(err)
	}
	site := "lab"
	b.ResetTimer()
	for i := range b.N {
		mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
		name := fmt.Sprintf("h%d", i)
		if _, err := svc.SetHost(ctx, proto.HostSetRequest{V: proto.Version, MAC: mac, Site: &site, Hostname: &name}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hostset/s")
}

// BenchmarkHostSetSyncAlways is what a single-node coordinator does.
func BenchmarkHostSetSyncAlways(b *testing.B) { benchmarkHostSet(b, 0) }

// BenchmarkHostSetDefault is JetStream's default: a background fsync every
// two minutes.
func BenchmarkHostSetDefault(b *testing.B) { benchmarkHostSet(b, 2*time.Minute) }
