package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fleetboot/fleetboot/proto"
)

// HeaderRequestInfo is the header nats-server sets, on a request crossing a
// service import with share=true, to the authenticated caller's identity. The
// server removes any value the client put there itself.
const HeaderRequestInfo = "Nats-Request-Info"

// Directory finds the live identity of a user public key.
type Directory interface {
	Lookup(pub string) (Identity, bool)
}

// Guard decides, for every API request, who asks and whether they may.
type Guard struct {
	Account   string    // the FLEET account: requests must come from it
	Directory Directory // enrolled identities
	// HostSite returns the site of a host (found by any of its MACs); an
	// edge may report only for its own site's machines, a site admin may
	// see and change only her site's hosts.
	HostSite func(ctx context.Context, mac string) (string, error)
	// RolloutSites returns the sites of a rollout's hosts; SelectionSites
	// those of the hosts a rollout.start request would select. A site
	// admin may start and act on rollouts of her site's hosts only.
	RolloutSites   func(ctx context.Context, name string) ([]string, error)
	SelectionSites func(ctx context.Context, spec proto.RolloutSpec) ([]string, error)
}

// requestInfo is the part of the server's ClientInfo the guard reads.
type requestInfo struct {
	Account string `json:"acc"`
	User    string `json:"user"`
}

// Identify returns the caller named by the Nats-Request-Info header value.
func (g *Guard) Identify(info string) (Identity, error) {
	if info == "" {
		return Identity{}, fmt.Errorf("%w: the request carries no caller identity (connect with a credentials file)", ErrDenied)
	}
	var ri requestInfo
	if err := json.Unmarshal([]byte(info), &ri); err != nil {
		return Identity{}, fmt.Errorf("%w: unreadable caller identity", ErrDenied)
	}
	if ri.Account != g.Account {
		return Identity{}, fmt.Errorf("%w: request from a foreign account", ErrDenied)
	}
	id, ok := g.Directory.Lookup(ri.User)
	if !ok {
		return Identity{Name: ri.User}, fmt.Errorf("%w: credential %s is not enrolled or was revoked", ErrDenied, ri.User)
	}
	return id, nil
}

// Authorize refuses what id's role may not do with endpoint (relative to
// proto.APIPrefix); body is the raw request.
func (g *Guard) Authorize(ctx context.Context, id Identity, endpoint string, body []byte) error {
	switch id.Role {
	case RoleAdmin:
		return nil
	case RoleSiteAdmin:
		return g.authorizeSiteAdmin(ctx, id, endpoint, body)
	case RoleViewer:
		if IsRead(endpoint) {
			return nil
		}
		return fmt.Errorf("%w: %s is read-only and may not %s (ask an admin)", ErrDenied, id, endpoint)
	case RoleEdge:
		switch endpoint {
		case proto.APIStoreInfo:
			return nil
		case proto.APIHostDone, proto.APIHostFacts:
			var r struct {
				MAC string `json:"mac"`
			}
			_ = json.Unmarshal(body, &r) // a bad body is the handler's to refuse
			if r.MAC == "" || g.HostSite == nil {
				return nil
			}
			site, err := g.HostSite(ctx, r.MAC)
			if endpoint == proto.APIHostFacts && errors.Is(err, errNotFound) {
				// An unknown machine's discovery report: the API confines
				// it to the edge's own site, and the service records it
				// there only if that site discovers.
				return nil
			}
			if err != nil || site != id.Site {
				return fmt.Errorf("%w: %s may report only for machines of its own site", ErrDenied, id)
			}
			return nil
		}
		return fmt.Errorf("%w: %s may not call %s", ErrDenied, id, endpoint)
	}
	return fmt.Errorf("%w: unknown role %q", ErrDenied, id.Role)
}

// Check identifies the caller and authorizes the request.
func (g *Guard) Check(ctx context.Context, info, endpoint string, body []byte) (Identity, error) {
	id, err := g.Identify(info)
	if err != nil {
		return id, err
	}
	return id, g.Authorize(ctx, id, endpoint, body)
}
