package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
)

// Power control (proto/bmc.go). The coordinator keeps a host's BMC address,
// user and sealed password, which it cannot open, and relays power requests
// to an edge of the host's site that can: the BMC is on the site's
// management network, which the coordinator may not reach.

// maxSealedBox bounds one sealed password (a BMC password is at most 20
// bytes in IPMI 2.0; the box adds 40 and its framing).
const maxSealedBox = 1024

// BMCKeys returns the curve keys of the edges of a host's site: the CLI
// seals the BMC password to each.
func (s *Service) BMCKeys(ctx context.Context, mac string) (proto.BMCKeys, error) {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return proto.BMCKeys{}, err
	}
	edges, err := s.ListEdges(ctx)
	if err != nil {
		return proto.BMCKeys{}, err
	}
	out := proto.BMCKeys{V: proto.Version, MAC: h.MAC, Site: h.Site, Keys: []proto.EdgeKey{}}
	for _, e := range edges {
		if e.Site == h.Site && nkeys.IsValidPublicCurveKey(e.XKey) {
			out.Keys = append(out.Keys, proto.EdgeKey{Edge: e.Name, XKey: e.XKey})
		}
	}
	if len(out.Keys) == 0 {
		return proto.BMCKeys{}, invalid("no edge of site %s has published a curve key yet: start the site's edge, then retry", h.Site)
	}
	return out, nil
}

// SetHostBMC sets a host's BMC. Every sealed password must be for an edge
// of the host's site and sealed to the key that edge publishes now.
func (s *Service) SetHostBMC(ctx context.Context, req proto.HostBMCRequest) (proto.Host, error) {
	mac, err := proto.ParseMAC(req.MAC)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	addr, err := proto.ParseBMCAddress(req.Address)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := proto.ValidBMCUser(req.User); err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(req.Sealed) == 0 {
		return proto.Host{}, invalid("no sealed password: fleetboot host bmc seals it to the site's edges")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, rev, err := s.hostByMAC(ctx, mac)
	if err != nil {
		return proto.Host{}, err
	}
	if h.MAC != mac {
		return proto.Host{}, fmt.Errorf("%w: %s is an extra MAC of host %s; address the host by its primary MAC", ErrConflict, mac, h.MAC)
	}
	if err := checkConfined(ctx, &h, &h); err != nil {
		return proto.Host{}, err
	}
	edges, err := s.ListEdges(ctx)
	if err != nil {
		return proto.Host{}, err
	}
	byName := map[string]proto.EdgeView{}
	for _, e := range edges {
		byName[e.Name] = e
	}
	for _, name := range slices.Sorted(maps.Keys(req.Sealed)) {
		box := req.Sealed[name]
		e, ok := byName[name]
		switch {
		case !ok || e.Site != h.Site:
			return proto.Host{}, invalid("edge %s is not an edge of site %s", name, h.Site)
		case box.XKey != e.XKey:
			return proto.Host{}, invalid("the password for edge %s is sealed to a key it no longer has; retry", name)
		case !nkeys.IsValidPublicCurveKey(box.Sender) || len(box.Box) == 0 || len(box.Box) > maxSealedBox:
			return proto.Host{}, invalid("the sealed password for edge %s is malformed", name)
		}
	}
	h.BMC = &proto.BMC{Address: addr, User: req.User, Sealed: req.Sealed}
	h.V = proto.Version
	h.Updated = s.now().UTC()
	key, _ := proto.HostKey(h.Site, h.MAC)
	data, _ := json.Marshal(h)
	if _, err := s.kv[proto.BucketHosts].Update(ctx, key, data, rev); err != nil {
		if casConflict(err) {
			return proto.Host{}, fmt.Errorf("%w: host %s changed concurrently; retry", ErrConflict, h.MAC)
		}
		return proto.Host{}, fmt.Errorf("coordinator: write host %s: %w", h.MAC, err)
	}
	s.log.Info("host BMC set", "mac", h.MAC, "bmc", addr, "user", req.User, "sealed_to", strings.Join(slices.Sorted(maps.Keys(req.Sealed)), ","))
	return h, nil
}

// Power asks an edge of the host's site that can open its BMC password to
// carry out a power action, and returns what it did. Edges whose heartbeat
// is fresh are asked first; the next is tried only when one has no
// subscriber (stopped), never after one acted.
func (s *Service) Power(ctx context.Context, req proto.PowerRequest) (proto.PowerReply, error) {
	mac, err := proto.ParseMAC(req.MAC)
	if err != nil {
		return proto.PowerReply{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := proto.ValidPowerAction(req.Action); err != nil {
		return proto.PowerReply{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	h, _, err := s.hostByMAC(ctx, mac)
	if err != nil {
		return proto.PowerReply{}, err
	}
	if err := checkConfined(ctx, &h, &h); err != nil {
		return proto.PowerReply{}, err
	}
	if h.BMC == nil {
		return proto.PowerReply{}, invalid("host %s has no BMC: set one with fleetboot host bmc", h.MAC)
	}
	edges, err := s.ListEdges(ctx)
	if err != nil {
		return proto.PowerReply{}, err
	}
	var cands []proto.EdgeView
	for _, e := range edges {
		if box, ok := h.BMC.Sealed[e.Name]; ok && e.Site == h.Site && box.XKey == e.XKey {
			cands = append(cands, e)
		}
	}
	slices.SortStableFunc(cands, func(a, b proto.EdgeView) int {
		switch {
		case a.Stale == b.Stale:
			return 0
		case !a.Stale:
			return -1
		}
		return 1
	})
	if len(cands) == 0 {
		return proto.PowerReply{}, fmt.Errorf("%w: no edge of site %s can open the BMC password of host %s (sealed to %s); run fleetboot host bmc again",
			ErrConflict, h.Site, h.MAC, strings.Join(slices.Sorted(maps.Keys(h.BMC.Sealed)), ", "))
	}
	body, _ := json.Marshal(proto.PowerRequest{V: proto.Version, MAC: h.MAC, Action: req.Action, PXE: req.PXE})
	var msg *nats.Msg
	for _, e := range cands {
		msg, err = s.nc.RequestWithContext(ctx, proto.PowerSubject(h.Site, e.Name), body)
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
	}
	if err != nil {
		return proto.PowerReply{}, fmt.Errorf("power %s of host %s: no answer from the edges of site %s: %w", req.Action, h.MAC, h.Site, err)
	}
	var rep proto.PowerReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return proto.PowerReply{}, fmt.Errorf("power %s of host %s: malformed answer from the edge: %w", req.Action, h.MAC, err)
	}
	if rep.Error != "" {
		return proto.PowerReply{}, fmt.Errorf("power %s of host %s through edge %s: %s", req.Action, h.MAC, rep.Edge, rep.Error)
	}
	s.log.Info("power action", "mac", h.MAC, "action", req.Action, "pxe", req.PXE, "edge", rep.Edge, "power", rep.Power)
	return rep, nil
}
