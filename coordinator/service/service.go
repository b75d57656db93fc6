// Package service holds the coordinator's rules: it validates every change to
// sites, images and hosts and writes the JetStream KV buckets, which it is the
// only writer of. A rejected change writes nothing.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// Sentinel errors callers act on (the API maps them to reply codes).
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// ArtifactChecker confirms an uploaded artifact is really in the store with
// the recorded size; nil skips the check.
type ArtifactChecker interface {
	CheckArtifact(ctx context.Context, a proto.Artifact) error
}

// Config holds the service's dependencies.
type Config struct {
	JS       jetstream.JetStream
	Replicas int // KV replicas; 1 for a single server, 3 on a cluster
	Checker  ArtifactChecker
	Logger   *slog.Logger
	Now      func() time.Time
}

// Service validates and applies desired-state changes.
type Service struct {
	// mu serialises this coordinator's writes; KV create/compare-and-set on
	// the index buckets keeps the uniqueness rules safe across coordinators.
	mu    sync.Mutex
	kv    map[string]jetstream.KeyValue
	js    jetstream.JetStream
	nc    *nats.Conn // leader reads (see read)
	check ArtifactChecker
	log   *slog.Logger
	now   func() time.Time
}

// New creates (or binds to) the KV buckets.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	s := &Service{kv: map[string]jetstream.KeyValue{}, js: cfg.JS, nc: cfg.JS.Conn(), check: cfg.Checker, log: cfg.Logger, now: cfg.Now}
	for _, b := range []string{proto.BucketSites, proto.BucketImages, proto.BucketHosts, proto.BucketMACs, bucketIPs, proto.BucketEdges, bucketFacts, bucketImageLocks, proto.BucketLoaders, bucketLoaderLocks,
		bucketDiscovered, bucketPolicies, bucketPolicyClaims, proto.BucketTemplates, bucketTemplateLocks,
		proto.BucketRollouts, BucketRolloutHolds} {
		kc := proto.BucketConfig(b, cfg.Replicas)
		if b == bucketDiscovered {
			kc = discoveredConfig(cfg.Replicas)
		}
		kv, err := cfg.JS.CreateOrUpdateKeyValue(ctx, kc)
		if err != nil {
			return nil, fmt.Errorf("coordinator: create KV bucket %s: %w", b, err)
		}
		if err := limitConsumers(ctx, cfg.JS, "KV_"+b); err != nil {
			return nil, err
		}
		s.kv[b] = kv
	}
	return s, nil
}

// limitConsumers gives a bucket's stream the contract's consumer limits,
// which a KV config cannot carry (and a KV update resets), and lets it take
// atomic batches (bulk imports write them; see writeAll).
func limitConsumers(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("coordinator: stream %s: %w", stream, err)
	}
	sc := st.CachedInfo().Config
	if sc.ConsumerLimits == proto.ConsumerLimits() && sc.AllowAtomicPublish {
		return nil
	}
	sc.ConsumerLimits, sc.AllowAtomicPublish = proto.ConsumerLimits(), true
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("coordinator: limit the consumers of %s: %w", stream, err)
	}
	return nil
}

// bucketIPs indexes reservations: key <site>.<ip> -> primary MAC key. It is
// the coordinator's own; edges never read it.
const bucketIPs = "ips"

// bucketImageLocks holds one entry per image that a removal and a new user
// of the image both change with compare-and-set (see pinImage), so two
// coordinators cannot remove an image and assign it at the same time.
const bucketImageLocks = "imagelocks"

// bucketLoaderLocks does for loaders what bucketImageLocks does for images.
const bucketLoaderLocks = "loaderlocks"

const (
	lockInUse   = "in-use"
	lockRemoved = "removed"
)

// claimGrace is how long an index entry whose host does not (yet) carry it
// is taken for a claim in flight on another coordinator rather than for a
// leftover: longer than any request runs.
const claimGrace = time.Minute

// BucketRolloutHolds is coordinator/rollout's: key host.<MAC12> names the
// rollout holding a host, done.<MAC12> the host's last done callback while
// one did. The service creates it with the others (and their consumer
// limits); edges never read it.
const BucketRolloutHolds = "rolloutholds"

// bucketFacts keeps the last facts an installer reported per MAC (12 hex digits).
const bucketFacts = "facts"

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}
