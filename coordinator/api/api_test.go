package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// TestEveryEndpointClassified: the site admin's table in the guard names
// exactly the endpoints the API serves. A new endpoint is refused to site
// admins until it is added there, and this test says so.
func TestEveryEndpointClassified(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.ClientURL())
	svc, err := service.New(context.Background(), service.Config{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := api.Start(nc, api.Config{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Stop()
	var served []string
	for _, ep := range ms.Info().Endpoints {
		served = append(served, strings.TrimPrefix(ep.Subject, proto.APIPrefix+"."))
	}
	classified := auth.SiteAdminEndpoints()
	slices.Sort(served)
	slices.Sort(classified)
	if diff := cmp.Diff(served, classified); diff != "" {
		t.Fatalf("endpoints served (-) vs classified for site admins in coordinator/auth/siteadmin.go (+):\n%s", diff)
	}
}
