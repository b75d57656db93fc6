package web

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/fleetboot/fleetboot/proto"
)

// maxBulk bounds one bulk change: larger selections are refused with a
// clear line rather than left half done by a timeout.
const maxBulk = 5000

// bulkChange is what a bulk form sets on every selected host ("" keeps
// the field as it is).
type bulkChange struct{ Image, Loader, Site string }

func (c bulkChange) empty() bool { return c.Image == "" && c.Loader == "" && c.Site == "" }

// request is the host set request the change makes for host.
func (c bulkChange) request(mac string) proto.HostSetRequest {
	r := proto.HostSetRequest{V: proto.Version, MAC: mac}
	if c.Image != "" {
		r.Image = &c.Image
	}
	if c.Loader != "" {
		l := c.Loader
		if l == "-" {
			l = "" // back to the site's
		}
		r.Loader = &l
	}
	if c.Site != "" {
		r.Site = &c.Site
	}
	return r
}

// undo is the request that puts back what c changed on host.
func (c bulkChange) undo(h proto.Host) proto.HostSetRequest {
	r := proto.HostSetRequest{V: proto.Version, MAC: h.MAC}
	if c.Image != "" {
		r.Image = &h.Image
	}
	if c.Loader != "" {
		r.Loader = &h.Loader
	}
	if c.Site != "" {
		r.Site = &h.Site
	}
	return r
}

// bulk assigns an image, loader or site to the hosts selected on the hosts
// page (mac=…, repeated) or to every host matching its search (all=1 with
// the search's fields prefixed "in_"). The first POST answers a
// confirmation page saying how many machines it touches; the POST from
// that page (confirm=1) makes the change: each host through the API's host
// set, as the CLI would, every one checked before any is changed, and the
// ones already changed put back if one fails, so it is all or nothing.
func (h *Handler) bulk(w http.ResponseWriter, r *http.Request, u who) {
	ctx := r.Context()
	ch := bulkChange{Image: r.PostFormValue("image"), Loader: r.PostFormValue("loader"), Site: r.PostFormValue("site")}
	q, err := parseHostQuery(url.Values{"q": {r.PostFormValue("in_q")}, "site": {r.PostFormValue("in_site")}, "image": {r.PostFormValue("in_image")}, "state": {r.PostFormValue("in_state")}, "labels": {r.PostFormValue("in_labels")}})
	if err != nil {
		http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
		return
	}
	var hosts []proto.Host
	if r.PostFormValue("all") == "1" {
		found, _, err := h.find(r, u, q, 0, -1)
		if err != nil {
			h.fail(w, err)
			return
		}
		hosts = found
	} else {
		for _, m := range r.PostForm["mac"] {
			var host proto.Host
			if err := h.cfg.API.Call(ctx, u.id, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: m}, &host); err != nil {
				h.fail(w, err)
				return
			}
			hosts = append(hosts, host)
			if len(hosts) > maxBulk {
				break
			}
		}
	}
	var problem string
	switch {
	case len(hosts) == 0:
		problem = "No host selected: tick some hosts, or choose every host matching the search."
	case len(hosts) > maxBulk:
		problem = fmt.Sprintf("%d hosts selected: at most %d at once; narrow the search.", len(hosts), maxBulk)
	case ch.empty():
		problem = "Choose an image, a loader or a site to assign."
	}
	if problem == "" {
		problem = h.checkChange(r, u, ch)
	}
	data := map[string]any{"Page": u.page("change hosts"), "Change": ch, "Hosts": hosts, "Count": len(hosts), "Problem": problem,
		"All": r.PostFormValue("all") == "1", "In": q}
	if len(hosts) > 20 {
		data["Shown"] = hosts[:20]
	} else {
		data["Shown"] = hosts
	}
	if problem != "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnprocessableEntity)
		h.render(w, "bulk.html", data)
		return
	}
	if r.PostFormValue("confirm") != "1" {
		h.render(w, "bulk.html", data)
		return
	}
	for i, host := range hosts {
		err := h.cfg.API.Call(ctx, u.id, proto.APIHostSet, ch.request(host.MAC), nil)
		if err == nil {
			continue
		}
		// Put back the ones already changed, newest first.
		undone := 0
		for j := i - 1; j >= 0; j-- {
			if uerr := h.cfg.API.Call(ctx, u.id, proto.APIHostSet, ch.undo(hosts[j]), nil); uerr != nil {
				h.cfg.Logger.Error("web panel: bulk change not undone on a host", "mac", hosts[j].MAC, "who", u.id.Name, "err", uerr)
				continue
			}
			undone++
		}
		data["Problem"] = fmt.Sprintf("Host %s refused the change: %v. Nothing changed: the %d host(s) changed before it were put back (%d of %d).", host.MAC, err, i, undone, i)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(statusOf(err))
		h.render(w, "bulk.html", data)
		return
	}
	h.cfg.Logger.Info("web panel: bulk change", "who", u.id.Name, "hosts", len(hosts), "image", ch.Image, "loader", ch.Loader, "site", ch.Site)
	data["Done"] = true
	h.render(w, "bulk.html", data)
}

// checkChange checks that what a bulk change names exists (the service
// checks each host again).
func (h *Handler) checkChange(r *http.Request, u who, ch bulkChange) string {
	for _, c := range []struct{ ep, name, what string }{
		{proto.APIImageGet, ch.Image, "image"}, {proto.APILoaderGet, ch.Loader, "loader"}, {proto.APISiteGet, ch.Site, "site"},
	} {
		if c.name == "" || c.name == "-" && c.what == "loader" {
			continue
		}
		if err := h.cfg.API.Call(r.Context(), u.id, c.ep, proto.NameRequest{V: proto.Version, Name: c.name}, nil); err != nil {
			return fmt.Sprintf("The %s %q: %v", c.what, c.name, err)
		}
	}
	return ""
}
