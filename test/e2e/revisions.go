package e2e

import (
	"fmt"
	"os"
	"regexp"
)

// Revisions of one image for the rollout test: two good ones, whose
// initramfs differ by the revision they print after the marker
// (FLEETBOOT-REV N), and a broken one, whose /init exits at once, so its
// kernel panics ("Attempted to kill init") before any marker or done
// callback. Each is the test initramfs with a file or two changed; they are
// cached by content beside it, so a re-run builds nothing new.
type Revisions struct {
	Good   [2]string // initramfs printing FLEETBOOT-REV 1 and FLEETBOOT-REV 2
	Broken string    // initramfs whose /init exits: a kernel panic
}

// brokenInit is the broken revision's /init: it says so on the console
// (the harness tells a panic of this revision from any other) and exits,
// which the kernel answers with a panic.
const brokenInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "FLEETBOOT-BROKEN-INIT exiting" > /dev/console
exit 1
`

// revMarker matches the line the initramfs of revision rev prints on the
// machine mac (lower case, as /sys gives it).
func revMarker(rev int, mac string) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`FLEETBOOT-REV %d mac=%s`, rev, regexp.QuoteMeta(mac)))
}

// panicRE matches the kernel's panic when the broken revision's init exits.
var panicRE = regexp.MustCompile(`Kernel panic - not syncing: Attempted to kill init`)

// EnsureRevisions builds (or finds in the cache) the revisions' initramfs
// images from the test kernel's modules in kdir (Assets.Kernel's directory).
func EnsureRevisions(cache, kdir string) (Revisions, error) {
	var r Revisions
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return r, fmt.Errorf("e2e: revisions: busybox-static is needed: %w", err)
	}
	for i := range r.Good {
		rev := map[string]cpioEntry{"etc/fleetboot-rev": {Mode: cpioFile | 0o644, Data: fmt.Appendf(nil, "%d\n", i+1)}}
		if r.Good[i], err = writeInitrd(cache, fmt.Sprintf("initrd-rev%d", i+1), bb, kdir, rev); err != nil {
			return r, err
		}
	}
	broken := map[string]cpioEntry{"init": {Mode: cpioFile | 0o755, Data: []byte(brokenInit)}}
	if r.Broken, err = writeInitrd(cache, "initrd-broken", bb, kdir, broken); err != nil {
		return r, err
	}
	return r, nil
}
