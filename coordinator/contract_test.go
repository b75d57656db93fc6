package coordinator

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// streamConfig reads back a stream's configuration as the server holds it.
func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.Config
}

// serverSet ignores what the server fills in by itself.
var serverSet = cmpopts.IgnoreFields(jetstream.StreamConfig{}, "Metadata", "FirstSeq", "SubjectTransform", "Compression", "Placement")

// TestContractStreams: the streams and buckets a coordinator creates are the
// ones proto defines, and the EVENTS stream an edge-side creator makes is
// the coordinator's, field for field.
func TestContractStreams(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Start(t).ClientURL())
	if _, err := setupState(ctx, js, Config{}, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []jetstream.StreamConfig{proto.EventsStreamConfig(1), proto.AuditStreamConfig(1)} {
		got := streamConfig(t, js, want.Name)
		// The server fills in defaults the contract leaves unset.
		want.MaxMsgs, want.MaxMsgsPerSubject, want.MaxConsumers, want.MaxMsgSize = got.MaxMsgs, got.MaxMsgsPerSubject, got.MaxConsumers, got.MaxMsgSize
		if want.Duplicates == 0 {
			want.Duplicates = got.Duplicates
		}
		if diff := cmp.Diff(want, got, serverSet); diff != "" {
			t.Errorf("stream %s as created by the coordinator (-proto +running):\n%s", want.Name, diff)
		}
	}
	for _, b := range []string{proto.BucketSites, proto.BucketImages, proto.BucketHosts, proto.BucketMACs, proto.BucketEdges} {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sc := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
		want := proto.BucketConfig(b, 1)
		type limits struct {
			Consumers           jetstream.StreamConsumerLimits
			History             int64
			MaxBytes, ValueSize int64
			Storage             jetstream.StorageType
			Replicas            int
		}
		got := limits{Consumers: sc.ConsumerLimits, History: sc.MaxMsgsPerSubject, MaxBytes: sc.MaxBytes, ValueSize: int64(sc.MaxMsgSize), Storage: sc.Storage, Replicas: sc.Replicas}
		w := limits{Consumers: proto.ConsumerLimits(), History: int64(want.History), MaxBytes: want.MaxBytes, ValueSize: int64(want.MaxValueSize), Storage: want.Storage, Replicas: want.Replicas}
		if w.MaxBytes == 0 {
			w.MaxBytes = -1
		}
		if w.ValueSize == 0 {
			w.ValueSize = -1
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("bucket %s (-proto +running):\n%s", b, diff)
		}
	}

	// The edge side's creator, on a server of its own.
	_, ejs := natstest.Connect(t, natstest.Start(t).ClientURL())
	if err := events.EnsureStream(ctx, ejs, 1, proto.EventsMaxBytes); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(streamConfig(t, js, proto.StreamEvents), streamConfig(t, ejs, proto.StreamEvents), serverSet); diff != "" {
		t.Errorf("EVENTS as the coordinator creates it (-) and as the edge side does (+):\n%s", diff)
	}
}
