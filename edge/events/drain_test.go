package events

import (
	"context"
	"errors"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
)

// WaitDrained returns once every emitted event is acknowledged (waking on
// acknowledgements), and gives up with ctx while nothing can be sent.
func TestWaitDrained(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	_, js := connect(t, serverPort(srv))
	ensureStream(t, js)
	r := newRecorder(t, t.TempDir(), 0)

	emitN(r, proto.EventDHCPDiscover, 0, 50)
	// No sender yet: nothing drains, so the wait ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.WaitDrained(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitDrained with 50 unsent events = %v; want context.Canceled", err)
	}
	stop := startRun(t, r, js)
	defer stop()
	if err := r.WaitDrained(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Buffered != 0 || streamCount(js) != 50 {
		t.Fatalf("after WaitDrained: stats %+v, %d in the stream; want 0 buffered and 50 sent", s, streamCount(js))
	}
}
