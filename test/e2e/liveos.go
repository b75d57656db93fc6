package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// LiveOS is a real live system as dracut boots it over the network
// (../shared/FIRMWARE-FACTS.md, "A real LiveOS ISO booted by dracut over
// HTTP"): an ISO 9660 image holding LiveOS/squashfs.img, whose root
// filesystem is busybox and an /sbin/init that prints the marker, and a
// dracut initramfs with dmsquash-live and livenet that downloads the ISO
// named by root=live:URL, mounts the squashfs under an overlay and switches
// root into it. The kernel is the test kernel of Assets (Debian's signed
// cloud kernel): the initramfs carries that version's modules, which fit
// the -unsigned build too, so one initramfs serves iPXE and Secure Boot.
type LiveOS struct {
	KernelVersion string
	Kernel        string // Assets.Kernel
	Initrd        string // dracut's initramfs (gzip)
	ISO           string // the live ISO
	// ID is written only into the squashfs (/etc/fleetboot-live-id) and
	// printed by the live root's init: a console line with it proves the
	// marker came from the live system, not from the initramfs.
	ID string
	// Built says this call built the fixture (a cold cache).
	Built bool
}

// LiveCmdline is the LiveOS image's command line for dracut, less the
// root=live:URL the edge (or the reference script) puts first: DHCP in the
// initramfs through network-legacy, the live root as an overlay on a tmpfs,
// no emergency shell and a reboot (-no-reboot: QEMU exits) on panic, so a
// failed boot ends instead of waiting at a prompt. rd.retry bounds dracut's
// wait for the root.
const LiveCmdline = "console=ttyS0 ip=dhcp rd.neednet=1 rd.live.overlay.overlayfs=1 rd.shell=0 rd.retry=60 panic=-1"

// liveFormat versions the fixture's layout and scripts: bump it when the
// build changes in a way the hashed inputs do not show.
const liveFormat = "liveos-1"

// liveDracutModules and liveDrivers are what dracut puts in the initramfs.
// network-legacy must be named: with "network" alone dracut picks
// systemd-networkd when the build host has it, and livenet then never
// fetches the ISO (FIRMWARE-FACTS.md).
const (
	liveDracutModules = "dmsquash-live livenet network network-legacy"
	liveDrivers       = "virtio_pci virtio_net squashfs loop isofs overlay"
)

// liveInitScript is the live root's /sbin/init. dracut has moved /proc,
// /sys, /dev and /run into the new root before it runs. It prints, once
// switched, a line only the squashfs can produce (its build ID, read from
// the squashfs, and pid 1, so it is the init that dracut's switch_root
// ran), then the marker in the format of the test initramfs (qemu.go
// markerRE), and powers off.
const liveInitScript = `#!/bin/sh
export PATH=/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mac=""
for d in /sys/class/net/*; do
	[ "${d##*/}" = lo ] && continue
	mac=$(cat "$d/address")
	break
done
root=$(grep '^[^ ]* / ' /proc/mounts | tail -n 1)
echo "FLEETBOOT-LIVEROOT id=$(cat /etc/fleetboot-live-id) pid=$$ root=$root" > /dev/console
echo "FLEETBOOT-MARKER mac=$mac cmdline=$(cat /proc/cmdline)" > /dev/console
sync
poweroff -f
`

// liveApplets are the busybox applets the live init uses, as symlinks.
var liveApplets = []string{"sh", "mount", "mountpoint", "cat", "grep", "tail", "sync", "poweroff"}

// Console lines of a LiveOS boot, in the order they must come.
var (
	// dracut's dmsquash-live, once the squashfs is mounted under the
	// overlay, and its init before switch_root.
	liveMountedRE = regexp.MustCompile(`Mounted root filesystem`)
	liveSwitchRE  = regexp.MustCompile(`Switching root`)
	liveRootRE    = regexp.MustCompile(`FLEETBOOT-LIVEROOT id=(\S+) pid=(\d+) root=(.*)$`)
)

// EnsureLiveOS returns the LiveOS for the test assets a, building what the
// cache lacks: the kernel's full module tree (its package unpacked and
// depmod run), then the ISO and dracut's initramfs in one directory keyed
// by kernel version and a hash of every input, built under a lock (one
// build at a time; the others wait and use it) and renamed into place
// whole, so no test reads half a fixture. A cold build takes dracut's time
// (tens of seconds).
func EnsureLiveOS(ctx context.Context, cache string, a Assets) (LiveOS, error) {
	lo := LiveOS{KernelVersion: a.KernelVersion, Kernel: a.Kernel}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return lo, fmt.Errorf("e2e: liveos: busybox-static is needed: %w", err)
	}
	for _, tool := range []string{"dracut", "mksquashfs", "xorriso", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return lo, fmt.Errorf("e2e: liveos: %s is needed (test/deps.sh installs dracut, dracut-live, dracut-network, squashfs-tools, xorriso): %w", tool, err)
		}
	}
	dracutVer, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "dracut-core").Output()
	if err != nil {
		return lo, fmt.Errorf("e2e: liveos: dracut version: %w", err)
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(liveFormat), []byte(a.KernelVersion), bb, []byte(liveInitScript),
		[]byte(strings.Join(liveApplets, " ")), []byte(liveDracutModules), []byte(liveDrivers), dracutVer} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	lo.ID = hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(cache, "liveos", a.KernelVersion+"-"+lo.ID)
	lo.ISO = filepath.Join(dir, "live.iso")
	lo.Initrd = filepath.Join(dir, "initrd.img")
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return lo, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	// One build at a time, across tests and processes: parallel tests all
	// start cold on a fresh machine, and three dracut runs on two cores
	// would each take as long as all three. The lock goes with the process.
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(dir), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return lo, fmt.Errorf("e2e: liveos: lock: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return lo, nil // built while this one waited
	}
	kmods, err := ensureKernelModules(ctx, cache, a.KernelVersion)
	if err != nil {
		return lo, err
	}
	work, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	if err := buildLiveISO(ctx, work, bb, lo.ID, filepath.Join(out, "live.iso")); err != nil {
		return lo, err
	}
	tmp := filepath.Join(work, "dracut-tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	if b, err := runIn(ctx, work, "dracut", "--force", "--no-hostonly", "--no-early-microcode",
		"--kver", a.KernelVersion, "--kmoddir", kmods, "--tmpdir", tmp,
		"-m", liveDracutModules, "--add-drivers", liveDrivers, "--compress", "gzip",
		filepath.Join(out, "initrd.img")); err != nil {
		return lo, fmt.Errorf("e2e: liveos: dracut: %w: %s", err, lastLines(string(b), 30))
	}
	if err := os.WriteFile(filepath.Join(out, "done"), []byte(lo.ID+"\n"), 0o644); err != nil {
		return lo, fmt.Errorf("e2e: liveos: %w", err)
	}
	if err := os.Rename(out, dir); err != nil {
		// Another test built it first: theirs is as good.
		if _, serr := os.Stat(filepath.Join(dir, "done")); serr != nil {
			return lo, fmt.Errorf("e2e: liveos: %w", err)
		}
	}
	lo.Built = true
	return lo, nil
}

// buildLiveISO writes the root filesystem, squashes it (xz, as live media
// are) into iso/LiveOS/squashfs.img, where dmsquash-live looks, and makes
// the ISO 9660 image with Rock Ridge and Joliet.
func buildLiveISO(ctx context.Context, work string, busybox []byte, id, iso string) error {
	root := filepath.Join(work, "rootfs")
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("e2e: liveos: %w", err)
		}
	}
	files := map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"bin/busybox":           {busybox, 0o755},
		"sbin/init":             {[]byte(liveInitScript), 0o755},
		"etc/fleetboot-live-id": {[]byte(id + "\n"), 0o644},
	}
	for name, f := range files {
		if err := os.WriteFile(filepath.Join(root, name), f.data, f.mode); err != nil {
			return fmt.Errorf("e2e: liveos: %w", err)
		}
	}
	for _, a := range liveApplets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			return fmt.Errorf("e2e: liveos: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("e2e: liveos: %w", err)
	}
	isoDir := filepath.Join(work, "iso")
	if err := os.MkdirAll(filepath.Join(isoDir, "LiveOS"), 0o755); err != nil {
		return fmt.Errorf("e2e: liveos: %w", err)
	}
	if b, err := runIn(ctx, work, "mksquashfs", root, filepath.Join(isoDir, "LiveOS", "squashfs.img"),
		"-comp", "xz", "-noappend", "-all-root", "-no-progress"); err != nil {
		return fmt.Errorf("e2e: liveos: mksquashfs: %w: %s", err, lastLines(string(b), 20))
	}
	if b, err := runIn(ctx, work, "xorriso", "-as", "mkisofs", "-o", iso, "-V", "FLEETBOOT_LIVE", "-R", "-J", isoDir); err != nil {
		return fmt.Errorf("e2e: liveos: xorriso: %w: %s", err, lastLines(string(b), 20))
	}
	return nil
}

// ensureKernelModules returns the module directory of kernel version ver
// (cache/kmods/<ver>/lib/modules/<ver>, with modules.dep): dracut reads the
// modules and their dependencies from it. The package tree has no
// modules.dep, so depmod runs on it first.
func ensureKernelModules(ctx context.Context, cache, ver string) (string, error) {
	base := filepath.Join(cache, "kmods", ver)
	mods := filepath.Join(base, "lib", "modules", ver)
	if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
		return mods, nil
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return "", fmt.Errorf("e2e: kernel modules: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(base), "dl-")
	if err != nil {
		return "", fmt.Errorf("e2e: kernel modules: %w", err)
	}
	defer os.RemoveAll(work)
	pkg := "linux-image-" + ver
	if err := aptDownload(ctx, work, pkg); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("e2e: kernel modules: expected one .deb in %s, found %d", work, len(debs))
	}
	x := filepath.Join(work, "x")
	if b, err := runIn(ctx, work, "dpkg-deb", "-x", debs[0], x); err != nil {
		return "", fmt.Errorf("e2e: kernel modules: dpkg-deb -x: %w: %s", err, b)
	}
	if b, err := runIn(ctx, work, "depmod", "-b", x, ver); err != nil {
		return "", fmt.Errorf("e2e: kernel modules: depmod: %w: %s", err, b)
	}
	// Only lib/modules is kept: the rest of the package (the kernel
	// itself, docs) is in Assets or not needed.
	keep := filepath.Join(work, "keep")
	if err := os.MkdirAll(filepath.Join(keep, "lib"), 0o755); err != nil {
		return "", fmt.Errorf("e2e: kernel modules: %w", err)
	}
	if err := os.Rename(filepath.Join(x, "lib", "modules"), filepath.Join(keep, "lib", "modules")); err != nil {
		return "", fmt.Errorf("e2e: kernel modules: %w", err)
	}
	if err := os.Rename(keep, base); err != nil {
		if _, serr := os.Stat(filepath.Join(mods, "modules.dep")); serr != nil {
			return "", fmt.Errorf("e2e: kernel modules: %w", err)
		}
	}
	return mods, nil
}

// CheckLiveRoot returns an error unless the console shows the live root
// booted as dracut boots it, in order: dmsquash-live mounted the root,
// dracut switched to it, the live root's own init (pid 1, with the
// squashfs's build ID) ran, and then the marker came.
func (vm *VM) CheckLiveRoot(lo LiveOS) error {
	if err := checkLiveConsole(vm.ConsoleLines(), lo.ID); err != nil {
		return fmt.Errorf("e2e: %s: %w:\n%s", vm.Config.Name, err, lastLines(vm.Console(), 40))
	}
	return nil
}

func checkLiveConsole(lines []Line, id string) error {
	at := func(re *regexp.Regexp, from int) int {
		for i := from; i < len(lines); i++ {
			if re.MatchString(lines[i].Text) {
				return i
			}
		}
		return -1
	}
	steps := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"dracut mounted the live root", liveMountedRE},
		{"dracut switched root", liveSwitchRE},
		{"the live root's init ran", liveRootRE},
		{"the marker", markerRE},
	}
	i := 0
	for _, s := range steps {
		j := at(s.re, i)
		if j < 0 {
			return fmt.Errorf("console lacks %s (%s) after line %d", s.name, s.re, i)
		}
		if s.re == liveRootRE {
			m := liveRootRE.FindStringSubmatch(lines[j].Text)
			if m[1] != id || m[2] != "1" {
				return fmt.Errorf("live root line %q: want id=%s pid=1", strings.TrimSpace(lines[j].Text), id)
			}
		}
		i = j + 1
	}
	return nil
}

// LiveMilestones are the seconds from power-on to each console step of a
// LiveOS boot: logged, never asserted.
func (vm *VM) LiveMilestones() string {
	steps := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"kernel", regexp.MustCompile(`Linux version `)},
		{"dracut DHCP", regexp.MustCompile(`dracut: Starting dhcp`)},
		{"ISO fetch", regexp.MustCompile(`dracut: fetching `)},
		{"root mounted", liveMountedRE},
		{"switch root", liveSwitchRE},
		{"live init", liveRootRE},
		{"marker", markerRE},
	}
	lines := vm.ConsoleLines()
	var parts []string
	for _, s := range steps {
		for _, l := range lines {
			if s.re.MatchString(l.Text) {
				parts = append(parts, fmt.Sprintf("%s %.1fs", s.name, l.At.Sub(vm.Started).Seconds()))
				break
			}
		}
	}
	return strings.Join(parts, ", ")
}

// liveBootLimit bounds a LiveOS boot: the initramfs is ~20 MB (over TFTP
// under Secure Boot) and dracut's DHCP and the ISO download come on top of
// a plain boot. A deadline, not a timing check.
const liveBootLimit = 6 * time.Minute
