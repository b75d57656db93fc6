package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/discovery/facts"
	"github.com/fleetboot/fleetboot/discovery/initramfs"
	"github.com/fleetboot/fleetboot/proto"
)

// Init is `fleetboot discover` run as PID 1 of the discovery initramfs. It
// never returns while it is PID 1: on a failure it waits and reboots, so
// the machine network-boots again (and reaches the discovery image again,
// or its assignment) instead of panicking the kernel.
func Init(ctx context.Context, log *slog.Logger) error {
	err := initRun(ctx, log)
	if os.Getpid() != 1 {
		return err
	}
	if err != nil {
		log.Error("discovery failed; rebooting in 30 s to network-boot again", "err", err)
		time.Sleep(30 * time.Second)
	}
	return reboot(log)
}

func initRun(ctx context.Context, log *slog.Logger) error {
	if err := mountAll(); err != nil {
		return err
	}
	// Only warnings and worse from the kernel on the console: the
	// discovery system's own lines are what an operator reads there.
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("4"), 0)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	boot, err := ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	loaded, failed := loadModules("/"+initramfs.ModuleDir, log)
	log.Info("modules loaded", "loaded", loaded, "failed", failed)
	mountEFIVars(log)
	iface, err := waitInterface(ctx, boot.MAC, 60*time.Second)
	if err != nil {
		return err
	}
	// Every NIC up, so the kernel reports their carrier in the facts.
	for _, n := range nicNames() {
		if err := setUp(n); err != nil {
			log.Warn("link up", "iface", n, "err", err)
		}
	}
	if err := setUp("lo"); err != nil {
		log.Warn("link up", "iface", "lo", "err", err)
	}
	lease, err := dhcp(ctx, iface, log)
	if err != nil {
		return err
	}
	go keepLease(ctx, iface, lease, log)
	return Run(ctx, Config{
		Boot:   boot,
		Facts:  func() (proto.Facts, error) { return facts.Collect("/", boot.MAC) },
		Reboot: func() error { return reboot(log) },
		Logger: log,
	})
}

func mountAll() error {
	mounts := []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return fmt.Errorf("agent: mkdir %s: %w", m.dir, err)
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("agent: mount %s: %w", m.dir, err)
		}
	}
	return nil
}

// mountEFIVars mounts efivarfs, where Secure Boot's state is (an EFI
// variable), on a machine booted by UEFI. It runs after the modules are
// loaded: Debian's kernels have efivarfs as a module.
func mountEFIVars(log *slog.Logger) {
	const efivars = "/sys/firmware/efi/efivars"
	if _, err := os.Stat(efivars); err != nil {
		return
	}
	if err := unix.Mount("efivarfs", efivars, "efivarfs", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		log.Warn("efivarfs not mounted: Secure Boot reported off", "err", err)
	}
}

// loadModules loads every module file in dir. They are tried again while
// any loads, so a module whose dependency came later in the listing loads
// on the next round: no modules.dep needed at boot.
func loadModules(dir string, log *slog.Logger) (loaded, failed int) {
	ents, _ := os.ReadDir(dir)
	var todo []string
	for _, e := range ents {
		todo = append(todo, filepath.Join(dir, e.Name()))
	}
	sort.Strings(todo)
	errs := map[string]error{}
	for progress := true; progress && len(todo) > 0; {
		progress = false
		var again []string
		for _, p := range todo {
			err := loadModule(p)
			if err == nil || errors.Is(err, unix.EEXIST) {
				loaded++
				progress = true
				continue
			}
			errs[p] = err
			again = append(again, p)
		}
		todo = again
	}
	for _, p := range todo {
		if errors.Is(errs[p], unix.ENODEV) {
			// Its init found nothing to drive (efivarfs on a BIOS
			// machine, a NIC driver without its NIC): not a failure.
			log.Debug("module not for this machine", "module", filepath.Base(p))
			continue
		}
		failed++
		log.Warn("module not loaded", "module", filepath.Base(p), "err", errs[p])
	}
	return loaded, failed
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	return unix.FinitModule(int(f.Fd()), "", flags)
}

func waitInterface(ctx context.Context, mac string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			if strings.EqualFold(i.HardwareAddr.String(), mac) {
				return i.Name, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w %s after %s (is its driver in the image? fleetboot discovery build --modules)", ErrNoInterface, mac, limit)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nicNames are the interfaces backed by a device.
func nicNames() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "device")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func setUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dhcp gets an address for iface and configures it with its default
// route. Tries are bounded; the caller reboots after the last.
func dhcp(ctx context.Context, iface string, log *slog.Logger) (*nclient4.Lease, error) {
	var lastErr error
	for try := 1; try <= 10; try++ {
		lease, err := dhcpOnce(ctx, iface)
		if err == nil {
			return lease, configure(iface, lease, log)
		}
		lastErr = err
		log.Warn("dhcp", "iface", iface, "try", try, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return nil, fmt.Errorf("agent: dhcp on %s: %w", iface, lastErr)
}

// configure puts the lease's address and default route on iface.
func configure(iface string, lease *nclient4.Lease, log *slog.Logger) error {
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	ones, _ := mask.Size()
	idx, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := addAddr(idx.Index, ack.YourIPAddr, ones); err != nil {
		return err
	}
	routers := ack.Router()
	if len(routers) > 0 {
		if err := addDefaultRoute(idx.Index, routers[0]); err != nil {
			log.Warn("default route", "router", routers[0], "err", err)
		}
	}
	log.Info("address", "iface", iface, "ip", ack.YourIPAddr, "prefix", ones, "router", routers, "lease", ack.IPAddressLeaseTime(time.Hour))
	return nil
}

// keepLease renews the lease at half its time, for as long as the machine
// waits discovered (hours or days, until a policy matches): the edge takes
// callbacks only from an address it leased to the machine, and would hand
// an expired one to another. A failed renewal is tried again after a full
// DHCP exchange; the address is reconfigured if it changed.
func keepLease(ctx context.Context, iface string, lease *nclient4.Lease, log *slog.Logger) {
	for {
		wait := max(lease.ACK.IPAddressLeaseTime(time.Hour)/2, 5*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		next, err := renew(ctx, iface, lease)
		if err != nil {
			log.Warn("lease not renewed; asking again", "err", err)
			if next, err = dhcpOnce(ctx, iface); err != nil {
				log.Warn("dhcp", "iface", iface, "err", err)
				continue
			}
		}
		if !next.ACK.YourIPAddr.Equal(lease.ACK.YourIPAddr) {
			if err := configure(iface, next, log); err != nil {
				log.Warn("new address", "err", err)
			}
		}
		lease = next
		log.Info("lease renewed", "ip", lease.ACK.YourIPAddr, "lease", lease.ACK.IPAddressLeaseTime(time.Hour))
	}
}

func renew(ctx context.Context, iface string, lease *nclient4.Lease) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("agent: dhcp client: %w", err)
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Renew(rctx, lease)
}

func dhcpOnce(ctx context.Context, iface string) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("agent: dhcp client: %w", err)
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Request(rctx)
}

func reboot(log *slog.Logger) error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		log.Error("reboot", "err", err)
		return fmt.Errorf("agent: reboot: %w", err)
	}
	return nil
}
