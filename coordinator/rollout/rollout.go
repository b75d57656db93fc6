// Package rollout moves the hosts a selector picks to one image revision in
// stages, canaries first, then batches, site by site. It watches each host's
// boot in the EVENTS stream and halts itself when failures pass the
// rollout's budget.
//
// A rollout's whole state is one KV value (proto.BucketRollouts, key: its
// name), changed only with compare-and-set at the revision read, by the API
// (start, pause, resume, abort, rollback) and by the driver. One driver
// goroutine runs per coordinator; a lease key (lease=NAME, same bucket) lets
// only one of them drive a rollout at a time, and a restarted or dead
// coordinator's lease is taken over once it has not been renewed for
// LeaseBeats ticks. The driver writes every step it takes before it takes
// the next, and its side effects (a host set, a power cycle) are idempotent
// or checked first, so a coordinator that takes over continues where the
// last one stopped.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/kvleader"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// Hosts is what a rollout needs of the coordinator's service: the same
// calls `host set`, `host power` and `host set --selector` make, so the
// audit, the indexes and the edges see a rollout's changes as any other.
type Hosts interface {
	SelectHosts(ctx context.Context, selector string, sites []string) ([]proto.Host, error)
	GetHost(ctx context.Context, mac string) (proto.Host, error)
	SetHost(ctx context.Context, req proto.HostSetRequest) (proto.Host, error)
	GetImage(ctx context.Context, ref string) (proto.Image, error)
	Power(ctx context.Context, req proto.PowerRequest) (proto.PowerReply, error)
}

// Auditor stores the driver's own changes in the audit log (see audit.Log).
type Auditor interface {
	Record(ctx context.Context, r audit.Record) error
}

// Defaults of Config.
const (
	DefaultTick       = 2 * time.Second
	DefaultPowerDelay = 2 * time.Second
	// LeaseBeats: a lease not renewed for this many ticks is taken over.
	LeaseBeats = 3
)

// Config holds an Engine's dependencies.
type Config struct {
	JS    jetstream.JetStream
	Hosts Hosts
	Audit Auditor // nil: the driver's changes are only logged
	// ID names this coordinator in leases and in Rollout.Driver; unique per
	// process (default: host name and a random suffix), so a restarted
	// coordinator waits for its old lease to expire like any other.
	ID     string
	Tick   time.Duration // driver period and lease heartbeat; DefaultTick when 0
	Settle time.Duration // a boot quiet this long is over (timeline.Options.Settle); timeline's default when 0
	// PowerDelay is the least time between a host's assignment and its
	// power cycle: the edges apply the assignment from their KV watch
	// within milliseconds, and a machine that asks for its script before
	// its edge has it would boot the old image. DefaultPowerDelay when 0.
	PowerDelay time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// Engine serves the rollout API calls and drives rollouts (Run).
type Engine struct {
	cfg   Config
	kv    jetstream.KeyValue // proto.BucketRollouts
	holds jetstream.KeyValue // service.BucketRolloutHolds
	nc    *nats.Conn
	log   *slog.Logger

	// Driver state, owned by Run's goroutine.
	leases map[string]*leaseState
	caches map[string]*eventCache
	macs   map[string][]string // host MAC -> all its MACs
}

// New binds to the buckets service.New created.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.PowerDelay <= 0 {
		cfg.PowerDelay = DefaultPowerDelay
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = host + "-" + nuid.Next()[:8]
	}
	kv, err := cfg.JS.KeyValue(ctx, proto.BucketRollouts)
	if err != nil {
		return nil, fmt.Errorf("rollout: bucket %s: %w", proto.BucketRollouts, err)
	}
	holds, err := cfg.JS.KeyValue(ctx, service.BucketRolloutHolds)
	if err != nil {
		return nil, fmt.Errorf("rollout: bucket %s: %w", service.BucketRolloutHolds, err)
	}
	return &Engine{cfg: cfg, kv: kv, holds: holds, nc: cfg.JS.Conn(), log: cfg.Logger.With("component", "rollout"),
		leases: map[string]*leaseState{}, caches: map[string]*eventCache{}, macs: map[string][]string{}}, nil
}

// ID is the name this engine drives under.
func (e *Engine) ID() string { return e.cfg.ID }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", service.ErrInvalid, fmt.Sprintf(format, a...))
}

// Keys beside the rollouts in proto.BucketRollouts. A rollout name cannot
// hold '=' (proto.ValidName), so none of these is a rollout.
const leasePrefix = "lease="

func leaseKey(name string) string { return leasePrefix + name }

// Keys of service.BucketRolloutHolds.
func holdKey(mac string) string {
	k, _ := proto.MACKey(mac)
	return "host." + k
}

func doneKey(mac string) string {
	k, _ := proto.MACKey(mac)
	return "done." + k
}

// read returns a key's latest value from the stream leader (kvleader): the
// driver and the API decide on it.
func (e *Engine) read(ctx context.Context, bucket, key string) (kvleader.Entry, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	ent, err := kvleader.Get(ctx, e.nc, bucket, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvleader.Entry{}, service.ErrNotFound
	}
	if err != nil {
		return kvleader.Entry{}, fmt.Errorf("rollout: %w", err)
	}
	return ent, nil
}

// load reads a rollout and its revision.
func (e *Engine) load(ctx context.Context, name string) (proto.Rollout, uint64, error) {
	ent, err := e.read(ctx, proto.BucketRollouts, name)
	if errors.Is(err, service.ErrNotFound) {
		return proto.Rollout{}, 0, fmt.Errorf("rollout %s: %w", name, service.ErrNotFound)
	}
	if err != nil {
		return proto.Rollout{}, 0, err
	}
	var r proto.Rollout
	if err := json.Unmarshal(ent.Value, &r); err != nil {
		return proto.Rollout{}, 0, fmt.Errorf("rollout: decode %s: %w", name, err)
	}
	return r, ent.Revision, nil
}

// errUnchanged, returned by an update's fn, writes nothing.
var errUnchanged = errors.New("unchanged")

// casTries bounds an update's read-modify-write attempts.
const casTries = 10

// update applies fn to the latest rollout and writes it with
// compare-and-set at the revision read, again on a conflict: fn must be a
// pure change of the value it is given. It returns what was written (or,
// when fn says errUnchanged, what was read).
func (e *Engine) update(ctx context.Context, name string, fn func(r *proto.Rollout) error) (proto.Rollout, error) {
	for range casTries {
		r, rev, err := e.load(ctx, name)
		if err != nil {
			return proto.Rollout{}, err
		}
		if err := fn(&r); errors.Is(err, errUnchanged) {
			return r, nil
		} else if err != nil {
			return proto.Rollout{}, err
		}
		r.Updated = e.cfg.Now().UTC()
		data, err := json.Marshal(r)
		if err != nil {
			return proto.Rollout{}, fmt.Errorf("rollout: encode %s: %w", name, err)
		}
		if _, err := e.kv.Update(ctx, name, data, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return proto.Rollout{}, fmt.Errorf("rollout: write %s: %w", name, err)
		}
		return r, nil
	}
	return proto.Rollout{}, fmt.Errorf("%w: rollout %s keeps changing; retry", service.ErrConflict, name)
}

// isConflict tells a compare-and-set refusal.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// audit records one of the driver's own changes, as the API records an
// operator's: who is "rollout/NAME".
func (e *Engine) audit(ctx context.Context, rollout, action string, req any, err error) {
	if e.cfg.Audit == nil {
		return
	}
	rec := audit.Record{Who: "rollout/" + rollout, Role: "coordinator", Key: e.cfg.ID, Action: action, Outcome: audit.Accepted}
	body, _ := json.Marshal(req)
	rec.SetRequest(body)
	if err != nil {
		rec.Outcome, rec.Error = audit.Refused, err.Error()
	}
	if aErr := e.cfg.Audit.Record(context.WithoutCancel(ctx), rec); aErr != nil {
		e.log.Warn("audit record not stored", "rollout", rollout, "action", action, "err", aErr)
	}
}
