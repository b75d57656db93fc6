package auth_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

func TestPowerSubjectConfined(t *testing.T) { forEachBackend(t, testPowerSubjectConfined) }

// Power requests reach only the edge they name: the coordinator relays
// `host power` to fleetboot.power.<site>.<edge>, which only that edge may
// take and answer; another site's edge cannot listen in, an edge cannot
// send another one requests, and people cannot bypass the API to reach
// an edge.
func testPowerSubjectConfined(t *testing.T, start func(*testing.T) *env) {
	e := start(t)
	admin := e.seed(t)
	nc1, ae1 := e.connect(t, enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "p1", Site: "lab"}))
	nc2, ae2 := e.connect(t, enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "p2", Site: "other"}))
	adminPerson, aeAdmin := e.connect(t, enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "pa", Role: auth.RoleAdmin}))

	// p2 (site other) tries to listen on p1's subject.
	if _, err := nc2.Subscribe(proto.PowerSubject("lab", "p1"), func(*nats.Msg) { t.Error("another site's edge got a power request") }); err != nil {
		t.Fatal(err)
	}
	ae2.wait(t, "permissions violation", proto.PowerSubject("lab", "p1"))
	// p1 answers on its own subject and publishes its curve key.
	got := make(chan proto.PowerRequest, 4)
	if _, err := nc1.Subscribe(proto.PowerSubject("lab", "p1"), func(m *nats.Msg) {
		var req proto.PowerRequest
		_ = json.Unmarshal(m.Data, &req)
		got <- req
		b, _ := json.Marshal(proto.PowerReply{V: proto.Version, MAC: req.MAC, Edge: "p1", Action: req.Action, Power: "off"})
		_ = m.Respond(b)
	}); err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateCurveKeys()
	xkey, _ := kp.PublicKey()
	hb, _ := json.Marshal(proto.EdgeStatus{V: proto.Version, Name: "p1", Site: "lab", XKey: xkey, Time: time.Now().UTC()})
	waitfor.Within(t, 20*time.Second, "p1's curve key at the coordinator", func() error {
		if err := nc1.Publish(proto.StatusSubject("lab", "p1"), hb); err != nil {
			return err
		}
		rep := call(t, admin, proto.APIHostBMCKeys, proto.MACRequest{V: proto.Version, MAC: labMAC}, nil)
		if rep.Error != "" {
			return fmt.Errorf("%s", rep.Error)
		}
		return nil
	})
	box, err := sealbox.Seal([]byte("pw"), labMAC, xkey)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, call(t, admin, proto.APIHostBMC, proto.HostBMCRequest{V: proto.Version, MAC: labMAC, Address: "192.0.2.1", User: "admin",
		Sealed: map[string]proto.SealedSecret{"p1": box}}, nil))
	rep := call(t, adminPerson, proto.APIHostPower, proto.PowerRequest{V: proto.Version, MAC: labMAC, Action: proto.PowerStatus}, nil)
	mustOK(t, rep)
	var pr proto.PowerReply
	_ = json.Unmarshal(rep.Data, &pr)
	if pr.Edge != "p1" || pr.Power != "off" {
		t.Errorf("power reply %+v, want p1's answer", pr)
	}
	if req := <-got; req.MAC != labMAC || req.Action != proto.PowerStatus {
		t.Errorf("p1 got %+v", req)
	}

	// p1 cannot send p2 a request, nor can a person reach p1 directly.
	_ = nc1.Publish(proto.PowerSubject("other", "p2"), []byte("{}"))
	ae1.wait(t, "permissions violation", proto.PowerSubject("other", "p2"))
	_ = adminPerson.Publish(proto.PowerSubject("lab", "p1"), []byte("{}"))
	aeAdmin.wait(t, "permissions violation", proto.PowerSubject("lab", "p1"))
	select {
	case req := <-got:
		t.Errorf("p1 got a request past the API: %+v", req)
	default:
	}
}
