package httpboot

import (
	"encoding/json"
	"net/http"

	"github.com/fleetboot/fleetboot/proto"
)

// discovers reports whether the site's unknown machines boot its discovery
// image.
func (h *Handler) discovers() bool {
	site, _ := h.cfg.State.Site()
	return site.Unknown == proto.UnknownDiscover && site.DiscoveryImage != ""
}

// serveNext answers the discovery system's "what next?" (GET
// /api/v1/next?mac=&token=) from the edge's synced state, so a machine
// assigned before a WAN outage still learns it during one. The token is the
// one its discovery boot carried (rendered while the MAC was unknown), or
// the host's current one; the caller must be at the machine's address as
// for callbacks. A refusal reads as a callback refusal and tells nothing of
// the MAC.
func (h *Handler) serveNext(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, "next", func(mac string, host *proto.Host, token string) bool {
		return validToken(h.cfg.CallbackKey, mac, nil, token) || (host != nil && validToken(h.cfg.CallbackKey, mac, host, token))
	}, nil)
	if !ok {
		return
	}
	mac, ip := c.mac, c.ip
	ans := nextAnswer(InputFor(h.cfg.State, h.cfg.BaseURL, mac, "", "", ip, 0))
	if ans.Action == proto.NextReboot {
		h.log.Info("discovery: reboot into the assignment", "mac", mac, "ip", ip, "image", ans.Image, "reason", ans.Reason)
		h.emit(proto.EventDiscoveryNext, mac, map[string]string{"action": ans.Action, "image": ans.Image, "reason": ans.Reason, "ip": ip})
	} else {
		h.log.Debug("discovery: wait", "mac", mac, "ip", ip, "reason", ans.Reason)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(ans)
}

// nextAnswer is what a discovering machine does now: reboot once the
// script it would get boots an image or leaves for the local disk; wait
// while it is unknown, or known with nothing it can boot yet (no image, an
// image not synced to this edge, data that does not render).
func nextAnswer(in Input) proto.NextAnswer {
	ans := proto.NextAnswer{V: proto.Version, Action: proto.NextWait}
	if in.Host == nil {
		ans.Reason = "not assigned yet: waiting for a policy or host set"
		return ans
	}
	p := decide(in)
	switch p.decision.Action {
	case ActionBoot:
		ans.Action, ans.Image = proto.NextReboot, p.decision.Image
	case ActionLocal:
		ans.Action = proto.NextReboot
	}
	ans.Reason = p.decision.Reason
	return ans
}
