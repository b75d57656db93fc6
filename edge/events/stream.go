package events

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// DuplicateWindow is how long the EVENTS stream remembers message IDs. It
// must cover the longest a sender can take between a publish that reached
// the stream and the cursor write that records it, and the retries of a
// publish whose ack was lost: minutes, not hours.
const DuplicateWindow = proto.EventsDuplicateWindow

// EnsureStream creates the EVENTS stream, or updates it, as proto defines
// it (the coordinator creates the same), with maxBytes as its byte limit
// (proto.EventsMaxBytes in production; tests use a smaller one).
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int, maxBytes int64) error {
	if replicas < 1 || replicas > 5 {
		return fmt.Errorf("events: stream replicas %d: want 1 to 5", replicas)
	}
	if maxBytes <= 0 {
		return fmt.Errorf("events: stream byte limit %d: want a positive size", maxBytes)
	}
	sc := proto.EventsStreamConfig(replicas)
	sc.MaxBytes = maxBytes
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("events: create stream %s: %w", proto.StreamEvents, err)
	}
	return nil
}
