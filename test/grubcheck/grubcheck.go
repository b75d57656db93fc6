// Package grubcheck runs GRUB's own parser, grub-script-check, over
// rendered GRUB configurations in tests. The tool is Debian's grub-common,
// which the test machines do not install (installing it pulls GRUB's
// hooks into the host); the package is fetched with `apt-get download` and
// unpacked with `dpkg-deb -x` into ~/.cache/fleetboot, keyed by the
// package's file name (name, version, architecture), and reused.
package grubcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const pkg = "grub-common"

// member is the tool inside the package.
const member = "usr/bin/grub-script-check"

// CacheDir is $FLEETBOOT_CACHE or ~/.cache/fleetboot.
func CacheDir() string {
	if d := os.Getenv("FLEETBOOT_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fleetboot")
}

// errNoApt: apt has no package lists (or no apt at all), so the package
// cannot be had: test/deps.sh makes the lists, so it fails the test with
// that hint.
var errNoApt = errors.New("grubcheck: apt-get download grub-common is impossible here")

// Binary returns the path of grub-script-check, fetching and unpacking
// grub-common on first use. It fails the test when the tool cannot be had:
// never a skip, which would hide a missing dependency.
func Binary(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := ensure(ctx, CacheDir())
	if errors.Is(err, errNoApt) {
		t.Fatalf("grub-script-check not available: %v (run test/deps.sh: it makes apt's package lists)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A normal Debian binary: it needs libdevmapper and libc, which the
	// test machines have; say so plainly if they do not.
	if out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput(); err != nil {
		t.Fatalf("grubcheck: %s does not run: %v: %s (check its libraries with ldd)", bin, err, out)
	}
	return bin
}

// Check runs grub-script-check over one script; the error carries GRUB's
// own message (the line of a syntax error).
func Check(bin, name, script string) error {
	f, err := os.CreateTemp("", "grubcheck-*.cfg")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	out, err := exec.Command(bin, f.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("grub-script-check %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// ensure returns the cached tool, or downloads and unpacks the package:
// each step into a temporary name renamed into place, since tests of other
// packages may do the same at once.
func ensure(ctx context.Context, cache string) (string, error) {
	root := filepath.Join(cache, "grub-common")
	if found, _ := filepath.Glob(filepath.Join(root, pkg+"_*", member)); len(found) > 0 {
		return found[len(found)-1], nil // the newest version, by name
	}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", fmt.Errorf("grubcheck: %w", err)
	}
	deb, err := download(ctx, debs)
	if err != nil {
		return "", err
	}
	stem := strings.TrimSuffix(filepath.Base(deb), ".deb")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("grubcheck: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".x-")
	if err != nil {
		return "", fmt.Errorf("grubcheck: %w", err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("grubcheck: dpkg-deb -x %s: %w: %s", deb, err, out)
	}
	dst := filepath.Join(root, stem)
	if err := os.Rename(tmp, dst); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dst, member)); serr != nil {
			return "", fmt.Errorf("grubcheck: %w", err) // not another test's copy
		}
	}
	bin := filepath.Join(dst, member)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("grubcheck: %s has no %s: %w", deb, member, err)
	}
	return bin, nil
}

// download returns debs/<package>_<version>_<arch>.deb, reusing one already
// there, else fetching apt's candidate.
func download(ctx context.Context, debs string) (string, error) {
	if found, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb")); len(found) > 0 {
		return found[len(found)-1], nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("%w: no apt-get", errNoApt)
	}
	work, err := os.MkdirTemp(debs, ".dl-")
	if err != nil {
		return "", fmt.Errorf("grubcheck: %w", err)
	}
	defer os.RemoveAll(work)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		// apt-get says "Unable to locate package" with no lists: no
		// way to have the package without apt-get update, which a test
		// must not run (it takes the dpkg lock other work holds).
		return "", fmt.Errorf("%w: apt-get download %s: %v: %s", errNoApt, pkg, err, bytes.TrimSpace(out))
	}
	got, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(got) != 1 {
		return "", fmt.Errorf("grubcheck: apt-get download %s left %d .deb files", pkg, len(got))
	}
	dst := filepath.Join(debs, filepath.Base(got[0]))
	if err := os.Rename(got[0], dst); err != nil {
		return "", fmt.Errorf("grubcheck: %w", err)
	}
	return dst, nil
}
