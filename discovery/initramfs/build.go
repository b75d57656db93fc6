// Package initramfs builds the discovery system's initramfs: the static
// fleetboot binary as /init, the kernel modules its NICs and disks need,
// and nothing else (no shell, no busybox), as a gzip'd newc cpio.
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// ModuleDir is where the modules are in the initramfs; the discovery system
// loads every file there (discovery/agent).
const ModuleDir = "lib/modules"

// DefaultModules are the drivers of the NICs and disks discovery is meant
// for, by module name. A kernel with a driver built in needs no module; one
// not found among the kernel's modules is reported, not an error (a kernel
// built without it).
func DefaultModules() []string {
	return []string{
		// virtio (QEMU, KVM and most clouds)
		"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi",
		// NICs common in servers
		"e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "tg3", "bnxt_en", "r8169",
		// disks
		"nvme", "ahci", "sd_mod", "ata_piix",
		// Secure Boot's state is read from efivarfs
		"efivarfs",
	}
}

// Config says what goes in.
type Config struct {
	Binary string // the static fleetboot binary: /init
	// ModulesDir is the kernel's module tree, /lib/modules/<version> (with
	// modules.dep: dependencies come along), or any directory holding .ko
	// files. Empty: no modules (every driver must be built in).
	ModulesDir string
	Modules    []string // module names; nil: DefaultModules
}

// Result is what Build made.
type Result struct {
	Image        []byte   // the gzip'd cpio
	Modules      []string // module files put in, base names
	Builtin      []string // asked-for modules built into the kernel (modules.builtin)
	Missing      []string // asked-for modules neither in the tree nor built in
	Uncompressed int
}

// Build makes the initramfs.
func Build(cfg Config) (Result, error) {
	var res Result
	bin, err := os.ReadFile(cfg.Binary)
	if err != nil {
		return res, fmt.Errorf("initramfs: binary: %w", err)
	}
	if err := checkStatic(cfg.Binary); err != nil {
		return res, err
	}
	entries := map[string]Entry{
		"dev": {Mode: TypeDir | 0o755},
		// The kernel opens /dev/console for init's stdin, stdout and
		// stderr before it runs /init; without the node init prints
		// nowhere. /dev is then mounted over with devtmpfs.
		"dev/console": {Mode: TypeChar | 0o600, Major: 5, Minor: 1},
		"init":        {Mode: TypeFile | 0o755, Data: bin},
		"lib":         {Mode: TypeDir | 0o755},
		ModuleDir:     {Mode: TypeDir | 0o755},
		"proc":        {Mode: TypeDir | 0o755},
		"run":         {Mode: TypeDir | 0o755},
		"sys":         {Mode: TypeDir | 0o755},
		"tmp":         {Mode: TypeDir | 0o1777},
	}
	if cfg.ModulesDir != "" {
		names := cfg.Modules
		if names == nil {
			names = DefaultModules()
		}
		files, missing, err := FindModules(cfg.ModulesDir, names)
		if err != nil {
			return res, err
		}
		builtin := builtinModules(cfg.ModulesDir)
		for _, m := range missing {
			if builtin[m] {
				res.Builtin = append(res.Builtin, m)
			} else {
				res.Missing = append(res.Missing, m)
			}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return res, fmt.Errorf("initramfs: module: %w", err)
			}
			base := filepath.Base(f)
			entries[ModuleDir+"/"+base] = Entry{Mode: TypeFile | 0o644, Data: data}
			res.Modules = append(res.Modules, base)
		}
	}
	var raw bytes.Buffer
	if err := WriteCPIO(&raw, entries); err != nil {
		return res, err
	}
	res.Uncompressed = raw.Len()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return res, fmt.Errorf("initramfs: gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return res, fmt.Errorf("initramfs: gzip: %w", err)
	}
	res.Image = gz.Bytes()
	return res, nil
}

// WriteFile writes the image atomically.
func WriteFile(path string, image []byte) error {
	if err := atomicfile.WriteFile(path, image, 0o644); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// checkStatic refuses a dynamically linked binary: the initramfs has no
// libc and no loader, and the kernel would fail to run /init with nothing
// on the console to say why.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("initramfs: %s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("initramfs: %s is dynamically linked; build it with CGO_ENABLED=0 (make build)", path)
		}
	}
	return nil
}

// moduleSuffixes are the file names a module may have; the kernel
// decompresses the compressed ones itself (finit_module with
// MODULE_INIT_COMPRESSED_FILE) when built with CONFIG_MODULE_DECOMPRESS.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// moduleName is the module a file holds: virtio_net for
// virtio_net.ko.xz; modules.dep and module names use _ where some files
// use -.
func moduleName(file string) (string, bool) {
	base := filepath.Base(file)
	for _, s := range moduleSuffixes {
		if n, ok := strings.CutSuffix(base, s); ok {
			return strings.ReplaceAll(n, "-", "_"), true
		}
	}
	return "", false
}

// FindModules finds the files of the named modules under dir, with their
// dependencies when dir has a modules.dep, and lists the names not found.
func FindModules(dir string, names []string) (files, missing []string, err error) {
	byName := map[string]string{} // module name -> path
	deps := map[string][]string{} // module name -> dependency names
	if dep, err := os.Open(filepath.Join(dir, "modules.dep")); err == nil {
		defer dep.Close()
		sc := bufio.NewScanner(dep)
		for sc.Scan() {
			mod, rest, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			n, ok := moduleName(mod)
			if !ok {
				continue
			}
			byName[n] = filepath.Join(dir, filepath.FromSlash(mod))
			for _, d := range strings.Fields(rest) {
				if dn, ok := moduleName(d); ok {
					deps[n] = append(deps[n], dn)
				}
			}
		}
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("initramfs: modules.dep: %w", err)
		}
	} else {
		// No modules.dep (a kernel package unpacked, where depmod has not
		// run, or a flat directory): each module's own .modinfo names
		// its dependencies.
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if n, ok := moduleName(p); ok && !d.IsDir() {
				if _, dup := byName[n]; !dup {
					byName[n] = p
					deps[n] = modinfoDepends(p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("initramfs: modules: %w", err)
		}
	}
	seen := map[string]bool{}
	var add func(n string)
	add = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		p, ok := byName[n]
		if !ok {
			missing = append(missing, n)
			return
		}
		for _, d := range deps[n] {
			add(d)
		}
		files = append(files, p)
	}
	for _, n := range names {
		add(strings.ReplaceAll(n, "-", "_"))
	}
	if len(files) == 0 && len(byName) == 0 {
		return nil, nil, fmt.Errorf("initramfs: no kernel modules under %s", dir)
	}
	sort.Strings(missing)
	return files, missing, nil
}

// KernelVersion reads the release string of an x86 bzImage from its setup
// header ("6.1.0-28-cloud-amd64"), so the right /lib/modules tree can be
// found; "" when the file is not a bzImage (arm64 Image, compressed EFI zboot).
func KernelVersion(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("initramfs: kernel: %w", err)
	}
	// Boot protocol: "HdrS" at 0x202; kernel_version at 0x20e is the
	// offset of a NUL-terminated string, minus 0x200.
	if len(data) < 0x210 || string(data[0x202:0x206]) != "HdrS" {
		return "", nil
	}
	off := int(binary.LittleEndian.Uint16(data[0x20e:])) + 0x200
	if off <= 0x200 || off >= len(data) {
		return "", nil
	}
	s := data[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	ver, _, _ := strings.Cut(string(s), " ")
	if ver == "" || !slices.ContainsFunc([]byte(ver), func(c byte) bool { return c == '.' }) {
		return "", errors.New("initramfs: kernel: no version string in the bzImage header")
	}
	return ver, nil
}

// modinfoDepends reads "depends=a,b" from an uncompressed module's
// .modinfo section (NUL-separated key=value strings); nil when the file is
// compressed or has none.
func modinfoDepends(path string) []string {
	if !strings.HasSuffix(path, ".ko") {
		return nil
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			var out []string
			for _, d := range strings.Split(string(v), ",") {
				out = append(out, strings.ReplaceAll(d, "-", "_"))
			}
			return out
		}
	}
	return nil
}

// builtinModules reads the tree's modules.builtin (paths of the modules
// compiled into the kernel), by module name; empty without one.
func builtinModules(dir string) map[string]bool {
	out := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(data), "\n") {
		if n, ok := moduleName(strings.TrimSpace(l)); ok {
			out[n] = true
		}
	}
	return out
}
