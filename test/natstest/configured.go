package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// StartClusterFromConfig starts one in-process nats-server per
// configuration file, parsed exactly as nats-server parses it (includes,
// operator, resolver), and returns once they are ready and, if they run
// JetStream, its meta group has a leader that sees them all. The files must
// give the nodes one cluster with fixed route ports; starting the same files
// again after a shutdown plays a restart of every node.
func StartClusterFromConfig(t testing.TB, files ...string) []*server.Server {
	t.Helper()
	var nodes []*server.Server
	for _, f := range files {
		nodes = append(nodes, startFromConfig(t, f))
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(30 * time.Second) {
			t.Fatalf("node %s not ready (route port taken?)", ns.Name())
		}
	}
	if !nodes[0].JetStreamEnabled() {
		return nodes
	}
	waitfor.True(t, "a JetStream meta leader seeing every node", func() bool {
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == len(nodes) {
				return true
			}
		}
		return false
	})
	return nodes
}

// StartNodeFromConfig starts one node from its configuration file and
// returns once it takes connections: a restart of one node of a cluster
// whose other nodes run.
func StartNodeFromConfig(t testing.TB, file string) *server.Server {
	t.Helper()
	ns := startFromConfig(t, file)
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatalf("node %s not ready (route port taken?)", ns.Name())
	}
	return ns
}

func startFromConfig(t testing.TB, file string) *server.Server {
	t.Helper()
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats config %s: %v", file, err)
	}
	o.NoSigs = true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats config %s: %v", file, err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
