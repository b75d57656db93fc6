package edge

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// TestFactsNameTheEdgesSite: a report is forwarded with the edge's site,
// where the coordinator keeps an unknown machine (a discovery report)
// waiting; the body is passed through as the machine sent it.
func TestFactsNameTheEdgesSite(t *testing.T) {
	srv := natstest.Start(t)
	nc, _ := natstest.Connect(t, srv.ClientURL())
	got := make(chan proto.FactsRequest, 1)
	sub, err := nc.Subscribe(proto.APISubject(proto.APIHostFacts), func(m *nats.Msg) {
		var req proto.FactsRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Error(err)
		}
		got <- req
		rep, _ := json.Marshal(proto.Reply{})
		m.Respond(rep)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	body := []byte(`{"v":1,"cpus":2}`)
	if err := (natsCallbacks{nc: nc, site: "lab"}).Facts(context.Background(), "52:54:00:00:00:77", body); err != nil {
		t.Fatal(err)
	}
	req := <-got
	if req.Site != "lab" || req.MAC != "52:54:00:00:00:77" || string(req.Facts) != string(body) {
		t.Errorf("forwarded %+v", req)
	}
}
