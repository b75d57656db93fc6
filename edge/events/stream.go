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

// EnsureStream creates the EVENTS stream, or updates it to this
// configuration: subjects fleetboot.events.>, file storage, a duplicate
// window, and an explicit byte limit (oldest events are discarded at the
// limit) so a flood of events cannot fill the server's disk.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int, maxBytes int64) error {
	if replicas < 1 || replicas > 5 {
		return fmt.Errorf("events: stream replicas %d: want 1 to 5", replicas)
	}
	if maxBytes <= 0 {
		return fmt.Errorf("events: stream byte limit %d: want a positive size", maxBytes)
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        proto.StreamEvents,
		Description: "fleetboot boot-chain events from the edges",
		Subjects:    []string{proto.SubjectEventsPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    maxBytes,
		Replicas:    replicas,
		Duplicates:  DuplicateWindow,
	})
	if err != nil {
		return fmt.Errorf("events: create stream %s: %w", proto.StreamEvents, err)
	}
	return nil
}
