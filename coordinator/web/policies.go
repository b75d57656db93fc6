package web

import (
	"cmp"
	"net/http"
	"slices"

	"github.com/fleetboot/fleetboot/proto"
)

func (h *Handler) policies(w http.ResponseWriter, r *http.Request, u who) {
	var ps []proto.PolicyView
	if err := h.call(r, u, proto.APIPolicyList, proto.ListRequest{V: proto.Version}, &ps); err != nil {
		h.fail(w, err)
		return
	}
	// As the service decides: highest priority first, then by name.
	slices.SortFunc(ps, func(a, b proto.PolicyView) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	h.render(w, "policies.html", map[string]any{"Page": u.page("policies"), "Policies": ps, "Admin": u.isAdmin()})
}

func (h *Handler) policyData(r *http.Request, u who, name string) (map[string]any, error) {
	var p proto.PolicyView
	if err := h.call(r, u, proto.APIPolicyGet, proto.NameRequest{V: proto.Version, Name: name}, &p); err != nil {
		return nil, err
	}
	return map[string]any{"Page": u.page("policy " + name), "Policy": p, "Admin": u.isAdmin(), "Errors": map[string]string{}}, nil
}

func (h *Handler) policy(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidName("policy", name); err != nil {
		badRequest(w, err)
		return
	}
	data, err := h.policyData(r, u, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	data["Saved"] = r.URL.Query().Get("saved") == "1"
	h.render(w, "policy.html", data)
}

// policyEnable enables or disables a policy, as `fleetboot policy
// enable|disable NAME`: field state is "enabled" or "disabled".
func (h *Handler) policyEnable(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidName("policy", name); err != nil {
		badRequest(w, err)
		return
	}
	state := r.PostFormValue("state")
	var problem string
	if state != "enabled" && state != "disabled" {
		problem = "choose enabled or disabled"
	} else {
		err := h.call(r, u, proto.APIPolicyEnable, proto.PolicyEnableRequest{V: proto.Version, Name: name, Disabled: state == "disabled"}, nil)
		if err == nil {
			back := "/policies/" + name + "?saved=1"
			if r.PostFormValue("from") == "list" {
				back = "/policies"
			}
			http.Redirect(w, r, back, http.StatusSeeOther)
			return
		}
		if code := statusOf(err); code != http.StatusBadRequest && code != http.StatusConflict {
			h.fail(w, err)
			return
		}
		problem = err.Error()
	}
	data, err := h.policyData(r, u, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	data["Errors"] = map[string]string{"state": problem}
	h.renderStatus(w, http.StatusUnprocessableEntity, "policy.html", data)
}

// templateRow is a template as the list shows it.
type templateRow struct {
	proto.Template
	Policies []string // that install with it
}

func (h *Handler) templates(w http.ResponseWriter, r *http.Request, u who) {
	var ts []proto.Template
	if err := h.call(r, u, proto.APITemplateList, proto.ListRequest{V: proto.Version}, &ts); err != nil {
		h.fail(w, err)
		return
	}
	var ps []proto.PolicyView
	if err := h.call(r, u, proto.APIPolicyList, proto.ListRequest{V: proto.Version}, &ps); err != nil {
		h.fail(w, err)
		return
	}
	rows := make([]templateRow, 0, len(ts))
	for _, t := range ts {
		row := templateRow{Template: t}
		for _, p := range ps {
			if p.Template == t.Name {
				row.Policies = append(row.Policies, p.Name)
			}
		}
		slices.Sort(row.Policies)
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b templateRow) int { return cmp.Compare(a.Name, b.Name) })
	h.render(w, "templates.html", map[string]any{"Page": u.page("templates"), "Templates": rows})
}

func (h *Handler) template(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidName("template", name); err != nil {
		badRequest(w, err)
		return
	}
	var t proto.Template
	if err := h.call(r, u, proto.APITemplateGet, proto.NameRequest{V: proto.Version, Name: name}, &t); err != nil {
		h.fail(w, err)
		return
	}
	h.render(w, "template.html", map[string]any{"Page": u.page("template " + name), "Template": t})
}
