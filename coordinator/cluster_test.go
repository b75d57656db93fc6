package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

func startCluster(t testing.TB, n int) []*server.Server { return natstest.StartCluster(t, n) }

func clusterURLs(nodes []*server.Server) string {
	var u []string
	for _, ns := range nodes {
		if ns.Running() {
			u = append(u, ns.ClientURL())
		}
	}
	return strings.Join(u, ",")
}

// call sends one admin API request, as the CLI does, and decodes the reply.
func clusterCall[Resp any](nc *nats.Conn, endpoint string, req any) (Resp, error) {
	var out Resp
	body, err := json.Marshal(req)
	if err != nil {
		return out, err
	}
	m, err := nc.Request(proto.APISubject(endpoint), body, 5*time.Second)
	if err != nil {
		return out, fmt.Errorf("%s: %w", endpoint, err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return out, fmt.Errorf("%s: reply: %w", endpoint, err)
	}
	if rep.Error != "" {
		return out, fmt.Errorf("%s: %s", endpoint, rep.Error)
	}
	return out, json.Unmarshal(rep.Data, &out)
}

func clusterSHA(c byte) string { return strings.Repeat(string(c), 64) }

func clusterImage(name string) proto.Image {
	return proto.Image{V: proto.Version, Name: name, Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + clusterSHA('a'), Size: 10, SHA256: clusterSHA('a')},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + clusterSHA('b'), Size: 20, SHA256: clusterSHA('b')},
	}}
}

type clusterHost struct{ MAC, Site, IP, Image string }

func clusterViews(hs []proto.Host) []clusterHost {
	out := make([]clusterHost, 0, len(hs))
	for _, h := range hs {
		out = append(out, clusterHost{h.MAC, h.Site, h.IP, h.Image})
	}
	slices.SortFunc(out, func(a, b clusterHost) int { return strings.Compare(a.MAC, b.MAC) })
	return out
}

// TestClusterLosesNoState runs a coordinator against an existing three-node
// NATS cluster with replicated buckets and streams, then stops the node that
// leads the hosts bucket: desired state and events survive, writes go on, and
// an edge-style watcher sees the changes made after the loss.
func TestClusterLosesNoState(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starts a three-node NATS cluster")
	}
	nodes := startCluster(t, 3)
	urls := clusterURLs(nodes)

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			NATSURL:     urls,
			NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)},
			Replicas:    3,
			Ready:       func(string) { close(ready) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("coordinator stopped before serving: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("coordinator not serving after 60s")
	}

	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()

	// Every bucket and the events stream really are replicated three times.
	for _, name := range []string{"KV_" + proto.BucketSites, "KV_" + proto.BucketImages, "KV_" + proto.BucketHosts, "KV_" + proto.BucketMACs, "KV_ips", proto.StreamEvents} {
		st, err := js.Stream(bg, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}

	if _, err := clusterCall[proto.Site](nc, proto.APISiteAdd, proto.Site{V: proto.Version, Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	for _, im := range []string{"deb", "alma"} {
		if _, err := clusterCall[proto.Image](nc, proto.APIImageAdd, clusterImage(im)); err != nil {
			t.Fatal(err)
		}
	}
	var want []clusterHost
	for i := range 20 {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		ip := fmt.Sprintf("10.0.0.%d", 10+i)
		im := []string{"deb", "alma"}[i%2]
		if _, err := clusterCall[proto.Host](nc, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: mac, Site: clusterPtr("lab"), IP: &ip, Image: &im}); err != nil {
			t.Fatal(err)
		}
		want = append(want, clusterHost{mac, "lab", ip, im})
	}
	const events = 25
	for i := range events {
		ev, _ := json.Marshal(proto.Event{V: proto.Version, ID: fmt.Sprintf("ev-%d", i), Site: "lab", Edge: "e1", Kind: proto.EventDHCPDiscover})
		if _, err := js.Publish(bg, proto.EventSubject("lab", "e1", "52:54:00:00:01:00"), ev, jetstream.WithMsgID(fmt.Sprintf("ev-%d", i))); err != nil {
			t.Fatal(err)
		}
	}

	// An edge-style watcher on its own connection: the site's hosts only.
	wnc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wnc.Close)
	wjs, _ := jetstream.New(wnc)
	hostsKV, err := wjs.KeyValue(bg, proto.BucketHosts)
	if err != nil {
		t.Fatal(err)
	}
	w, err := hostsKV.Watch(bg, "lab.>")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	seen := map[string]string{} // host key -> image
	drain := func() {
		for {
			select {
			case e := <-w.Updates():
				if e == nil {
					continue // end of the initial values
				}
				var h proto.Host
				if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &h) == nil {
					seen[e.Key()] = h.Image
				}
			default:
				return
			}
		}
	}
	waitfor.Within(t, 20*time.Second, "watcher sees the initial hosts", func() error {
		drain()
		if len(seen) != len(want) {
			return fmt.Errorf("watcher saw %d hosts, want %d", len(seen), len(want))
		}
		return nil
	})

	// Stop the node that leads the hosts bucket: the harshest single loss.
	st, err := js.Stream(bg, "KV_"+proto.BucketHosts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(bg)
	if err != nil {
		t.Fatal(err)
	}
	var victim *server.Server
	for _, ns := range nodes {
		if ns.Name() == info.Cluster.Leader {
			victim = ns
		}
	}
	if victim == nil {
		t.Fatalf("no node named %q leads KV_hosts", info.Cluster.Leader)
	}
	t.Logf("stopping %s, leader of KV_%s", victim.Name(), proto.BucketHosts)
	victim.Shutdown()
	victim.WaitForShutdown()

	// Reads return everything (after the new leader is elected).
	waitfor.Within(t, 30*time.Second, "hosts readable after losing a node", func() error {
		hs, err := clusterCall[[]proto.Host](nc, proto.APIHostList, proto.ListRequest{V: proto.Version})
		if err != nil {
			return err
		}
		if d := cmp.Diff(want, clusterViews(hs)); d != "" {
			return fmt.Errorf("hosts differ (-want +got):\n%s", d)
		}
		return nil
	})
	ims, err := clusterCall[[]proto.Image](nc, proto.APIImageList, proto.ListRequest{V: proto.Version})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range ims {
		names = append(names, im.Name)
	}
	if d := cmp.Diff([]string{"alma", "deb"}, names); d != "" {
		t.Errorf("images after losing a node (-want +got):\n%s", d)
	}
	waitfor.Within(t, 30*time.Second, "events stream after losing a node", func() error {
		es, err := js.Stream(bg, proto.StreamEvents)
		if err != nil {
			return err
		}
		ei, err := es.Info(bg)
		if err != nil {
			return err
		}
		if ei.State.Msgs != events {
			return fmt.Errorf("events stream has %d messages, want %d", ei.State.Msgs, events)
		}
		return nil
	})

	// Writes still work: a new host, and a changed one. Retrying is safe, a
	// host set is idempotent.
	newMAC, newIP, alma := "52:54:00:00:02:01", "10.0.0.99", "alma"
	waitfor.Within(t, 30*time.Second, "host set after losing a node", func() error {
		_, err := clusterCall[proto.Host](nc, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: newMAC, Site: clusterPtr("lab"), IP: &newIP, Image: &alma})
		return err
	})
	waitfor.Within(t, 30*time.Second, "host change after losing a node", func() error {
		_, err := clusterCall[proto.Host](nc, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: want[0].MAC, Image: &alma})
		return err
	})
	// The uniqueness rules still hold on the degraded cluster.
	if _, err := clusterCall[proto.Host](nc, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: "52:54:00:00:02:02", Site: clusterPtr("lab"), IP: &newIP, Image: &alma}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second host with IP %s: err = %v, want an 'already used' conflict", newIP, err)
	}

	k0, _ := proto.HostKey("lab", want[0].MAC)
	kNew, _ := proto.HostKey("lab", newMAC)
	waitfor.Within(t, 30*time.Second, "watcher sees changes made after the loss", func() error {
		drain()
		if seen[kNew] != "alma" || seen[k0] != "alma" {
			return fmt.Errorf("watcher has %s=%q, %s=%q; want alma for both", kNew, seen[kNew], k0, seen[k0])
		}
		return nil
	})
}

func clusterPtr[T any](v T) *T { return &v }
