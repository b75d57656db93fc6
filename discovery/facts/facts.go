// Package facts reads what the discovery system reports about the machine
// it runs on (proto.Facts) from /sys and /proc. Every read goes through a
// root directory, so tests read a fake tree and the discovery system the
// real one ("/").
package facts

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
)

// secureBootVar is the EFI global variable SecureBoot under efivarfs: 4
// bytes of attributes, then one byte, 1 when Secure Boot is enforced.
const secureBootVar = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Collect reads the facts of the machine whose /sys and /proc are under
// root. bootMAC is the NIC that booted (from the kernel command line); it
// is reported as given, canonicalised. A fact that cannot be read is left
// at its zero value: discovery runs on unknown hardware, and a machine
// without DMI or with a NIC that has no speed still reports the rest. Only
// a root without /proc and /sys at all is an error.
func Collect(root, bootMAC string) (proto.Facts, error) {
	c := collector{root: root}
	for _, d := range []string{"proc", "sys"} {
		if st, err := os.Stat(c.path(d)); err != nil || !st.IsDir() {
			return proto.Facts{}, fmt.Errorf("facts: no %s under %s", d, root)
		}
	}
	f := proto.Facts{V: proto.Version, Firmware: "bios"}
	if bootMAC != "" {
		mac, err := proto.ParseMAC(bootMAC)
		if err != nil {
			return proto.Facts{}, fmt.Errorf("facts: boot MAC: %w", err)
		}
		f.BootMAC = mac
	}
	if st, err := os.Stat(c.path("sys/firmware/efi")); err == nil && st.IsDir() {
		f.Firmware = "uefi"
		f.SecureBoot = c.secureBoot()
	}
	f.CPUModel, f.CPUs = c.cpus()
	f.MemoryGiB = c.memoryGiB()
	f.DMI = proto.DMIFacts{
		Vendor:  c.line("sys/class/dmi/id/sys_vendor"),
		Product: c.line("sys/class/dmi/id/product_name"),
		Serial:  c.line("sys/class/dmi/id/product_serial"),
		UUID:    strings.ToLower(c.line("sys/class/dmi/id/product_uuid")),
	}
	f.NICs = c.nics()
	f.Disks = c.disks()
	f.Kernel = c.line("proc/sys/kernel/osrelease")
	return f, nil
}

type collector struct{ root string }

func (c collector) path(rel string) string { return filepath.Join(c.root, filepath.FromSlash(rel)) }

// line is the first line of a small sysfs or procfs file, trimmed; "" when
// it cannot be read (sysfs answers EINVAL for a down link's carrier, EIO
// for some DMI fields).
func (c collector) line(rel string) string {
	data, err := os.ReadFile(c.path(rel))
	if err != nil {
		return ""
	}
	s, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(s)
}

func (c collector) secureBoot() bool {
	data, err := os.ReadFile(c.path(secureBootVar))
	return err == nil && len(data) == 5 && data[4] == 1
}

// cpus reads the first "model name" of /proc/cpuinfo and counts the online
// CPUs from /sys/devices/system/cpu/online ("0-3,6"), or counts the
// cpuinfo processors when that file is missing.
func (c collector) cpus() (model string, n int) {
	processors := 0
	if fh, err := os.Open(c.path("proc/cpuinfo")); err == nil {
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				processors++
			case "model name":
				if model == "" {
					model = strings.TrimSpace(v)
				}
			}
		}
		fh.Close()
	}
	if n, err := countRanges(c.line("sys/devices/system/cpu/online")); err == nil && n > 0 {
		return model, n
	}
	return model, processors
}

// countRanges counts the members of a kernel CPU list: "0-3,6,8-9" is 7.
func countRanges(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty list")
	}
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		n += b - a + 1
	}
	return n, nil
}

// memoryGiB is the machine's memory in GiB with two decimals. It counts the
// online memory blocks (/sys/devices/system/memory): that is the installed
// memory, where MemTotal lacks what the firmware and the kernel reserve, so
// a machine with 64 GiB would report 62.8 and miss a policy's
// facts.memory_gib>=64. Without memory blocks (no memory hotplug in the
// kernel) it falls back to MemTotal.
func (c collector) memoryGiB() float64 {
	if b := c.memoryBlocksBytes(); b > 0 {
		return round2(float64(b) / (1 << 30))
	}
	fh, err := os.Open(c.path("proc/meminfo"))
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0
		}
		return round2(float64(kb) / (1 << 20))
	}
	return 0
}

func (c collector) memoryBlocksBytes() uint64 {
	size, err := strconv.ParseUint(c.line("sys/devices/system/memory/block_size_bytes"), 16, 64)
	if err != nil || size == 0 {
		return 0
	}
	ents, err := os.ReadDir(c.path("sys/devices/system/memory"))
	if err != nil {
		return 0
	}
	var online uint64
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "memory") {
			continue
		}
		if _, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "memory")); err != nil {
			continue
		}
		if c.line("sys/devices/system/memory/"+e.Name()+"/online") == "1" {
			online++
		}
	}
	return online * size
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// nics lists the network interfaces backed by a device (a /sys/class/net/X
// with a device link): the machine's ports, not bridges, veths or tunnels
// a running system may have. Link is the carrier, which the kernel reports
// only for an interface that is up (the discovery system brings them all
// up first).
func (c collector) nics() []proto.NICFacts {
	ents, err := os.ReadDir(c.path("sys/class/net"))
	if err != nil {
		return nil
	}
	var out []proto.NICFacts
	for _, e := range ents {
		name := e.Name()
		dir := "sys/class/net/" + name
		if _, err := os.Stat(c.path(dir + "/device")); err != nil {
			continue
		}
		mac, err := proto.ParseMAC(c.line(dir + "/address"))
		if err != nil || mac == "00:00:00:00:00:00" {
			continue
		}
		n := proto.NICFacts{Name: name, MAC: mac, Link: c.line(dir+"/carrier") == "1"}
		if s, err := strconv.Atoi(c.line(dir + "/speed")); err == nil && s > 0 {
			n.SpeedMbps = s
		}
		if drv, err := os.Readlink(c.path(dir + "/device/driver")); err == nil {
			n.Driver = filepath.Base(drv)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// disks lists whole block devices backed by a device (no loop, ram, zram,
// device-mapper or md: those have no device link), with a size: an empty
// CD drive is no disk. /sys/block holds whole devices only; partitions are
// below them.
func (c collector) disks() []proto.DiskFacts {
	ents, err := os.ReadDir(c.path("sys/block"))
	if err != nil {
		return nil
	}
	var out []proto.DiskFacts
	for _, e := range ents {
		name := e.Name()
		dir := "sys/block/" + name
		if _, err := os.Stat(c.path(dir + "/device")); err != nil {
			continue
		}
		sectors, err := strconv.ParseUint(c.line(dir+"/size"), 10, 64)
		if err != nil || sectors == 0 {
			continue
		}
		d := proto.DiskFacts{
			Name: name,
			// /sys/block/X/size is in 512-byte sectors whatever the
			// device's own sector size.
			SizeGiB:    round2(float64(sectors*512) / (1 << 30)),
			Model:      c.line(dir + "/device/model"),
			Serial:     c.first(dir+"/device/serial", dir+"/serial"),
			Rotational: c.line(dir+"/queue/rotational") == "1",
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// first is the first non-empty of the files (NVMe and SCSI have
// device/serial, virtio-blk has serial on the disk itself).
func (c collector) first(rels ...string) string {
	for _, r := range rels {
		if s := c.line(r); s != "" {
			return s
		}
	}
	return ""
}
