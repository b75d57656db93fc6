package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// WaitJetStream waits until JetStream answers for the account js speaks
// for. On a cluster just started, servers accept clients a moment before
// the account's JetStream is enabled from its JWT and the meta leader is
// elected ("jetstream not enabled for account"); the coordinator retries
// its setup, a test calling the library directly waits here first.
func WaitJetStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	waitfor.OK(t, "JetStream answering for the account", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
}
