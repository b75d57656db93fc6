// Command e2e-assets builds (or finds in the cache) the boot assets of the
// end-to-end tests, a Debian cloud kernel and the busybox initramfs that
// prints a marker, and prints their paths as shell assignments for scripts
// such as the demo: KERNEL=… INITRD=… KERNEL_VERSION=….
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	a, err := e2e.EnsureAssets(ctx, e2e.CacheDir())
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e-assets:", err)
		os.Exit(1)
	}
	fmt.Printf("KERNEL=%q\nINITRD=%q\nKERNEL_VERSION=%q\n", a.Kernel, a.Initrd, a.KernelVersion)
}
