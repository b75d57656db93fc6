package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// Operator actions (Act).
const (
	ActionPause    = "pause"
	ActionResume   = "resume"
	ActionAbort    = "abort"
	ActionRollback = "rollback"
)

// Get returns a rollout.
func (e *Engine) Get(ctx context.Context, name string) (proto.Rollout, error) {
	if err := proto.ValidName("rollout", name); err != nil {
		return proto.Rollout{}, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	r, _, err := e.load(ctx, name)
	return r, err
}

// List returns every rollout, by name.
func (e *Engine) List(ctx context.Context) ([]proto.Rollout, error) {
	names, err := e.names(ctx)
	if err != nil {
		return nil, err
	}
	out := []proto.Rollout{}
	for _, n := range names {
		r, _, err := e.load(ctx, n)
		if errors.Is(err, service.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// names lists the rollouts' keys (not the leases).
func (e *Engine) names(ctx context.Context) ([]string, error) {
	keys, err := e.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollout: list: %w", err)
	}
	var out []string
	for k := range keys.Keys() {
		if !strings.Contains(k, "=") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Act carries out an operator's action on a rollout; who says whose (it
// goes into Reason).
//
//   - pause: a running rollout starts no more hosts; hosts already booting
//     are still watched. resume: it runs again.
//   - abort: nothing more is started, ever; hosts keep what they have.
//   - rollback: the hosts the rollout touched (done, failed, or still
//     booting) go back to their previous image, power-cycled again with
//     --power cycle; waiting hosts stay untouched. The rollout is
//     rolled-back once every one of them is reassigned (and power-cycled):
//     their boots are not awaited.
func (e *Engine) Act(ctx context.Context, action, name, who string) (proto.Rollout, error) {
	if err := proto.ValidName("rollout", name); err != nil {
		return proto.Rollout{}, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	if who == "" {
		who = "an operator"
	}
	now := e.cfg.Now().UTC()
	switch action {
	case ActionPause:
		return e.update(ctx, name, func(r *proto.Rollout) error {
			if r.State != proto.RolloutRunning {
				return notIn(r, "pause", "running")
			}
			r.State, r.Reason = proto.RolloutPaused, "paused by "+who
			return nil
		})
	case ActionResume:
		return e.update(ctx, name, func(r *proto.Rollout) error {
			if r.State != proto.RolloutPaused {
				return notIn(r, "resume", "paused")
			}
			r.State, r.Reason = proto.RolloutRunning, ""
			return nil
		})
	case ActionAbort:
		return e.update(ctx, name, func(r *proto.Rollout) error {
			switch r.State {
			case proto.RolloutRunning, proto.RolloutPaused, proto.RolloutHalted:
			default:
				return notIn(r, "abort", "running, paused or halted")
			}
			r.State, r.Reason = proto.RolloutAborted, "aborted by "+who
			return nil
		})
	case ActionRollback:
		return e.rollback(ctx, name, who, now)
	}
	return proto.Rollout{}, invalid("unknown rollout action %q", action)
}

func notIn(r *proto.Rollout, action, want string) error {
	return fmt.Errorf("%w: rollout %s is %s: only a %s rollout can %s", service.ErrConflict, r.Name, r.State, want, action)
}

// touched: the host's image was (or is being) changed by the rollout.
func touched(h proto.RolloutHost) bool {
	switch h.State {
	case proto.RolloutHostAssigned, proto.RolloutHostPowerCycled, proto.RolloutHostBooting, proto.RolloutHostFailed:
		return true
	case proto.RolloutHostDone:
		return h.Proof != proto.RolloutProofAlready
	}
	return false
}

// rollback marks the touched hosts for the driver to move back and holds
// them again (a finished rollout's holds may have been taken over: a host
// now in another active rollout refuses the rollback).
func (e *Engine) rollback(ctx context.Context, name, who string, now time.Time) (proto.Rollout, error) {
	r, _, err := e.load(ctx, name)
	if err != nil {
		return proto.Rollout{}, err
	}
	if r.State == proto.RolloutRollingBack || r.State == proto.RolloutRolledBack {
		return proto.Rollout{}, fmt.Errorf("%w: rollout %s is %s already", service.ErrConflict, name, r.State)
	}
	var mark []proto.RolloutHost
	for _, h := range r.Hosts {
		if touched(h) {
			h.Undo = true
			mark = append(mark, h)
		}
	}
	if _, err := e.hold(ctx, name, mark); err != nil {
		return proto.Rollout{}, err
	}
	return e.update(ctx, name, func(r *proto.Rollout) error {
		if r.State == proto.RolloutRollingBack || r.State == proto.RolloutRolledBack {
			return fmt.Errorf("%w: rollout %s is %s already", service.ErrConflict, name, r.State)
		}
		n := 0
		for i := range r.Hosts {
			if touched(r.Hosts[i]) {
				r.Hosts[i].Undo = true
				n++
			}
		}
		r.State, r.Reason = proto.RolloutRollingBack, fmt.Sprintf("rollback of %d host(s) asked by %s", n, who)
		if n == 0 {
			r.State, r.Reason = proto.RolloutRolledBack, "nothing to roll back: no host was touched (asked by "+who+")"
		}
		return nil
	})
}

// doneMark is a host's done callback as HostDone records it.
type doneMark struct {
	V int `json:"v"`
	// HostVersion is the host record's Updated as the callback found
	// it: the callback is for that assignment or a later one.
	HostVersion time.Time `json:"host_version"`
	Time        time.Time `json:"time"`
}

// HostDone records a host's done callback (host.done), for the driver of
// the rollout holding the host: the callback may reach any coordinator,
// the driver may be another. Hosts in no rollout record nothing.
func (e *Engine) HostDone(ctx context.Context, h proto.Host) {
	ent, err := e.read(ctx, service.BucketRolloutHolds, holdKey(h.MAC))
	if err != nil {
		return // in no rollout (or unreadable: the boot timeout still ends it)
	}
	if r, _, err := e.load(ctx, string(ent.Value)); err != nil || !needsDriver(r) {
		return
	}
	data, _ := json.Marshal(doneMark{V: proto.Version, HostVersion: h.Updated, Time: e.cfg.Now().UTC()})
	if _, err := e.holds.Put(ctx, doneKey(h.MAC), data); err != nil {
		e.log.Warn("done callback not recorded for the rollout", "mac", h.MAC, "rollout", string(ent.Value), "err", err)
	}
}

// Sites returns the sites of a rollout's hosts (the guard confines site
// admins with it).
func (e *Engine) Sites(ctx context.Context, name string) ([]string, error) {
	r, _, err := e.load(ctx, name)
	if err != nil {
		return nil, err
	}
	return sitesOf(r.Hosts, func(h proto.RolloutHost) string { return h.Site }), nil
}

// SelectionSites returns the sites of the hosts a start would select.
func (e *Engine) SelectionSites(ctx context.Context, spec proto.RolloutSpec) ([]string, error) {
	hosts, err := e.cfg.Hosts.SelectHosts(ctx, spec.Selector, spec.Sites)
	if err != nil {
		return nil, err
	}
	return sitesOf(hosts, func(h proto.Host) string { return h.Site }), nil
}

func sitesOf[T any](items []T, site func(T) string) []string {
	var out []string
	for _, x := range items {
		if s := site(x); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}
