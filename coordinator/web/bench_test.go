package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// BenchmarkHostsPage: the hosts page (page 2, 50 rows, sorted by MAC) for
// an admin, at 100 and 100 000 hosts in one site, over a real service and
// KV. The reference is the 100-host run: the ratio says how the page grows
// with the fleet.
func BenchmarkHostsPage(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			f := newFleet(b, nil, nil)
			seedHosts(b, f.nc, "lab", "deb", n)
			// The index follows the bucket: measure once it holds them all.
			waitfor.True(b, "the index to hold every host", func() bool { return f.index.Len() >= n })
			br := f.browser()
			br.login("alice")
			b.ResetTimer()
			for b.Loop() {
				if p := br.get("/hosts?site=lab&page=2"); p.code != http.StatusOK {
					b.Fatalf("HTTP %d", p.code)
				}
			}
		})
	}
}

// seedHosts writes n hosts straight into the hosts bucket, as the service
// would, with asynchronous publishes (100 000 host sets one by one would
// take minutes).
func seedHosts(b *testing.B, nc *nats.Conn, site, image string, n int) {
	b.Helper()
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range n {
		mac := fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
		k, _ := proto.MACKey(mac)
		data, _ := json.Marshal(proto.Host{V: proto.Version, MAC: mac, Site: site, Image: image, State: proto.StateBoot, Hostname: fmt.Sprintf("n%d", i), Updated: now})
		if _, err := js.PublishAsync("$KV."+proto.BucketHosts+"."+site+"."+k, data, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(3 * time.Minute):
		b.Fatal("KV writes not acknowledged after 3 minutes")
	}
	if f := failed.Load(); f != 0 {
		b.Fatalf("%d KV writes failed", f)
	}
}
