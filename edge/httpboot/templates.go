package httpboot

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/installtmpl"
)

// NoCloud files: cloud-init's NoCloud datasource (ds=nocloud-net, s=URL/)
// fetches these three below the seed URL.
var noCloudFiles = []string{"user-data", "meta-data", "vendor-data"}

// TemplateURL is where the edge serves host mac's install template name:
// the NoCloud seed directory (ending in '/') for cloud-init, /t/NAME?mac=
// for every other kind.
func TemplateURL(base, name, kind, mac string) string {
	base = strings.TrimRight(base, "/")
	if kind == "cloud-init" {
		return base + "/t/" + name + "/" + mac + "/"
	}
	return base + "/t/" + name + "?mac=" + url.QueryEscape(mac)
}

// serveTemplate renders an install template for the host asking:
// /t/NAME?mac=MAC, or the NoCloud layout /t/NAME/MAC/user-data, meta-data,
// vendor-data. As for callbacks, the request must come from the host's
// reservation or an address the edge leased to it (fromKnownAddress), and
// the template must be the host's own: the rendered text carries the host's
// callback token. Every refusal answers alike, naming nothing.
func (h *Handler) serveTemplate(w http.ResponseWriter, r *http.Request, rest string) {
	name, macText, file := rest, r.URL.Query().Get("mac"), ""
	if parts := strings.Split(rest, "/"); len(parts) == 3 {
		name, macText, file = parts[0], parts[1], parts[2]
		if !slices.Contains(noCloudFiles, file) {
			http.NotFound(w, r)
			return
		}
	} else if len(parts) != 1 {
		http.NotFound(w, r)
		return
	}
	mac, err := proto.ParseMAC(macText)
	if err != nil || proto.ValidName("template", name) != nil {
		http.Error(w, "httpboot: want /t/NAME?mac=MAC or /t/NAME/MAC/user-data", http.StatusBadRequest)
		return
	}
	ip := remoteIP(r)
	host, known := h.cfg.State.Host(mac)
	t, found := h.cfg.State.Template(name)
	reason := ""
	switch {
	case !known:
		reason = "unknown host"
	case host.Template != name:
		reason = "not the host's template"
	case !found:
		reason = "template not synced to this edge"
	default:
		reason = h.fromKnownAddress(mac, &host, ip)
	}
	if reason != "" {
		h.drops.Warn("template refused", "reason", reason, "mac", mac, "ip", ip, "template", name)
		h.repeat(ip, proto.EventCallbackRefused, mac, map[string]string{"reason": reason, "ip": ip, "template": name})
		http.Error(w, "httpboot: no such template for this machine from this address", http.StatusNotFound)
		return
	}
	body, err := h.renderTemplate(t, host, file)
	if err != nil {
		h.log.Warn("template not rendered", "mac", mac, "template", name, "err", err)
		http.Error(w, "httpboot: template "+name+" does not render for this host", http.StatusInternalServerError)
		return
	}
	h.emit(proto.EventScript, mac, map[string]string{"template": name, "file": file, "ip": ip})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // it holds this boot's token
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// renderTemplate renders template t for host; file picks a NoCloud file
// ("" and user-data are the template itself).
func (h *Handler) renderTemplate(t proto.Template, host proto.Host, file string) ([]byte, error) {
	switch file {
	case "meta-data":
		// The instance id changes with each assignment, so cloud-init runs
		// again after a reinstall.
		return []byte(fmt.Sprintf("instance-id: fleetboot-%s-%s\nlocal-hostname: %s\n",
			strings.ReplaceAll(host.MAC, ":", ""), host.Updated.UTC().Format("20060102T150405"), orMAC(host))), nil
	case "vendor-data":
		return []byte{}, nil
	}
	tmpl, err := installtmpl.Parse(t.Name, t.Kind, t.Text)
	if err != nil {
		return nil, err
	}
	site, _ := h.cfg.State.Site()
	base := strings.TrimRight(h.cfg.BaseURL, "/")
	// The facts come with the host record (proto.Host.Facts). An
	// installer may have reported JSON that is not an object: then there
	// are no facts to name, as for a host that never reported any.
	var facts map[string]any
	if len(host.Facts) > 0 {
		_ = json.Unmarshal(host.Facts, &facts)
	}
	return installtmpl.Render(tmpl, installtmpl.Data{
		MAC: host.MAC, Hostname: host.Hostname, IP: host.IP, Site: site.Name, Image: host.Image,
		Labels: host.Labels, Vars: host.Vars, Facts: facts,
		DoneURL:     base + "/api/v1/done?mac=" + url.QueryEscape(host.MAC) + "&token=" + token(h.cfg.CallbackKey, host.MAC, &host),
		TemplateURL: TemplateURL(base, t.Name, t.Kind, host.MAC),
		EdgeURL:     base,
	})
}

// orMAC is the host's name, or one made of its MAC.
func orMAC(h proto.Host) string {
	if h.Hostname != "" {
		return h.Hostname
	}
	return "host-" + strings.ReplaceAll(h.MAC, ":", "")
}
