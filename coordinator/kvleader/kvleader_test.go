package kvleader_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/kvleader"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// TestGet: the latest value and its revision; a key never written, deleted
// or purged is jetstream.ErrKeyNotFound, as a KV Get says.
func TestGet(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "gone", "purged"} {
		if _, err := kv.Put(ctx, k, []byte("v1")); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := kv.Put(ctx, "a", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	e, err := kvleader.Get(ctx, nc, "b", "a")
	if err != nil || string(e.Value) != "v2" || e.Revision != rev || e.Created.IsZero() {
		t.Errorf("Get(a) = %q rev %d created %v, %v; want v2 rev %d", e.Value, e.Revision, e.Created, err, rev)
	}
	for _, k := range []string{"never", "gone", "purged"} {
		if _, err := kvleader.Get(ctx, nc, "b", k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("Get(%s): %v, want ErrKeyNotFound", k, err)
		}
	}
	if _, err := kvleader.Get(ctx, nc, "nosuchbucket", "a"); err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("Get in a missing bucket: %v, want a stream error", err)
	}
}

// TestGetWhileNoLeader: while nobody answers the stream's API (a cluster
// electing a leader), Get asks again instead of failing at once; it gives
// up with "no responders" when nobody ever answers within its context.
func TestGetWhileNoLeader(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := kvleader.Get(ctx, nc, "b", "a"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("nobody answering: %v, want no responders", err)
	}

	// A leader that comes up while Get is asking: its answer is the value.
	leader := make(chan struct{})
	go func() {
		<-leader
		_, _ = nc.Subscribe("$JS.API.STREAM.MSG.GET.KV_b", func(m *nats.Msg) {
			_ = m.Respond([]byte(`{"message":{"seq":7,"data":"djE=","time":"2026-01-02T03:04:05Z"}}`))
		})
		_ = nc.Flush()
	}()
	time.AfterFunc(120*time.Millisecond, func() { close(leader) })
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := kvleader.Get(ctx, nc, "b", "a")
	if err != nil || string(e.Value) != "v1" || e.Revision != 7 {
		t.Fatalf("leader elected meanwhile: %+v, %v; want v1 at revision 7", e, err)
	}
}
