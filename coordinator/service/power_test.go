package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
)

// A BMC is set only with passwords sealed to the current keys of edges of
// the host's site; anything else is refused with one line and writes
// nothing. Power requests without a usable BMC or edge are refused too.
func TestSetHostBMCRefusals(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	const mac = "52:54:00:00:00:01" // at site lab
	xkey := func() string {
		kp, _ := nkeys.CreateCurveKeys()
		pub, _ := kp.PublicKey()
		return pub
	}
	labKey, dcKey, oldKey := xkey(), xkey(), xkey()
	for _, st := range []proto.EdgeStatus{
		{Name: "e-lab", Site: "lab", XKey: labKey, Time: time.Now()},
		{Name: "e-dc", Site: "dc", XKey: dcKey, Time: time.Now()},
	} {
		if err := s.RecordStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.BMCKeys(ctx, mac)
	if err != nil || !cmp.Equal(keys.Keys, []proto.EdgeKey{{Edge: "e-lab", XKey: labKey}}) {
		t.Fatalf("BMCKeys = %+v, %v; want e-lab's key alone", keys, err)
	}
	seal := func(to string) proto.SealedSecret {
		b, err := sealbox.Seal([]byte("pw"), mac, to)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := proto.HostBMCRequest{MAC: mac, Address: "10.9.0.5", User: "admin", Sealed: map[string]proto.SealedSecret{"e-lab": seal(labKey)}}
	before := snapshot(t, s)
	for _, c := range []struct {
		name string
		edit func(r *proto.HostBMCRequest)
		want string
	}{
		{"bad MAC", func(r *proto.HostBMCRequest) { r.MAC = "52:54:00" }, "MAC"},
		{"unknown host", func(r *proto.HostBMCRequest) { r.MAC = "52:54:00:00:00:99" }, "not found"},
		{"bad address", func(r *proto.HostBMCRequest) { r.Address = "-oProxyCommand=x" }, "invalid BMC address"},
		{"bad port", func(r *proto.HostBMCRequest) { r.Address = "10.9.0.5:0" }, "bad port"},
		{"no user", func(r *proto.HostBMCRequest) { r.User = "" }, "invalid BMC user"},
		{"user with a space", func(r *proto.HostBMCRequest) { r.User = "a b" }, "invalid BMC user"},
		{"nothing sealed", func(r *proto.HostBMCRequest) { r.Sealed = nil }, "no sealed password"},
		{"another site's edge", func(r *proto.HostBMCRequest) { r.Sealed = map[string]proto.SealedSecret{"e-dc": seal(dcKey)} }, "not an edge of site lab"},
		{"an old key", func(r *proto.HostBMCRequest) { r.Sealed = map[string]proto.SealedSecret{"e-lab": seal(oldKey)} }, "no longer has"},
		{"an empty box", func(r *proto.HostBMCRequest) {
			b := seal(labKey)
			b.Box = nil
			r.Sealed = map[string]proto.SealedSecret{"e-lab": b}
		}, "malformed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := good
			c.edit(&r)
			_, err := s.SetHostBMC(ctx, r)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("SetHostBMC = %v, want one line with %q", err, c.want)
			}
		})
	}
	if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
		t.Fatalf("refused changes wrote something (-before +after):\n%s", diff)
	}
	if _, err := s.Power(ctx, proto.PowerRequest{MAC: mac, Action: proto.PowerOn}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no BMC") {
		t.Errorf("power without a BMC: %v", err)
	}
	h, err := s.SetHostBMC(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if h.BMC.Address != "10.9.0.5:623" {
		t.Errorf("BMC address %q, want the IPMI port added", h.BMC.Address)
	}
	// Setting a host keeps its BMC.
	if h, err = s.SetHost(ctx, proto.HostSetRequest{MAC: mac, Hostname: ptr("web1")}); err != nil || h.BMC == nil {
		t.Fatalf("host set dropped the BMC: %+v, %v", h.BMC, err)
	}
	if _, err := s.Power(ctx, proto.PowerRequest{MAC: mac, Action: "reboot"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown action: %v", err)
	}
	// The edge's key changed since (a new state directory): no edge can open it.
	if err := s.RecordStatus(ctx, proto.EdgeStatus{Name: "e-lab", Site: "lab", XKey: oldKey, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Power(ctx, proto.PowerRequest{MAC: mac, Action: proto.PowerOn}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host bmc again") {
		t.Errorf("power with a stale seal: %v", err)
	}
}
