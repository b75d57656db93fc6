// Command fleetboot is the one binary of fleetboot: coordinator, edge agent,
// all-in-one dev mode and the admin CLI. main only wires the process to the
// command tree; everything else lives in packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, version, commandArgs(os.Getpid(), os.Args), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// commandArgs is the command line the command tree gets. The discovery
// initramfs runs the binary as its /init: PID 1 under the name init, and
// the kernel passes stray command-line words as arguments, so none are read
// and it runs `discover`. PID 1 under any other name is a container whose
// entrypoint is fleetboot (the compose stack's coordinator and edges): its
// arguments are the command.
func commandArgs(pid int, argv []string) []string {
	if pid == 1 && len(argv) > 0 && filepath.Base(argv[0]) == "init" {
		return []string{"discover"}
	}
	return argv[1:]
}
