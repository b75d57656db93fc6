package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
)

// AuditLog reads the audit log (audit.Read on the AUDIT stream).
type AuditLog interface {
	// Read returns the records since a time, oldest first, at most limit
	// (the newest).
	Read(ctx context.Context, since time.Time, limit int) ([]audit.Record, error)
}

// auditLimit bounds the records one audit page searches: the newest of
// its window.
const auditLimit = 10_000

// auditWindows are the windows the audit page offers.
var auditWindows = []string{"1h", "24h", "168h", "720h"}

// auditRow is a record as the page shows it.
type auditRow struct {
	audit.Record
	Req string // the request, shortened
}

// auditPage shows who changed what, newest first, filtered by who. As
// with the CLI's `fleetboot audit`, admins and viewers may read it; a
// site admin's credentials cannot read the AUDIT stream, nor can she here
// (it holds every site's changes).
func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request, u who) {
	if _, confined := auth.VisibleSite(u.id); confined {
		h.cfg.Logger.Warn("web panel: audit log refused to a site admin", "who", u.id.Name)
		http.Error(w, fmt.Sprintf("fleetboot: %s may not read the audit log: it holds every site's changes (ask an admin)", u.id), http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	whoName := strings.TrimSpace(q.Get("who"))
	since := q.Get("since")
	if since == "" {
		since = "24h"
	}
	page, _ := strconv.Atoi(q.Get("page"))
	page = max(page, 1)
	data := map[string]any{"Page": u.page("audit"), "Who": whoName, "Since": since, "Windows": auditWindows, "Errors": map[string]string{}}
	if !slices.Contains(auditWindows, since) {
		data["Errors"] = map[string]string{"since": fmt.Sprintf("%q is not one of the windows offered", since)}
		h.renderStatus(w, http.StatusBadRequest, "audit.html", data)
		return
	}
	if h.cfg.Audit == nil {
		data["Off"] = true
		h.render(w, "audit.html", data)
		return
	}
	d, _ := time.ParseDuration(since)
	recs, err := h.cfg.Audit.Read(r.Context(), h.cfg.Now().Add(-d), auditLimit)
	if err != nil {
		h.fail(w, err)
		return
	}
	data["Capped"] = len(recs) >= auditLimit
	slices.Reverse(recs) // newest first
	if whoName != "" {
		recs = slices.DeleteFunc(recs, func(rec audit.Record) bool { return !strings.EqualFold(rec.Who, whoName) })
	}
	total := len(recs)
	pages := max(1, (total+perPage-1)/perPage)
	page = min(page, pages)
	from := (page - 1) * perPage
	shown := recs[from:min(from+perPage, total)]
	rows := make([]auditRow, len(shown))
	for i, rec := range shown {
		req := string(rec.Request)
		if len(req) > 160 {
			req = req[:160] + "…"
		}
		rows[i] = auditRow{Record: rec, Req: req}
	}
	link := func(p int) string {
		v := url.Values{"since": {since}}
		if whoName != "" {
			v.Set("who", whoName)
		}
		if p > 1 {
			v.Set("page", strconv.Itoa(p))
		}
		return v.Encode()
	}
	data["Records"], data["Total"], data["PageNo"], data["Pages"], data["From"] = rows, total, page, pages, from+1
	if page > 1 {
		data["Prev"] = link(page - 1)
	}
	if page < pages {
		data["Next"] = link(page + 1)
	}
	h.render(w, "audit.html", data)
}
