package proto

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream side of the contract: every stream and bucket is configured
// here, once, and whoever creates one (the coordinator, a test, an edge test)
// takes its configuration from these functions, so no two creators disagree
// on limits or discard policy.

// Limits of the EVENTS stream. Events are history: at the limit the oldest
// go, so the newest boot of every machine can always be explained.
const (
	EventsMaxBytes = 1 << 30
	EventsMaxAge   = 30 * 24 * time.Hour
)

// Limits of the AUDIT stream. The audit log keeps what happened: at the
// limit new records are refused (and the coordinator says so loudly), never
// old ones dropped, so flooding it cannot erase an admin's changes.
const (
	AuditMaxBytes = 1 << 30
	AuditMaxAge   = 365 * 24 * time.Hour
)

// ConsumerInactiveLimit is the longest any consumer of any stream or bucket
// may live without a client: every stream carries it as its consumer limit.
// Permissions cannot refuse a durable consumer (the named CONSUMER.CREATE
// subject is the same for an ephemeral and a durable one, the durable name
// is in the body), so the server makes them harmless instead: a consumer
// inherits this inactivity limit, a longer one is refused, and none
// outlives its client by more than this. nats.go's ordered consumers ask
// for exactly five minutes.
const ConsumerInactiveLimit = 5 * time.Minute

// ConsumerLimits are the consumer limits of every stream and bucket.
func ConsumerLimits() jetstream.StreamConsumerLimits {
	return jetstream.StreamConsumerLimits{InactiveThreshold: ConsumerInactiveLimit}
}

// SubjectAuditPrefix: audit records go to fleetboot.audit.<action>. Only the
// coordinator may publish there.
const SubjectAuditPrefix = "fleetboot.audit"

// EventsStreamConfig is the EVENTS stream: subjects fleetboot.events.>,
// deduplicated by Nats-Msg-Id (an edge resending its buffer after an outage
// never records an event twice), bounded in bytes and age.
func EventsStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "fleetboot boot-chain events from the edges",
		Subjects:    []string{SubjectEventsPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    EventsMaxBytes,
		MaxAge:      EventsMaxAge,
		Replicas:    max(replicas, 1),
		Duplicates:  EventsDuplicateWindow,

		ConsumerLimits: ConsumerLimits(),
	}
}

// AuditStreamConfig is the AUDIT stream: every change request an identified
// caller made, accepted or refused. DiscardNew: when full, it refuses.
func AuditStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamAudit,
		Description: "fleetboot: every accepted or refused change request",
		Subjects:    []string{SubjectAuditPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    AuditMaxBytes,
		MaxAge:      AuditMaxAge,
		Replicas:    max(replicas, 1),

		ConsumerLimits: ConsumerLimits(),
	}
}

// Limits of the edges bucket: a heartbeat is a few hundred bytes; an edge
// credential may write only its own key, but the bucket still must not grow
// without bound however many names are tried.
const (
	EdgesMaxValueSize = 16 << 10
	EdgesMaxBytes     = 64 << 20
)

// BucketConfig is the configuration of a KV bucket (the contract's and the
// coordinator's own): file storage, five revisions of history. A KV config
// has no consumer limits: whoever creates a bucket then gives its stream
// ConsumerLimits() (see the coordinator's service.New).
func BucketConfig(bucket string, replicas int) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:   bucket,
		History:  5,
		Replicas: max(replicas, 1),
		Storage:  jetstream.FileStorage,
	}
	if bucket == BucketEdges {
		c.MaxValueSize, c.MaxBytes = EdgesMaxValueSize, EdgesMaxBytes
	}
	return c
}
