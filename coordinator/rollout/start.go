package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

// checkSpec validates what needs no state: the name, the selector's
// syntax, the numbers and the power action.
func checkSpec(spec proto.RolloutSpec) error {
	if err := proto.ValidName("rollout", spec.Name); err != nil {
		return fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	if strings.TrimSpace(spec.Selector) == "" {
		return invalid("--selector is required: name the hosts to roll out to")
	}
	if _, err := selector.Parse(spec.Selector); err != nil {
		return invalid("--selector: %v", err)
	}
	if spec.Image == "" {
		return invalid("--image is required (NAME or NAME@N)")
	}
	if err := proto.ValidImageRef(spec.Image); err != nil {
		return fmt.Errorf("%w: --image: %v", service.ErrInvalid, err)
	}
	if spec.Canary < 0 {
		return invalid("--canary %d: want 0 or more", spec.Canary)
	}
	if _, err := batchSize(spec.Batch, 1); err != nil {
		return err
	}
	if spec.MaxFailed < 0 {
		return invalid("--max-failed %d: want 0 or more", spec.MaxFailed)
	}
	if spec.BootTimeout <= 0 {
		return invalid("--boot-timeout must be more than 0 (it was %ds)", spec.BootTimeout)
	}
	if spec.Power != proto.RolloutPowerNone && spec.Power != proto.RolloutPowerCycle {
		return invalid("--power %q: want cycle, or none at all", spec.Power)
	}
	seen := map[string]bool{}
	for _, s := range spec.Sites {
		if err := proto.ValidSiteName(s); err != nil {
			return fmt.Errorf("%w: --site: %v", service.ErrInvalid, err)
		}
		if seen[s] {
			return invalid("--site %s is given twice", s)
		}
		seen[s] = true
	}
	return nil
}

// batchSize reads --batch: "N%" of total hosts (rounded up, at least one)
// or a count N >= 1.
func batchSize(b string, total int) (int, error) {
	if pct, ok := strings.CutSuffix(b, "%"); ok {
		n, err := strconv.Atoi(pct)
		if err != nil || n < 1 || n > 100 {
			return 0, invalid("--batch %q: want a percentage from 1%% to 100%% or a count of hosts", b)
		}
		return max(1, (total*n+99)/100), nil
	}
	n, err := strconv.Atoi(b)
	if err != nil || n < 1 {
		return 0, invalid("--batch %q: want a count of hosts (1 or more) or a percentage such as 10%%", b)
	}
	return n, nil
}

// plan puts the selected hosts (sorted by site then MAC) in batches: the
// first Canary hosts of the first site are batch 0, then each site in
// order is cut into batches of the batch size (a batch never spans two
// sites). Hosts already on the target are done from the start.
func plan(spec proto.RolloutSpec, hosts []proto.Host) ([]proto.RolloutHost, error) {
	var order []string
	if len(spec.Sites) > 0 {
		order = spec.Sites
	} else {
		for _, h := range hosts {
			if !slices.Contains(order, h.Site) {
				order = append(order, h.Site)
			}
		}
		slices.Sort(order)
	}
	bySite := map[string][]proto.Host{}
	for _, h := range hosts {
		bySite[h.Site] = append(bySite[h.Site], h)
	}
	size, err := batchSize(spec.Batch, len(hosts))
	if err != nil {
		return nil, err
	}
	var first string
	for _, s := range order {
		if len(bySite[s]) > 0 {
			first = s
			break
		}
	}
	if spec.Canary > len(bySite[first]) {
		return nil, invalid("--canary %d: the first site, %s, has only %d selected hosts (canaries all come from the first site)", spec.Canary, first, len(bySite[first]))
	}
	out := make([]proto.RolloutHost, 0, len(hosts))
	add := func(h proto.Host, batch int) {
		out = append(out, proto.RolloutHost{MAC: h.MAC, Site: h.Site, Batch: batch, Previous: h.Image, State: proto.RolloutHostWaiting})
	}
	for _, h := range bySite[first][:spec.Canary] {
		add(h, 0)
	}
	batch := 1
	for _, s := range order {
		rest := bySite[s]
		if s == first {
			rest = rest[spec.Canary:]
		}
		for i := 0; i < len(rest); i += size {
			for _, h := range rest[i:min(i+size, len(rest))] {
				add(h, batch)
			}
			batch++
		}
	}
	return out, nil
}

// Start validates a rollout, selects and plans its hosts, holds them (a
// host may be in one active rollout only) and stores it, running. The
// driver takes it from there.
func (e *Engine) Start(ctx context.Context, spec proto.RolloutSpec) (proto.Rollout, error) {
	if err := checkSpec(spec); err != nil {
		return proto.Rollout{}, err
	}
	im, err := e.cfg.Hosts.GetImage(ctx, spec.Image)
	if err != nil {
		return proto.Rollout{}, err
	}
	if name, rev, _ := proto.ParseImageRef(spec.Image); rev == 0 {
		// A bare name is pinned now: hosts that follow the name would
		// move whenever someone adds a revision, rollout or not.
		spec.Image = proto.ImageRef(name, im.CurrentRevision())
	}
	hosts, err := e.cfg.Hosts.SelectHosts(ctx, spec.Selector, spec.Sites)
	if err != nil {
		return proto.Rollout{}, err
	}
	if len(hosts) == 0 {
		return proto.Rollout{}, invalid("--selector %q matches no host%s", spec.Selector, sitesNote(spec.Sites))
	}
	if site, ok := service.ConfinedSite(ctx); ok {
		for _, h := range hosts {
			if h.Site != site {
				return proto.Rollout{}, invalid("the selection holds host %s of site %s: you may roll out only to hosts of site %s (add --site %s)", h.MAC, h.Site, site, site)
			}
		}
	}
	if spec.Power == proto.RolloutPowerCycle {
		var none []string
		for _, h := range hosts {
			if h.BMC == nil {
				none = append(none, h.MAC)
			}
		}
		if len(none) > 0 {
			return proto.Rollout{}, invalid("--power cycle: %d selected host(s) have no BMC (%s): set one with fleetboot host bmc, or leave --power out", len(none), strings.Join(firstN(none, 3), ", "))
		}
	}
	rhosts, err := plan(spec, hosts)
	if err != nil {
		return proto.Rollout{}, err
	}
	// A host on the target already (pinned to it, or following the name
	// whose current revision it is) is done from the start: nothing to
	// change, nothing to boot.
	name, rev, _ := proto.ParseImageRef(spec.Image)
	current := 0
	if cur, err := e.cfg.Hosts.GetImage(ctx, name); err == nil {
		current = cur.CurrentRevision()
	}
	now := e.cfg.Now().UTC()
	for i := range rhosts {
		rhosts[i].Since = now
		if p := rhosts[i].Previous; p == spec.Image || (p == name && current == rev) {
			rhosts[i].State, rhosts[i].Proof = proto.RolloutHostDone, proto.RolloutProofAlready
		}
	}
	if _, err := e.read(ctx, proto.BucketRollouts, spec.Name); err == nil {
		return proto.Rollout{}, fmt.Errorf("%w: rollout %s exists; pick another name", service.ErrConflict, spec.Name)
	} else if !errors.Is(err, service.ErrNotFound) {
		return proto.Rollout{}, err
	}
	spec.V = proto.Version
	r := proto.Rollout{RolloutSpec: spec, State: proto.RolloutRunning, Hosts: rhosts, Created: now, Updated: now}
	undo, err := e.hold(ctx, spec.Name, rhosts)
	if err != nil {
		return proto.Rollout{}, err
	}
	data, _ := json.Marshal(r)
	if _, err := e.kv.Create(ctx, spec.Name, data); err != nil {
		undo()
		if isConflict(err) {
			return proto.Rollout{}, fmt.Errorf("%w: rollout %s exists; pick another name", service.ErrConflict, spec.Name)
		}
		return proto.Rollout{}, fmt.Errorf("rollout: write %s: %w", spec.Name, err)
	}
	e.log.Info("rollout started", "rollout", spec.Name, "image", spec.Image, "hosts", len(rhosts), "selector", spec.Selector)
	return r, nil
}

func sitesNote(sites []string) string {
	if len(sites) == 0 {
		return ""
	}
	return " at site " + strings.Join(sites, ", ")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

// hold claims every host for rollout name: a host held by another active
// rollout refuses the whole start; a hold left by a finished rollout is
// taken over. Claims are compare-and-set, so two starts on two
// coordinators cannot both take a host. It returns how to give back what
// it took.
func (e *Engine) hold(ctx context.Context, name string, hosts []proto.RolloutHost) (func(), error) {
	var undo []func()
	undoAll := func() {
		for _, u := range slices.Backward(undo) {
			u()
		}
	}
	bg := context.WithoutCancel(ctx)
	for _, h := range hosts {
		if h.State != proto.RolloutHostWaiting && !h.Undo {
			continue // already on the target: not touched, not held
		}
		k := holdKey(h.MAC)
		ent, err := e.read(ctx, service.BucketRolloutHolds, k)
		switch {
		case errors.Is(err, service.ErrNotFound):
			rev, err := e.holds.Create(ctx, k, []byte(name))
			if err != nil {
				undoAll()
				if isConflict(err) {
					return nil, fmt.Errorf("%w: host %s was just taken by another rollout; retry", service.ErrConflict, h.MAC)
				}
				return nil, fmt.Errorf("rollout: hold host %s: %w", h.MAC, err)
			}
			undo = append(undo, func() { _ = e.holds.Delete(bg, k, jetstream.LastRevision(rev)) })
			continue
		case err != nil:
			undoAll()
			return nil, err
		}
		owner := string(ent.Value)
		if owner == name {
			continue
		}
		if o, _, err := e.load(ctx, owner); err == nil && proto.RolloutActive(o.State) {
			undoAll()
			return nil, fmt.Errorf("%w: host %s is in rollout %s (%s): a host may be in one active rollout at a time", service.ErrConflict, h.MAC, owner, o.State)
		}
		rev, err := e.holds.Update(ctx, k, []byte(name), ent.Revision)
		if err != nil {
			undoAll()
			if isConflict(err) {
				return nil, fmt.Errorf("%w: host %s was just taken by another rollout; retry", service.ErrConflict, h.MAC)
			}
			return nil, fmt.Errorf("rollout: hold host %s: %w", h.MAC, err)
		}
		old := ent.Value
		undo = append(undo, func() { _, _ = e.holds.Update(bg, k, old, rev) })
	}
	return undoAll, nil
}
