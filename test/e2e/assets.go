package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// Assets are the files a test VM boots: a Debian cloud kernel and a busybox
// initramfs whose /init prints a marker. The LiveOS (liveos.go) is built on
// them.
type Assets struct {
	KernelVersion string
	Kernel        string // path of vmlinuz
	Initrd        string // path of the gzip'd newc initramfs
}

// MarkerPrefix starts the line the test initramfs (and the LiveOS's init)
// prints on the serial console.
const MarkerPrefix = "FLEETBOOT-MARKER"

// virtioModules are the modules the cloud kernel needs, in load order, to
// bring up a virtio-net eth0 (it has virtio_net as a module and no e1000).
func virtioModules() []string {
	return []string{
		"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
		"virtio_pci", "failover", "net_failover", "virtio_net",
	}
}

// CacheDir is where downloaded and built assets are kept between runs:
// $FLEETBOOT_E2E_CACHE or ~/.cache/fleetboot/e2e.
func CacheDir() string {
	if d := os.Getenv("FLEETBOOT_E2E_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fleetboot", "e2e")
}

// EnsureAssets returns the boot assets, downloading the kernel package with
// apt-get and building the initramfs on first use. It is idempotent:
// every file is written to a temporary name and renamed into the cache.
func EnsureAssets(ctx context.Context, cache string) (Assets, error) {
	var a Assets
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return a, fmt.Errorf("e2e: assets: %w", err)
	}
	ver, kdir, err := ensureKernel(ctx, cache)
	if err != nil {
		return a, err
	}
	a.KernelVersion = ver
	a.Kernel = filepath.Join(kdir, "vmlinuz")
	if a.Initrd, err = ensureInitrd(cache, kdir); err != nil {
		return a, err
	}
	return a, nil
}

// ensureKernel finds a cached kernel (the version named by
// $FLEETBOOT_E2E_KERNEL, else the one linux-image-cloud-amd64 depends on)
// or fetches and unpacks its package.
func ensureKernel(ctx context.Context, cache string) (string, string, error) {
	ver := os.Getenv("FLEETBOOT_E2E_KERNEL")
	if ver == "" {
		// Offline re-runs use whatever is cached.
		if m, _ := filepath.Glob(filepath.Join(cache, "kernel", "*", "vmlinuz")); len(m) > 0 {
			d := filepath.Dir(m[len(m)-1])
			return filepath.Base(d), d, nil
		}
		v, err := cloudKernelVersion(ctx)
		if err != nil {
			return "", "", err
		}
		ver = v
	}
	kdir := filepath.Join(cache, "kernel", ver)
	if _, err := os.Stat(filepath.Join(kdir, "vmlinuz")); err == nil {
		return ver, kdir, nil
	}
	if err := fetchKernel(ctx, cache, "linux-image-"+ver, ver, kdir); err != nil {
		return "", "", err
	}
	return ver, kdir, nil
}

// fetchKernel downloads kernel package pkg (kernel version ver) into a
// scratch directory under dir and keeps what the tests boot in kdir: its
// vmlinuz and, under modules/, the virtio modules the test initramfs loads
// (one built into the kernel is absent). The amd64 and the arm64 assets
// both come this way. When another run fills kdir first, its copy stands.
func fetchKernel(ctx context.Context, dir, pkg, ver, kdir string) error {
	work, err := os.MkdirTemp(dir, "kernel-dl-")
	if err != nil {
		return fmt.Errorf("e2e: kernel %s: %w", pkg, err)
	}
	defer os.RemoveAll(work)
	if err := aptDownload(ctx, work, pkg); err != nil {
		return err
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("e2e: kernel %s: expected one .deb in %s, found %d", pkg, work, len(debs))
	}
	x := filepath.Join(work, "x")
	if out, err := runIn(ctx, work, "dpkg-deb", "-x", debs[0], x); err != nil {
		return fmt.Errorf("e2e: kernel %s: dpkg-deb -x: %w: %s", pkg, err, out)
	}
	stage := filepath.Join(work, "stage")
	if err := os.MkdirAll(filepath.Join(stage, "modules"), 0o755); err != nil {
		return fmt.Errorf("e2e: kernel %s: %w", pkg, err)
	}
	if err := copyFile(filepath.Join(x, "boot", "vmlinuz-"+ver), filepath.Join(stage, "vmlinuz")); err != nil {
		return err
	}
	mods := filepath.Join(x, "lib", "modules", ver, "kernel")
	for _, m := range virtioModules() {
		found, _ := findModule(mods, m)
		if found == "" {
			continue // built into the kernel: nothing to load
		}
		if err := copyFile(found, filepath.Join(stage, "modules", m+".ko")); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(kdir), 0o755); err != nil {
		return fmt.Errorf("e2e: kernel %s: %w", pkg, err)
	}
	if err := os.Rename(stage, kdir); err != nil {
		// Another run may have renamed its copy first.
		if _, serr := os.Stat(filepath.Join(kdir, "vmlinuz")); serr != nil {
			return fmt.Errorf("e2e: kernel %s: %w", pkg, err)
		}
	}
	return nil
}

func cloudKernelVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Depends: linux-image-") {
		if _, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("e2e: kernel: apt-get update: %w", uerr)
		}
		out, err = exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("e2e: kernel: apt-cache depends: %w: %s", err, out)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "Depends: linux-image-"); ok && strings.HasSuffix(v, "-cloud-amd64") {
			return v, nil
		}
	}
	return "", fmt.Errorf("e2e: kernel: no linux-image dependency in %q", out)
}

func findModule(root, name string) (string, error) {
	var found string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == name+".ko" {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	return found, err
}

// initScript is the initramfs's /init. It prints the marker as one line on
// the console so the harness can match it whatever the kernel logs around it.
// With fleetboot.done=URL (an image's cmdline says fleetboot.done={{callback}},
// which carries the machine's callback token) it then reports the install
// done, as an installer does, and prints FLEETBOOT-DONE with the outcome.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin /tmp /run
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
dmesg -n 1
for m in ` + "MODULES" + `; do
	[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
i=0
while [ ! -e /sys/class/net/eth0/address ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mac=$(cat /sys/class/net/eth0/address 2>/dev/null)
cmdline=$(cat /proc/cmdline)
done=""
userdata=""
for w in $cmdline; do
	case "$w" in
	fleetboot.done=*) done="${w#fleetboot.done=}" ;;
	fleetboot.userdata=*) userdata="${w#fleetboot.userdata=}" ;;
	esac
done
echo "FLEETBOOT-MARKER mac=$mac cmdline=$cmdline" > /dev/console
if [ -n "$done" ] || [ -n "$userdata" ]; then
	ip link set lo up
	ip link set eth0 up
	udhcpc -i eth0 -n -q -t 10 -T 2 -s /etc/udhcpc/default.script
fi
if [ -n "$userdata" ]; then
	# A cloud-init NoCloud seed: what an installer would read first.
	if wget -q -O /tmp/user-data "${userdata}user-data"; then
		while IFS= read -r l; do echo "FLEETBOOT-USERDATA $l" > /dev/console; done < /tmp/user-data
	else
		echo "FLEETBOOT-USERDATA refused mac=$mac" > /dev/console
	fi
fi
if [ -n "$done" ]; then
	# The token is in the URL; the edge refuses the callback without it.
	if wget -q -O /dev/null --post-data '{"ok":true}' "$done"; then
		echo "FLEETBOOT-DONE ok mac=$mac" > /dev/console
	else
		echo "FLEETBOOT-DONE refused mac=$mac" > /dev/console
	fi
fi
sync
poweroff -f
`

// udhcpcScript is busybox udhcpc's hook (Debian's busybox looks for it at
// /etc/udhcpc/default.script).
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	if [ -n "$router" ]; then
		for r in $router; do route add default gw "$r" dev "$interface"; break; done
	fi
	;;
esac
exit 0
`

func ensureInitrd(cache, kdir string) (string, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("e2e: initrd: busybox-static is needed: %w", err)
	}
	return writeInitrd(cache, "initrd", bb, kdir, nil)
}

// writeInitrd builds the marker initramfs (busybox bb, initScript as /init,
// the udhcpc script, the virtio modules under kdir/modules, and extra) and
// stores it in dir as NAME-<digest of its content>.gz unless it is there.
func writeInitrd(dir, name string, bb []byte, kdir string, extra map[string]cpioEntry) (string, error) {
	init := strings.Replace(initScript, "MODULES", strings.Join(virtioModules(), " "), 1)
	entries := map[string]cpioEntry{
		"bin":                       {Mode: cpioDir | 0o755},
		"bin/busybox":               {Mode: cpioFile | 0o755, Data: bb},
		"bin/sh":                    {Mode: cpioSymlink | 0o777, Data: []byte("busybox")},
		"dev":                       {Mode: cpioDir | 0o755},
		"etc":                       {Mode: cpioDir | 0o755},
		"etc/udhcpc":                {Mode: cpioDir | 0o755},
		"etc/udhcpc/default.script": {Mode: cpioFile | 0o755, Data: []byte(udhcpcScript)},
		"init":                      {Mode: cpioFile | 0o755, Data: []byte(init)},
		"lib":                       {Mode: cpioDir | 0o755},
		"lib/modules":               {Mode: cpioDir | 0o755},
		"proc":                      {Mode: cpioDir | 0o755},
		"sys":                       {Mode: cpioDir | 0o755},
		"tmp":                       {Mode: cpioDir | 0o1777},
	}
	maps.Copy(entries, extra)
	for _, m := range virtioModules() {
		data, err := os.ReadFile(filepath.Join(kdir, "modules", m+".ko"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("e2e: %s: %w", name, err)
		}
		entries["lib/modules/"+m+".ko"] = cpioEntry{Mode: cpioFile | 0o644, Data: data}
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, entries); err != nil {
		return "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	path := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:6])+".gz")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, writeAtomic(path, buf.Bytes())
}

func writeAtomic(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o644)
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("e2e: copy: %w", err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return fmt.Errorf("e2e: copy: %w", err)
	}
	return nil
}

func runIn(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}
