package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

const (
	// bootsDefault is how many VMs each row boots per server; the median
	// is reported. FLEETBOOT_BENCH_BOOTS overrides it.
	bootsDefault = 3
	// bootLimit bounds one VM's wait for its marker: a deadline, not a
	// figure.
	bootLimit = 180 * time.Second
	// bootImage is the fleetboot image every benchmark VM boots.
	bootImage = "boot"
	// bootReference names the reference in the table.
	bootReference = "dnsmasq"
)

// bootRow is one kind of machine powered on in BenchmarkBoot.
type bootRow struct {
	name string
	// vm is the machine's configuration against a server at addr; its
	// files go to dir.
	vm func(b *testing.B, dir, addr string) e2e.VMConfig
	// servers boot this row instead of the benchmark's default pair (the
	// Secure Boot chain needs a dnsmasq laid out for it, and hosts on a
	// loader at the edge); reference first.
	servers []*bootServer
	// secureBoot: the row's figures are the marker and the kernel's TFTP
	// rate (bootServer.kernelWindow), not iPXE's console milestones, and
	// each boot must show Secure Boot enforced.
	secureBoot bool
}

// bootServer is one side of BenchmarkBoot: a network with its servers
// running, and how to make a new MAC bootable there.
type bootServer struct {
	name     string
	net      *e2e.Network
	dir      string
	addr     string
	register func(b *testing.B, mac string)
	// words must all be on the booted kernel's command line.
	words []string
	// anyMAC: the server's boot config is the same for every machine (the
	// reference's static grub.cfg), so the command line names no MAC.
	anyMAC bool
	// kernelWindow is, for a Secure Boot row, the window from the server's
	// log line for grub.cfg sent to its line for the kernel sent, the first
	// pair after since: GRUB's kernel download as each server logs it.
	kernelWindow func(since time.Time) (time.Duration, error)
}

// BenchmarkBoot powers on QEMU VMs (TCG) and measures power-on to the
// marker the test initramfs prints in userspace, for a BIOS machine with
// QEMU's iPXE ROM, a UEFI machine through OVMF's PXE client and
// snponly.efi, and a BIOS chain boot (PXE ROM → undionly.kpxe over TFTP →
// iPXE's own DHCP → script), against fleetboot (coordinator and edge in
// full DHCP mode, the edge sending its own IPv6 router advertisements, the
// default) and against the reference of test/e2e: dnsmasq (DHCP, TFTP and
// enable-ra in the same process) with Go's file server, in the same run.
//
// Neither segment has a router: each server's advertisements are what end
// iPXE's IPv6 wait (about 12-16 s per iPXE instance without). Both servers
// skip their ping check of a new address, give UEFI snponly.efi and serve
// the same kernel and initramfs; the edge's cache is warm. The boots of the
// two servers alternate, one VM at a time, so load on the machine falls on
// both alike; each row reports the median of FLEETBOOT_BENCH_BOOTS boots
// (default 3) and fleetboot's ratio to dnsmasq (lower is better): to the
// marker, and to the initrd loaded (the server's whole part). A "PROFILE|"
// line per row and server gives the median time after power-on of each
// console milestone (see milestones): where a difference comes from.
//
// The last row is issue 14's Secure Boot chain: OVMF with Secure Boot
// enforced boots Debian's shim, signed network GRUB and signed kernel, with
// kernel and initrd over TFTP (the signed GRUB has no http module), against
// fleetboot (a host on a shim-grub loader: files from the warm cache,
// grub.cfg rendered for the client) and against dnsmasq serving the same
// files and a static grub.cfg, as TestReferenceSecureBoot does (the Azure
// LiveOS seed's reference). Its figures are power-on to marker and the
// kernel's TFTP rate as GRUB fetches it: the kernel's size over the window
// between each server's own log lines for grub.cfg sent and for the kernel
// sent (logWindow), the one measure both servers give alike.
func BenchmarkBoot(b *testing.B) {
	e2e.RequireRoot(b)
	n := bootsPerRow(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	assets, err := e2e.EnsureAssets(ctx, e2e.CacheDir())
	if err != nil {
		b.Fatal(err)
	}
	sb, err := e2e.EnsureSecureBootAssets(ctx, e2e.CacheDir(), assets)
	if err != nil {
		b.Fatal(err)
	}
	kernel, err := os.Stat(sb.Kernel)
	if err != nil {
		b.Fatal(err)
	}
	fb, fbSB := startBootFleetboot(b, assets, sb)
	servers := []*bootServer{startBootReference(b, assets), fb}
	rows := []bootRow{
		{name: "BIOS ROM", vm: func(*testing.B, string, string) e2e.VMConfig { return e2e.VMConfig{Firmware: e2e.BIOS} }},
		{name: "UEFI snponly", vm: func(*testing.B, string, string) e2e.VMConfig {
			return e2e.VMConfig{Firmware: e2e.UEFI, NoROM: true}
		}},
		{name: "BIOS chain", vm: func(b *testing.B, dir, addr string) e2e.VMConfig { return e2e.UndionlyChain(b, dir, addr) }},
		{name: "UEFI SB shim-GRUB", secureBoot: true, servers: []*bootServer{startBootSecureBootReference(b, assets, sb), fbSB},
			vm: func(*testing.B, string, string) e2e.VMConfig {
				return e2e.VMConfig{Firmware: e2e.UEFISecureBoot, NoROM: true}
			}},
	}
	took := map[string]map[string][]bootResult{} // row -> server -> boots
	b.ResetTimer()
	for i := 0; i < n; i++ {
		for r, row := range rows {
			if took[row.name] == nil {
				took[row.name] = map[string][]bootResult{}
			}
			// Alternate which server goes first: a slow moment of the
			// shared machine must not always land on the same side.
			order := slices.Clone(row.serversOr(servers))
			if (i+r)%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				if res, ok := bootOnce(b, s, row, i); ok {
					took[row.name][s.name] = append(took[row.name][s.name], res)
				}
			}
		}
	}
	b.StopTimer()
	res := newResults("BOOT")
	for _, row := range rows {
		meds := map[string][]time.Duration{} // server -> each milestone's median
		rates := map[string]float64{}        // server -> median kernel MiB/s
		for _, s := range row.serversOr(servers) {
			boots := took[row.name][s.name]
			if len(boots) == 0 {
				continue
			}
			var at [][]time.Duration
			var windows []time.Duration
			for _, r := range boots {
				at = append(at, r.at)
				windows = append(windows, r.kernelWindow)
			}
			meds[s.name] = medians(at)
			if row.secureBoot {
				w := median(windows)
				rates[s.name] = float64(kernel.Size()) / (1 << 20) / w.Seconds()
				b.Logf("PROFILE| %-12s | %-9s | %d boots | kernel over TFTP (%d bytes): median window %.2f s (grub.cfg sent → kernel sent, server's log)",
					row.name, s.name, len(boots), kernel.Size(), w.Seconds())
				continue
			}
			b.Logf("PROFILE| %-12s | %-9s | %d boots | medians after power-on: %s", row.name, s.name, len(boots), fmtProfile(meds[s.name]))
		}
		// To the marker: the figure a user sees. To the initrd: all the
		// server does, without the kernel's own start (the same for both,
		// and the noisiest step on a shared machine). The Secure Boot
		// chain has no iPXE console lines; its server-side figure is the
		// kernel's TFTP rate as GRUB fetches it.
		figs := []struct {
			what string
			k    int
		}{{"to marker", len(milestones) - 1}, {"to initrd", milestone(b, "initrd")}}
		if row.secureBoot {
			figs = figs[:1]
		}
		for _, fig := range figs {
			metric := fmt.Sprintf("%s, %s, med. of %d", row.name, fig.what, n)
			for _, s := range row.serversOr(servers) { // the reference first: fleetboot's row carries the ratio
				med, ok := meds[s.name]
				if !ok {
					summary(b, res.area, metric, s.name, "no boot", "")
					continue
				}
				res.add(b, metric, s.name, med[fig.k].Seconds(), "s", false)
			}
		}
		if row.secureBoot {
			metric := fmt.Sprintf("%s, kernel TFTP, med. of %d", row.name, n)
			for _, s := range row.serversOr(servers) {
				r, ok := rates[s.name]
				if !ok {
					summary(b, res.area, metric, s.name, "no boot", "")
					continue
				}
				res.add(b, metric, s.name, r, "MiB/s", true)
			}
		}
	}
}

// serversOr is the row's own servers, else the benchmark's.
func (r bootRow) serversOr(def []*bootServer) []*bootServer {
	if r.servers != nil {
		return r.servers
	}
	return def
}

// bootResult is one boot's figures: when, after power-on, the console
// showed each milestone (the marker last), and for a Secure Boot row the
// kernel's TFTP window.
type bootResult struct {
	at           []time.Duration
	kernelWindow time.Duration
}

// medians are each milestone's median over the boots.
func medians(boots [][]time.Duration) []time.Duration {
	med := make([]time.Duration, len(milestones))
	for k := range milestones {
		var ds []time.Duration
		for _, at := range boots {
			ds = append(ds, at[k])
		}
		med[k] = median(ds)
	}
	return med
}

// milestone is the index of the named milestone.
func milestone(b *testing.B, name string) int {
	b.Helper()
	for i, ms := range milestones {
		if ms.name == name {
			return i
		}
	}
	b.Fatalf("bench: no milestone %q", name)
	return -1
}

// bootOnce powers on one VM of row against s and returns when, after
// power-on, its console showed each milestone (the marker last). A boot
// that fails is logged and left out of the figures (ok false).
func bootOnce(b *testing.B, s *bootServer, row bootRow, i int) (bootResult, bool) {
	b.Helper()
	mac := e2e.RandomMAC()
	s.register(b, mac)
	cfg := row.vm(b, s.dir, s.addr)
	cfg.MAC = mac
	cfg.Name = fmt.Sprintf("%s-%s-%d", s.name, strings.ReplaceAll(strings.ToLower(row.name), " ", "-"), i)
	vm := s.net.StartVM(b, s.dir, cfg)
	defer vm.Stop()
	words := s.words
	if !s.anyMAC {
		words = append([]string{"fleetboot.mac=" + mac}, words...)
	}
	m, err := vm.WaitMarker(bootLimit)
	if err == nil {
		err = vm.CheckMarker(m, words...)
	}
	var res bootResult
	if err == nil && row.secureBoot {
		// A boot that did not enforce Secure Boot measures another chain.
		if err = vm.CheckSecureBoot(); err == nil {
			res.kernelWindow, err = s.kernelWindow(vm.Started)
		}
	}
	if err != nil {
		b.Errorf("%s against %s: %v (console %s)", row.name, s.name, err, vm.ConsolePath())
		return res, false
	}
	res.at = profile(vm.ConsoleLines(), vm.Started, m.Elapsed)
	if row.secureBoot {
		b.Logf("%s against %s (%s): power-on to marker %.1f s; kernel over TFTP: %.2f s from grub.cfg sent to kernel sent", row.name, s.name, mac, m.Elapsed.Seconds(), res.kernelWindow.Seconds())
	} else {
		b.Logf("%s against %s (%s): power-on to marker %.1f s; %s", row.name, s.name, mac, m.Elapsed.Seconds(), fmtProfile(res.at))
	}
	return res, true
}

// milestones are console lines of a network boot, in order: the UEFI
// firmware's own DHCP done, the network boot program (snponly.efi,
// undionly.kpxe) loaded over TFTP, the last iPXE instance started, its NIC
// configured (DHCP and IPv6 autoconfiguration), its script, the kernel and
// the initrd downloaded; then the marker. Their times after power-on split
// a boot into steps: a profile of where one server is slower, not only
// that it is. A step a boot does not have stays 0.
var milestones = []struct {
	name string
	re   *regexp.Regexp
	last bool // the last matching line, not the first
}{
	{name: "PXE IP", re: regexp.MustCompile(`Station IP address is`)},
	{name: "NBP", re: regexp.MustCompile(`NBP file downloaded successfully|undionly\.kpxe\.\.\. .*ok`)},
	{name: "iPXE", re: regexp.MustCompile(`iPXE initialising devices`), last: true},
	{name: "NIC up", re: regexp.MustCompile(`Configuring \(net\d[^)]*\)[. ]*ok`), last: true},
	{name: "script", re: regexp.MustCompile(`boot\.ipxe\S*\.\.\. .*ok`), last: true},
	{name: "kernel", re: regexp.MustCompile(`vmlinuz\S*\.\.\. .*ok`)},
	{name: "initrd", re: regexp.MustCompile(`initrd\S*\.\.\. .*ok`)},
	{name: "marker"},
}

// profile is the time after power-on of each milestone (0: not seen).
func profile(lines []e2e.Line, started time.Time, marker time.Duration) []time.Duration {
	at := make([]time.Duration, len(milestones))
	for i, ms := range milestones {
		if ms.re == nil {
			at[i] = marker
			continue
		}
		for _, l := range lines {
			if ms.re.MatchString(l.Text) {
				at[i] = l.At.Sub(started)
				if !ms.last {
					break
				}
			}
		}
	}
	return at
}

func fmtProfile(at []time.Duration) string {
	var parts []string
	for i, ms := range milestones {
		parts = append(parts, fmt.Sprintf("%s %.2f s", ms.name, at[i].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// startBootReference is the reference harness of test/e2e with dnsmasq's
// own router advertisements.
func startBootReference(b *testing.B, assets e2e.Assets) *bootServer {
	b.Helper()
	dir := serverDir(b, bootReference)
	ref := e2e.StartReference(b, dir, assets, e2e.DnsmasqConfig{
		NoPXEDHCP: true, NoPing: true, EnableRA: true, EFIFile: "snponly.efi",
	}, e2e.PlainScript)
	// The file server reads from the page cache, as the edge from its
	// warm cache.
	client := ref.Srv.HTTPClient(time.Minute)
	for _, p := range []string{"/vmlinuz", "/initrd.gz"} {
		fetchAll(b, client, ref.Base+p)
	}
	return &bootServer{
		name: bootReference, net: ref.Net, dir: dir, addr: e2e.RefServer,
		register: func(*testing.B, string) {}, // dnsmasq boots any machine
		words:    []string{"fleetboot.ref=1"},
	}
}

// startBootSecureBootReference is the Azure seed's chain on the reference
// of test/e2e, as TestReferenceSecureBoot sets it up: dnsmasq (DHCP, TFTP,
// enable-ra) hands OVMF shim as bootx64.efi, and serves grubx64.efi, a
// static grub/grub.cfg, the signed kernel and the initrd, all over TFTP,
// from a directory read once ahead (the page cache, as the edge's warm
// cache).
func startBootSecureBootReference(b *testing.B, assets e2e.Assets, sb e2e.SecureBootAssets) *bootServer {
	b.Helper()
	dir := serverDir(b, bootReference+"-secureboot")
	root := filepath.Join(dir, "tftp")
	if err := e2e.SecureBootTFTPRoot(root, sb, sb.Kernel, e2e.RefCmdline); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{"bootx64.efi", "grubx64.efi", "grub/grub.cfg", "vmlinuz", "initrd.gz"} {
		if _, err := os.ReadFile(filepath.Join(root, f)); err != nil {
			b.Fatal(err)
		}
	}
	ref := e2e.StartReference(b, dir, assets, e2e.DnsmasqConfig{
		EFIFile: "bootx64.efi", TFTPRoot: root, NoPing: true, EnableRA: true,
	}, e2e.PlainScript)
	return &bootServer{
		name: bootReference, net: ref.Net, dir: dir, addr: e2e.RefServer,
		register: func(*testing.B, string) {}, // dnsmasq boots any machine
		words:    []string{"fleetboot.ref=1"},
		anyMAC:   true,
		kernelWindow: func(since time.Time) (time.Duration, error) {
			return logWindow(ref.DHCP.Lines(), since, dnsmasqSentRE, `grub/grub.cfg`, `vmlinuz`)
		},
	}
}

// Lines of a completed TFTP transfer, with the file in group 1: dnsmasq's
// "sent PATH to ADDR" and the edge's msg=sent ... file=PATH.
var (
	dnsmasqSentRE = regexp.MustCompile(`dnsmasq-tftp\[\d+\]: sent (\S+) to`)
	edgeSentRE    = regexp.MustCompile(`msg=sent .*\bfile=(\S+)`)
)

// logWindow is the time from the first line after since that says first
// was sent to the next that says second was sent (each a suffix of the
// logged path). A server logs a transfer when its last ACK came; GRUB asks
// for the kernel right after it read grub.cfg, so the window is GRUB's
// kernel download, plus its reading of grub.cfg and its request, which are
// the same against either server. Both servers are timed alike: by when
// the harness read each log line.
func logWindow(lines []e2e.Line, since time.Time, sent *regexp.Regexp, first, second string) (time.Duration, error) {
	var start time.Time
	for _, l := range lines {
		if l.At.Before(since) {
			continue
		}
		m := sent.FindStringSubmatch(l.Text)
		if m == nil {
			continue
		}
		switch {
		case start.IsZero() && strings.HasSuffix(m[1], first):
			start = l.At
		case !start.IsZero() && strings.HasSuffix(m[1], second):
			return l.At.Sub(start), nil
		}
	}
	return 0, fmt.Errorf("bench: no %q sent then %q sent in the server's log since power-on", first, second)
}

// sbLoader is the Secure Boot loader of the fleetboot side: Debian's shim
// and signed network GRUB.
const sbLoader = "shim-debian"

// startBootFleetboot runs the coordinator and an edge in full DHCP mode
// on a segment where only the edge's host has IPv6, registers the image
// and the Secure Boot loader and fills the edge's cache. plain boots hosts
// on the default chain (iPXE); secure boots them on the loader (shim →
// GRUB → grub.cfg rendered for the client → kernel and initrd over TFTP
// from the cache).
func startBootFleetboot(b *testing.B, assets e2e.Assets, sb e2e.SecureBootAssets) (plain, secure *bootServer) {
	b.Helper()
	env := &benchEnv{dir: serverDir(b, fleetbootName), addr: serverAddr, prefix: "10.77.0.0/24"}
	env.net = e2e.NewNetwork(b, env.prefix)
	env.srv = env.net.AddHost(b, "srv", env.addr, "fd77::1/64")
	fb := startFleetboot(b, env, edgeOpts{pool: "10.77.0.100-10.77.0.200", dhcp: true,
		args: []string{"--efi-boot-file", "snponly.efi"}})
	// --ipv6-ra auto (the default) must have found IPv6 on eth0: this is
	// the comparison of two servers that both advertise.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := fb.edge.WaitFor(ctx, regexp.MustCompile(`msg="IPv6 router advertisements: `)); err != nil {
		b.Fatalf("the edge does not advertise: %v\n%s", err, fb.edge.Output())
	}
	fb.cli("image", "add", bootImage, "--kernel", assets.Kernel, "--initrd", assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1 fleetboot.mac={{mac}} fleetboot.image={{image}}")
	fb.cli("loader", "add", sbLoader, "--kind", "shim-grub", "--shim", sb.Shim, "--grub", sb.GRUB)
	client := env.srv.HTTPClient(time.Minute)
	warm, warmLoader := true, true
	register := func(b *testing.B, mac string, args ...string) {
		b.Helper()
		fb.cli(append([]string{"host", "set", mac, "--image", bootImage}, args...)...)
		script := waitBootScript(b, client, "http://"+env.addr+":8080/boot.ipxe?mac="+mac+"&arch=x86_64")
		if warm {
			for _, u := range regexp.MustCompile(`http://\S+/artifacts/\S+`).FindAllString(script, -1) {
				fetchAll(b, client, u)
			}
			warm = false
		}
	}
	plain = &bootServer{
		name: fleetbootName, net: env.net, dir: env.dir, addr: env.addr,
		register: func(b *testing.B, mac string) { register(b, mac) },
		words:    []string{"fleetboot.image=" + bootImage},
	}
	secure = &bootServer{
		name: fleetbootName, net: env.net, dir: env.dir, addr: env.addr,
		register: func(b *testing.B, mac string) {
			register(b, mac, "--loader", sbLoader)
			// The edge serves a loader's files once a host boots with
			// it, and prefetches them; read them once, as the kernel.
			if warmLoader {
				for _, f := range []string{"bootx64.efi", "grubx64.efi"} {
					fetchAll(b, client, "http://"+env.addr+":8080/loaders/"+sbLoader+"/"+f)
				}
				warmLoader = false
			}
		},
		words: []string{"fleetboot.image=" + bootImage},
		kernelWindow: func(since time.Time) (time.Duration, error) {
			return logWindow(fb.edge.Lines(), since, edgeSentRE, `grub/grub.cfg`, `/vmlinuz`)
		},
	}
	return plain, secure
}

// waitBootScript polls the edge until the script it renders for url boots an
// image: the host assignment has reached it.
func waitBootScript(b *testing.B, client *http.Client, url string) string {
	b.Helper()
	var script string
	waitfor.OK(b, "the edge serves "+url, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "/artifacts/") {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		script = string(body)
		return nil
	})
	return script
}

// fetchAll GETs url whole.
func fetchAll(b *testing.B, client *http.Client, url string) {
	b.Helper()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
}

// serverDir is a directory for one server's logs and VM files, kept after
// the run under $FLEETBOOT_E2E_LOGDIR when set (e2e.LogDir).
func serverDir(b *testing.B, name string) string {
	b.Helper()
	dir := filepath.Join(e2e.LogDir(b), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

func bootsPerRow(b *testing.B) int {
	b.Helper()
	v := os.Getenv("FLEETBOOT_BENCH_BOOTS")
	if v == "" {
		return bootsDefault
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("FLEETBOOT_BENCH_BOOTS=%q: want a count of at least 1", v)
	}
	return n
}

// median of durations (the lower middle one of an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
