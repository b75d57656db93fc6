package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// SetHost creates or updates a host: the request merged into the stored
// host, checked against its site and image, the indexes claimed, then the
// host written (see hostchange.go for the steps).
func (s *Service) SetHost(ctx context.Context, req proto.HostSetRequest) (proto.Host, error) {
	return s.setHost(ctx, req, "")
}

// setHost is SetHost; a non-empty policy makes it a policy's claim, which
// may only create a host or give an imageless one (never claimed before)
// its first image, and records the policy on the host.
func (s *Service) setHost(ctx context.Context, req proto.HostSetRequest, policy string) (proto.Host, error) {
	mac, err := proto.ParseMAC(req.MAC)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	cur, curRev, err := s.hostByMAC(ctx, mac)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return proto.Host{}, err
	}
	if exists && cur.MAC != mac {
		return proto.Host{}, fmt.Errorf("%w: %s is an extra MAC of host %s; address the host by its primary MAC", ErrConflict, mac, cur.MAC)
	}
	var prev *proto.Host
	if exists {
		prev = &cur
	}
	if policy != "" && prev != nil && (prev.Image != "" || prev.Policy != "") {
		return proto.Host{}, fmt.Errorf("%w: host %s has an image or a policy already", ErrConflict, mac)
	}
	h, err := mergeHost(mac, prev, req)
	if err != nil {
		return proto.Host{}, err
	}
	if policy != "" {
		h.Policy = policy
	}
	if h.Site == "" {
		if h.Site, err = s.onlySite(ctx, mac); err != nil {
			return proto.Host{}, err
		}
	}
	if err := checkConfined(ctx, prev, &h); err != nil {
		return proto.Host{}, err
	}
	site, err := s.GetSite(ctx, h.Site)
	if err != nil {
		return proto.Host{}, err
	}
	var needs []string // firmwares the host's loader must boot
	if h.Image != "" {
		im, err := s.getImage(ctx, h.Image)
		if err != nil {
			return proto.Host{}, err
		}
		needs = proto.FirmwareOfArch(im.Arch)
	}
	if h.Loader != "" && (prev == nil || prev.Loader != h.Loader || prev.Image != h.Image) {
		if err := s.checkLoader(ctx, h.Loader, needs); err != nil {
			return proto.Host{}, err
		}
	}
	if err := (candidate{h}).validate(site); err != nil {
		return proto.Host{}, err
	}
	if h.Template != "" && (prev == nil || prev.Template != h.Template) {
		if err := s.checkTemplate(ctx, h.Template); err != nil {
			return proto.Host{}, err
		}
	}

	if prev == nil {
		// A machine that reported facts before it became a host
		// (discovered, then claimed by a policy or set by an admin)
		// carries them on its record: see proto.Host.Facts.
		e, err := s.read(ctx, bucketFacts, mustMACKey(mac))
		switch {
		case err == nil:
			h.Facts = e.value
		case !errors.Is(err, ErrNotFound):
			return proto.Host{}, err
		}
	}
	h.V = proto.Version
	h.Updated = s.now().UTC()
	if err := s.storeHost(ctx, h, prev, curRev); err != nil {
		return proto.Host{}, err
	}
	if prev == nil {
		s.forgetDiscovered(ctx, h.Site, h.MAC)
	}
	s.log.Info("host saved", "mac", mac, "site", h.Site, "image", h.Image, "state", h.State, "policy", h.Policy)
	return h, nil
}

// storeHost writes h, replacing cur (nil for a new host, stored at revision
// curRev): it claims the indexes, writes the host, pins a newly assigned
// image and loader, then releases what cur held and h no longer needs. A failing step
// undoes the earlier ones, so a rejected change writes nothing.
func (s *Service) storeHost(ctx context.Context, h proto.Host, cur *proto.Host, curRev uint64) error {
	key, _ := proto.HostKey(h.Site, h.MAC)
	oldKey := ""
	if cur != nil {
		oldKey, _ = proto.HostKey(cur.Site, cur.MAC)
	}
	rollback, err := s.claimIndexes(ctx, h, key, oldKey)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(h)
	if cur != nil && oldKey == key {
		_, err = s.kv[proto.BucketHosts].Update(ctx, key, data, curRev)
	} else {
		_, err = s.kv[proto.BucketHosts].Create(ctx, key, data)
	}
	if err != nil {
		rollback()
		if casConflict(err) {
			return fmt.Errorf("%w: host %s changed concurrently; retry", ErrConflict, h.MAC)
		}
		return fmt.Errorf("coordinator: write host %s: %w", h.MAC, err)
	}
	if err := s.pinUses(ctx, h, cur); err != nil {
		bg := context.WithoutCancel(ctx)
		if cur != nil && oldKey == key {
			old, _ := json.Marshal(*cur)
			_, _ = s.kv[proto.BucketHosts].Put(bg, key, old)
		} else {
			_ = s.kv[proto.BucketHosts].Delete(bg, key)
		}
		rollback()
		return err
	}
	// The change is in; release what the old version held and no longer needs.
	if cur != nil {
		if oldKey != key {
			_ = s.kv[proto.BucketHosts].Delete(ctx, oldKey)
		}
		s.releaseIndexes(ctx, *cur, h, key, oldKey)
	}
	return nil
}

// pinUses pins what h newly uses (see pinImage): its image and its loader.
func (s *Service) pinUses(ctx context.Context, h proto.Host, cur *proto.Host) error {
	if h.Image != "" && (cur == nil || cur.Image != h.Image) {
		if err := s.pinImage(ctx, h.Image); err != nil {
			return err
		}
	}
	if h.Loader != "" && (cur == nil || cur.Loader != h.Loader) {
		if err := s.pin(ctx, bucketLoaderLocks, "loader", h.Loader); err != nil {
			return err
		}
	}
	if h.Template != "" && (cur == nil || cur.Template != h.Template) {
		if err := s.pin(ctx, bucketTemplateLocks, "template", h.Template); err != nil {
			return err
		}
	}
	return nil
}

// onlySite is the site of a host set without one: the fleet's only site.
func (s *Service) onlySite(ctx context.Context, mac string) (string, error) {
	sites, err := s.ListSites(ctx)
	if err != nil {
		return "", err
	}
	if len(sites) != 1 {
		return "", invalid("host %s needs --site (there are %d sites)", mac, len(sites))
	}
	return sites[0].Name, nil
}

func subnets(site proto.Site) string {
	var out []string
	for _, n := range site.Networks {
		out = append(out, n.Subnet)
	}
	return strings.Join(out, ", ")
}

func mustMACKey(m string) string {
	k, _ := proto.MACKey(m)
	return k
}

// claim makes index key k point at owner, failing if a host other than owner
// or prev (the host's key before this change) holds it. It returns how to undo
// what it changed.
func (s *Service) claim(ctx context.Context, bucket, k, owner, prev, what string) ([]func(), error) {
	kv := s.kv[bucket]
	e, err := s.read(ctx, bucket, k)
	if err == nil {
		if string(e.value) == owner {
			return nil, nil
		}
		holder := string(e.value)
		if hs, hm, ok := proto.SplitHostKey(holder); ok {
			holder = fmt.Sprintf("host %s at site %s", hm, hs)
		}
		// The host's own entry (when it moves site) or a stale one (its host
		// moved or vanished) may be taken over. A young entry whose host
		// does not carry it is a claim in flight on another coordinator
		// (index first, host after), not a leftover.
		if string(e.value) != prev && (time.Since(e.created) < claimGrace || !s.indexStale(ctx, bucket, k, string(e.value))) {
			return nil, fmt.Errorf("%w: %s is already used by %s", ErrConflict, what, holder)
		}
		if _, err := kv.Update(ctx, k, []byte(owner), e.rev); err != nil {
			return nil, fmt.Errorf("%w: %s changed concurrently; retry", ErrConflict, what)
		}
		return []func(){func() { _, _ = kv.Put(context.WithoutCancel(ctx), k, e.value) }}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("coordinator: read index %s: %w", bucket, err)
	}
	if _, err := kv.Create(ctx, k, []byte(owner)); err != nil {
		if casConflict(err) {
			return nil, fmt.Errorf("%w: %s was just taken by another request; retry", ErrConflict, what)
		}
		return nil, fmt.Errorf("coordinator: write index %s: %w", bucket, err)
	}
	return []func(){func() { _ = kv.Delete(context.WithoutCancel(ctx), k) }}, nil
}

// indexStale reports whether an index entry no longer matches its host.
func (s *Service) indexStale(ctx context.Context, bucket, k, hostKey string) bool {
	var h proto.Host
	if _, err := s.get(ctx, proto.BucketHosts, hostKey, &h); err != nil {
		return errors.Is(err, ErrNotFound)
	}
	switch bucket {
	case proto.BucketMACs:
		for _, m := range h.MACs() {
			if mustMACKey(m) == k {
				return false
			}
		}
		return true
	case bucketIPs:
		return h.Site+"."+h.IP != k
	}
	return false
}

// release deletes index key k if it still points at one of owners.
func (s *Service) release(ctx context.Context, bucket, k string, owners ...string) {
	e, err := s.read(ctx, bucket, k)
	if err != nil {
		return
	}
	if slices.Contains(owners, string(e.value)) {
		_ = s.kv[bucket].Delete(ctx, k, jetstream.LastRevision(e.rev))
	}
}

// hostByMAC finds a host by any of its MACs.
func (s *Service) hostByMAC(ctx context.Context, mac string) (proto.Host, uint64, error) {
	e, err := s.read(ctx, proto.BucketMACs, mustMACKey(mac))
	if errors.Is(err, ErrNotFound) {
		return proto.Host{}, 0, fmt.Errorf("host %s: %w", mac, ErrNotFound)
	}
	if err != nil {
		return proto.Host{}, 0, err
	}
	var h proto.Host
	rev, err := s.get(ctx, proto.BucketHosts, string(e.value), &h)
	if err != nil {
		return proto.Host{}, 0, fmt.Errorf("host %s: %w", mac, err)
	}
	return h, rev, nil
}

// GetHost returns a host by any of its MACs.
func (s *Service) GetHost(ctx context.Context, mac string) (proto.Host, error) {
	m, err := proto.ParseMAC(mac)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	h, _, err := s.hostByMAC(ctx, m)
	return h, err
}

// ListHosts returns the hosts of one site, or of all sites when site is "".
func (s *Service) ListHosts(ctx context.Context, site string) ([]proto.Host, error) {
	if site != "" {
		if _, err := s.GetSite(ctx, site); err != nil {
			return nil, err
		}
	}
	return s.listHosts(ctx, site)
}

func (s *Service) listHosts(ctx context.Context, site string) ([]proto.Host, error) {
	filter := ">"
	if site != "" {
		filter = site + ".>"
	}
	return list[proto.Host](ctx, s, proto.BucketHosts, filter)
}

// RemoveHost deletes a host and its index entries.
func (s *Service) RemoveHost(ctx context.Context, mac string) error {
	m, err := proto.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, rev, err := s.hostByMAC(ctx, m)
	if err != nil {
		return err
	}
	if err := checkConfined(ctx, &h, nil); err != nil {
		return err
	}
	key, _ := proto.HostKey(h.Site, h.MAC)
	if err := s.kv[proto.BucketHosts].Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("coordinator: delete host %s: %w", h.MAC, err)
	}
	for _, x := range h.MACs() {
		s.release(ctx, proto.BucketMACs, mustMACKey(x), key)
	}
	if h.IP != "" {
		s.release(ctx, bucketIPs, h.Site+"."+h.IP, key)
	}
	if h.Policy != "" {
		// The policy may claim another machine in its place.
		if err := s.unreserve(context.WithoutCancel(ctx), h.Policy, h.MAC); err != nil {
			s.log.Warn("policy claim not released", "policy", h.Policy, "mac", h.MAC, "err", err)
		}
	}
	return nil
}

// InstallDone records an installer's "done": a host set with --once switches
// to local-disk boot, so its next boot does not reinstall it.
func (s *Service) InstallDone(ctx context.Context, mac string) (proto.Host, error) {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return proto.Host{}, err
	}
	if !h.Once {
		return h, nil
	}
	return s.SetHost(ctx, proto.HostSetRequest{MAC: h.MAC, State: ptrTo(proto.StateLocal), Once: ptrTo(false)})
}

// Facts returns the last facts reported for a host, or nil.
func (s *Service) Facts(ctx context.Context, mac string) (json.RawMessage, error) {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return nil, err
	}
	e, err := s.kv[bucketFacts].Get(ctx, mustMACKey(h.MAC))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

func ptrTo[T any](v T) *T { return &v }
