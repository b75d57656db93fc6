package eventlog

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestNoRespondersRetried: a pull request that finds no responders (on a
// cluster, the new consumer's interest not yet at the client's node) is
// tried again a bounded number of times; any other error, or a cancelled
// context, ends Read at once.
func TestNoRespondersRetried(t *testing.T) {
	wrapped := fmt.Errorf("fetch: %w", nats.ErrNoResponders)
	var r noResponders
	for i := range noRespondersTries {
		if !r.again(context.Background(), wrapped) {
			t.Fatalf("try %d: no responders not retried", i+1)
		}
	}
	if r.again(context.Background(), wrapped) {
		t.Errorf("retried past %d tries", noRespondersTries)
	}
	if (&noResponders{}).again(context.Background(), errors.New("permissions violation")) {
		t.Error("another error retried")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if (&noResponders{}).again(ctx, nats.ErrNoResponders) {
		t.Error("retried after the context ended")
	}
}
