package service

import (
	"context"
	"fmt"
	"slices"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

// SelectHosts returns the hosts a selector matches (over labels, facts and
// host fields, as host set --selector reads them) at the given sites, or at
// every site when sites is empty, sorted by site then MAC. A rollout
// (coordinator/rollout) picks its hosts with it.
func (s *Service) SelectHosts(ctx context.Context, sel string, sites []string) ([]proto.Host, error) {
	parsed, err := selector.Parse(sel)
	if err != nil {
		return nil, fmt.Errorf("%w: --selector: %v", ErrInvalid, err)
	}
	if len(parsed.Reqs) == 0 {
		return nil, invalid("an empty selector would select every host; name what to match")
	}
	filters := []string{">"}
	if len(sites) > 0 {
		filters = filters[:0]
		for _, site := range sites {
			if _, err := s.GetSite(ctx, site); err != nil {
				return nil, err
			}
			filters = append(filters, site+".>")
		}
	}
	// Leader reads (list), not a KV watch (scan): a rollout started right
	// after a host was set must see it, and one on a replica may lag.
	var hosts []proto.Host
	for _, f := range filters {
		hs, err := list[proto.Host](ctx, s, proto.BucketHosts, f)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, hs...)
	}
	var facts []entry
	var factErrs []error
	if parsed.UsesFacts() {
		keys := make([]string, len(hosts))
		for i, h := range hosts {
			keys[i] = mustMACKey(h.MAC)
		}
		facts, factErrs = s.readMany(ctx, bucketFacts, keys)
	}
	out := hosts[:0]
	for i, h := range hosts {
		var f []byte
		if facts != nil && factErrs[i] == nil {
			f = facts[i].value
		}
		if parsed.Match(subjectOf(h.MAC, h.Site, &h, f)) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b proto.Host) int {
		if a.Site != b.Site {
			if a.Site < b.Site {
				return -1
			}
			return 1
		}
		if a.MAC < b.MAC {
			return -1
		}
		if a.MAC > b.MAC {
			return 1
		}
		return 0
	})
	return out, nil
}

// ConfinedSite is the one site a request's caller is confined to (see
// ConfineToSite), if any.
func ConfinedSite(ctx context.Context) (string, bool) { return confinedSite(ctx) }
