package kvleader_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
