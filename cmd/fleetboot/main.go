// Command fleetboot is the one binary of fleetboot: coordinator, edge agent,
// all-in-one dev mode and the admin CLI. main only wires the process to the
// command tree; everything else lives in packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, version, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
