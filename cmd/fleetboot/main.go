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
	args := os.Args[1:]
	if os.Getpid() == 1 {
		// /init of the discovery initramfs: the kernel passes stray
		// command-line words as arguments, so none are read.
		args = []string{"discover"}
	}
	code := cli.Main(ctx, version, args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
