package edge

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
)

// TestHTTPSourceRate: the per-address HTTP limit is the operator's to set.
// An edge behind a reverse proxy sees one address for every machine, so
// --http-source-rate -1 must really turn it off, and a low rate must bite.
func TestHTTPSourceRate(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		requests int
		want429  bool
	}{
		{"default allows a burst of 200", 0, 150, false},
		{"default limits past the burst", 0, 400, true},
		{"off", -1, 400, false},
		{"a low rate bites early", 1, 10, false}, // the burst of 200 still applies
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns, fc := startNATS(t)
			fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPOff})
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan Addrs, 1)
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Config{
					Name: "e1", Site: "lab", NATSURL: ns.ClientURL(), StateDir: t.TempDir(), CacheDir: t.TempDir(), CacheSize: 1 << 20,
					Store: artifactstore.Config{URL: "dir://" + t.TempDir()}, HTTPListen: "127.0.0.1:0",
					HTTPSourceRate: tc.rate, Ready: func(a Addrs) { ready <- a },
				})
			}()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("edge: %v", err)
				}
			})
			var base string
			select {
			case a := <-ready:
				base = "http://" + a.HTTP
			case err := <-done:
				t.Fatalf("edge did not start: %v", err)
			}
			limited := 0
			for i := range tc.requests {
				resp, err := http.Get(fmt.Sprintf("%s/boot.ipxe?mac=02:00:00:00:%02x:%02x", base, i>>8, i&0xff))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					limited++
				}
			}
			if got := limited > 0; got != tc.want429 {
				t.Fatalf("%d requests: %d answered 429, want some: %v", tc.requests, limited, tc.want429)
			}
		})
	}
}
