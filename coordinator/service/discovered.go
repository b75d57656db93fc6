package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// bucketDiscovered holds the machines that reported facts from the
// discovery system and are not hosts yet: key HostKey(site, mac) ->
// proto.Discovered. The coordinator's own; edges never read it. Anyone on a
// boot network can make an edge relay reports for made-up MACs, so the
// bucket is bounded: when full, new machines are refused (known ones still
// update).
const bucketDiscovered = "discovered"

// Bounds of the discovered bucket: a report is at most maxFacts of facts.
const (
	maxFacts            = 64 << 10
	discoveredMaxValue  = maxFacts + 4<<10
	discoveredMaxBytes  = 512 << 20
	discoveredRevisions = 1
)

func discoveredConfig(replicas int) jetstream.KeyValueConfig {
	c := proto.BucketConfig(bucketDiscovered, replicas)
	c.History, c.MaxValueSize, c.MaxBytes = discoveredRevisions, discoveredMaxValue, discoveredMaxBytes
	return c
}

// confinedSite is the one site the request's caller is confined to (an
// edge or a site admin, by its NATS identity; see ConfineToSite).
func confinedSite(ctx context.Context) (string, bool) {
	site, ok := ctx.Value(confineKey{}).(string)
	return site, ok
}

// RecordFacts keeps what a machine reported about itself: an installer's
// JSON, or the discovery system's proto.Facts.
//
// For a known host (any of its MACs) the facts are stored under its
// primary MAC and nothing else changes.
//
// For a MAC the coordinator does not know, this is the discovery report.
// The discover helper's edge calls the API endpoint proto.APIHostFacts with
// proto.FactsRequest{MAC: the MAC the machine booted from, Facts: its
// proto.Facts as JSON}, on the edge's own credential: the site is the
// edge's, taken from its NATS identity (the API confines the request to it),
// never from the body. Only a caller confined to no site (authentication
// off, or an admin) may name the site in FactsRequest.Site. The site must
// have --unknown discover; then the machine is recorded as discovered
// (`host ls --state discovered`) and the policies are evaluated: when one
// claims it, the host is created with the policy's image, labels and
// template, and the edge's state sync gives it its assignment, which the
// discovery system sees when it asks "what next?". A report again later
// (every few seconds while it waits) updates the facts and evaluates again.
// ErrNotFound answers a MAC at a site that does not discover.
func (s *Service) RecordFacts(ctx context.Context, req proto.FactsRequest) error {
	mac, err := proto.ParseMAC(req.MAC)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !json.Valid(req.Facts) {
		return invalid("facts are not valid JSON")
	}
	if len(req.Facts) > maxFacts {
		return invalid("facts larger than %d KiB", maxFacts>>10)
	}
	h, _, err := s.hostByMAC(ctx, mac)
	switch {
	case err == nil:
		if err := checkConfined(ctx, &h, &h); err != nil {
			return err
		}
		if _, err := s.kv[bucketFacts].Put(ctx, mustMACKey(h.MAC), req.Facts); err != nil {
			return err
		}
		if err := s.copyFacts(ctx, h.MAC, req.Facts); err != nil {
			return err
		}
		if h.Image != "" || h.Policy != "" {
			return nil
		}
		// A host without an image (imported with its labels, say) that
		// reports facts is offered to the policies like a discovered
		// machine, its labels included.
		ps, err := s.compiledPolicies(ctx)
		if err != nil {
			return err
		}
		_, err = s.decideWith(ctx, ps, h.MAC, h.Site, &h, req.Facts)
		return err
	case !errors.Is(err, ErrNotFound):
		return err
	}
	site := req.Site
	if confined, ok := confinedSite(ctx); ok {
		site = confined
	}
	if site == "" {
		return fmt.Errorf("host %s: %w (a report of an unknown machine needs its site)", mac, ErrNotFound)
	}
	st, err := s.GetSite(ctx, site)
	if err != nil {
		return err
	}
	if st.Unknown != proto.UnknownDiscover {
		return fmt.Errorf("host %s: %w (site %s does not discover unknown machines: --unknown %s)", mac, ErrNotFound, site, st.Unknown)
	}
	var facts map[string]any
	if err := json.Unmarshal(req.Facts, &facts); err != nil {
		return invalid("facts of a discovered machine must be a JSON object")
	}
	d, err := s.putDiscovered(ctx, mac, site, req.Facts)
	if err != nil {
		return err
	}
	s.log.Info("machine discovered", "mac", mac, "site", site, "reports", d.Reports)
	_, err = s.decide(ctx, d)
	return err
}

// copyFacts puts a host's new facts on its record, where the edge, which
// mirrors its site's hosts and nothing of the facts bucket, renders
// templates' {{.Facts}} from. Updated stays: it dates the assignment (the
// NoCloud instance id), not the report. A concurrent change of the host is
// retried on the new version.
func (s *Service) copyFacts(ctx context.Context, mac string, facts json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 5 {
		h, rev, err := s.hostByMAC(ctx, mac)
		if err != nil {
			return err
		}
		if bytes.Equal(h.Facts, facts) {
			return nil
		}
		h.Facts = facts
		key, _ := proto.HostKey(h.Site, h.MAC)
		_, err = s.kv[proto.BucketHosts].Update(ctx, key, mustJSON(h), rev)
		if !casConflict(err) {
			if err != nil {
				return fmt.Errorf("coordinator: write facts of host %s: %w", mac, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: host %s changed concurrently while its facts were stored; report again", ErrConflict, mac)
}

// putDiscovered records one report of a discovered machine.
func (s *Service) putDiscovered(ctx context.Context, mac, site string, facts json.RawMessage) (proto.Discovered, error) {
	key, _ := proto.HostKey(site, mac)
	now := s.now().UTC()
	d := proto.Discovered{V: proto.Version, MAC: mac, Site: site, First: now}
	if e, err := s.read(ctx, bucketDiscovered, key); err == nil {
		_ = json.Unmarshal(e.value, &d)
	} else if !errors.Is(err, ErrNotFound) {
		return d, err
	}
	d.V, d.Last, d.Facts = proto.Version, now, facts
	d.Reports++
	if err := s.put(ctx, bucketDiscovered, key, d); err != nil {
		return d, err
	}
	if _, err := s.kv[bucketFacts].Put(ctx, mustMACKey(mac), facts); err != nil {
		return d, fmt.Errorf("coordinator: write facts of %s: %w", mac, err)
	}
	return d, nil
}

// forgetDiscovered drops the discovered entry of a machine that became a
// host (claimed by a policy, or set by an admin).
func (s *Service) forgetDiscovered(ctx context.Context, site, mac string) {
	key, _ := proto.HostKey(site, mac)
	if e, err := s.read(ctx, bucketDiscovered, key); err == nil {
		_ = s.kv[bucketDiscovered].Delete(ctx, key, jetstream.LastRevision(e.rev))
	}
}

// ListDiscovered returns the discovered machines of one site, or of all
// sites when site is "", that are not hosts (yet).
func (s *Service) ListDiscovered(ctx context.Context, site string) ([]proto.Discovered, error) {
	filter := ">"
	if site != "" {
		if _, err := s.GetSite(ctx, site); err != nil {
			return nil, err
		}
		filter = site + ".>"
	}
	var out []proto.Discovered
	err := scan(ctx, s, bucketDiscovered, filter, func(_ string, _ uint64, d proto.Discovered) error {
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A machine imported or set as a host since keeps its entry until the
	// next claim; it is a host now, not discovered.
	keys := make([]string, len(out))
	for i, d := range out {
		keys[i] = mustMACKey(d.MAC)
	}
	_, errs := s.readMany(ctx, proto.BucketMACs, keys)
	kept := out[:0]
	for i, d := range out {
		if errors.Is(errs[i], ErrNotFound) {
			kept = append(kept, d)
		} else if errs[i] != nil {
			return nil, errs[i]
		}
	}
	slices.SortFunc(kept, func(a, b proto.Discovered) int {
		if c := a.First.Compare(b.First); c != 0 {
			return c
		}
		return compareStrings(a.MAC, b.MAC)
	})
	return kept, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FactsOf returns a machine's last facts with the machine as a host, or as
// discovered when it is not a host.
func (s *Service) FactsOf(ctx context.Context, mac string) (proto.FactsReply, error) {
	m, err := proto.ParseMAC(mac)
	if err != nil {
		return proto.FactsReply{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rep := proto.FactsReply{V: proto.Version, MAC: m}
	h, _, err := s.hostByMAC(ctx, m)
	if err == nil {
		if site, ok := confinedSite(ctx); ok && h.Site != site {
			err = fmt.Errorf("host %s: %w", m, ErrNotFound) // another site's: not hers to see
		}
	}
	switch {
	case err == nil:
		rep.Host, rep.State, rep.MAC = &h, h.State, h.MAC
		e, err := s.read(ctx, bucketFacts, mustMACKey(h.MAC))
		if err == nil {
			rep.Facts = e.value
		} else if !errors.Is(err, ErrNotFound) {
			return rep, err
		}
		return rep, nil
	case !errors.Is(err, ErrNotFound):
		return rep, err
	}
	d, err := s.discoveredByMAC(ctx, m)
	if err != nil {
		return rep, err
	}
	rep.State, rep.Facts = proto.StateDiscovered, d.Facts
	d.Facts = nil
	rep.Discovered = &d
	return rep, nil
}

// discoveredByMAC finds a discovered machine at whichever site (a site
// admin's request is confined to hers).
func (s *Service) discoveredByMAC(ctx context.Context, mac string) (proto.Discovered, error) {
	var found []proto.Discovered
	k := mustMACKey(mac)
	err := scan(ctx, s, bucketDiscovered, "*."+k, func(_ string, _ uint64, d proto.Discovered) error {
		found = append(found, d)
		return nil
	})
	if err != nil {
		return proto.Discovered{}, err
	}
	site, confined := confinedSite(ctx)
	found = slices.DeleteFunc(found, func(d proto.Discovered) bool { return confined && d.Site != site })
	if len(found) == 0 {
		return proto.Discovered{}, fmt.Errorf("host %s: %w", mac, ErrNotFound)
	}
	slices.SortFunc(found, func(a, b proto.Discovered) int { return b.Last.Compare(a.Last) })
	return found[0], nil
}
