// Package natstest starts a real nats-server with JetStream in the test
// process, on a loopback port, and stops it when the test ends.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs a server on a free port with its store in a temporary directory.
func Start(t testing.TB) *server.Server {
	t.Helper()
	return StartAt(t, -1, t.TempDir())
}

// StartAt runs a server on port (-1: any free one) with its JetStream store in
// dir; starting another on the same port and dir plays a restart. The caller
// may shut it down early; cleanup does it otherwise.
func StartAt(t testing.TB, port int, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not become ready")
	}
	return ns
}

// Connect returns a client connection and its JetStream context, closed at cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
