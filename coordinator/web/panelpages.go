package web

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
)

// routePages adds the catalogue pages: images, sites, discovered machines,
// policies, templates and the audit log. Each reads and changes through
// the API as the logged-in person, like the hosts pages.
func (h *Handler) routePages() {
	for _, r := range []struct {
		pattern string
		fn      func(http.ResponseWriter, *http.Request, who)
	}{
		{"GET /images", h.images},
		{"GET /images/{name}", h.image},
		{"POST /images/{name}/rollback", h.imageRollback},
		{"GET /sites", h.sites},
		{"GET /sites/{name}", h.site},
		{"GET /discovered", h.discovered},
		{"POST /discovered", h.claim},
		{"GET /policies", h.policies},
		{"GET /policies/{name}", h.policy},
		{"POST /policies/{name}/enable", h.policyEnable},
		{"GET /templates", h.templates},
		{"GET /templates/{name}", h.template},
		{"GET /audit", h.auditPage},
	} {
		h.mux.HandleFunc(r.pattern, h.authed(r.fn))
	}
}

// pageFuncs are the template functions of these pages.
func pageFuncs() template.FuncMap {
	return template.FuncMap{
		// pct shows a ratio (0…1) as a percentage: 87%.
		"pct": func(f float64) string {
			if math.IsNaN(f) {
				return "–"
			}
			return fmt.Sprintf("%.0f%%", f*100)
		},
		// gib shows a size given in GiB (as facts report them) in human units.
		"gib": func(f float64) string { return humanBytes(int64(f * (1 << 30))) },
		// short is the start of a digest: enough to tell them apart.
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12] + "…"
			}
			return s
		},
		"imageSize": imageSize,
		"len64":     func(s string) int64 { return int64(len(s)) },
		"secs":      func(n int) string { return humanDuration(time.Duration(n) * time.Second) },
		"isAdmin":   func(id proto.Identity) bool { return id.Role == auth.RoleAdmin },
	}
}

// isAdmin tells whether u may change fleet-wide things (images, policies):
// the guard refuses site admins and viewers there, so no control is shown.
func (u who) isAdmin() bool { return u.id.Role == auth.RoleAdmin }

// call makes an API request as u.
func (h *Handler) call(r *http.Request, u who, endpoint string, req, resp any) error {
	return h.cfg.API.Call(r.Context(), u.id, endpoint, req, resp)
}

// countHosts counts the hosts u may see (her site's, for a site admin)
// by key(host): one pass over the index when there is one (no copy of the
// fleet), else host.list through the API.
func (h *Handler) countHosts(r *http.Request, u who, key func(proto.Host) string) (map[string]int, error) {
	counts := map[string]int{}
	if h.cfg.Hosts == nil {
		var all []proto.Host
		if err := h.call(r, u, proto.APIHostList, proto.ListRequest{V: proto.Version}, &all); err != nil {
			return nil, err
		}
		for _, host := range all {
			counts[key(host)]++
		}
		return counts, nil
	}
	own, confined := auth.VisibleSite(u.id)
	all := h.cfg.Hosts.Hosts()
	for i := range all {
		if confined && all[i].Site != own {
			continue
		}
		counts[key(all[i])]++
	}
	return counts, nil
}

// renderStatus renders a page with a status other than 200.
func (h *Handler) renderStatus(w http.ResponseWriter, code int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	h.render(w, name, data)
}

// badRequest answers a malformed path or query with 400 and one line.
func badRequest(w http.ResponseWriter, err error) {
	http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
}

// imageSize is the size of an image's files.
func imageSize(im proto.Image) int64 {
	var n int64
	for _, a := range im.Artifacts {
		n += a.Size
	}
	return n
}
