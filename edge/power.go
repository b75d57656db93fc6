package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/edge/bmc"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
)

// powerBudget bounds one power request at the edge: the coordinator's API
// answers within its own timeout (10 s by default), and ipmitool with -N 1
// -R 2 gives up on a silent BMC in about 3 s a command.
const powerBudget = 9 * time.Second

// powerLoop takes power requests on the edge's own power subject (its NATS
// permissions let no other edge subscribe to it) one at a time until ctx
// ends: a BMC is slow, and two actions on one machine must not interleave.
func (a *Agent) powerLoop(ctx context.Context) {
	msgs := make(chan *nats.Msg, 16)
	sub, err := a.nc.ChanSubscribe(proto.PowerSubject(a.cfg.Site, a.cfg.Name), msgs)
	if err != nil {
		a.log.Error("power control off: cannot subscribe", "err", err)
		return
	}
	defer sub.Unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-msgs:
			a.handlePower(ctx, m)
		}
	}
}

func (a *Agent) handlePower(ctx context.Context, m *nats.Msg) {
	var req proto.PowerRequest
	reply := proto.PowerReply{V: proto.Version, Edge: a.cfg.Name}
	err := json.Unmarshal(m.Data, &req)
	if err == nil {
		reply.Action, reply.PXE = req.Action, req.PXE
		var mac string
		if mac, err = proto.ParseMAC(req.MAC); err == nil {
			reply.MAC = mac
			rctx, cancel := context.WithTimeout(ctx, powerBudget)
			reply.Power, err = a.power(rctx, mac, req)
			cancel()
		}
	}
	detail := map[string]string{"action": req.Action, "pxe": fmt.Sprint(req.PXE), "result": "ok", "power": reply.Power}
	if err != nil {
		reply.Error = err.Error()
		detail["result"], detail["error"] = "failed", reply.Error
		a.log.Warn("power action failed", "mac", reply.MAC, "action", req.Action, "pxe", req.PXE, "err", err)
	} else {
		a.log.Info("power action", "mac", reply.MAC, "action", req.Action, "pxe", req.PXE, "power", reply.Power)
	}
	if reply.MAC != "" {
		a.rec.Emit(proto.EventPower, reply.MAC, detail)
	}
	data, _ := json.Marshal(reply)
	if err := m.Respond(data); err != nil {
		a.log.Warn("power reply not sent", "mac", reply.MAC, "err", err)
	}
}

// power opens the host's BMC password, sealed to this edge's curve key,
// and drives the BMC. The password lives only for this call.
func (a *Agent) power(ctx context.Context, mac string, req proto.PowerRequest) (string, error) {
	if err := proto.ValidPowerAction(req.Action); err != nil {
		return "", err
	}
	h, ok := a.st.Host(mac)
	if !ok {
		return "", fmt.Errorf("host %s is not known at site %s", mac, a.cfg.Site)
	}
	if h.BMC == nil {
		return "", fmt.Errorf("host %s has no BMC (fleetboot host bmc)", h.MAC)
	}
	box, ok := h.BMC.Sealed[a.cfg.Name]
	if !ok {
		return "", fmt.Errorf("the BMC password of host %s is not sealed to edge %s; run fleetboot host bmc again", h.MAC, a.cfg.Name)
	}
	pw, err := sealbox.Open(a.xkey, box, h.MAC)
	if errors.Is(err, sealbox.ErrNotForUs) {
		return "", fmt.Errorf("the BMC password of host %s was sealed to another key of edge %s (its state directory was replaced?); run fleetboot host bmc again", h.MAC, a.cfg.Name)
	}
	if err != nil {
		return "", err
	}
	defer clear(pw)
	return bmc.Power(ctx, bmc.IPMITool{}, bmc.Target{Address: h.BMC.Address, User: h.BMC.User, Password: pw}, req.Action, req.PXE)
}
