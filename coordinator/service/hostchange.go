package service

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/fleetboot/fleetboot/proto"
)

// SetHost is three steps, each its own function: mergeHost applies the
// request to the host as stored (pure), candidate.validate checks the result
// against its site (pure), and claimIndexes / releaseIndexes keep the MAC
// and IP indexes pointing at the host's key.

// mergeHost returns the host that req makes of cur (nil: a new host with
// primary MAC mac, booting). It only reads the request: it parses the extra
// MACs and the IP into their canonical forms and merges the variables, and
// checks nothing that needs the site or other hosts. A Site left empty is
// for the caller to choose.
func mergeHost(mac string, cur *proto.Host, req proto.HostSetRequest) (proto.Host, error) {
	h := proto.Host{MAC: mac, State: proto.StateBoot}
	if cur != nil {
		h = *cur
		h.Vars = maps.Clone(cur.Vars)
		h.ExtraMACs = slices.Clone(cur.ExtraMACs)
		h.Labels = maps.Clone(cur.Labels)
	}
	set(&h.Site, req.Site)
	set(&h.Image, req.Image)
	set(&h.Loader, req.Loader)
	set(&h.Hostname, req.Hostname)
	set(&h.State, req.State)
	set(&h.Once, req.Once)
	set(&h.Template, req.Template)
	h.Vars = mergeMap(h.Vars, req.Vars, req.UnsetVars)
	h.Labels = mergeMap(h.Labels, req.Labels, req.UnsetLabels)
	if req.ExtraMACs != nil {
		h.ExtraMACs = nil
		for _, m := range *req.ExtraMACs {
			c, err := proto.ParseMAC(m)
			if err != nil {
				return proto.Host{}, fmt.Errorf("%w: extra MAC: %v", ErrInvalid, err)
			}
			if c == mac || slices.Contains(h.ExtraMACs, c) {
				continue
			}
			h.ExtraMACs = append(h.ExtraMACs, c)
		}
	}
	set(&h.IP, req.IP)
	if h.IP != "" {
		ip, err := netip.ParseAddr(h.IP)
		if err != nil || !ip.Is4() {
			return proto.Host{}, invalid("invalid IP address %q", h.IP)
		}
		h.IP = ip.String()
	}
	return h, nil
}

// mergeMap removes unset from m, then sets what set holds; an empty result
// is nil, so a host without labels or vars stores none.
func mergeMap(m, set map[string]string, unset []string) map[string]string {
	if len(set) == 0 && len(unset) == 0 {
		return m
	}
	if m == nil {
		m = map[string]string{}
	}
	for _, k := range unset {
		delete(m, k)
	}
	maps.Copy(m, set)
	if len(m) == 0 {
		return nil
	}
	return m
}

// set replaces *dst with *v when the request carries v.
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// candidate is a host about to be stored.
type candidate struct{ proto.Host }

// validate checks the host's own fields and its reservation against the
// site it is at. The image's existence and the indexes are checked apart:
// they need the store.
func (c candidate) validate(site proto.Site) error {
	h := c.Host
	if h.Site != site.Name {
		return fmt.Errorf("coordinator: host %s is at site %q, checked against site %q", h.MAC, h.Site, site.Name)
	}
	if h.Hostname != "" {
		if err := proto.ValidHostname(h.Hostname); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if h.State != proto.StateBoot && h.State != proto.StateLocal {
		return invalid("invalid state %q: want boot or local", h.State)
	}
	for _, k := range slices.Sorted(maps.Keys(h.Vars)) {
		if err := proto.ValidVar(k, h.Vars[k]); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(h.Labels)) {
		if err := proto.ValidLabel(k, h.Labels[k]); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if h.Template != "" {
		if err := proto.ValidName("template", h.Template); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if h.IP != "" {
		ip, err := netip.ParseAddr(h.IP)
		if err != nil || !ip.Is4() {
			return invalid("invalid IP address %q", h.IP)
		}
		if _, ok := networkFor(site, ip); !ok {
			return invalid("IP %s is not inside any subnet of site %s (%s)", ip, site.Name, subnets(site))
		}
	}
	return nil
}

// claimIndexes points the index entries of h (each MAC across sites, the IP
// within the site) at key, taking over those its previous key oldKey held.
// On error nothing is left claimed; on success rollback undoes the claims,
// for when a later step fails.
func (s *Service) claimIndexes(ctx context.Context, h proto.Host, key, oldKey string) (rollback func(), err error) {
	var undo []func()
	rollback = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, m := range h.MACs() {
		u, err := s.claim(ctx, proto.BucketMACs, mustMACKey(m), key, oldKey, fmt.Sprintf("MAC %s", m))
		if err != nil {
			rollback()
			return nil, err
		}
		undo = append(undo, u...)
	}
	if h.IP != "" {
		u, err := s.claim(ctx, bucketIPs, h.Site+"."+h.IP, key, oldKey, fmt.Sprintf("IP %s at site %s", h.IP, h.Site))
		if err != nil {
			rollback()
			return nil, err
		}
		undo = append(undo, u...)
	}
	return rollback, nil
}

// releaseIndexes drops what the host's previous version cur held under
// oldKey and the new version h (under key) no longer needs.
func (s *Service) releaseIndexes(ctx context.Context, cur, h proto.Host, key, oldKey string) {
	for _, m := range cur.MACs() {
		if !slices.Contains(h.MACs(), m) {
			s.release(ctx, proto.BucketMACs, mustMACKey(m), key, oldKey)
		}
	}
	if cur.IP != "" && (cur.IP != h.IP || cur.Site != h.Site) {
		s.release(ctx, bucketIPs, cur.Site+"."+cur.IP, key, oldKey)
	}
}

// confineKey holds, in a request's context, the one site its caller may
// change hosts of.
type confineKey struct{}

// ConfineToSite returns a context under which SetHost and RemoveHost refuse
// any host that is not, before and after the change, of site. The check is
// made on the host as read for the write, whose compare-and-set fails if
// anything changed it since: a caller confined to one site (a site admin)
// cannot change another site's host, even one moved between the API guard's
// check and the write.
func ConfineToSite(ctx context.Context, site string) context.Context {
	return context.WithValue(ctx, confineKey{}, site)
}

// checkConfined refuses a change of cur (nil: a new host) into h (nil: a
// removal) when ctx is confined to another site.
func checkConfined(ctx context.Context, cur, h *proto.Host) error {
	site, ok := ctx.Value(confineKey{}).(string)
	if !ok {
		return nil
	}
	if cur != nil && cur.Site != site {
		return fmt.Errorf("%w: host %s is not of site %s", ErrNotFound, cur.MAC, site)
	}
	if h != nil && h.Site != site {
		return invalid("host %s may be set only at site %s, not %q", h.MAC, site, h.Site)
	}
	return nil
}
