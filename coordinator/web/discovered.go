package web

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
)

// discRow is a discovered machine with its facts read.
type discRow struct {
	proto.Discovered
	F      proto.Facts
	Memory int64 // bytes
}

// claimForm is the discovered page's claim form: what was chosen and the
// error next to each field ("" = the form's top).
type claimForm struct {
	MACs   map[string]bool
	Image  string
	Site   string // "" = where each machine was discovered
	Labels string
	Errors map[string]string
	// Refused are the machines the service refused, with why.
	Refused []proto.ImportProblem
}

func (h *Handler) discoveredList(r *http.Request, u who, site string) ([]discRow, error) {
	var ds []proto.Discovered
	if err := h.call(r, u, proto.APIDiscoveredList, proto.ListRequest{V: proto.Version, Site: site}, &ds); err != nil {
		return nil, err
	}
	rows := make([]discRow, 0, len(ds))
	for _, d := range ds {
		row := discRow{Discovered: d}
		// A report that is no proto.Facts shows empty columns.
		if json.Unmarshal(d.Facts, &row.F) == nil {
			row.Memory = int64(row.F.MemoryGiB * (1 << 30))
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (h *Handler) discovered(w http.ResponseWriter, r *http.Request, u who) {
	site := r.URL.Query().Get("site")
	if site != "" {
		if err := proto.ValidSiteName(site); err != nil {
			badRequest(w, err)
			return
		}
	}
	h.renderDiscovered(w, r, u, http.StatusOK, site, claimForm{MACs: map[string]bool{}})
}

func (h *Handler) renderDiscovered(w http.ResponseWriter, r *http.Request, u who, code int, site string, f claimForm) {
	rows, err := h.discoveredList(r, u, site)
	if err != nil {
		h.fail(w, err)
		return
	}
	data := map[string]any{"Page": u.page("discovered"), "Machines": rows, "Site": site, "Form": f}
	if u.canEdit {
		if err := h.choices(r, u, data); err != nil {
			h.fail(w, err)
			return
		}
	}
	h.renderStatus(w, code, "discovered.html", data)
}

// claim makes hosts of the machines ticked on the discovered page, with
// an image (and a site and labels if given), as `fleetboot host import`
// would: one API request for them all. The first POST checks the form
// and answers a confirmation saying how many machines it claims; the
// POST from that page (confirm=1) asks the service to check every row
// (host.import with check) and, only if none is refused, to write them.
// Should a row be refused between the check and the write (another
// claim of the same machine), the hosts just created are removed again:
// all or nothing.
func (h *Handler) claim(w http.ResponseWriter, r *http.Request, u who) {
	site := r.PostFormValue("in_site") // the page's filter, kept on a re-render
	f := claimForm{MACs: map[string]bool{}, Image: r.PostFormValue("image"), Site: r.PostFormValue("site"),
		Labels: strings.TrimSpace(r.PostFormValue("labels")), Errors: map[string]string{}}
	var macs []string
	for _, m := range r.PostForm["mac"] {
		mac, err := proto.ParseMAC(m)
		if err != nil {
			f.Errors["mac"] = err.Error()
			continue
		}
		if !f.MACs[mac] {
			f.MACs[mac] = true
			macs = append(macs, mac)
		}
	}
	if !u.canEdit {
		// A viewer has no form; the API's guard refuses (and audits) hers.
		err := h.call(r, u, proto.APIHostImport, proto.HostImportRequest{V: proto.Version, Check: true}, nil)
		if err == nil {
			err = fmt.Errorf("%w: %s may not claim machines", auth.ErrDenied, u.id)
		}
		h.fail(w, err)
		return
	}
	labels, err := proto.ParseLabels(strings.Fields(f.Labels)...)
	if err != nil {
		f.Errors["labels"] = err.Error()
	}
	// The service checks everything again; these checks put the message
	// next to the field it concerns, before any change.
	waiting, err := h.discoveredList(r, u, "")
	if err != nil {
		h.fail(w, err)
		return
	}
	bySite := map[string]string{}
	for _, d := range waiting {
		bySite[d.MAC] = d.Site
	}
	switch {
	case len(macs) == 0 && f.Errors["mac"] == "":
		f.Errors["mac"] = "Tick the machines to claim."
	case len(macs) > proto.MaxImportRows:
		f.Errors["mac"] = fmt.Sprintf("%d machines ticked: at most %d at once.", len(macs), proto.MaxImportRows)
	}
	var gone []string
	for _, m := range macs {
		if _, ok := bySite[m]; !ok {
			gone = append(gone, m)
		}
	}
	if len(gone) > 0 {
		f.Errors["mac"] = fmt.Sprintf("%s no longer waiting (claimed or gone meanwhile): reload the page.", strings.Join(gone, ", "))
	}
	if f.Image == "" {
		f.Errors["image"] = "Choose the image the machines boot."
	} else if err := h.call(r, u, proto.APIImageGet, proto.NameRequest{V: proto.Version, Name: f.Image}, nil); err != nil {
		f.Errors["image"] = err.Error()
	}
	if f.Site != "" {
		if err := h.call(r, u, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: f.Site}, nil); err != nil {
			f.Errors["site"] = err.Error()
		}
	}
	if len(f.Errors) > 0 {
		h.renderDiscovered(w, r, u, http.StatusUnprocessableEntity, site, f)
		return
	}
	rows := make([]proto.ImportRow, len(macs))
	for i, m := range macs {
		s := f.Site
		if s == "" {
			s = bySite[m]
		}
		rows[i] = proto.ImportRow{Line: i + 1, MAC: m, Site: s, Image: f.Image, Labels: maps.Clone(labels)}
	}
	data := map[string]any{"Page": u.page("claim machines"), "Form": f, "MACs": macs, "Count": len(macs), "InSite": site}
	if r.PostFormValue("confirm") != "1" {
		h.render(w, "claim.html", data)
		return
	}
	req := proto.HostImportRequest{V: proto.Version, Rows: rows, Check: true}
	var check proto.HostImportReply
	if err := h.call(r, u, proto.APIHostImport, req, &check); err != nil {
		h.failClaim(w, r, u, site, f, err)
		return
	}
	if len(check.Refused) > 0 || check.Changed+check.Unchanged > 0 {
		f.Refused = check.Refused
		if n := check.Changed + check.Unchanged; n > 0 {
			f.Errors[""] = fmt.Sprintf("%d of the machines became hosts meanwhile: reload the page.", n)
		} else {
			f.Errors[""] = fmt.Sprintf("%d machine(s) refused: nothing claimed.", len(check.Refused))
		}
		h.renderDiscovered(w, r, u, http.StatusUnprocessableEntity, site, f)
		return
	}
	req.Check = false
	var rep proto.HostImportReply
	if err := h.call(r, u, proto.APIHostImport, req, &rep); err != nil {
		h.failClaim(w, r, u, site, f, err)
		return
	}
	if len(rep.Refused) > 0 {
		refused := map[string]bool{}
		for _, p := range rep.Refused {
			refused[p.MAC] = true
		}
		undone := 0
		for _, m := range macs {
			if refused[m] {
				continue
			}
			if err := h.call(r, u, proto.APIHostRm, proto.MACRequest{V: proto.Version, MAC: m}, nil); err != nil {
				h.cfg.Logger.Error("web panel: claimed host not removed after a refused claim", "mac", m, "who", u.id.Name, "err", err)
				continue
			}
			undone++
		}
		f.Refused = rep.Refused
		f.Errors[""] = fmt.Sprintf("%d machine(s) refused while claiming: nothing claimed (%d host(s) created were removed again; they report again and wait).", len(rep.Refused), undone)
		h.renderDiscovered(w, r, u, http.StatusConflict, site, f)
		return
	}
	h.cfg.Logger.Info("web panel: machines claimed", "who", u.id.Name, "machines", len(macs), "image", f.Image, "site", f.Site)
	data["Done"] = true
	h.render(w, "claim.html", data)
}

// failClaim answers an API error of a claim: a refusal of the caller
// (403, 503…) as such, a refusal of what she asked next to the fields.
func (h *Handler) failClaim(w http.ResponseWriter, r *http.Request, u who, site string, f claimForm, err error) {
	code := statusOf(err)
	if code != http.StatusBadRequest && code != http.StatusConflict && code != http.StatusNotFound {
		h.fail(w, err)
		return
	}
	f.Errors[fieldOf(err.Error())] = err.Error()
	h.renderDiscovered(w, r, u, http.StatusUnprocessableEntity, site, f)
}
