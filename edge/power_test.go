package edge

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
	"github.com/fleetboot/fleetboot/test/ipmisim"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// The edge takes power requests on its own subject, opens the host's BMC
// password sealed to its curve key, drives a real (simulated) BMC with
// ipmitool, answers what it did and records it in the host's timeline. A
// password sealed to another edge's key, or for another host, is refused.
// The password is in nothing the edge logs or publishes.
func TestEdgePowerThroughBMC(t *testing.T) {
	sim := ipmisim.Start(t, true)
	ns, fc := startNATS(t)
	cfg := baseConfig(t)
	cfg.NATSURL = ns.ClientURL()
	cfg.Heartbeat = 100 * time.Millisecond
	logs := &lockedBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	xkey, _ := a.xkey.PublicKey()
	other, _ := nkeys.CreateCurveKeys()
	otherKey, _ := other.PublicKey()
	const macOK, macOtherKey, macWrongHost, macNoBMC = "52:54:00:bb:00:01", "52:54:00:bb:00:02", "52:54:00:bb:00:03", "52:54:00:bb:00:04"
	seal := func(mac, to string) map[string]proto.SealedSecret {
		b, err := sealbox.Seal([]byte(sim.Password), mac, to)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]proto.SealedSecret{"e1": b}
	}
	fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPOff})
	for mac, sealed := range map[string]map[string]proto.SealedSecret{
		macOK:        seal(macOK, xkey),
		macOtherKey:  seal(macOtherKey, otherKey), // another site's edge's key
		macWrongHost: seal(macOK, xkey),           // a box copied from another host
		macNoBMC:     nil,
	} {
		h := proto.Host{V: 1, MAC: mac, Site: "lab", State: proto.StateBoot}
		if sealed != nil {
			h.BMC = &proto.BMC{Address: sim.Addr, User: sim.User, Sealed: sealed}
		}
		key, _ := proto.HostKey("lab", mac)
		fc.put(proto.BucketHosts, key, h)
	}
	skip := streamMsgs(t, fc.js)
	runAgent(t, a)
	waitfor.True(t, "the hosts at the edge", func() bool { _, ok := a.st.Host(macNoBMC); return ok })
	power := func(mac, action string, pxe bool) proto.PowerReply {
		t.Helper()
		body, _ := json.Marshal(proto.PowerRequest{V: 1, MAC: mac, Action: action, PXE: pxe})
		var m, err = fc.nc.Request(proto.PowerSubject("lab", "e1"), body, 30*time.Second)
		if err != nil {
			t.Fatalf("power %s %s: %v", mac, action, err)
		}
		var rep proto.PowerReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := power(macOK, proto.PowerOn, true); rep.Error != "" || rep.Power != "on" || rep.Edge != "e1" {
		t.Fatalf("power on --pxe: %+v", rep)
	}
	if got := strings.Join(ipmisim.Calls(sim.Dir), "|"); got != "set boot pxe|set power 1" {
		t.Errorf("the BMC got %q, want the boot device set to PXE, then power on", got)
	}
	if rep := power(macOK, proto.PowerOff, false); rep.Error != "" || rep.Power != "off" {
		t.Fatalf("power off: %+v", rep)
	}
	for _, c := range []struct{ mac, want string }{
		{macOtherKey, "sealed to another key"},
		{macWrongHost, "sealed to another key"},
		{macNoBMC, "has no BMC"},
		{"52:54:00:bb:00:99", "not known at site lab"},
	} {
		if rep := power(c.mac, proto.PowerStatus, false); !strings.Contains(rep.Error, c.want) {
			t.Errorf("power status of %s: %+v, want an error with %q", c.mac, rep, c.want)
		}
	}
	if n := len(ipmisim.Calls(sim.Dir)); n != 3 {
		t.Errorf("the BMC got %d set calls, want 3 (refused requests reach no BMC)", n)
	}
	// The actions are events of their hosts, failures with their reason.
	want := map[string]string{macOK: "on ok pxe=true,off ok pxe=false", macOtherKey: "status failed pxe=false", macNoBMC: "status failed pxe=false"}
	waitfor.True(t, "the power events in the stream", func() bool {
		got := map[string][]string{}
		for _, ev := range streamEventsAfter(t, fc.js, skip) {
			if ev.Kind == proto.EventPower {
				got[ev.MAC] = append(got[ev.MAC], ev.Detail["action"]+" "+ev.Detail["result"]+" pxe="+ev.Detail["pxe"])
			}
		}
		for mac, w := range want {
			if strings.Join(got[mac], ",") != w {
				return false
			}
		}
		return true
	})
	if strings.Contains(logs.String(), sim.Password) {
		t.Errorf("the edge logged the BMC password:\n%s", logs.String())
	}
	for _, ev := range streamEventsAfter(t, fc.js, skip) {
		if b, _ := json.Marshal(ev); strings.Contains(string(b), sim.Password) {
			t.Errorf("event carries the BMC password: %s", b)
		}
	}
}
