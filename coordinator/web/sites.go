package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// BootCounts counts boots started per site and hour (bootstats.Tracker).
type BootCounts interface {
	// BootsPerHour returns the last 24 hours' counts up to now, oldest first.
	BootsPerHour(site string, now time.Time) []int
}

// edgeRow is an edge as the site pages show it.
type edgeRow struct {
	proto.EdgeView
	Age time.Duration // since its last heartbeat
	Hit *spark        // its hit ratio over the day, when kept
}

// siteView is a site with what the site pages show about it.
type siteView struct {
	proto.Site
	Hosts, Stale int
	Edges        []edgeRow
	Boots        *spark // boots per hour over the day, when counted
	BootsDay     int
}

// siteViews joins sites with their edges, hosts and boot counts.
func (h *Handler) siteViews(r *http.Request, u who, sites []proto.Site) ([]siteView, error) {
	var edges []proto.EdgeView
	if err := h.call(r, u, proto.APIEdgeList, proto.ListRequest{V: proto.Version}, &edges); err != nil {
		return nil, err
	}
	hosts, err := h.countHosts(r, u, func(host proto.Host) string { return host.Site })
	if err != nil {
		return nil, err
	}
	now := h.cfg.Now()
	slices.SortFunc(edges, func(a, b proto.EdgeView) int { return cmp.Compare(a.Name, b.Name) })
	out := make([]siteView, 0, len(sites))
	for _, s := range sites {
		v := siteView{Site: s, Hosts: hosts[s.Name]}
		for _, e := range edges {
			if e.Site != s.Name {
				continue
			}
			row := edgeRow{EdgeView: e, Age: now.Sub(e.Time)}
			if hr := h.cfg.EdgeHistory.HitRatios(e.Site, e.Name, now); hr != nil {
				sp := lineSpark(hr, fmt.Sprintf("cache hit ratio of edge %s over the last 24 h (one point per 10 min), now %.0f%%", e.Name, e.HitRatio*100))
				row.Hit = &sp
			}
			if e.Stale {
				v.Stale++
			}
			v.Edges = append(v.Edges, row)
		}
		if h.cfg.Boots != nil {
			counts := h.cfg.Boots.BootsPerHour(s.Name, now)
			peak := 0
			for _, c := range counts {
				v.BootsDay += c
				peak = max(peak, c)
			}
			sp := barSpark(counts, fmt.Sprintf("boots per hour at %s over the last 24 h: %d in all, at most %d in an hour", s.Name, v.BootsDay, peak))
			v.Boots = &sp
		}
		out = append(out, v)
	}
	return out, nil
}

func (h *Handler) sites(w http.ResponseWriter, r *http.Request, u who) {
	var sites []proto.Site
	if err := h.call(r, u, proto.APISiteList, proto.ListRequest{V: proto.Version}, &sites); err != nil {
		h.fail(w, err)
		return
	}
	slices.SortFunc(sites, func(a, b proto.Site) int { return cmp.Compare(a.Name, b.Name) })
	views, err := h.siteViews(r, u, sites)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.render(w, "sites.html", map[string]any{"Page": u.page("sites"), "Sites": views})
}

func (h *Handler) site(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidSiteName(name); err != nil {
		badRequest(w, err)
		return
	}
	var s proto.Site
	if err := h.call(r, u, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: name}, &s); err != nil {
		h.fail(w, err)
		return
	}
	views, err := h.siteViews(r, u, []proto.Site{s})
	if err != nil {
		h.fail(w, err)
		return
	}
	var waiting []proto.Discovered
	if s.Unknown == proto.UnknownDiscover {
		if err := h.call(r, u, proto.APIDiscoveredList, proto.ListRequest{V: proto.Version, Site: name}, &waiting); err != nil {
			h.fail(w, err)
			return
		}
	}
	h.render(w, "site.html", map[string]any{"Page": u.page("site " + name), "Site": views[0], "Waiting": len(waiting),
		"Kept": h.cfg.EdgeHistory != nil, "Counted": h.cfg.Boots != nil})
}
