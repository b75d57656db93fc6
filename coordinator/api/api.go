// Package api is the coordinator's transport: it maps the admin API's NATS
// request-reply subjects (a nats.go micro service, so several coordinators
// share the load as one queue group) onto the service layer and encodes every
// answer in a proto.Reply envelope.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/rollout"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// Config wires the API to its service.
type Config struct {
	Service  *service.Service
	StoreURL string // shown to clients by store.info, never with credentials
	Version  string
	Logger   *slog.Logger
	Timeout  time.Duration // per request
	// BulkTimeout is the limit of the requests that touch every host of a
	// fleet (proto.BulkEndpoint: host import, host set --selector): a
	// scan of 100 000 hosts outlasts Timeout. Default 5 min.
	BulkTimeout time.Duration
	// Guard, when set, identifies the caller of every request from the
	// server-stamped Nats-Request-Info header and refuses what the caller's
	// role may not do. Nil: authentication is off (dev), everyone may.
	Guard Guard
	// Audit, when set, records every change request and every refusal
	// (refused installer callbacks are only counted).
	Audit Auditor
	// Enrol signs and revokes credentials; nil answers that --auth is off.
	Enrol Enroller
	// Metrics counts requests by endpoint and code; nil counts nothing.
	Metrics *Metrics
	// Rollouts serves the rollout endpoints and hears of done callbacks;
	// nil answers that rollouts are off.
	Rollouts Rollouts
}

// Rollouts is the rollout engine (see rollout.Engine).
type Rollouts interface {
	Start(ctx context.Context, spec proto.RolloutSpec) (proto.Rollout, error)
	List(ctx context.Context) ([]proto.Rollout, error)
	Get(ctx context.Context, name string) (proto.Rollout, error)
	Act(ctx context.Context, action, name, who string) (proto.Rollout, error)
	// HostDone hears a host's done callback (the host as the callback
	// left it), for the rollout that may be waiting for it.
	HostDone(ctx context.Context, h proto.Host)
}

// Guard checks a request's caller (see auth.Guard).
type Guard interface {
	Check(ctx context.Context, requestInfo, endpoint string, body []byte) (auth.Identity, error)
	// Authorize refuses what an already identified caller may not do (the
	// web panel's logged-in person).
	Authorize(ctx context.Context, id auth.Identity, endpoint string, body []byte) error
}

// Auditor stores audit records and counts what it does not store (see
// audit.Log).
type Auditor interface {
	Record(ctx context.Context, r audit.Record) error
	// Full tells whether the audit log lacks room for another record.
	Full(ctx context.Context) bool
	// RefuseFull counts and logs a change refused because the log is full.
	RefuseFull(action, who string)
	// CountCallbackRefusal counts a refused installer callback.
	CountCallbackRefusal(action string)
}

// isCallback tells the endpoints edges call on behalf of machines on a boot
// network (installer callbacks): whoever sends them is anonymous.
func isCallback(endpoint string) bool {
	return endpoint == proto.APIHostDone || endpoint == proto.APIHostFacts
}

// auditExempt are the changes still made when the audit log is full:
// revocations (they take access away, and must work during an incident) and
// installer callbacks (refusing "install done" would reinstall the machine
// at its next boot). Their records are still attempted.
func auditExempt(endpoint string) bool {
	return isCallback(endpoint) || endpoint == proto.APIEdgeRevoke || endpoint == proto.APIUserRevoke
}

// Enroller signs and revokes credentials (see auth.Authority).
type Enroller interface {
	Enrol(ctx context.Context, r auth.EnrolRequest) (auth.EnrolReply, error)
	Revoke(ctx context.Context, name string, edge bool) ([]auth.Identity, error)
}

// Start registers the micro service on nc. Stop it with the returned service's Stop.
func Start(nc *nats.Conn, cfg Config) (micro.Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BulkTimeout == 0 {
		cfg.BulkTimeout = proto.BulkRequestTimeout
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0"
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.ServiceName,
		Version:     semver(cfg.Version),
		Description: "fleetboot desired-state API",
	})
	if err != nil {
		return nil, fmt.Errorf("api: add micro service: %w", err)
	}
	g := svc.AddGroup(proto.APIPrefix)
	for _, ep := range endpoints(cfg) {
		if err := g.AddEndpoint(strings.ReplaceAll(ep.name, ".", "_"), serveMicro(cfg, ep.h), micro.WithEndpointSubject(ep.name)); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("api: add endpoint %s: %w", ep.name, err)
		}
	}
	return svc, nil
}

type endpoint struct {
	name string
	h    call
}

// endpoints maps every API subject to its call.
func endpoints(cfg Config) []endpoint {
	s := cfg.Service
	eps := []endpoint{
		{proto.APISiteAdd, handle(cfg, s.AddSite)},
		{proto.APISiteList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.Site, error) {
			sites, err := s.ListSites(ctx)
			return onlyVisible(ctx, sites, func(x proto.Site) string { return x.Name }), err
		})},
		{proto.APISiteGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Site, error) { return s.GetSite(ctx, r.Name) })},
		{proto.APISiteRm, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.NameRequest, error) {
			return r, s.RemoveSite(ctx, r.Name)
		})},
		{proto.APIImageAdd, handle(cfg, s.AddImage)},
		{proto.APIImageList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.Image, error) { return s.ListImages(ctx) })},
		{proto.APIImageGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Image, error) { return s.GetImage(ctx, r.Name) })},
		{proto.APIImageRm, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.NameRequest, error) {
			return r, s.RemoveImage(ctx, r.Name)
		})},
		{proto.APIImageHistory, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.ImageHistory, error) {
			return s.ImageHistory(ctx, r.Name)
		})},
		{proto.APIImageRollback, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Image, error) {
			return s.RollbackImage(ctx, r.Name)
		})},
		{proto.APILoaderAdd, handle(cfg, s.AddLoader)},
		{proto.APILoaderList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.Loader, error) { return s.ListLoaders(ctx) })},
		{proto.APILoaderGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Loader, error) { return s.GetLoader(ctx, r.Name) })},
		{proto.APILoaderRm, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.NameRequest, error) {
			return r, s.RemoveLoader(ctx, r.Name)
		})},
		{proto.APIHostSet, handle(cfg, s.SetHost)},
		{proto.APIHostList, handle(cfg, func(ctx context.Context, r proto.ListRequest) ([]proto.Host, error) {
			if site, ok := visibleSite(ctx); ok {
				r.Site = site // the guard refused any other site
			}
			return s.ListHosts(ctx, r.Site)
		})},
		{proto.APIHostGet, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.Host, error) { return s.GetHost(ctx, r.MAC) })},
		{proto.APIHostRm, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.MACRequest, error) {
			return r, s.RemoveHost(ctx, r.MAC)
		})},
		{proto.APIHostDone, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.Host, error) {
			h, err := s.InstallDone(ctx, r.MAC)
			if err == nil && cfg.Rollouts != nil {
				cfg.Rollouts.HostDone(ctx, h)
			}
			return h, err
		})},
		{proto.APIHostFacts, handle(cfg, func(ctx context.Context, r proto.FactsRequest) (proto.MACRequest, error) {
			return proto.MACRequest{V: proto.Version, MAC: r.MAC}, s.RecordFacts(ctx, r)
		})},
		{proto.APIHostImport, handle(cfg, s.ImportHosts)},
		{proto.APIHostBulkSet, handle(cfg, s.BulkSetHosts)},
		{proto.APIDiscoveredList, handle(cfg, func(ctx context.Context, r proto.ListRequest) ([]proto.Discovered, error) {
			if site, ok := visibleSite(ctx); ok {
				r.Site = site // the guard refused any other site
			}
			return s.ListDiscovered(ctx, r.Site)
		})},
		{proto.APIFactsGet, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.FactsReply, error) { return s.FactsOf(ctx, r.MAC) })},
		{proto.APIPolicyAdd, handle(cfg, s.AddPolicy)},
		{proto.APIPolicyList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.PolicyView, error) { return s.ListPolicies(ctx) })},
		{proto.APIPolicyGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.PolicyView, error) {
			return s.GetPolicy(ctx, r.Name)
		})},
		{proto.APIPolicyRm, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.NameRequest, error) {
			return r, s.RemovePolicy(ctx, r.Name)
		})},
		{proto.APIPolicyEnable, handle(cfg, s.EnablePolicy)},
		{proto.APIPolicyExplain, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.PolicyDecision, error) {
			return s.ExplainPolicies(ctx, r.MAC)
		})},
		{proto.APITemplateAdd, handle(cfg, s.AddTemplate)},
		{proto.APITemplateList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.Template, error) { return s.ListTemplates(ctx) })},
		{proto.APITemplateGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Template, error) {
			return s.GetTemplate(ctx, r.Name)
		})},
		{proto.APITemplateRm, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.NameRequest, error) {
			return r, s.RemoveTemplate(ctx, r.Name)
		})},
		{proto.APIHostBMC, handle(cfg, s.SetHostBMC)},
		{proto.APIHostBMCKeys, handle(cfg, func(ctx context.Context, r proto.MACRequest) (proto.BMCKeys, error) { return s.BMCKeys(ctx, r.MAC) })},
		{proto.APIHostPower, handle(cfg, s.Power)},
		{proto.APIEdgeList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.EdgeView, error) {
			edges, err := s.ListEdges(ctx)
			return onlyVisible(ctx, edges, func(x proto.EdgeView) string { return x.Site }), err
		})},
		{proto.APIStoreInfo, handle(cfg, func(context.Context, proto.ListRequest) (proto.StoreInfo, error) {
			return proto.StoreInfo{V: proto.Version, URL: cfg.StoreURL}, nil
		})},
	}
	eps = append(eps, rolloutEndpoints(cfg)...)
	return append(eps, enrolEndpoints(cfg)...)
}

// rolloutEndpoints serve the rollouts. A site admin sees only the rollouts
// whose hosts are all of her site (the guard refused her anything else).
func rolloutEndpoints(cfg Config) []endpoint {
	off := fmt.Errorf("%w: rollouts are not enabled on this coordinator", service.ErrInvalid)
	act := func(action string) call {
		return handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Rollout, error) {
			if cfg.Rollouts == nil {
				return proto.Rollout{}, off
			}
			return cfg.Rollouts.Act(ctx, action, r.Name, callerName(ctx))
		})
	}
	return []endpoint{
		{proto.APIRolloutStart, handle(cfg, func(ctx context.Context, spec proto.RolloutSpec) (proto.Rollout, error) {
			if cfg.Rollouts == nil {
				return proto.Rollout{}, off
			}
			return cfg.Rollouts.Start(ctx, spec)
		})},
		{proto.APIRolloutList, handle(cfg, func(ctx context.Context, _ proto.ListRequest) ([]proto.Rollout, error) {
			if cfg.Rollouts == nil {
				return nil, off
			}
			rs, err := cfg.Rollouts.List(ctx)
			if site, ok := visibleSite(ctx); ok {
				rs = slices.DeleteFunc(rs, func(r proto.Rollout) bool {
					return slices.ContainsFunc(r.Hosts, func(h proto.RolloutHost) bool { return h.Site != site })
				})
			}
			return rs, err
		})},
		{proto.APIRolloutGet, handle(cfg, func(ctx context.Context, r proto.NameRequest) (proto.Rollout, error) {
			if cfg.Rollouts == nil {
				return proto.Rollout{}, off
			}
			return cfg.Rollouts.Get(ctx, r.Name)
		})},
		{proto.APIRolloutPause, act(rollout.ActionPause)},
		{proto.APIRolloutResume, act(rollout.ActionResume)},
		{proto.APIRolloutAbort, act(rollout.ActionAbort)},
		{proto.APIRolloutRollback, act(rollout.ActionRollback)},
	}
}

// callerName names the request's caller for a rollout's reason.
func callerName(ctx context.Context) string {
	if id, ok := ctx.Value(callerKey{}).(auth.Identity); ok {
		return id.Name
	}
	return "anonymous"
}

// callerKey holds, in a request's context, the identity the guard admitted.
type callerKey struct{}

// visibleSite is the one site the request's caller may see, when it is
// confined to one (a site admin): listings show only that site.
func visibleSite(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(callerKey{}).(auth.Identity)
	if !ok {
		return "", false // no guard: authentication is off
	}
	return auth.VisibleSite(id)
}

// onlyVisible drops the items of other sites than the caller's, when it is
// confined to one.
func onlyVisible[T any](ctx context.Context, items []T, siteOf func(T) string) []T {
	site, ok := visibleSite(ctx)
	if !ok {
		return items
	}
	return slices.DeleteFunc(items, func(x T) bool { return siteOf(x) != site })
}

// caller is who makes a request: a NATS request's server-stamped
// Nats-Request-Info header, or (Local) an identity the web panel
// authenticated itself.
type caller struct {
	info  string
	local *auth.Identity
}

// call serves one request of one endpoint: identify, authorize, check the
// audit log's room, decode, call the service, audit. The NATS responder and
// Local share it, so a change from the web panel is checked and audited
// exactly as one from the CLI.
type call func(ctx context.Context, c caller, endpoint string, data []byte) (any, error)

// handle adapts a typed service call to a call: decode, call, audit.
func handle[Req, Resp any](cfg Config, fn func(context.Context, Req) (Resp, error)) call {
	return func(ctx context.Context, c caller, endpoint string, data []byte) (any, error) {
		who := auth.Identity{Name: "anonymous"}
		if c.local != nil {
			who = *c.local
		}
		if cfg.Guard != nil {
			var err error
			if c.local != nil {
				err = cfg.Guard.Authorize(ctx, who, endpoint, data)
			} else {
				who, err = cfg.Guard.Check(ctx, c.info, endpoint, data)
			}
			if err != nil {
				// Refusals are audited, reads included: probing is worth seeing.
				cfg.audit(ctx, who, endpoint, data, err)
				return nil, err
			}
			ctx = context.WithValue(ctx, callerKey{}, who)
			if site, ok := auth.VisibleSite(who); ok {
				// The guard checked the host's site; the service checks it
				// again under the write's compare-and-set.
				ctx = service.ConfineToSite(ctx, site)
			}
		}
		// A change that could not be audited is not made: the AUDIT stream
		// refuses records when full (it never drops old ones), so check for
		// room first.
		if !auth.IsRead(endpoint) && !auditExempt(endpoint) && cfg.Audit != nil && cfg.Audit.Full(ctx) {
			cfg.Audit.RefuseFull(endpoint, who.Name)
			return nil, fmt.Errorf("%w: %s refused until there is room (an admin raises the AUDIT stream's max_bytes or moves old records out)", audit.ErrFull, endpoint)
		}
		var req Req
		var resp Resp
		var err error
		if len(data) > 0 {
			if uErr := json.Unmarshal(data, &req); uErr != nil {
				err = fmt.Errorf("%w: malformed request: %v", service.ErrInvalid, uErr)
			}
		}
		if err == nil {
			resp, err = fn(ctx, req)
		}
		if !auth.IsRead(endpoint) {
			cfg.audit(ctx, who, endpoint, data, err)
		}
		if err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// serveMicro adapts a call to a micro handler.
func serveMicro(cfg Config, c call) micro.HandlerFunc {
	return func(r micro.Request) {
		start := time.Now()
		endpoint := strings.TrimPrefix(r.Subject(), proto.APIPrefix+".")
		limit := cfg.Timeout
		if proto.BulkEndpoint(endpoint) {
			limit = cfg.BulkTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		resp, err := c(ctx, caller{info: r.Headers().Get(auth.HeaderRequestInfo)}, endpoint, r.Data())
		respond(cfg, r, resp, err)
		cfg.Metrics.observe(endpoint, err, start)
	}
}

// audit records a request's outcome; a failure to record is logged, since
// the change itself is already done (or refused) by then.
func (cfg Config) audit(ctx context.Context, who auth.Identity, endpoint string, body []byte, err error) {
	if cfg.Audit == nil {
		return
	}
	if err != nil && isCallback(endpoint) && (who.Role == auth.RoleEdge || cfg.Guard == nil) {
		// Anyone on a boot network can make an edge relay a callback: one
		// record per refusal would let them fill the audit log. Count them.
		// A person's credential (or an unknown one) calling these endpoints
		// is no relay: its refusal is audited like any other.
		cfg.Audit.CountCallbackRefusal(endpoint)
		return
	}
	rec := audit.Record{Who: who.Name, Role: string(who.Role), Site: who.Site, Key: who.PublicKey, Action: endpoint, Outcome: audit.Accepted}
	if rec.Who == "" {
		rec.Who = "unknown" // no identity on the request: refused, and worth seeing
	}
	rec.SetRequest(body)
	if err != nil {
		rec.Outcome, rec.Error = audit.Refused, errorLine(err)
	}
	if aErr := cfg.Audit.Record(ctx, rec); aErr != nil {
		cfg.Logger.Warn("audit record not stored", "action", endpoint, "who", who.Name, "err", aErr)
	}
}

// enrolEndpoints serve edge/user add and revoke. Who may call them is the
// guard's business like any change: admins only.
func enrolEndpoints(cfg Config) []endpoint {
	off := fmt.Errorf("%w: authentication is off: start the coordinator with --auth", service.ErrInvalid)
	enrol := func(role auth.Role) func(context.Context, auth.EnrolRequest) (auth.EnrolReply, error) {
		return func(ctx context.Context, r auth.EnrolRequest) (auth.EnrolReply, error) {
			if cfg.Enrol == nil {
				return auth.EnrolReply{}, off
			}
			if role == auth.RoleEdge {
				r.Role = auth.RoleEdge
			} else if r.Role == auth.RoleEdge {
				return auth.EnrolReply{}, fmt.Errorf("%w: enrol edges with `fleetboot edge add`", service.ErrInvalid)
			}
			return cfg.Enrol.Enrol(ctx, r)
		}
	}
	revoke := func(edge bool) func(context.Context, proto.NameRequest) ([]auth.Identity, error) {
		return func(ctx context.Context, r proto.NameRequest) ([]auth.Identity, error) {
			if cfg.Enrol == nil {
				return nil, off
			}
			return cfg.Enrol.Revoke(ctx, r.Name, edge)
		}
	}
	return []endpoint{
		{auth.APIEdgeAdd, handle(cfg, enrol(auth.RoleEdge))},
		{auth.APIUserAdd, handle(cfg, enrol(auth.RoleViewer))},
		{auth.APIEdgeRevoke, handle(cfg, revoke(true))},
		{auth.APIUserRevoke, handle(cfg, revoke(false))},
	}
}

func respond(cfg Config, r micro.Request, data any, err error) {
	rep := proto.Reply{V: proto.Version}
	if err != nil {
		rep.Error = errorLine(err)
		code := codeOf(err)
		cfg.Logger.Info("api request refused", "subject", r.Subject(), "code", code, "err", rep.Error)
		body, _ := json.Marshal(rep)
		_ = r.Error(code, rep.Error, body)
		return
	}
	raw, mErr := json.Marshal(data)
	if mErr != nil {
		rep.Error = "internal: " + mErr.Error()
	} else {
		rep.Data = raw
	}
	body, _ := json.Marshal(rep)
	_ = r.Respond(body)
}

// codeOf is the code a request's outcome answers with: "200" for nil.
func codeOf(err error) string {
	switch {
	case err == nil:
		return "200"
	case errors.Is(err, service.ErrInvalid):
		return "400"
	case errors.Is(err, service.ErrNotFound):
		return "404"
	case errors.Is(err, service.ErrConflict):
		return "409"
	case errors.Is(err, auth.ErrDenied):
		return "403"
	case errors.Is(err, audit.ErrFull):
		return "503"
	}
	return "500"
}

// errorLine turns a wrapped error into the one line the CLI prints: the
// sentinel's word is dropped where the message already says what went wrong.
func errorLine(err error) string {
	msg := err.Error()
	for _, s := range []error{service.ErrInvalid, service.ErrConflict} {
		p := s.Error() + ": "
		if len(msg) > len(p) && msg[:len(p)] == p {
			return msg[len(p):]
		}
	}
	return msg
}

// semver makes a build version acceptable to micro, which insists on semver.
func semver(v string) string {
	if len(v) > 0 && v[0] == 'v' {
		v = v[1:]
	}
	var a, b, c int
	if n, _ := fmt.Sscanf(v, "%d.%d.%d", &a, &b, &c); n == 3 {
		return fmt.Sprintf("%d.%d.%d", a, b, c)
	}
	return "0.0.0"
}

// Local serves API requests in-process for the web panel, on behalf of a
// person it authenticated: the same guard, confinement, audit and service
// calls as a request over NATS.
type Local struct {
	cfg   Config
	calls map[string]call
}

// NewLocal builds the in-process API over cfg (as Start would serve it).
func NewLocal(cfg Config) *Local {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BulkTimeout == 0 {
		cfg.BulkTimeout = proto.BulkRequestTimeout
	}
	l := &Local{cfg: cfg, calls: map[string]call{}}
	for _, ep := range endpoints(cfg) {
		l.calls[ep.name] = ep.h
	}
	return l
}

// Call makes request req to endpoint (relative to proto.APIPrefix, e.g.
// proto.APIHostSet) as who, and decodes the answer into resp (if not nil).
// Errors wrap the service's and auth's sentinels (ErrInvalid, ErrDenied, …).
func (l *Local) Call(ctx context.Context, who auth.Identity, endpoint string, req, resp any) error {
	c, ok := l.calls[endpoint]
	if !ok {
		return fmt.Errorf("api: no endpoint %s", endpoint)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	out, err := c(ctx, caller{local: &who}, endpoint, data)
	l.cfg.Metrics.observe(endpoint, err, start)
	if err != nil || resp == nil {
		return err
	}
	// Round-trip through JSON, as a NATS client would decode it: the
	// caller gets its own copy whatever the service returned.
	raw, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return json.Unmarshal(raw, resp)
}
