package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// EnsureModuleTree returns the kernel package's module tree
// (lib/modules/VERSION of linux-image-VERSION, unpacked; depmod never ran,
// so there is no modules.dep), cached under cache/modtree-VERSION: what
// `fleetboot discovery build --modules` takes for a kernel that is not the
// running one.
func EnsureModuleTree(ctx context.Context, cache, ver string) (string, error) {
	dir := filepath.Join(cache, "modtree-"+ver)
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err == nil {
		return dir, nil
	}
	work, err := os.MkdirTemp(cache, "modtree-dl-")
	if err != nil {
		return "", fmt.Errorf("e2e: module tree: %w", err)
	}
	defer os.RemoveAll(work)
	pkg := "linux-image-" + ver
	if out, err := runIn(ctx, work, "apt-get", "download", pkg); err != nil {
		return "", fmt.Errorf("e2e: module tree: apt-get download %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("e2e: module tree: expected one .deb in %s, found %d", work, len(debs))
	}
	x := filepath.Join(work, "x")
	if out, err := runIn(ctx, work, "dpkg", "-x", debs[0], x); err != nil {
		return "", fmt.Errorf("e2e: module tree: dpkg -x: %w: %s", err, out)
	}
	// Another test may have made it meanwhile: the rename loses, the
	// tree is there.
	if err := os.Rename(filepath.Join(x, "lib", "modules", ver), dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "kernel")); serr != nil {
			return "", fmt.Errorf("e2e: module tree: %w", err)
		}
	}
	return dir, nil
}
