package web

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

type siteRow struct {
	proto.Site
	Hosts int
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, u who) {
	ctx := r.Context()
	var sites []proto.Site
	var edges []proto.EdgeView
	for _, c := range []struct {
		ep   string
		resp any
	}{{proto.APISiteList, &sites}, {proto.APIEdgeList, &edges}} {
		if err := h.cfg.API.Call(ctx, u.id, c.ep, proto.ListRequest{V: proto.Version}, c.resp); err != nil {
			h.fail(w, err)
			return
		}
	}
	_, nHosts, err := h.find(r, u, hostQuery{Sort: "mac"}, 0, 0)
	if err != nil {
		h.fail(w, err)
		return
	}
	rows := make([]siteRow, 0, len(sites))
	for _, s := range sites {
		_, n, err := h.find(r, u, hostQuery{Site: s.Name, Sort: "mac"}, 0, 0)
		if err != nil {
			h.fail(w, err)
			return
		}
		rows = append(rows, siteRow{s, n})
	}
	h.render(w, "overview.html", map[string]any{"Page": u.page("overview"), "Sites": rows, "Edges": edges, "Hosts": nHosts})
}

// hostQuery is the hosts page's search, sort and page.
type hostQuery struct {
	Q, Site, Image, State, Sort string
	// Labels is a selector over labels and host fields (labels.rack=r1,site=lab),
	// as `host set --selector` takes; sel is it parsed.
	Labels string
	sel    *selector.Selector
	Page   int
}

const perPage = 50

// parseHostQuery reads a search; a selector that does not parse is an
// error.
func parseHostQuery(v url.Values) (hostQuery, error) {
	q := hostQuery{Q: strings.TrimSpace(v.Get("q")), Site: v.Get("site"), Image: v.Get("image"), State: v.Get("state"), Sort: v.Get("sort"), Labels: strings.TrimSpace(v.Get("labels"))}
	if q.Labels != "" {
		sel, err := selector.Parse(q.Labels)
		if err != nil {
			return q, fmt.Errorf("labels: %w", err)
		}
		q.sel = &sel
	}
	q.Page, _ = strconv.Atoi(v.Get("page"))
	if q.Page < 1 {
		q.Page = 1
	}
	switch q.Sort {
	case "mac", "hostname", "site", "image", "state", "updated":
	default:
		q.Sort = "mac"
	}
	return q, nil
}

// values is the query string of q on page p (for links).
func (q hostQuery) values(p int) string {
	v := url.Values{}
	for k, s := range map[string]string{"q": q.Q, "site": q.Site, "image": q.Image, "state": q.State, "sort": q.Sort, "labels": q.Labels} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if p > 1 {
		v.Set("page", strconv.Itoa(p))
	}
	return v.Encode()
}

// match tells whether a host is found by the search: q matches a MAC (any
// form: 52-54-00…, 525400…), a hostname or an IP by substring.
func (q hostQuery) match(h proto.Host) bool {
	if q.Image != "" && h.Image != q.Image || q.State != "" && h.State != q.State {
		return false
	}
	if q.sel != nil && !q.sel.Match(selector.Subject{Labels: h.Labels, Fields: map[string]string{
		"mac": h.MAC, "site": h.Site, "image": h.Image, "state": h.State, "hostname": h.Hostname, "ip": h.IP, "loader": h.Loader}}) {
		return false
	}
	if q.Q == "" {
		return true
	}
	s := strings.ToLower(q.Q)
	if hex := macDigits(s); len(hex) >= 4 {
		for _, m := range h.MACs() {
			if strings.Contains(macDigits(m), hex) {
				return true
			}
		}
	}
	return strings.Contains(strings.ToLower(h.Hostname), s) || strings.Contains(h.IP, s) || strings.Contains(h.MAC, s)
}

// macDigits keeps a string's hex digits if it is made only of them and
// MAC separators ("" otherwise).
func macDigits(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
			b.WriteRune(c)
		case c == ':' || c == '-' || c == '.':
		default:
			return ""
		}
	}
	return b.String()
}

func (q hostQuery) less(a, b proto.Host) int {
	var c int
	switch q.Sort {
	case "hostname":
		c = cmp.Compare(a.Hostname, b.Hostname)
	case "site":
		c = cmp.Compare(a.Site, b.Site)
	case "image":
		c = cmp.Compare(a.Image, b.Image)
	case "state":
		c = cmp.Compare(a.State, b.State)
	case "updated":
		c = b.Updated.Compare(a.Updated) // newest first
	}
	if c == 0 {
		c = cmp.Compare(a.MAC, b.MAC)
	}
	return c
}

// find returns n hosts matching q from the from-th on (n < 0: all of
// them), sorted, and how many match in all. From the index when there is
// one (confined to the person's site as host.list would be: reads are not
// audited, so nothing is lost), else through the API's host.list. In the
// index's order (by MAC) only the rows shown are copied: at 100 000 hosts
// a page costs one pass over them, no sort and no copy of the fleet.
// TODO(labels): search by label once the policy branch's selectors land.
func (h *Handler) find(r *http.Request, u who, q hostQuery, from, n int) ([]proto.Host, int, error) {
	var all []proto.Host
	site := q.Site
	if h.cfg.Hosts != nil {
		if own, ok := auth.VisibleSite(u.id); ok {
			if site != "" && site != own {
				return nil, 0, nil
			}
			site = own
		}
		all = h.cfg.Hosts.Hosts()
	} else if err := h.cfg.API.Call(r.Context(), u.id, proto.APIHostList, proto.ListRequest{V: proto.Version, Site: q.Site}, &all); err != nil {
		return nil, 0, err
	}
	ordered := q.Sort == "mac" && h.cfg.Hosts != nil
	var found []proto.Host
	total := 0
	for i := range all {
		host := &all[i]
		if site != "" && host.Site != site || !q.match(*host) {
			continue
		}
		if !ordered || total >= from && (n < 0 || total < from+n) {
			found = append(found, *host)
		}
		total++
	}
	if ordered {
		return found, total, nil
	}
	slices.SortFunc(found, q.less)
	if from >= len(found) {
		return nil, total, nil
	}
	if n >= 0 && from+n < len(found) {
		return found[from : from+n], total, nil
	}
	return found[from:], total, nil
}

func (h *Handler) hosts(w http.ResponseWriter, r *http.Request, u who) {
	q, err := parseHostQuery(r.URL.Query())
	if err != nil {
		http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
		return
	}
	if q.Site != "" {
		if err := proto.ValidSiteName(q.Site); err != nil {
			http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	shown, total, err := h.find(r, u, q, (q.Page-1)*perPage, perPage)
	if err != nil {
		h.fail(w, err)
		return
	}
	pages := max(1, (total+perPage-1)/perPage)
	if q.Page > pages { // past the end: show the last page
		q.Page = pages
		if shown, total, err = h.find(r, u, q, (q.Page-1)*perPage, perPage); err != nil {
			h.fail(w, err)
			return
		}
	}
	from := (q.Page - 1) * perPage
	data := map[string]any{"Page": u.page("hosts"), "Q": q, "Hosts": shown, "Total": total, "Pages": pages, "From": from + 1}
	if q.Page > 1 {
		data["Prev"] = q.values(q.Page - 1)
	}
	if q.Page < pages {
		data["Next"] = q.values(q.Page + 1)
	}
	data["Query"] = q.values(0)
	if u.canEdit {
		if err := h.choices(r, u, data); err != nil {
			h.fail(w, err)
			return
		}
	}
	h.render(w, "hosts.html", data)
}

// choices puts the images, loaders and sites a form offers into data.
func (h *Handler) choices(r *http.Request, u who, data map[string]any) error {
	var images []proto.Image
	var loaders []proto.Loader
	var sites []proto.Site
	for _, c := range []struct {
		ep   string
		resp any
	}{{proto.APIImageList, &images}, {proto.APILoaderList, &loaders}, {proto.APISiteList, &sites}} {
		if err := h.cfg.API.Call(r.Context(), u.id, c.ep, proto.ListRequest{V: proto.Version}, c.resp); err != nil {
			return err
		}
	}
	data["Images"], data["Loaders"], data["Sites"] = images, loaders, sites
	return nil
}

// hostForm is the host page's form: the values shown and the error next to
// each field.
type hostForm struct {
	Image, Loader, IP, Hostname, State string
	Once                               bool
	Errors                             map[string]string
	Saved                              bool
}

func formOf(host proto.Host) hostForm {
	return hostForm{Image: host.Image, Loader: host.Loader, IP: host.IP, Hostname: host.Hostname, State: host.State, Once: host.Once}
}

// pathHost reads the host the path names as u may see it; on false the
// answer (a bad MAC, a refusal, no such host) is written.
func (h *Handler) pathHost(w http.ResponseWriter, r *http.Request, u who) (proto.Host, bool) {
	mac, err := proto.ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
		return proto.Host{}, false
	}
	var host proto.Host
	if err := h.cfg.API.Call(r.Context(), u.id, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: mac}, &host); err != nil {
		h.fail(w, err)
		return proto.Host{}, false
	}
	return host, true
}

func (h *Handler) host(w http.ResponseWriter, r *http.Request, u who) {
	host, ok := h.pathHost(w, r, u)
	if !ok {
		return
	}
	f := formOf(host)
	f.Saved = r.URL.Query().Get("saved") == "1"
	h.renderHost(w, r, u, http.StatusOK, host, f)
}

func (h *Handler) renderHost(w http.ResponseWriter, r *http.Request, u who, code int, host proto.Host, f hostForm) {
	now := h.cfg.Now()
	evs, err := h.cfg.Events.Events(r.Context(), host.MACs(), now.Add(-24*time.Hour))
	if err != nil {
		h.fail(w, err)
		return
	}
	data := timelineData(evs, now)
	data["Page"], data["Host"], data["Form"] = u.page(host.MAC), host, f
	if h.cfg.Live != nil {
		data["Stream"] = "/hosts/" + host.MAC + "/events/stream"
	}
	if u.canEdit {
		if err := h.choices(r, u, data); err != nil {
			h.fail(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	h.render(w, "host.html", data)
}

// hostSet changes one host from its page's form, as the CLI's host set.
func (h *Handler) hostSet(w http.ResponseWriter, r *http.Request, u who) {
	mac, err := proto.ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, "fleetboot: "+err.Error(), http.StatusBadRequest)
		return
	}
	var host proto.Host
	if err := h.cfg.API.Call(r.Context(), u.id, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: mac}, &host); err != nil {
		h.fail(w, err)
		return
	}
	f := hostForm{
		Image: r.PostFormValue("image"), Loader: r.PostFormValue("loader"), IP: strings.TrimSpace(r.PostFormValue("ip")),
		Hostname: strings.TrimSpace(r.PostFormValue("hostname")), State: r.PostFormValue("state"), Once: r.PostFormValue("once") == "on",
		Errors: map[string]string{},
	}
	// The service validates everything again; these checks only put the
	// message next to the field it concerns.
	if f.IP != "" && net.ParseIP(f.IP) == nil {
		f.Errors["ip"] = fmt.Sprintf("%q is not an IP address", f.IP)
	}
	if f.Hostname != "" {
		if err := proto.ValidHostname(f.Hostname); err != nil {
			f.Errors["hostname"] = err.Error()
		}
	}
	if f.State != proto.StateBoot && f.State != proto.StateLocal {
		f.Errors["state"] = "choose boot or local"
	}
	if len(f.Errors) == 0 {
		req := proto.HostSetRequest{V: proto.Version, MAC: host.MAC, Image: &f.Image, Loader: &f.Loader, IP: &f.IP, Hostname: &f.Hostname, State: &f.State, Once: &f.Once}
		err := h.cfg.API.Call(r.Context(), u.id, proto.APIHostSet, req, nil)
		if err == nil {
			http.Redirect(w, r, "/hosts/"+host.MAC+"?saved=1", http.StatusSeeOther)
			return
		}
		code := statusOf(err)
		if code != http.StatusBadRequest && code != http.StatusConflict && code != http.StatusNotFound {
			h.fail(w, err)
			return
		}
		f.Errors[fieldOf(err.Error())] = err.Error()
	}
	h.renderHost(w, r, u, http.StatusUnprocessableEntity, host, f)
}

// fieldOf guesses which form field a service error concerns, from its
// words, so the message stands next to that field ("" = the form's top).
func fieldOf(msg string) string {
	m := strings.ToLower(msg)
	for _, f := range []struct{ word, field string }{
		{"loader", "loader"}, {"image", "image"}, {"hostname", "hostname"}, {"ip ", "ip"}, {"address", "ip"}, {"subnet", "ip"}, {"reserv", "ip"}, {"state", "state"}, {"site", "site"},
	} {
		if strings.Contains(m, f.word) {
			return f.field
		}
	}
	return ""
}
