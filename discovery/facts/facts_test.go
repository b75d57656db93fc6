package facts

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// tree is a fake root: file contents by path, and symlinks ("-> target").
type tree map[string]string

func (tr tree) write(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range tr {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// merge returns a copy of base with over applied ("" deletes).
func merge(base, over tree) tree {
	out := tree{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == "" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// qemuTree is what a QEMU q35 VM with 2 virtio NICs, a virtio disk, 1 GiB and
// 2 CPUs shows under /sys and /proc (abridged).
var qemuTree = tree{
	"proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: QEMU Virtual CPU version 2.5+\n\n" +
		"processor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n\n",
	"proc/meminfo":                                 "MemTotal:         993092 kB\nMemFree:          900000 kB\n",
	"proc/sys/kernel/osrelease":                    "6.1.0-28-cloud-amd64\n",
	"sys/devices/system/cpu/online":                "0-1\n",
	"sys/devices/system/memory/block_size_bytes":   "8000000\n",
	"sys/devices/system/memory/memory0/online":     "1\n",
	"sys/devices/system/memory/memory1/online":     "1\n",
	"sys/devices/system/memory/memory2/online":     "1\n",
	"sys/devices/system/memory/memory3/online":     "1\n",
	"sys/devices/system/memory/memory4/online":     "1\n",
	"sys/devices/system/memory/memory5/online":     "1\n",
	"sys/devices/system/memory/memory6/online":     "1\n",
	"sys/devices/system/memory/memory7/online":     "1\n",
	"sys/devices/system/memory/auto_online_blocks": "online\n",
	"sys/class/dmi/id/sys_vendor":                  "QEMU\n",
	"sys/class/dmi/id/product_name":                "Standard PC (Q35 + ICH9, 2009)\n",
	"sys/class/dmi/id/product_serial":              "\n",
	"sys/class/dmi/id/product_uuid":                "6A1F3E2C-0000-4000-8000-000000000001\n",
	// NICs: virtio devices with a driver link; lo and a bridge have no device.
	"sys/bus/virtio/drivers/virtio_net/":                           "",
	"sys/devices/pci0000:00/0000:00:02.0/virtio0/driver":           "-> ../../../../bus/virtio/drivers/virtio_net",
	"sys/devices/pci0000:00/0000:00:02.0/virtio0/net/eth0/address": "52:54:00:aa:00:01\n",
	"sys/devices/pci0000:00/0000:00:02.0/virtio0/net/eth0/carrier": "1\n",
	"sys/devices/pci0000:00/0000:00:02.0/virtio0/net/eth0/speed":   "-1\n",
	"sys/devices/pci0000:00/0000:00:02.0/virtio0/net/eth0/device":  "-> ../../../virtio0",
	"sys/class/net/eth0": "-> ../../devices/pci0000:00/0000:00:02.0/virtio0/net/eth0",
	"sys/devices/pci0000:00/0000:00:03.0/virtio1/driver":           "-> ../../../../bus/virtio/drivers/virtio_net",
	"sys/devices/pci0000:00/0000:00:03.0/virtio1/net/eth1/address": "52:54:00:AA:00:02\n",
	"sys/devices/pci0000:00/0000:00:03.0/virtio1/net/eth1/carrier": "0\n",
	"sys/devices/pci0000:00/0000:00:03.0/virtio1/net/eth1/speed":   "1000\n",
	"sys/devices/pci0000:00/0000:00:03.0/virtio1/net/eth1/device":  "-> ../../../virtio1",
	"sys/class/net/eth1":                  "-> ../../devices/pci0000:00/0000:00:03.0/virtio1/net/eth1",
	"sys/devices/virtual/net/lo/address":  "00:00:00:00:00:00\n",
	"sys/class/net/lo":                    "-> ../../devices/virtual/net/lo",
	"sys/devices/virtual/net/br0/address": "52:54:00:ff:ff:ff\n",
	"sys/class/net/br0":                   "-> ../../devices/virtual/net/br0",
	// Disks: a virtio disk (serial on the disk), an NVMe disk (model and
	// serial on the controller), an empty CD drive and a loop device.
	"sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda/size":             "41943040\n",
	"sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda/serial":           "disk-1\n",
	"sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda/queue/rotational": "1\n",
	"sys/devices/pci0000:00/0000:00:04.0/virtio2/block/vda/device":           "-> ../../../virtio2",
	"sys/block/vda": "-> ../devices/pci0000:00/0000:00:04.0/virtio2/block/vda",
	"sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/model":                    "QEMU NVMe Ctrl                          \n",
	"sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/serial":                   "nvme-1  \n",
	"sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1/size":             "2097152\n",
	"sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1/queue/rotational": "0\n",
	"sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1/device":           "-> ../../nvme0",
	"sys/block/nvme0n1": "-> ../devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1",
	"sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sr0/size":   "0\n",
	"sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sr0/device": "-> ../../../0:0:0:0",
	"sys/block/sr0":                        "-> ../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sr0",
	"sys/devices/virtual/block/loop0/size": "2048\n",
	"sys/block/loop0":                      "-> ../devices/virtual/block/loop0",
}

var qemuFacts = proto.Facts{
	V: proto.Version, BootMAC: "52:54:00:aa:00:01", Firmware: "bios",
	CPUModel: "QEMU Virtual CPU version 2.5+", CPUs: 2, MemoryGiB: 1,
	DMI: proto.DMIFacts{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", UUID: "6a1f3e2c-0000-4000-8000-000000000001"},
	NICs: []proto.NICFacts{
		{Name: "eth0", MAC: "52:54:00:aa:00:01", Link: true, Driver: "virtio_net"},
		{Name: "eth1", MAC: "52:54:00:aa:00:02", SpeedMbps: 1000, Driver: "virtio_net"},
	},
	Disks: []proto.DiskFacts{
		{Name: "nvme0n1", SizeGiB: 1, Model: "QEMU NVMe Ctrl", Serial: "nvme-1"},
		{Name: "vda", SizeGiB: 20, Serial: "disk-1", Rotational: true},
	},
	Kernel: "6.1.0-28-cloud-amd64",
}

const secureBootPath = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

func TestCollect(t *testing.T) {
	with := func(f func(*proto.Facts)) proto.Facts {
		c := qemuFacts
		c.NICs = append([]proto.NICFacts(nil), qemuFacts.NICs...)
		c.Disks = append([]proto.DiskFacts(nil), qemuFacts.Disks...)
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		tree    tree
		bootMAC string
		want    proto.Facts
	}{
		{name: "qemu bios", tree: qemuTree, bootMAC: "52-54-00-AA-00-01", want: qemuFacts},
		{
			name: "uefi, secure boot on",
			tree: merge(qemuTree, tree{
				"sys/firmware/efi/systab": "ACPI20=0x7f77e014\n",
				secureBootPath:            "\x06\x00\x00\x00\x01",
			}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.Firmware, f.SecureBoot = "uefi", true }),
		},
		{
			name: "uefi, secure boot off",
			tree: merge(qemuTree, tree{
				"sys/firmware/efi/systab": "ACPI20=0x7f77e014\n",
				secureBootPath:            "\x06\x00\x00\x00\x00",
			}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.Firmware = "uefi" }),
		},
		{
			name:    "uefi, efivarfs not mounted: secure boot unknown, reported off",
			tree:    merge(qemuTree, tree{"sys/firmware/efi/systab": "x\n"}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.Firmware = "uefi" }),
		},
		{
			name:    "no memory blocks: MemTotal",
			tree:    merge(qemuTree, tree{"sys/devices/system/memory/block_size_bytes": ""}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.MemoryGiB = 0.95 }),
		},
		{
			name:    "an offline memory block is not counted",
			tree:    merge(qemuTree, tree{"sys/devices/system/memory/memory7/online": "0\n"}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.MemoryGiB = 0.88 }),
		},
		{
			name:    "no cpu online list: cpuinfo processors counted",
			tree:    merge(qemuTree, tree{"sys/devices/system/cpu/online": ""}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.CPUs = 2 }),
		},
		{
			name:    "sparse cpu list",
			tree:    merge(qemuTree, tree{"sys/devices/system/cpu/online": "0-3,6,8-9\n"}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.CPUs = 7 }),
		},
		{
			name: "no DMI, no boot MAC: the rest is still reported",
			tree: merge(qemuTree, tree{
				"sys/class/dmi/id/sys_vendor": "", "sys/class/dmi/id/product_name": "",
				"sys/class/dmi/id/product_serial": "", "sys/class/dmi/id/product_uuid": "",
			}),
			want: with(func(f *proto.Facts) { f.DMI, f.BootMAC = proto.DMIFacts{}, "" }),
		},
		{
			name:    "a down link whose carrier cannot be read",
			tree:    merge(qemuTree, tree{"sys/devices/pci0000:00/0000:00:02.0/virtio0/net/eth0/carrier": ""}),
			bootMAC: "52:54:00:aa:00:01",
			want:    with(func(f *proto.Facts) { f.NICs[0].Link = false }),
		},
		{
			name: "empty machine",
			tree: tree{"proc/": "", "sys/": ""},
			want: proto.Facts{V: proto.Version, Firmware: "bios"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Collect(tc.tree.write(t), tc.bootMAC)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("facts (-want +got):\n%s", d)
			}
		})
	}
}

func TestCollectRefuses(t *testing.T) {
	root := qemuTree.write(t)
	if _, err := Collect(root, "52:54:00"); err == nil || !strings.Contains(err.Error(), "boot MAC") {
		t.Errorf("bad boot MAC: err %v, want a boot MAC error", err)
	}
	if _, err := Collect(t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "no proc") {
		t.Errorf("empty root: err %v, want no proc", err)
	}
}

func TestCountRanges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{in: "0", want: 1}, {in: "0-7", want: 8}, {in: "0-1,4-5,9", want: 5},
		{in: "", bad: true}, {in: "3-1", bad: true}, {in: "a-b", bad: true},
	} {
		got, err := countRanges(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("countRanges(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// TestCollectThisMachine reads the real /proc and /sys of the machine the
// test runs on and checks what every Linux machine has.
func TestCollectThisMachine(t *testing.T) {
	f, err := Collect("/", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this machine: %+v", f)
	if f.CPUs < runtime.NumCPU() {
		t.Errorf("cpus %d, runtime sees %d", f.CPUs, runtime.NumCPU())
	}
	if f.MemoryGiB <= 0 {
		t.Errorf("memory %v GiB", f.MemoryGiB)
	}
	if f.Kernel == "" {
		t.Error("no kernel release")
	}
	if f.Firmware != "bios" && f.Firmware != "uefi" {
		t.Errorf("firmware %q", f.Firmware)
	}
	for _, n := range f.NICs {
		if _, err := proto.ParseMAC(n.MAC); err != nil || n.Name == "lo" {
			t.Errorf("nic %+v", n)
		}
	}
	for _, d := range f.Disks {
		if d.SizeGiB <= 0 || strings.HasPrefix(d.Name, "loop") || strings.HasPrefix(d.Name, "zram") {
			t.Errorf("disk %+v", d)
		}
	}
}
