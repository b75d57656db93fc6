package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/shared/pki"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// The permission tests run against both ways the coordinator meets NATS
// with --auth: its embedded server, and a three-node cluster in operator
// mode prepared by `fleetboot nats init` (as docker-compose.yml runs it).
// A test body takes the env constructor as a parameter named start, so the
// body reads exactly as it did with one backend.

// forEachBackend runs body once per backend, each in a subtest named for
// it, with that backend's env constructor. The two run side by side: each
// has servers, ports and directories of its own, and most of their time
// is spent waiting (for a refusal, a heartbeat, a cluster election).
func forEachBackend(t *testing.T, body func(t *testing.T, start func(*testing.T) *env)) {
	t.Helper()
	if testing.Short() {
		t.Skip("short: starts coordinators and a NATS cluster")
	}
	for _, b := range []struct {
		name  string
		start func(*testing.T) *env
	}{{"embedded", start}, {"cluster3", startCluster3}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			body(t, b.start)
		})
	}
}

// natsCluster is a three-node nats-server cluster run from the files of
// `fleetboot nats init`, with TLS for clients.
type natsCluster struct {
	dir   string // the nats init DIR
	nodes []*server.Server
}

// clientURL is where the tests' clients connect: not the node the
// coordinator is connected to (it prefers the first), so every request
// crosses a route.
func (c *natsCluster) clientURL() string { return c.nodes[1].ClientURL() }

// coordinatorURLs lists every node (tls:// URLs: the nodes require TLS),
// the first first.
func (c *natsCluster) coordinatorURLs() string {
	var u []string
	for _, ns := range c.nodes {
		u = append(u, ns.ClientURL())
	}
	return strings.Join(u, ",")
}

// startCluster3 is start on a three-node cluster in operator mode.
func startCluster3(t *testing.T) *env {
	t.Helper()
	e := &env{data: t.TempDir(), pkiDir: t.TempDir()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.cluster = startNATSCluster(t, e.pkiDir)
	e.run(t)
	return e
}

// startNATSCluster runs `nats init` (auth.InitCluster, what the command
// calls) and three nodes whose configs include its resolver.conf, each
// with its own resolver dir and store, requiring TLS of clients with the
// certificates in pkiDir.
func startNATSCluster(t *testing.T, pkiDir string) *natsCluster {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "nats")
	sharedJWT := filepath.Join(base, "jwt")
	if _, err := auth.InitCluster(dir, sharedJWT, time.Second); err != nil {
		t.Fatal(err)
	}
	frag, err := os.ReadFile(filepath.Join(dir, auth.ResolverConfFile))
	if err != nil {
		t.Fatal(err)
	}
	confs := natstest.OperatorClusterConfigs(t, base, string(frag), sharedJWT, pkiDir, 3)
	return &natsCluster{dir: dir, nodes: natstest.StartClusterFromConfig(t, confs...)}
}

// configure makes cfg the coordinator's configuration on the cluster, as
// `fleetboot coordinator --auth --nats-url tls://n1,tls://n2,tls://n3
// --account-key DIR/fleetboot-signing.nk --tls-ca CA --data DATA` makes
// it (sys.creds next to the key, admin.creds in DATA). Its connections
// prefer the first node (clientURL is another): every request the tests
// make crosses a route.
func (c *natsCluster) configure(cfg *coordinator.Config, ca string) {
	cfg.NATSURL = c.coordinatorURLs()
	cfg.NATSOptions = []nats.Option{nats.RootCAs(ca), nats.DontRandomize()}
	cfg.AccountKey = filepath.Join(c.dir, auth.FleetSigningSeedFile)
	cfg.Replicas = len(c.nodes)
}
