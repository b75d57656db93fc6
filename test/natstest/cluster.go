package natstest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartCluster starts n in-process nats-servers with JetStream that form one
// cluster over routes on 127.0.0.1, and returns once the JetStream meta group
// has a leader that sees all n peers. A clustered JetStream node refuses to
// start without configured routes, so the route ports are reserved first
// (listen on port 0, note the port, close) and every node gets them all.
func StartCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	var ports []int
	var routes []*url.URL
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, &url.URL{Scheme: "nats", Host: l.Addr().String()})
		l.Close()
	}
	var nodes []*server.Server
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		ns, err := server.NewServer(&server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "fleetboot-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		})
		if err != nil {
			t.Fatalf("cluster node %s: %v", name, err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, ns)
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(30 * time.Second) {
			t.Fatalf("cluster node %s not ready (route port taken?)", ns.Name())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == n {
				return nodes
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader seeing all peers after 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling the election
	}
}
