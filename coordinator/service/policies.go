package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

// bucketPolicies holds the policies (key: name -> proto.Policy).
const bucketPolicies = "policies"

// bucketPolicyClaims holds, per policy, the machines it claimed (key:
// name -> policyClaims). A claim changes it with compare-and-set before the
// host is written, so a policy's --max holds exactly however many
// coordinators claim at once: of two claims for the last place, one
// update fails on the revision and that claim finds the policy full.
const bucketPolicyClaims = "policyclaims"

// policyClaims is a policy's claim counter.
type policyClaims struct {
	MACs []string `json:"macs"`
}

// errPolicyFull: the policy has claimed its --max machines.
var errPolicyFull = errors.New("policy full")

// compiled is a policy with its selector parsed.
type compiled struct {
	proto.Policy
	sel selector.Selector
}

// compile parses the policies' selectors and orders them as they are
// tried: highest priority first, then by name.
func compile(ps []proto.Policy) []compiled {
	out := make([]compiled, 0, len(ps))
	for _, p := range ps {
		sel, err := selector.Parse(p.Match)
		if err != nil {
			continue // AddPolicy refuses these; one written otherwise matches nothing
		}
		out = append(out, compiled{Policy: p, sel: sel})
	}
	slices.SortFunc(out, func(a, b compiled) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}

// evaluate is what every policy makes of machine m at site, in the order
// they are tried; the matching ones are the candidates, in that order.
// Pure: the claim (and --max) is the caller's. Without why, a mismatch has
// no reason (saying why costs more than matching, and only explain asks).
func evaluate(ps []compiled, site string, m selector.Subject, why bool) []proto.PolicyVerdict {
	out := make([]proto.PolicyVerdict, len(ps))
	for i := range ps {
		p := &ps[i]
		v := proto.PolicyVerdict{Policy: p.Name, Priority: p.Priority}
		switch {
		case p.Disabled:
			v.Reason = "disabled"
		case p.Site != "" && p.Site != site:
			v.Reason = fmt.Sprintf("for site %s, not %s", p.Site, site)
		case !why:
			v.Matched = p.sel.Match(m)
		default:
			v.Matched, v.Reason = p.sel.Explain(m)
		}
		if v.Matched {
			v.Reason = "matches " + p.Match
			if p.Match == "" {
				v.Reason = "matches every machine (empty selector)"
			}
		}
		out[i] = v
	}
	return out
}

// subjectOf is a machine as selectors see it.
func subjectOf(mac, site string, h *proto.Host, facts json.RawMessage) selector.Subject {
	f, _ := selector.DecodeFacts(facts) // stored facts are valid JSON
	m := selector.Subject{Facts: f, Fields: map[string]string{"mac": mac, "site": site}}
	if h != nil {
		m.Labels = h.Labels
		maps.Copy(m.Fields, map[string]string{"image": h.Image, "hostname": h.Hostname, "state": h.State, "template": h.Template, "policy": h.Policy})
	}
	return m
}

// AddPolicy stores a policy (a new one, or a new version of one: its claims
// so far still count towards --max), then evaluates it against the waiting
// discovered machines, which it may claim.
func (s *Service) AddPolicy(ctx context.Context, p proto.Policy) (proto.PolicyAddReply, error) {
	if err := proto.ValidName("policy", p.Name); err != nil {
		return proto.PolicyAddReply{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	sel, err := selector.Parse(p.Match)
	if err != nil {
		return proto.PolicyAddReply{}, fmt.Errorf("%w: --match: %v", ErrInvalid, err)
	}
	p.Match = sel.String()
	if p.Image == "" {
		return proto.PolicyAddReply{}, invalid("policy %s needs an image", p.Name)
	}
	if p.Max < 0 {
		return proto.PolicyAddReply{}, invalid("--max %d: want 0 (no limit) or more", p.Max)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		if err := proto.ValidLabel(k, p.Labels[k]); err != nil {
			return proto.PolicyAddReply{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if p.Site != "" {
		if _, err := s.GetSite(ctx, p.Site); err != nil {
			return proto.PolicyAddReply{}, err
		}
	}
	if _, err := s.getImage(ctx, p.Image); err != nil {
		return proto.PolicyAddReply{}, err
	}
	if p.Template != "" {
		if err := s.checkTemplate(ctx, p.Template); err != nil {
			return proto.PolicyAddReply{}, err
		}
	}
	p.V, p.Updated = proto.Version, s.now().UTC()
	s.mu.Lock()
	err = s.put(ctx, bucketPolicies, p.Name, p)
	if err == nil {
		// Like a host, a policy is a user of its image: a removal on
		// another coordinator either sees it or fails its compare-and-set.
		err = s.pinImage(ctx, p.Image)
		if err == nil && p.Template != "" {
			err = s.pin(ctx, bucketTemplateLocks, "template", p.Template)
		}
		if err != nil {
			_ = s.kv[bucketPolicies].Delete(context.WithoutCancel(ctx), p.Name)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return proto.PolicyAddReply{}, err
	}
	s.log.Info("policy saved", "policy", p.Name, "match", p.Match, "image", p.Image, "max", p.Max, "priority", p.Priority)
	rep := proto.PolicyAddReply{V: proto.Version}
	if rep.Claimed, err = s.EvaluateDiscovered(ctx, p.Site); err != nil {
		return rep, err
	}
	rep.Policy, err = s.GetPolicy(ctx, p.Name)
	return rep, err
}

// EvaluateDiscovered runs the policies over every machine waiting
// discovered at site (all sites when ""), and returns the MACs claimed.
func (s *Service) EvaluateDiscovered(ctx context.Context, site string) ([]string, error) {
	waiting, err := s.ListDiscovered(ctx, site)
	if err != nil {
		return nil, err
	}
	ps, err := s.compiledPolicies(ctx)
	if err != nil {
		return nil, err
	}
	var claimed []string
	for _, d := range waiting {
		won, err := s.decideWith(ctx, ps, d.MAC, d.Site, nil, d.Facts)
		if err != nil {
			return claimed, err
		}
		if won != "" {
			claimed = append(claimed, d.MAC)
		}
	}
	return claimed, nil
}

func (s *Service) compiledPolicies(ctx context.Context) ([]compiled, error) {
	var ps []proto.Policy
	err := scan(ctx, s, bucketPolicies, ">", func(_ string, _ uint64, p proto.Policy) error {
		ps = append(ps, p)
		return nil
	})
	return compile(ps), err
}

// decide runs the policies over a discovered machine's report.
func (s *Service) decide(ctx context.Context, d proto.Discovered) (string, error) {
	ps, err := s.compiledPolicies(ctx)
	if err != nil {
		return "", err
	}
	return s.decideWith(ctx, ps, d.MAC, d.Site, nil, d.Facts)
}

// decideWith offers the machine to the matching policies in order until one
// claims it, and returns that policy's name ("" when none did). h is the
// host when the machine is one without an image (its labels count); nil for
// a discovered machine. A machine no policy claims keeps the verdicts as its
// discovered entry's decision.
func (s *Service) decideWith(ctx context.Context, ps []compiled, mac, site string, h *proto.Host, facts json.RawMessage) (string, error) {
	verdicts := evaluate(ps, site, subjectOf(mac, site, h, facts), false)
	decision := "no policy matches"
	for i, v := range verdicts {
		if !v.Matched {
			continue
		}
		err := s.claimFor(ctx, ps[i].Policy, mac, site)
		switch {
		case err == nil:
			s.log.Info("machine claimed by policy", "mac", mac, "site", site, "policy", v.Policy)
			return v.Policy, nil
		case errors.Is(err, errPolicyFull):
			decision = fmt.Sprintf("policy %s matches but is full (max %d)", v.Policy, ps[i].Max)
			continue
		case errors.Is(err, ErrConflict):
			return "", nil // a host already (claimed concurrently, or set by an admin)
		default:
			decision = fmt.Sprintf("policy %s matches but could not claim it: %v", v.Policy, err)
			s.log.Warn("policy claim failed", "mac", mac, "policy", v.Policy, "err", err)
		}
	}
	if h == nil {
		s.noteDecision(ctx, site, mac, decision)
	}
	return "", nil
}

// noteDecision records why a discovered machine still waits.
func (s *Service) noteDecision(ctx context.Context, site, mac, decision string) {
	key, _ := proto.HostKey(site, mac)
	e, err := s.read(ctx, bucketDiscovered, key)
	if err != nil {
		return
	}
	var d proto.Discovered
	if json.Unmarshal(e.value, &d) != nil || d.Decision == decision {
		return
	}
	d.Decision = decision
	data, _ := json.Marshal(d)
	_, _ = s.kv[bucketDiscovered].Update(ctx, key, data, e.rev) // a newer report re-evaluates anyway
}

// claimFor makes the machine a host for policy p: it reserves a place in the
// policy's claims (compare-and-set, refused with errPolicyFull at --max),
// then creates the host (or gives an imageless host its image); if that
// fails, the place is given back.
func (s *Service) claimFor(ctx context.Context, p proto.Policy, mac, site string) error {
	if err := s.reserve(ctx, p, mac); err != nil {
		return err
	}
	// Once: the image a policy assigns installs the machine, whose done
	// callback then turns it to local-disk boot (Razor's flow), so its
	// next power-on does not install it again.
	req := proto.HostSetRequest{V: proto.Version, MAC: mac, Site: &site, Image: &p.Image, Labels: p.Labels, Once: ptrTo(true)}
	if p.Template != "" {
		req.Template = &p.Template
	}
	if _, err := s.setHost(ctx, req, p.Name); err != nil {
		if uErr := s.unreserve(context.WithoutCancel(ctx), p.Name, mac); uErr != nil {
			s.log.Warn("policy claim not released", "policy", p.Name, "mac", mac, "err", uErr)
		}
		return err
	}
	s.forgetDiscovered(ctx, site, mac)
	return nil
}

// reserve adds mac to p's claims unless the policy is full.
func (s *Service) reserve(ctx context.Context, p proto.Policy, mac string) error {
	return s.updateClaims(ctx, p.Name, func(c *policyClaims) error {
		if slices.Contains(c.MACs, mac) {
			return fmt.Errorf("%w: %s is being claimed by policy %s already", ErrConflict, mac, p.Name)
		}
		if p.Max > 0 && len(c.MACs) >= p.Max {
			return errPolicyFull
		}
		c.MACs = append(c.MACs, mac)
		return nil
	})
}

// unreserve gives mac's place in a policy's claims back.
func (s *Service) unreserve(ctx context.Context, policy, mac string) error {
	return s.updateClaims(ctx, policy, func(c *policyClaims) error {
		c.MACs = slices.DeleteFunc(c.MACs, func(m string) bool { return m == mac })
		return nil
	})
}

// updateClaims applies change to a policy's claims with compare-and-set,
// reading again after a conflict.
func (s *Service) updateClaims(ctx context.Context, policy string, change func(*policyClaims) error) error {
	kv := s.kv[bucketPolicyClaims]
	for range 100 {
		var c policyClaims
		e, err := s.read(ctx, bucketPolicyClaims, policy)
		exists := err == nil
		switch {
		case exists:
			if err := json.Unmarshal(e.value, &c); err != nil {
				return fmt.Errorf("coordinator: decode claims of %s: %w", policy, err)
			}
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if err := change(&c); err != nil {
			return err
		}
		data, _ := json.Marshal(c)
		if exists {
			_, err = kv.Update(ctx, policy, data, e.rev)
		} else {
			_, err = kv.Create(ctx, policy, data)
		}
		if err == nil {
			return nil
		}
		if !casConflict(err) {
			return fmt.Errorf("coordinator: claims of policy %s: %w", policy, err)
		}
	}
	return fmt.Errorf("%w: the claims of policy %s are changing too fast; retry", ErrConflict, policy)
}

// ListPolicies returns every policy with what it claimed, in the order
// they are tried.
func (s *Service) ListPolicies(ctx context.Context) ([]proto.PolicyView, error) {
	ps, err := s.compiledPolicies(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]proto.PolicyView, 0, len(ps))
	for _, p := range ps {
		v, err := s.view(ctx, p.Policy)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Service) view(ctx context.Context, p proto.Policy) (proto.PolicyView, error) {
	v := proto.PolicyView{Policy: p}
	var c policyClaims
	if _, err := s.get(ctx, bucketPolicyClaims, p.Name, &c); err != nil && !errors.Is(err, ErrNotFound) {
		return v, err
	}
	v.Claimed = c.MACs
	return v, nil
}

// GetPolicy returns one policy with what it claimed.
func (s *Service) GetPolicy(ctx context.Context, name string) (proto.PolicyView, error) {
	if err := proto.ValidName("policy", name); err != nil {
		return proto.PolicyView{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var p proto.Policy
	if _, err := s.get(ctx, bucketPolicies, name, &p); err != nil {
		return proto.PolicyView{}, fmt.Errorf("policy %s: %w", name, err)
	}
	return s.view(ctx, p)
}

// RemovePolicy deletes a policy; the hosts it created stay as they are.
func (s *Service) RemovePolicy(ctx context.Context, name string) error {
	if _, err := s.GetPolicy(ctx, name); err != nil {
		return err
	}
	if err := s.kv[bucketPolicies].Delete(ctx, name); err != nil {
		return fmt.Errorf("coordinator: delete policy %s: %w", name, err)
	}
	_ = s.kv[bucketPolicyClaims].Delete(ctx, name)
	return nil
}

// EnablePolicy enables or disables a policy. Enabling evaluates the waiting
// discovered machines again.
func (s *Service) EnablePolicy(ctx context.Context, r proto.PolicyEnableRequest) (proto.PolicyView, error) {
	if err := proto.ValidName("policy", r.Name); err != nil {
		return proto.PolicyView{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var p proto.Policy
	rev, err := s.get(ctx, bucketPolicies, r.Name, &p)
	if err != nil {
		return proto.PolicyView{}, fmt.Errorf("policy %s: %w", r.Name, err)
	}
	p.Disabled, p.Updated = r.Disabled, s.now().UTC()
	data, _ := json.Marshal(p)
	if _, err := s.kv[bucketPolicies].Update(ctx, r.Name, data, rev); err != nil {
		return proto.PolicyView{}, fmt.Errorf("%w: policy %s changed concurrently; retry", ErrConflict, r.Name)
	}
	if !p.Disabled {
		if _, err := s.EvaluateDiscovered(ctx, p.Site); err != nil {
			return proto.PolicyView{}, err
		}
	}
	return s.GetPolicy(ctx, r.Name)
}

// ExplainPolicies says which policy decided a machine and why every other
// did not: for a host a policy created, that policy; for a machine still
// discovered, none, with what each policy makes of its facts now.
func (s *Service) ExplainPolicies(ctx context.Context, mac string) (proto.PolicyDecision, error) {
	fr, err := s.FactsOf(ctx, mac)
	if err != nil {
		return proto.PolicyDecision{}, err
	}
	ps, err := s.compiledPolicies(ctx)
	if err != nil {
		return proto.PolicyDecision{}, err
	}
	d := proto.PolicyDecision{V: proto.Version, MAC: fr.MAC, State: fr.State}
	switch {
	case fr.Host != nil:
		d.Site = fr.Host.Site
		d.Verdicts = evaluate(ps, d.Site, subjectOf(fr.MAC, d.Site, fr.Host, fr.Facts), true)
		switch {
		case fr.Host.Policy != "":
			d.Policy = fr.Host.Policy
			d.Reason = fmt.Sprintf("claimed by policy %s when it was discovered", fr.Host.Policy)
		case fr.Host.Image != "":
			d.Reason = "set by an admin (host set or import), not by a policy"
		default:
			d.Reason = "a host without an image: waits for a policy or an admin"
		}
	default:
		d.Site = fr.Discovered.Site
		d.Verdicts = evaluate(ps, d.Site, subjectOf(fr.MAC, d.Site, nil, fr.Facts), true)
		d.Reason = fr.Discovered.Decision
		if d.Reason == "" {
			d.Reason = "no policy matches"
		}
	}
	return d, nil
}
