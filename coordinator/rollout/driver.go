package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// Run drives the active rollouts, one tick at a time, until ctx ends; then
// it gives up its leases, so another coordinator takes over at once.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Tick)
	defer t.Stop()
	for {
		e.Tick(ctx)
		select {
		case <-ctx.Done():
			e.releaseAll()
			return
		case <-t.C:
		}
	}
}

// Tick makes one pass: every active rollout whose lease this coordinator
// holds (or takes) is driven one step further.
func (e *Engine) Tick(ctx context.Context) {
	names, err := e.names(ctx)
	if err != nil {
		e.log.Warn("rollouts not listed", "err", err)
		return
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		r, _, err := e.load(ctx, name)
		if err != nil {
			continue
		}
		if !needsDriver(r) {
			e.release(ctx, name)
			continue
		}
		if !e.lease(ctx, name) {
			continue
		}
		if err := e.drive(ctx, name); err != nil && ctx.Err() == nil {
			e.log.Warn("rollout step failed; retrying at the next tick", "rollout", name, "err", err)
		}
	}
}

// needsDriver: the rollout is active, or it halted or was aborted with
// hosts still booting, which are watched to the end (done, failed) so its
// status tells how they came out; nothing new is started.
func needsDriver(r proto.Rollout) bool {
	if proto.RolloutActive(r.State) {
		return true
	}
	if r.State != proto.RolloutHalted && r.State != proto.RolloutAborted {
		return false
	}
	for _, h := range r.Hosts {
		if inFlight(h.State) && !h.Undo && !h.HostVersion.IsZero() {
			return true
		}
	}
	return false
}

// leaseValue is the lease=NAME entry.
type leaseValue struct {
	V      int       `json:"v"`
	Holder string    `json:"holder"`
	Time   time.Time `json:"time"` // of the last renewal, by the holder's clock (for people)
}

// leaseState is what this coordinator knows of one rollout's lease.
type leaseState struct {
	rev     uint64
	holder  string
	mine    bool
	renewed time.Time // mine: when this coordinator last wrote it
	seen    time.Time // another's: when this revision was first seen here
}

func (e *Engine) ttl() time.Duration { return LeaseBeats * e.cfg.Tick }

// lease takes or renews the driver lease of a rollout, with compare-and-
// set at the revision read: a lease is created when there is none,
// renewed by its holder every tick, and taken over when another holder's
// has not changed for LeaseBeats ticks, as timed by this coordinator's
// own clock (no two clocks are compared).
func (e *Engine) lease(ctx context.Context, name string) bool {
	now := e.cfg.Now()
	key := leaseKey(name)
	data, _ := json.Marshal(leaseValue{V: proto.Version, Holder: e.cfg.ID, Time: now.UTC()})
	ent, err := e.read(ctx, proto.BucketRollouts, key)
	if errors.Is(err, service.ErrNotFound) {
		rev, err := e.kv.Create(ctx, key, data)
		if err != nil {
			return false // another coordinator was first
		}
		e.took(ctx, name, rev, "")
		return true
	}
	if err != nil {
		return false
	}
	var lv leaseValue
	_ = json.Unmarshal(ent.Value, &lv)
	st := e.leases[name]
	if lv.Holder == e.cfg.ID {
		rev, err := e.kv.Update(ctx, key, data, ent.Revision)
		if err != nil {
			e.lost(name, "")
			return false
		}
		st.rev, st.renewed = rev, now
		return true
	}
	if st == nil || st.mine || st.rev != ent.Revision {
		if st != nil && st.mine {
			e.lost(name, lv.Holder)
		}
		e.leases[name] = &leaseState{rev: ent.Revision, holder: lv.Holder, seen: now}
		return false
	}
	if now.Sub(st.seen) < e.ttl() {
		return false
	}
	rev, err := e.kv.Update(ctx, key, data, ent.Revision)
	if err != nil {
		return false
	}
	e.took(ctx, name, rev, lv.Holder)
	return true
}

// took starts driving a rollout: nothing is cached from an earlier turn,
// and the rollout names its driver.
func (e *Engine) took(ctx context.Context, name string, rev uint64, from string) {
	e.leases[name] = &leaseState{rev: rev, holder: e.cfg.ID, mine: true, renewed: e.cfg.Now()}
	delete(e.caches, name)
	if from != "" {
		e.log.Info("rollout lease taken over", "rollout", name, "from", from, "after", e.ttl())
	} else {
		e.log.Info("rollout lease taken", "rollout", name)
	}
	_, err := e.update(ctx, name, func(r *proto.Rollout) error {
		if r.Driver == e.cfg.ID {
			return errUnchanged
		}
		r.Driver = e.cfg.ID
		return nil
	})
	if err != nil {
		e.log.Warn("rollout driver not recorded", "rollout", name, "err", err)
	}
}

func (e *Engine) lost(name, to string) {
	e.log.Warn("rollout lease lost", "rollout", name, "to", to)
	delete(e.leases, name)
	delete(e.caches, name)
}

// mayAct tells whether this coordinator may act for a rollout now: its
// lease was renewed less than LeaseBeats-1 ticks ago, so no other
// coordinator can have taken it over (that takes LeaseBeats ticks of
// silence), whatever the step in progress costs.
func (e *Engine) mayAct(name string) bool {
	st := e.leases[name]
	return st != nil && st.mine && e.cfg.Now().Sub(st.renewed) < e.ttl()-e.cfg.Tick
}

// release gives up a lease this coordinator holds (a finished rollout, or
// a coordinator stopping).
func (e *Engine) release(ctx context.Context, name string) {
	st := e.leases[name]
	if st == nil {
		return
	}
	delete(e.leases, name)
	delete(e.caches, name)
	if st.mine {
		_ = e.kv.Delete(ctx, leaseKey(name), jetstream.LastRevision(st.rev))
	}
}

func (e *Engine) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for name := range e.leases {
		e.release(ctx, name)
	}
}

// errStop ends a step without an error: the rollout is not (or no longer)
// in a state for it.
var errStop = errors.New("stop")

// drive moves one rollout one step: watch the hosts in flight, power-cycle
// the assigned ones, halt or finish, start the next batch; or, rolling
// back, move the marked hosts back.
func (e *Engine) drive(ctx context.Context, name string) error {
	r, _, err := e.load(ctx, name)
	if err != nil {
		return err
	}
	if r.State == proto.RolloutRollingBack {
		return e.undo(ctx, r)
	}
	target, err := e.cfg.Hosts.GetImage(ctx, r.Image)
	if err != nil {
		return fmt.Errorf("target image: %w", err)
	}
	if !proto.RolloutActive(r.State) {
		return e.watch(ctx, name, target) // halted or aborted: watch what is booting, start nothing
	}
	for _, h := range r.Hosts {
		// Assigned, but the host set not recorded: a coordinator
		// stopped between the two. Finish it (a no-op if it was made).
		if h.State == proto.RolloutHostAssigned && h.HostVersion.IsZero() && !h.Undo {
			if !e.mayAct(name) {
				return nil
			}
			if err := e.assign(ctx, r, h.MAC); err != nil {
				return err
			}
		}
	}
	if err := e.watch(ctx, name, target); err != nil {
		return err
	}
	if err := e.powerCycle(ctx, name); err != nil {
		return err
	}
	r, err = e.settle(ctx, name)
	if err != nil || r.State != proto.RolloutRunning {
		return err
	}
	return e.advance(ctx, name)
}

func inFlight(state string) bool {
	return state == proto.RolloutHostAssigned || state == proto.RolloutHostPowerCycled || state == proto.RolloutHostBooting
}

func finished(state string) bool {
	return state == proto.RolloutHostDone || state == proto.RolloutHostFailed
}

// macsOf returns all MACs of a host (its events may come from any), cached.
func (e *Engine) macsOf(ctx context.Context, mac string) []string {
	if m, ok := e.macs[mac]; ok {
		return m
	}
	h, err := e.cfg.Hosts.GetHost(ctx, mac)
	if err != nil {
		return []string{mac}
	}
	e.macs[mac] = h.MACs()
	return h.MACs()
}

// doneOf reads a host's last done callback, nil if none.
func (e *Engine) doneOf(ctx context.Context, mac string) *doneMark {
	ent, err := e.read(ctx, service.BucketRolloutHolds, doneKey(mac))
	if err != nil {
		return nil
	}
	var d doneMark
	if json.Unmarshal(ent.Value, &d) != nil {
		return nil
	}
	return &d
}

// watch judges every host in flight from its events and done callback,
// and records what changed.
func (e *Engine) watch(ctx context.Context, name string, target proto.Image) error {
	r, _, err := e.load(ctx, name)
	if err != nil {
		return err
	}
	var flying []proto.RolloutHost
	var keys []string
	var from uint64
	for _, h := range r.Hosts {
		if !inFlight(h.State) || h.Undo || h.HostVersion.IsZero() {
			continue
		}
		if len(flying) == 0 || h.EventSeq < from {
			from = h.EventSeq
		}
		flying = append(flying, h)
		for _, m := range e.macsOf(ctx, h.MAC) {
			if k, err := proto.MACKey(m); err == nil {
				keys = append(keys, k)
			}
		}
	}
	if len(flying) == 0 {
		return nil
	}
	cache, err := e.events(ctx, name, keys, from)
	if err != nil {
		return err
	}
	now := e.cfg.Now()
	timeout := time.Duration(r.BootTimeout) * time.Second
	verdicts := map[string]verdict{}
	for _, h := range flying {
		v := judge(h, target, cache.of(e.macsOf(ctx, h.MAC), h.EventSeq), e.doneOf(ctx, h.MAC), timeout, e.cfg.Settle, now)
		if v.state == proto.RolloutHostBooting && h.State == proto.RolloutHostAssigned && r.Power == proto.RolloutPowerCycle {
			continue // the old boot still running: its power cycle comes first
		}
		if v.state != "" && v.state != h.State {
			verdicts[h.MAC] = v
		}
	}
	if len(verdicts) == 0 {
		return nil
	}
	_, err = e.update(ctx, name, func(r *proto.Rollout) error {
		n := 0
		for i := range r.Hosts {
			h := &r.Hosts[i]
			v, ok := verdicts[h.MAC]
			if !ok || !inFlight(h.State) || h.Undo {
				continue
			}
			h.State, h.Since, h.Diagnosis, h.Proof = v.state, now.UTC(), v.diagnosis, v.proof
			n++
		}
		if n == 0 {
			return errUnchanged
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, h := range flying {
		v, ok := verdicts[h.MAC]
		if !ok {
			continue
		}
		e.log.Info("rollout host", "rollout", name, "mac", h.MAC, "state", v.state, "proof", v.proof, "diagnosis", v.diagnosis)
		if v.state == proto.RolloutHostDone || v.state == proto.RolloutHostFailed {
			e.record(ctx, name, h.Site, h.MAC, v.state, map[string]string{"image": r.Image, "proof": v.proof, "diagnosis": v.diagnosis})
		}
	}
	return nil
}

// powerCycle asks the edges to power-cycle, next boot PXE, the hosts
// assigned at least PowerDelay ago (with --power cycle).
func (e *Engine) powerCycle(ctx context.Context, name string) error {
	r, _, err := e.load(ctx, name)
	if err != nil || r.Power != proto.RolloutPowerCycle {
		return err
	}
	now := e.cfg.Now()
	for _, h := range r.Hosts {
		if h.State != proto.RolloutHostAssigned || h.Undo || h.HostVersion.IsZero() || now.Sub(h.Assigned) < e.cfg.PowerDelay {
			continue
		}
		if !e.mayAct(name) {
			return nil
		}
		perr := e.cycle(ctx, name, h.MAC)
		_, err := e.update(ctx, name, func(r *proto.Rollout) error {
			x := find(r, h.MAC)
			if x == nil || x.State != proto.RolloutHostAssigned {
				return errUnchanged
			}
			x.State, x.Since = proto.RolloutHostPowerCycled, e.cfg.Now().UTC()
			if perr != nil {
				x.State, x.Diagnosis = proto.RolloutHostFailed, "power cycle through the BMC failed: "+perr.Error()
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// cycle power-cycles a host through its site's edge, next boot PXE.
func (e *Engine) cycle(ctx context.Context, name, mac string) error {
	req := proto.PowerRequest{V: proto.Version, MAC: mac, Action: proto.PowerCycle, PXE: true}
	_, err := e.cfg.Hosts.Power(ctx, req)
	e.audit(ctx, name, proto.APIHostPower, req, err)
	return err
}

func find(r *proto.Rollout, mac string) *proto.RolloutHost {
	for i := range r.Hosts {
		if r.Hosts[i].MAC == mac {
			return &r.Hosts[i]
		}
	}
	return nil
}

// settle halts a running or paused rollout whose failures passed its
// budget (or whose canary failed: canaries must all boot), and finishes
// one whose hosts are all done or failed.
func (e *Engine) settle(ctx context.Context, name string) (proto.Rollout, error) {
	return e.update(ctx, name, func(r *proto.Rollout) error {
		if r.State != proto.RolloutRunning && r.State != proto.RolloutPaused {
			return errUnchanged
		}
		failed, done := 0, 0
		var first, canary *proto.RolloutHost
		for i := range r.Hosts {
			h := &r.Hosts[i]
			switch h.State {
			case proto.RolloutHostFailed:
				failed++
				if first == nil {
					first = h
				}
				if h.Batch == 0 && canary == nil {
					canary = h
				}
			case proto.RolloutHostDone:
				done++
			}
		}
		switch {
		case canary != nil:
			r.State, r.Reason = proto.RolloutHalted, fmt.Sprintf("canary %s failed: %s", canary.MAC, canary.Diagnosis)
		case failed > r.MaxFailed:
			r.State, r.Reason = proto.RolloutHalted, fmt.Sprintf("%d host(s) failed, more than --max-failed %d; first %s: %s", failed, r.MaxFailed, first.MAC, first.Diagnosis)
		case r.State == proto.RolloutRunning && failed+done == len(r.Hosts):
			r.State, r.Reason = proto.RolloutDone, fmt.Sprintf("%d done, %d failed", done, failed)
		default:
			return errUnchanged
		}
		e.log.Info("rollout "+r.State, "rollout", r.Name, "reason", r.Reason)
		return nil
	})
}

// advance starts the next batch once every earlier one is over: each of
// its waiting hosts is first recorded as assigned (only while the rollout
// runs: a pause, an abort or a halt written meanwhile stops it here, so a
// host not recorded is never touched), then set to the target.
func (e *Engine) advance(ctx context.Context, name string) error {
	r, _, err := e.load(ctx, name)
	if err != nil || r.State != proto.RolloutRunning {
		return err
	}
	batch := -1
	for _, h := range r.Hosts {
		if !finished(h.State) && (batch < 0 || h.Batch < batch) {
			batch = h.Batch
		}
	}
	var waiting []string
	for _, h := range r.Hosts {
		if h.Batch == batch && h.State == proto.RolloutHostWaiting {
			waiting = append(waiting, h.MAC)
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	seq, err := e.lastEventSeq(ctx)
	if err != nil {
		return err
	}
	for _, mac := range waiting {
		if !e.mayAct(name) {
			return nil
		}
		now := e.cfg.Now().UTC()
		r, err := e.update(ctx, name, func(r *proto.Rollout) error {
			h := find(r, mac)
			if r.State != proto.RolloutRunning || h == nil || h.State != proto.RolloutHostWaiting {
				return errStop
			}
			h.State, h.Since, h.Assigned, h.EventSeq = proto.RolloutHostAssigned, now, now, seq
			return nil
		})
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := e.assign(ctx, r, mac); err != nil {
			return err
		}
	}
	return nil
}

// assign sets a host recorded as assigned to the rollout's target, the
// way `host set --image` does, unless it is there already (a coordinator
// that stopped after the host set), and records the host record's version.
func (e *Engine) assign(ctx context.Context, r proto.Rollout, mac string) error {
	if !e.mayAct(r.Name) {
		return nil // the next driver finishes it
	}
	cur, err := e.cfg.Hosts.GetHost(ctx, mac)
	h := cur
	if err == nil && cur.Image != r.Image {
		req := proto.HostSetRequest{V: proto.Version, MAC: mac, Image: &r.Image}
		h, err = e.cfg.Hosts.SetHost(ctx, req)
		e.audit(ctx, r.Name, proto.APIHostSet, req, err)
	}
	if err == nil {
		e.macs[mac] = h.MACs()
		e.log.Info("rollout host assigned", "rollout", r.Name, "mac", mac, "image", r.Image)
		e.record(ctx, r.Name, h.Site, mac, proto.RolloutHostAssigned, map[string]string{"image": r.Image})
	}
	_, uerr := e.update(ctx, r.Name, func(r *proto.Rollout) error {
		x := find(r, mac)
		if x == nil || x.State != proto.RolloutHostAssigned || !x.HostVersion.IsZero() {
			return errUnchanged
		}
		if err != nil {
			x.State, x.Since, x.Diagnosis = proto.RolloutHostFailed, e.cfg.Now().UTC(), "the assignment was refused: "+err.Error()
			return nil
		}
		x.HostVersion = h.Updated
		return nil
	})
	return uerr
}

// undo moves the hosts a rollback marked back to their previous image
// (power-cycling them with --power cycle), one at a time, and ends the
// rollback when none is left.
func (e *Engine) undo(ctx context.Context, r proto.Rollout) error {
	for _, h := range r.Hosts {
		if !h.Undo || h.State == proto.RolloutHostRolledBack {
			continue
		}
		if !e.mayAct(r.Name) {
			return nil
		}
		cur, err := e.cfg.Hosts.GetHost(ctx, h.MAC)
		if err == nil && cur.Image != h.Previous {
			req := proto.HostSetRequest{V: proto.Version, MAC: h.MAC, Image: &h.Previous}
			_, err = e.cfg.Hosts.SetHost(ctx, req)
			e.audit(ctx, r.Name, proto.APIHostSet, req, err)
		}
		if err == nil && r.Power == proto.RolloutPowerCycle {
			err = e.cycle(ctx, r.Name, h.MAC)
		}
		_, uerr := e.update(ctx, r.Name, func(r *proto.Rollout) error {
			x := find(r, h.MAC)
			if x == nil || !x.Undo || x.State == proto.RolloutHostRolledBack {
				return errUnchanged
			}
			x.Since = e.cfg.Now().UTC()
			if err != nil {
				// Not retried for ever: the host keeps what it has, and
				// says why.
				x.Undo, x.Diagnosis = false, "rollback failed: "+err.Error()
				return nil
			}
			x.State, x.Diagnosis = proto.RolloutHostRolledBack, ""
			return nil
		})
		if uerr != nil {
			return uerr
		}
		e.log.Info("rollout host rolled back", "rollout", r.Name, "mac", h.MAC, "image", h.Previous, "err", err)
		if err == nil {
			e.record(ctx, r.Name, h.Site, h.MAC, proto.RolloutHostRolledBack, map[string]string{"image": h.Previous})
		}
	}
	_, err := e.update(ctx, r.Name, func(r *proto.Rollout) error {
		if r.State != proto.RolloutRollingBack {
			return errUnchanged
		}
		n, failed := 0, 0
		for _, h := range r.Hosts {
			switch {
			case h.Undo && h.State != proto.RolloutHostRolledBack:
				return errUnchanged
			case h.State == proto.RolloutHostRolledBack:
				n++
			case h.Diagnosis != "" && !h.Undo && touched(h):
				failed++
			}
		}
		r.State, r.Reason = proto.RolloutRolledBack, fmt.Sprintf("%d host(s) back on their previous image", n)
		if failed > 0 {
			r.Reason += fmt.Sprintf("; %d could not be moved back (see their diagnosis)", failed)
		}
		return nil
	})
	return err
}
