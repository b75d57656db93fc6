package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fleetboot/fleetboot/proto"
)

// siteRule is what a site admin may do with one API endpoint.
type siteRule int

const (
	// siteRefused: never (the answer for any endpoint not in the table).
	siteRefused siteRule = iota
	// siteGlobalRead: a read of fleet-wide data every edge reads too.
	siteGlobalRead
	// siteFiltered: a listing the API narrows to her site (VisibleSite).
	siteFiltered
	// siteOwnSite: the request's name (proto.NameRequest / proto.Site) is
	// her site.
	siteOwnSite
	// siteHostList: the listing asks for her site or for none (then the API
	// narrows it to hers).
	siteHostList
	// siteOwnHost: the request's MAC names an existing host of her site.
	siteOwnHost
	// siteHostSet: the host's current site, if it exists, and the site it
	// is set to are both hers.
	siteHostSet
	// siteImport: every row of the import names her site (the service
	// refuses rows whose MAC is a host of another site).
	siteImport
	// siteBulkSet: the change names her site or none (the service then
	// looks at her site's hosts only).
	siteBulkSet
	// siteRolloutStart: every host the rollout would select is of her
	// site (the service checks again on the hosts it selects).
	siteRolloutStart
	// siteOwnRollout: every host of the named rollout is of her site.
	siteOwnRollout
)

// siteAdminRow classifies one API endpoint for a site admin.
type siteAdminRow struct {
	endpoint string
	rule     siteRule
}

// siteAdminTable is every API endpoint (relative to proto.APIPrefix) and
// what a site admin may do with it. An endpoint missing here is refused:
// a new endpoint stays closed to site admins until someone decides
// otherwise (TestEveryEndpointClassified in coordinator/api fails until
// they do).
func siteAdminTable() []siteAdminRow {
	return []siteAdminRow{
		// Her site's configuration: she may create it (the admin named it
		// when enrolling her, so creating it takes nothing from anyone)
		// and replace it, never remove it nor touch another site.
		{proto.APISiteAdd, siteOwnSite},
		{proto.APISiteGet, siteOwnSite},
		{proto.APISiteList, siteFiltered},
		{proto.APISiteRm, siteRefused},
		// Images are global: readable, changed by admins only.
		{proto.APIImageAdd, siteRefused},
		{proto.APIImageList, siteGlobalRead},
		{proto.APIImageGet, siteGlobalRead},
		{proto.APIImageRm, siteRefused},
		{proto.APIImageHistory, siteGlobalRead},
		{proto.APIImageRollback, siteRefused},
		// Loaders too: global, changed by admins only.
		{proto.APILoaderAdd, siteRefused},
		{proto.APILoaderList, siteGlobalRead},
		{proto.APILoaderGet, siteGlobalRead},
		{proto.APILoaderRm, siteRefused},
		// Her site's hosts, and only those.
		{proto.APIHostSet, siteHostSet},
		{proto.APIHostList, siteHostList},
		{proto.APIHostGet, siteOwnHost},
		{proto.APIHostRm, siteOwnHost},
		// Installer callbacks change a host (install done, facts): hers only.
		{proto.APIHostDone, siteOwnHost},
		{proto.APIHostFacts, siteOwnHost},
		// Bulk changes of her site's hosts.
		{proto.APIHostImport, siteImport},
		{proto.APIHostBulkSet, siteBulkSet},
		// Her site's hosts' BMCs: set one, learn the keys to seal its
		// password to, drive its power.
		{proto.APIHostBMC, siteOwnHost},
		{proto.APIHostBMCKeys, siteOwnHost},
		{proto.APIHostPower, siteOwnHost},
		{proto.APIEdgeList, siteFiltered},
		// Discovered machines: the API narrows the listing to her site
		// (with their facts). Facts and policy verdicts of hosts: hers only.
		{proto.APIDiscoveredList, siteHostList},
		{proto.APIFactsGet, siteOwnHost},
		{proto.APIPolicyExplain, siteOwnHost},
		// Policies and templates are fleet-wide (a policy may span sites):
		// readable, changed by admins only.
		{proto.APIPolicyAdd, siteRefused},
		{proto.APIPolicyList, siteGlobalRead},
		{proto.APIPolicyGet, siteGlobalRead},
		{proto.APIPolicyRm, siteRefused},
		{proto.APIPolicyEnable, siteRefused},
		{proto.APITemplateAdd, siteRefused},
		{proto.APITemplateList, siteGlobalRead},
		{proto.APITemplateGet, siteGlobalRead},
		{proto.APITemplateRm, siteRefused},
		// Rollouts of her site's hosts only: start one whose selection is
		// all hers; see, pause, resume, abort and roll back one whose
		// hosts are all hers. The listing shows only those.
		{proto.APIRolloutStart, siteRolloutStart},
		{proto.APIRolloutList, siteFiltered},
		{proto.APIRolloutGet, siteOwnRollout},
		{proto.APIRolloutPause, siteOwnRollout},
		{proto.APIRolloutResume, siteOwnRollout},
		{proto.APIRolloutAbort, siteOwnRollout},
		{proto.APIRolloutRollback, siteOwnRollout},
		// The artifact store's URL (without credentials), as every edge sees it.
		{proto.APIStoreInfo, siteGlobalRead},
		// Identities are an admin's: a site admin enrolling an edge of her
		// site could mint credentials, so she may not.
		{APIEdgeAdd, siteRefused},
		{APIEdgeRevoke, siteRefused},
		{APIUserAdd, siteRefused},
		{APIUserRevoke, siteRefused},
	}
}

// SiteAdminEndpoints lists the endpoints siteAdminTable classifies.
func SiteAdminEndpoints() []string {
	var out []string
	for _, r := range siteAdminTable() {
		out = append(out, r.endpoint)
	}
	return out
}

func siteAdminRule(endpoint string) siteRule {
	for _, r := range siteAdminTable() {
		if r.endpoint == endpoint {
			return r.rule
		}
	}
	return siteRefused
}

// VisibleSite is the only site id may see, when it is confined to one: the
// API narrows listings to it.
func VisibleSite(id Identity) (string, bool) {
	if id.Role == RoleSiteAdmin || id.Role == RoleEdge {
		return id.Site, true
	}
	return "", false
}

// authorizeSiteAdmin applies siteAdminTable. The body is decoded into the
// handler's own request type, so the guard and the handler read the same
// fields; a body the guard cannot read is refused.
func (g *Guard) authorizeSiteAdmin(ctx context.Context, id Identity, endpoint string, body []byte) error {
	switch siteAdminRule(endpoint) {
	case siteGlobalRead, siteFiltered:
		return nil
	case siteOwnSite:
		name, err := siteName(endpoint, body)
		if err != nil {
			return err
		}
		return ownSite(id, name)
	case siteHostList:
		var r proto.ListRequest
		if err := decode(body, &r); err != nil {
			return err
		}
		if r.Site == "" {
			return nil
		}
		return ownSite(id, r.Site)
	case siteOwnHost:
		mac, err := hostMAC(endpoint, body)
		if err != nil {
			return err
		}
		site, found, err := g.hostSite(ctx, id, mac)
		if err != nil {
			return err
		}
		if !found || site != id.Site {
			// Not found and elsewhere answer alike: no probing of
			// other sites' MACs through get or rm.
			return fmt.Errorf("%w: %s may see and change only hosts of site %s; %s is not one", ErrDenied, id, id.Site, mac)
		}
		return nil
	case siteHostSet:
		var r proto.HostSetRequest
		if err := decode(body, &r); err != nil {
			return err
		}
		return g.hostSet(ctx, id, r)
	case siteImport:
		var r proto.HostImportRequest
		if err := decode(body, &r); err != nil {
			return err
		}
		for _, row := range r.Rows {
			if row.Site == "" {
				return fmt.Errorf("%w: %s must give the site of every line (line %d has none)", ErrDenied, id, row.Line)
			}
			if err := ownSite(id, row.Site); err != nil {
				return err
			}
		}
		return nil
	case siteBulkSet:
		var r proto.HostBulkSetRequest
		if err := decode(body, &r); err != nil {
			return err
		}
		if r.Site == "" {
			return nil
		}
		return ownSite(id, r.Site)
	case siteRolloutStart:
		var r proto.RolloutSpec
		if err := decode(body, &r); err != nil {
			return err
		}
		for _, s := range r.Sites {
			if err := ownSite(id, s); err != nil {
				return err
			}
		}
		if g.SelectionSites == nil {
			return fmt.Errorf("%w: %s: the coordinator cannot tell which sites a rollout selects", ErrDenied, id)
		}
		sites, err := g.SelectionSites(ctx, r)
		if err != nil {
			// A selection that cannot be made (a malformed selector, a
			// site that does not exist) is the handler's to refuse, on
			// hosts nobody can read through it.
			return nil
		}
		return onlyOwnSites(id, "the selection", sites)
	case siteOwnRollout:
		var r proto.NameRequest
		if err := decode(body, &r); err != nil {
			return err
		}
		if g.RolloutSites == nil {
			return fmt.Errorf("%w: %s: the coordinator cannot tell which sites a rollout covers", ErrDenied, id)
		}
		sites, err := g.RolloutSites(ctx, r.Name)
		if err != nil {
			// Not found and elsewhere answer alike.
			return fmt.Errorf("%w: %s may see and change only rollouts of site %s; %q is not one", ErrDenied, id, id.Site, r.Name)
		}
		return onlyOwnSites(id, fmt.Sprintf("rollout %q", r.Name), sites)
	}
	return fmt.Errorf("%w: %s may not %s (ask an admin)", ErrDenied, id, endpoint)
}

// hostSet: a site admin may create a host at her site, change one of her
// site's hosts, and keep it there. Moving a host in or out of her site
// takes an admin, since it changes another site. The extra MACs she gives
// must not be another site's hosts' either: the service would refuse the
// claim, but its answer names the host holding the MAC and its site.
//
// The guard's check and the write are two steps: an admin could move the
// host between them. The API therefore also confines the request's context
// to her site (service.ConfineToSite), and the service checks the host's
// site again on the version it writes over with compare-and-set.
func (g *Guard) hostSet(ctx context.Context, id Identity, r proto.HostSetRequest) error {
	cur, found, err := g.hostSite(ctx, id, r.MAC)
	if err != nil {
		return err
	}
	if found && cur != id.Site {
		return fmt.Errorf("%w: %s may see and change only hosts of site %s; %s is not one", ErrDenied, id, id.Site, r.MAC)
	}
	if r.ExtraMACs != nil {
		for _, m := range *r.ExtraMACs {
			site, taken, err := g.hostSite(ctx, id, m)
			if err != nil {
				return err
			}
			if taken && site != id.Site {
				return fmt.Errorf("%w: %s may see and change only hosts of site %s; %s is not one", ErrDenied, id, id.Site, m)
			}
		}
	}
	switch {
	case r.Site != nil:
		return ownSite(id, *r.Site)
	case !found:
		// Without a site the service puts a new host at the fleet's only
		// site, which may be someone else's.
		return fmt.Errorf("%w: %s must give the site of a new host (--site %s)", ErrDenied, id, id.Site)
	}
	return nil // an existing host of her site stays there
}

// hostSite finds the site of the host holding mac. A malformed MAC is
// refused here as the handler would; any other failure refuses too.
func (g *Guard) hostSite(ctx context.Context, id Identity, mac string) (site string, found bool, err error) {
	if _, err := proto.ParseMAC(mac); err != nil {
		return "", false, fmt.Errorf("%w: %v", errInvalid, err)
	}
	if g.HostSite == nil {
		return "", false, fmt.Errorf("%w: %s: the coordinator cannot tell which site a host belongs to", ErrDenied, id)
	}
	site, err = g.HostSite(ctx, mac)
	switch {
	case errors.Is(err, errNotFound):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("%w: %s: cannot tell the site of host %s: %v", ErrDenied, id, mac, err)
	}
	return site, true, nil
}

// onlyOwnSites refuses a set of sites holding another than id's.
func onlyOwnSites(id Identity, what string, sites []string) error {
	for _, s := range sites {
		if s != id.Site {
			return fmt.Errorf("%w: %s may see and change only hosts of site %s; %s holds hosts of other sites", ErrDenied, id, id.Site, what)
		}
	}
	return nil
}

func ownSite(id Identity, site string) error {
	if site != id.Site {
		return fmt.Errorf("%w: %s may see and change only site %s, not %q", ErrDenied, id, id.Site, site)
	}
	return nil
}

// siteName reads the site a site.add or site.get request names.
func siteName(endpoint string, body []byte) (string, error) {
	if endpoint == proto.APISiteAdd {
		var r proto.Site
		err := decode(body, &r)
		return r.Name, err
	}
	var r proto.NameRequest
	err := decode(body, &r)
	return r.Name, err
}

// hostMAC reads the MAC a host request names.
func hostMAC(endpoint string, body []byte) (string, error) {
	if endpoint == proto.APIHostFacts {
		var r proto.FactsRequest
		err := decode(body, &r)
		return r.MAC, err
	}
	var r proto.MACRequest
	err := decode(body, &r)
	return r.MAC, err
}

// decode reads a request body as its handler does: empty is the zero value.
func decode(body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: malformed request: %v", errInvalid, err)
	}
	return nil
}
