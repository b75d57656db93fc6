package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// The storm's network: the server, then the racks from .11 up, a pool of
// 2 048 addresses and each machine's reserved address (stormIP), the same
// for both servers.
const (
	stormPrefix    = "10.77.0.0/16"
	stormNetmask   = "255.255.0.0"
	stormPoolStart = "10.77.1.0"
	stormPoolEnd   = "10.77.8.255"
	stormImage     = "storm"
	stormKernel    = 10 << 20
	stormInitrd    = 50 << 20
	// stormLimit bounds one storm (every machine's whole boot): a deadline,
	// not a figure.
	stormLimit = 8 * time.Minute
	// stormRef names the reference in the table.
	stormRef = "dnsmasq+nginx"
	// stormLink names the link bound in the table.
	stormLink = "link bound"
)

// The DHCP timeouts of each try, before the client gives up: a PXE ROM's
// (PXE 2.1: 4, 8, 16, 32 s) and iPXE's (1 s doubling, as config/dhcp.h
// starts it). A try that times out is a retry in the table.
var (
	firmwareTries = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}
	ipxeTries     = []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
)

// BenchmarkBootStorm powers on N simulated machines at once (N from
// FLEETBOOT_BENCH_STORM, default "100,1000") and lets each do what a PXE
// ROM and iPXE do: the firmware's DHCP (DISCOVER, REQUEST, PXE options,
// client arch 0 or 7 on alternate machines), the loader over TFTP
// (undionly.kpxe or ipxe.efi, blksize 1468), iPXE's DHCP (user class
// "iPXE"), the script over HTTP (following a chain to the per-MAC script,
// as iPXE does), then a 10 MiB kernel and a 50 MiB initrd over HTTP. The
// servers: fleetboot (coordinator and edge in full DHCP mode, the N
// machines registered to an image of those two files, the edge's cache
// warm) and dnsmasq (DHCP and TFTP, no ping check, no per-packet log,
// lease and TFTP limits above N) with nginx (sendfile) serving a static
// script and the same two files from the page cache.
//
// The machines share a few namespaces ("racks", 10 to 20, each with one
// veth on the bridge): each machine has its own MAC, DHCP client and
// transaction IDs, while one raw socket per rack (filtered to UDP port 68
// in the kernel) receives the DHCP replies and hands each to the machine
// whose chaddr it carries. Each machine has an address reserved on both
// servers, held by its rack's veth, and its TFTP and HTTP come from it. The
// table shows, per N: the time until all are done, the slowest and the
// median machine, the DHCP retries, and the link bound, that is the bytes
// the storm moves divided by the throughput of plain TCP sendfile streams
// (one per rack) over the same bridge, measured in the same run.
func BenchmarkBootStorm(b *testing.B) {
	e2e.RequireRoot(b)
	dir := filepath.Join(e2e.CacheDir(), "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	files := stormFiles{dir: filepath.Join(dir, "storm-v1")}
	if err := os.MkdirAll(files.dir, 0o755); err != nil {
		b.Fatal(err)
	}
	files.kernel = filepath.Join(files.dir, "vmlinuz")
	files.initrd = filepath.Join(files.dir, "initrd.img")
	for i, f := range []struct {
		path string
		size int64
	}{{files.kernel, stormKernel}, {files.initrd, stormInitrd}} {
		if st, err := os.Stat(f.path); err != nil || st.Size() != f.size {
			writeFile(b, f.path, f.size, uint64(500+i))
		}
	}
	res := newResults("STORM")
	sizes := stormSizes(b)
	roomForNeighbours(b, 2*slices.Max(sizes)+512)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			runs := map[string]*stormRun{}
			var link float64 // bytes/s: the best of the two networks
			servers := []struct {
				name  string
				start func(b *testing.B, env *stormEnv, files stormFiles, macs []string)
			}{{stormRef, startStormReference}, {fleetbootName, startStormFleetboot}}
			macs := make([]string, n)
			for i := range macs {
				macs[i] = scaleMAC(0xb1, i) // writeHostsKV's
			}
			for _, s := range servers {
				// A sub-benchmark per server: its network and processes
				// are gone before the next one starts.
				b.Run(strings.ReplaceAll(s.name, "+", "-"), func(b *testing.B) {
					env := newStormEnv(b, n)
					s.start(b, env, files, macs)
					link = max(link, linkThroughput(b, env, files.initrd, stormInitrd))
					before := linkDrops(b, env)
					stop := profileStorm(b, env.benchEnv, s.name, n)
					cpuBefore := readCPU(b)
					runs[s.name] = runStorm(b, env, macs)
					runs[s.name].busy = busyPercent(cpuBefore, readCPU(b))
					stop()
					b.Logf("packets the storm's network dropped (switch ports and the server's veth): %s", linkDropsSince(b, env, before))
				})
			}
			reportStorm(b, res, n, runs, link)
		})
	}
}

// roomForNeighbours raises the kernel's ARP table to hold need entries for
// the storm, and puts it back after. The table is one for all network
// namespaces (its limits exist only in the host's), and a storm fills it:
// the server's namespace resolves every machine's address for TFTP and
// HTTP, each rack the server's. At the default limit of 1 024 entries,
// a storm of 1 000 ended with "neighbor table overflow" in the kernel log
// and the server's broadcast OFFERs of the iPXE stage dropped before its
// veth, for dnsmasq and fleetboot alike (114 and 145 machines failed in
// one run). An edge host serving that many machines on a segment needs the
// same (README, "Sizing").
func roomForNeighbours(b *testing.B, need int) {
	b.Helper()
	const dir = "/proc/sys/net/ipv4/neigh/default/"
	read := func(name string) int { return readSysctl(b, dir+name) }
	write := func(name string, n int) { writeSysctl(b, dir+name, n) }
	t2, t3 := read("gc_thresh2"), read("gc_thresh3")
	if t3 >= need {
		return
	}
	// gc_thresh2 <= gc_thresh3 at every step: raise 3 first, restore 2 first.
	write("gc_thresh3", need)
	write("gc_thresh2", max(t2, need/2))
	b.Cleanup(func() {
		write("gc_thresh2", t2)
		write("gc_thresh3", t3)
	})
	b.Logf("kernel ARP table: room for %d entries during the storm (was %d; put back after)", need, t3)
}

// profileStorm saves the edge's CPU profile over the first 20 s of the
// storm to FLEETBOOT_BENCH_PROFILE/storm-N.cpu.prof (profileStep's for DHCP).
func profileStorm(b *testing.B, env *benchEnv, server string, n int) (stop func()) {
	dir := os.Getenv(profileEnv)
	if dir == "" || server != fleetbootName {
		return func() {}
	}
	return cpuProfile(b, env, filepath.Join(dir, fmt.Sprintf("storm-%d.cpu.prof", n)), 20)
}

// reportStorm prints the rows of one N: the link bound and the reference
// first, so fleetboot's row carries its ratio to both.
func reportStorm(b *testing.B, res *results, n int, runs map[string]*stormRun, link float64) {
	b.Helper()
	ref, fb := runs[stormRef], runs[fleetbootName]
	if ref == nil || fb == nil {
		b.Errorf("storm N=%d: a server's storm did not run", n)
		return
	}
	p := fmt.Sprintf("storm N=%d: ", n)
	if link > 0 {
		summary(b, res.area, p+"TCP over the bridge", stormLink, fmtValue(link/(1<<20), "MiB/s"), "")
		res.add(b, p+"all done", stormLink, float64(stormBytes(n))/link, "s", false)
	}
	// A storm where machines failed has no "all done": its times are
	// those of the machines that got through, no figure to compare.
	for _, metric := range []string{"all done", "slowest machine", "median machine"} {
		for _, name := range []string{stormRef, fleetbootName} {
			r := runs[name]
			if r.failed > 0 {
				summary(b, res.area, p+metric, name, fmt.Sprintf("%d of %d failed", r.failed, n), "")
				continue
			}
			v := map[string]time.Duration{"all done": r.all, "slowest machine": r.slowest, "median machine": r.median}[metric]
			res.add(b, p+metric, name, v.Seconds(), "s", false)
		}
	}
	for _, name := range []string{stormRef, fleetbootName} {
		res.add(b, p+"DHCP retries", name, float64(runs[name].retries), "", false)
	}
	// The servers and the machines share the two cores: near 100 % the
	// storm is bound by the machine, not by a server.
	for _, name := range []string{stormRef, fleetbootName} {
		res.add(b, p+"machine CPU busy", name, runs[name].busy, "%", false)
	}
	for _, name := range []string{stormRef, fleetbootName} {
		if r := runs[name]; r.failed > 0 {
			summary(b, res.area, p+"machines failed", name, strconv.Itoa(r.failed), r.why)
		}
	}
}

// stormBytes is what n machines download: the loader (BIOS and UEFI
// machines alternate), the kernel and the initrd.
func stormBytes(n int) int64 {
	size := func(f string) int64 {
		st, err := os.Stat(filepath.Join(e2e.IPXEDir, f))
		if err != nil {
			return 0
		}
		return st.Size()
	}
	bios, uefi := int64((n+1)/2), int64(n/2)
	return bios*size("undionly.kpxe") + uefi*size("ipxe.efi") + int64(n)*(stormKernel+stormInitrd)
}

type stormFiles struct{ dir, kernel, initrd string }

func stormSizes(b *testing.B) []int {
	b.Helper()
	v := os.Getenv("FLEETBOOT_BENCH_STORM")
	if v == "" {
		v = "100,1000"
	}
	var ns []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 2000 {
			b.Fatalf("FLEETBOOT_BENCH_STORM=%q: want counts of machines from 1 to 2000, comma-separated", v)
		}
		ns = append(ns, n)
	}
	return ns
}

// stormRacks is how many namespaces n machines share: 10 to 20.
func stormRacks(n int) int { return min(20, max(10, n/50)) }

// stormEnv is a storm's network: the server host and the racks.
type stormEnv struct {
	*benchEnv
	racks []*rack
}

// newStormEnv builds the network for n machines: machine i is in rack
// i % racks, whose veth holds the machine's reserved address, so the
// machine's TFTP and HTTP come from its own address, as on a real network
// (servers limit and log per client address).
func newStormEnv(b *testing.B, n int) *stormEnv {
	b.Helper()
	racks := stormRacks(n)
	// The servers' logs stay under $FLEETBOOT_E2E_LOGDIR when it is set.
	env := &stormEnv{benchEnv: &benchEnv{dir: e2e.LogDir(b), addr: serverAddr, prefix: stormPrefix}}
	env.net = e2e.NewNetwork(b, stormPrefix)
	env.srv = env.net.AddHost(b, "srv", serverAddr, "")
	for i := range racks {
		h := env.net.AddHost(b, fmt.Sprintf("r%d", i), fmt.Sprintf("10.77.0.%d", 11+i), "")
		env.racks = append(env.racks, openRack(b, h))
		var batch strings.Builder
		for m := i; m < n; m += racks {
			fmt.Fprintf(&batch, "addr add %s/32 dev %s\n", stormIP(m), h.Iface)
		}
		cmd := exec.Command("ip", "-n", h.NS, "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("rack %s: addresses: %v: %s", h.Name, err, out)
		}
	}
	return env
}

// stormIP is machine i's reserved address, outside the pool.
func stormIP(i int) string {
	return netip.AddrFrom4([4]byte{10, 77, byte(16 + i>>8), byte(i)}).String()
}

// startStormFleetboot runs the coordinator and an edge in full DHCP mode,
// registers the machines to an image of the storm's kernel and initrd
// (written to the KV buckets directly, as BenchmarkDHCP does) and warms
// the edge's cache.
func startStormFleetboot(b *testing.B, env *stormEnv, files stormFiles, macs []string) {
	b.Helper()
	o := edgeOpts{dhcp: true, pool: stormPoolStart + "-" + stormPoolEnd}
	if os.Getenv(profileEnv) != "" {
		o.args = append(o.args, "--pprof-listen="+profileAddr)
	}
	fb := startFleetboot(b, env.benchEnv, o)
	fb.cli("image", "add", stormImage, "--kernel", files.kernel, "--initrd", files.initrd, "--cmdline", "console=ttyS0")
	got := writeHostsKV(b, natsConn(b, env.srv), "lab", stormImage, len(macs), stormIP)
	if !slices.Equal(got, macs) {
		b.Fatalf("writeHostsKV registered other MACs than the storm's")
	}
	base := "http://" + env.addr + ":8080"
	waitScript(b, env.srv, &scaleEdge{site: "lab", url: base}, macs[len(macs)-1], stormImage, 3*time.Minute)
	client := env.srv.HTTPClient(time.Minute)
	s, err := script(client, &scaleEdge{site: "lab", url: base}, macs[0])
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range regexp.MustCompile(`http://\S+/artifacts/\S+`).FindAllString(s, -1) {
		fetchAll(b, client, u)
	}
}

// startStormReference runs dnsmasq (DHCP and TFTP, the reference harness's
// configuration without its per-packet log) and nginx serving a static
// script, the kernel and the initrd, warmed into the page cache.
func startStormReference(b *testing.B, env *stormEnv, files stormFiles, macs []string) {
	b.Helper()
	web := filepath.Join(env.dir, "www")
	if err := os.MkdirAll(web, 0o755); err != nil {
		b.Fatal(err)
	}
	base := "http://" + env.addr + ":8080"
	script := e2e.BootScript(base, "vmlinuz", "initrd.img", "console=ttyS0")
	if err := os.WriteFile(filepath.Join(web, "boot.ipxe"), []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{files.kernel, files.initrd} {
		if err := os.Symlink(f, filepath.Join(web, filepath.Base(f))); err != nil {
			b.Fatal(err)
		}
	}
	startNginx(b, env.benchEnv, web)
	client := env.srv.HTTPClient(time.Minute)
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		fetchAll(b, client, base+"/"+f)
	}
	dc := e2e.DnsmasqConfig{
		Iface: env.srv.Iface, RangeStart: stormPoolStart, RangeEnd: stormPoolEnd, Netmask: stormNetmask,
		IPXEURL: base + "/boot.ipxe", BIOSFile: "undionly.kpxe", EFIFile: "ipxe.efi",
		NoPXEDHCP: true, NoPing: true,
	}
	// log-dhcp writes lines per packet: BenchmarkDHCP runs dnsmasq without
	// it too. Its defaults of 1 000 leases and 50 TFTP transfers would
	// refuse part of the storm.
	conf := strings.Replace(dc.Render(), "log-dhcp\n", "", 1) +
		fmt.Sprintf("dhcp-lease-max=%d\ntftp-max=%d\n", 4*len(macs), 2*len(macs))
	var hosts strings.Builder
	for i, mac := range macs {
		fmt.Fprintf(&hosts, "dhcp-host=%s,%s\n", mac, stormIP(i))
	}
	conf += hosts.String()
	path := filepath.Join(env.dir, "dnsmasq-storm.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := env.srv.Command(context.Background(), "dnsmasq", "--keep-in-foreground", "--log-facility=-",
		"--conf-file="+path, "--pid-file=", "--user=root", "--dhcp-leasefile="+filepath.Join(env.dir, "dnsmasq.leases"))
	p := e2e.StartProc(b, env.dir, "dnsmasq", cmd)
	waitPort(b, env.srv.NS, p, "udp", 67)
}

// linkThroughput measures bytes/s of plain TCP over the storm's bridge:
// one stream per rack, each the file sent with sendfile (from the page
// cache, as the servers send) a few times over and read by the same code
// that reads the storm's downloads.
func linkThroughput(b *testing.B, env *stormEnv, file string, size int64) float64 {
	b.Helper()
	const total = 3 << 30
	reps := int64(max(1, total/size/int64(len(env.racks))))
	l, err := env.srv.Listen("tcp", env.addr+":5201")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				f, err := os.Open(file)
				if err != nil {
					return
				}
				defer f.Close()
				for range reps {
					if _, err := f.Seek(0, io.SeekStart); err != nil {
						return
					}
					if _, err := io.Copy(c, f); err != nil { // sendfile
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(env.racks))
	start := time.Now()
	for i, r := range env.racks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := r.host.DialContext(ctx, "tcp", env.addr+":5201")
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			n, err := drain(c, make([]byte, 64<<10))
			if err == nil && n != reps*size {
				err = fmt.Errorf("%d of %d bytes", n, reps*size)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		b.Fatalf("link throughput: %v", err)
	}
	v := float64(reps*size*int64(len(env.racks))) / took.Seconds()
	b.Logf("TCP over the bridge: %d streams x %d MiB in %s: %.0f MiB/s", len(env.racks), reps*size>>20, took.Round(time.Millisecond), v/(1<<20))
	return v
}

// linkDrops reads every interface's drop counters in the switch and the
// server's namespace: a veth has no queue (noqueue), so a frame meeting a
// full peer is dropped there and counted, which a DHCP reply cannot afford.
func linkDrops(b *testing.B, env *stormEnv) map[string][2]uint64 {
	b.Helper()
	drops := map[string][2]uint64{}
	for _, ns := range []string{env.net.Switch, env.srv.NS} {
		out, err := exec.Command("ip", "-n", ns, "-s", "-j", "link", "show").Output()
		if err != nil {
			b.Logf("ip -s link in %s: %v", ns, err)
			continue
		}
		var links []struct {
			Name  string `json:"ifname"`
			Stats struct {
				RX struct{ Dropped uint64 } `json:"rx"`
				TX struct{ Dropped uint64 } `json:"tx"`
			} `json:"stats64"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			b.Logf("ip -s link in %s: %v", ns, err)
			continue
		}
		for _, l := range links {
			drops[ns+"/"+l.Name] = [2]uint64{l.Stats.RX.Dropped, l.Stats.TX.Dropped}
		}
	}
	return drops
}

// linkDropsSince lists the interfaces that dropped packets since before.
func linkDropsSince(b *testing.B, env *stormEnv, before map[string][2]uint64) string {
	b.Helper()
	var parts []string
	for name, d := range linkDrops(b, env) {
		rx, tx := d[0]-before[name][0], d[1]-before[name][1]
		if rx+tx > 0 {
			parts = append(parts, fmt.Sprintf("%s rx %d tx %d", name, rx, tx))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// drain reads r to its end into buf and returns the byte count.
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// rack is a namespace whose machines share its veth. One raw socket
// receives the DHCP replies of all of them, and a reader hands each reply
// to the machine whose MAC is its chaddr.
type rack struct {
	host *e2e.Host
	conn net.PacketConn // IP/UDP framing over the raw socket, sends broadcast
	sc   syscall.RawConn

	got, delivered, full atomic.Int64 // replies read, handed over, dropped
	closing              atomic.Bool  // the socket's read error is the benchmark's end

	mu    sync.Mutex
	boxes map[[6]byte]chan []byte
}

// dhcpPort68 keeps only IPv4 UDP packets to port 68, unfragmented, in the
// kernel: the rack's veth also carries the storm's gigabytes of HTTP, which
// the socket must not see (a full receive buffer would drop DHCP replies).
// A datagram packet socket's filter sees the packet from its IP header.
var dhcpPort68 = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 6, Size: 2}, // flags and fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: 0},          // X = header length
	bpf.LoadIndirect{Off: 2, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 68, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

func openRack(b *testing.B, h *e2e.Host) *rack {
	b.Helper()
	r := &rack{host: h, boxes: map[[6]byte]chan []byte{}}
	err := e2e.InNS(h.NS, func() error {
		c, err := nclient4.NewRawUDPConn(h.Iface, nclient4.ClientPort)
		r.conn = c
		return err
	})
	if err != nil {
		b.Fatalf("rack %s: %v", h.Name, err)
	}
	raw, ok := r.conn.(*nclient4.BroadcastRawUDPConn).PacketConn.(interface {
		SetBPF([]bpf.RawInstruction) error
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		b.Fatal("rack: nclient4's raw socket cannot take a BPF filter")
	}
	prog, err := bpf.Assemble(dhcpPort68)
	if err != nil {
		b.Fatal(err)
	}
	if err := raw.SetBPF(prog); err != nil {
		b.Fatalf("rack %s: BPF: %v", h.Name, err)
	}
	// Room for a burst of every machine's replies.
	if r.sc, err = raw.SyscallConn(); err != nil {
		b.Fatal(err)
	}
	r.sc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.read(); err != nil && !r.closing.Load() {
			b.Errorf("rack %s: DHCP socket: %v", h.Name, err)
		}
	}()
	b.Cleanup(func() {
		r.closing.Store(true)
		r.conn.Close()
		<-done
	})
	return r
}

// drops is how many packets the kernel dropped for want of room in the
// rack's socket since the last call: a DHCP reply the machine never saw.
func (r *rack) drops() uint32 {
	var st *unix.TpacketStats
	r.sc.Control(func(fd uintptr) {
		st, _ = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if st == nil {
		return 0
	}
	return st.Drops
}

// read hands each DHCP reply to its machine until the socket closes. A
// reply for a machine of another rack (replies are broadcast) is dropped.
func (r *rack) read() error {
	buf := make([]byte, 2048)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		r.got.Add(1)
		if n < 34 || buf[0] != byte(dhcpv4.OpcodeBootReply) {
			continue
		}
		key := [6]byte(buf[28:34]) // chaddr
		r.mu.Lock()
		box := r.boxes[key]
		r.mu.Unlock()
		if box == nil {
			continue
		}
		select {
		case box <- bytes.Clone(buf[:n]):
			r.delivered.Add(1)
		default: // the machine is not reading: as a full NIC ring, drop
			r.full.Add(1)
		}
	}
}

// machineConn is one machine's DHCP socket on its rack: what nclient4 reads
// and writes.
type machineConn struct {
	r    *rack
	key  [6]byte
	in   chan []byte
	done chan struct{}
	once sync.Once
}

func (r *rack) dhcpConn(mac net.HardwareAddr) *machineConn {
	c := &machineConn{r: r, key: [6]byte(mac), in: make(chan []byte, 16), done: make(chan struct{})}
	r.mu.Lock()
	r.boxes[c.key] = c.in
	r.mu.Unlock()
	return c
}

func (c *machineConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case m := <-c.in:
		return copy(p, m), &net.UDPAddr{IP: net.IPv4bcast, Port: nclient4.ServerPort}, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *machineConn) WriteTo(p []byte, addr net.Addr) (int, error) { return c.r.conn.WriteTo(p, addr) }

func (c *machineConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.r.mu.Lock()
		delete(c.r.boxes, c.key)
		c.r.mu.Unlock()
	})
	return nil
}

func (c *machineConn) LocalAddr() net.Addr                   { return &net.UDPAddr{Port: nclient4.ClientPort} }
func (c *machineConn) SetDeadline(time.Time) error           { return nil }
func (c *machineConn) SetReadDeadline(time.Time) error       { return nil }
func (c *machineConn) SetWriteDeadline(time.Time) error      { return nil }
func (c *machineConn) SetReadBuffer(int) error               { return nil }
func (c *machineConn) SyscallConn() (syscall.RawConn, error) { return nil, errors.ErrUnsupported }

// stormRun is one server's storm.
type stormRun struct {
	all, slowest, median time.Duration
	retries, failed      int
	bytes                int64   // what the machines downloaded (TFTP and HTTP)
	why                  string  // the failures by reason, most frequent first
	sockDrops            int     // DHCP replies the racks' sockets dropped
	busy                 float64 // the machine's CPU busy share over the storm, percent
}

// bootPhases name the end of each step of a machine's boot.
var bootPhases = []string{"firmware DHCP", "loader TFTP", "iPXE DHCP", "script", "kernel", "initrd"}

type machineResult struct {
	mac     string
	started time.Time
	at      []time.Duration // each phase's end after started
	retries int
	bytes   int64
	err     error
	step    string // the step that failed
}

// runStorm powers all machines on at once and waits until each is done
// or has failed.
func runStorm(b *testing.B, env *stormEnv, macs []string) *stormRun {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stormLimit)
	defer cancel()
	type machine struct {
		mac    string
		rack   *rack
		client *nclient4.Client
		conn   *machineConn
		arch   iana.Arch
	}
	ms := make([]*machine, len(macs))
	for i, mac := range macs {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			b.Fatal(err)
		}
		m := &machine{mac: mac, rack: env.racks[i%len(env.racks)], arch: iana.INTEL_X86PC}
		if i%2 == 1 {
			m.arch = iana.EFI_X86_64
		}
		m.conn = m.rack.dhcpConn(hw)
		// Each try's deadline is the context's (see dora): no timeout or
		// retry of nclient4's own.
		m.client, err = nclient4.NewWithConn(m.conn, hw, nclient4.WithTimeout(time.Hour), nclient4.WithRetry(1))
		if err != nil {
			b.Fatal(err)
		}
		ms[i] = m
	}
	defer func() {
		for _, m := range ms {
			m.client.Close()
			m.conn.Close()
		}
	}()
	results := make([]machineResult, len(ms))
	power := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-power
			results[i] = bootMachine(ctx, m.rack, stormIP(i), m.client, m.mac, m.arch)
		}()
	}
	for _, r := range env.racks {
		r.drops()
	}
	b.ResetTimer()
	start := time.Now()
	close(power)
	wg.Wait()
	b.StopTimer()
	run := &stormRun{}
	var got, delivered, full int64
	for _, r := range env.racks {
		run.sockDrops += int(r.drops())
		got, delivered, full = got+r.got.Load(), delivered+r.delivered.Load(), full+r.full.Load()
	}
	// Every rack reads every broadcast reply; a reply "dropped" found its
	// machine's queue full.
	b.Logf("racks: %d DHCP replies read, %d handed to their machines, %d dropped", got, delivered, full)
	var took []time.Duration
	var slowest *machineResult
	for i := range results {
		r := &results[i]
		run.retries += r.retries
		run.bytes += r.bytes
		if r.err != nil {
			run.failed++
			if run.failed <= 5 {
				b.Logf("machine %s failed: %v", r.mac, r.err)
			}
			continue
		}
		d := r.at[len(r.at)-1]
		took = append(took, d)
		run.all = max(run.all, r.started.Add(d).Sub(start))
		if slowest == nil || d > slowest.at[len(slowest.at)-1] {
			slowest = r
		}
	}
	run.why = failureReasons(results)
	if len(took) == 0 {
		b.Fatalf("storm of %d: no machine booted: %s", len(macs), run.why)
	}
	slices.Sort(took)
	run.slowest, run.median = took[len(took)-1], median(took)
	var steps []string
	for k, name := range bootPhases {
		steps = append(steps, fmt.Sprintf("%s %.2f s", name, slowest.at[k].Seconds()))
	}
	b.Logf("storm of %d: all done in %s, %d failed, %d DHCP retries, %d replies dropped by the racks' sockets, %d MiB; slowest machine %s: %s", len(macs),
		run.all.Round(time.Millisecond), run.failed, run.retries, run.sockDrops, run.bytes>>20, slowest.mac, strings.Join(steps, ", "))
	b.Logf("PROFILE| storm of %d | each step's time, median / max over the machines: %s", len(macs), stepProfile(results))
	// Machines that fail are a figure of the table, not a failure of the
	// benchmark: how many a server's storm loses depends on the load.
	if run.failed > 0 {
		b.Logf("storm of %d: %d machines failed: %s", len(macs), run.failed, run.why)
	}
	return run
}

// failureReasons counts the failed machines by step and error, addresses
// and numbers left out so alike failures count together.
func failureReasons(results []machineResult) string {
	digits := regexp.MustCompile(`[0-9.:]*[0-9]`)
	count := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			msg := r.err.Error()
			if len(msg) > 120 {
				msg = msg[:120]
			}
			count[digits.ReplaceAllString(msg, "N")]++
		}
	}
	keys := slices.Collect(maps.Keys(count))
	slices.SortFunc(keys, func(a, b string) int { return count[b] - count[a] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d x %q", count[k], k))
	}
	return strings.Join(parts, ", ")
}

// stepProfile is the median and the longest time of each boot step (from
// the end of the step before) over the machines that booted: which step a
// storm waits on.
func stepProfile(results []machineResult) string {
	var parts []string
	for k, name := range bootPhases {
		var ds []time.Duration
		for _, r := range results {
			if r.err != nil {
				continue
			}
			d := r.at[k]
			if k > 0 {
				d -= r.at[k-1]
			}
			ds = append(ds, d)
		}
		if len(ds) == 0 {
			return "no machine booted"
		}
		parts = append(parts, fmt.Sprintf("%s %.2f / %.2f s", name, median(ds).Seconds(), slices.Max(ds).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// bootMachine plays one machine's network boot, from power-on to the
// initrd downloaded.
func bootMachine(ctx context.Context, r *rack, ip string, c *nclient4.Client, mac string, arch iana.Arch) machineResult {
	res := machineResult{mac: mac, started: time.Now()}
	fail := func(step string, err error) machineResult {
		res.err, res.step = fmt.Errorf("%s: %w", step, err), step
		return res
	}
	phase := func() { res.at = append(res.at, time.Since(res.started)) }
	// The PXE ROM.
	ack, err := dora(ctx, c, firmwareTries, &res.retries, e2e.PXERequest(arch, false))
	if err != nil {
		return fail("firmware DHCP", err)
	}
	if got := ack.YourIPAddr.String(); got != ip {
		return fail("firmware DHCP", fmt.Errorf("address %s, reserved %s", got, ip))
	}
	phase()
	loader, next := e2e.BootFile(ack), ack.ServerIPAddr.String()
	n, err := tftpLoader(r, ip, next, loader)
	res.bytes += n
	if err != nil {
		return fail("TFTP "+loader, err)
	}
	phase()
	// iPXE.
	ack, err = dora(ctx, c, ipxeTries, &res.retries, e2e.PXERequest(arch, true))
	if err != nil {
		return fail("iPXE DHCP", err)
	}
	phase()
	// One HTTP connection per machine, kept alive between its requests
	// as iPXE keeps its own.
	dial := func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = e2e.InNS(r.host.NS, func() error {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	buf := make([]byte, 64<<10)
	kernel, initrd, err := playScript(ctx, client, e2e.BootFile(ack), mac, arch)
	if err != nil {
		return fail("script", err)
	}
	phase()
	for _, f := range []struct {
		url  string
		size int64
	}{{kernel, stormKernel}, {initrd, stormInitrd}} {
		n, err := download(ctx, client, f.url, buf)
		res.bytes += n
		if err == nil && n != f.size {
			err = fmt.Errorf("%d bytes, want %d", n, f.size)
		}
		if err != nil {
			return fail("GET "+f.url, err)
		}
		phase()
	}
	return res
}

// dora is one DHCP exchange with a client's timeouts per try: a try that
// times out counts as a retry, and a retry sends the same message again
// (same xid), so a late reply to an earlier try still counts, as with a
// real client. Every message carries the broadcast flag, so each server
// broadcasts its replies alike.
func dora(ctx context.Context, c *nclient4.Client, tries []time.Duration, retries *int, mods []dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	mods = append(slices.Clone(mods), dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
	discover, err := dhcpv4.NewDiscovery(c.InterfaceAddr(), mods...)
	if err != nil {
		return nil, err
	}
	var offer *dhcpv4.DHCPv4
	err = retry(ctx, tries, retries, func(ctx context.Context) (err error) {
		offer, err = c.SendAndRead(ctx, c.RemoteAddr(), discover, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("DISCOVER: %w", err)
	}
	request, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	var ack *dhcpv4.DHCPv4
	err = retry(ctx, tries, retries, func(ctx context.Context) (err error) {
		ack, err = c.SendAndRead(ctx, c.RemoteAddr(), request, nclient4.IsAll(
			nclient4.IsCorrectServer(offer.ServerIdentifier()),
			nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("REQUEST: %w", err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("REQUEST: NAK: %s", ack.Message())
	}
	return ack, nil
}

func retry(ctx context.Context, tries []time.Duration, retries *int, fn func(context.Context) error) error {
	var err error
	for i, t := range tries {
		if i > 0 {
			*retries++
		}
		tctx, cancel := context.WithTimeout(ctx, t)
		err = fn(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return fmt.Errorf("no answer to %d tries: %w", len(tries), err)
}

// tftpLoader fetches the loader as a PXE ROM does (blksize 1468, tsize),
// from the machine's address, and checks its length against the file.
func tftpLoader(r *rack, ip, server, file string) (int64, error) {
	st, err := os.Stat(filepath.Join(e2e.IPXEDir, file))
	if err != nil {
		return 0, err
	}
	c, err := tftp.NewClient(server + ":69")
	if err != nil {
		return 0, err
	}
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	c.SetTimeout(2 * time.Second)
	c.SetRetries(8)
	if err := c.SetLocalAddr(ip); err != nil {
		return 0, err
	}
	var rcv io.WriterTo
	if err := e2e.InNS(r.host.NS, func() error {
		var err error
		rcv, err = c.Receive(file, "octet")
		return err
	}); err != nil {
		return 0, err
	}
	n, err := rcv.WriteTo(io.Discard)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%d of %d bytes", n, st.Size())
	}
	return n, err
}

var (
	// The first URL of a kernel, initrd or chain command (after options
	// such as --name N or --replace).
	ipxeKernel = regexp.MustCompile(`(?m)^kernel\s[^\n]*?(https?://\S+)`)
	ipxeInitrd = regexp.MustCompile(`(?m)^initrd\s[^\n]*?(https?://\S+)`)
	ipxeChain  = regexp.MustCompile(`(?m)^chain\s[^\n]*?(https?://\S+)`)
)

// playScript fetches the script iPXE got from DHCP and follows its first
// chain (fleetboot's script for iPXE without a MAC chains to the per-MAC
// one) until a script names a kernel and an initrd; at most three hops.
func playScript(ctx context.Context, client *http.Client, url, mac string, arch iana.Arch) (kernel, initrd string, err error) {
	buildarch, platform := "i386", "pcbios"
	if arch == iana.EFI_X86_64 {
		buildarch, platform = "x86_64", "efi"
	}
	expand := strings.NewReplacer("${netX/mac}", mac, "${net0/mac}", mac, "${mac}", mac,
		"${buildarch}", buildarch, "${platform}", platform)
	for range 3 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, expand.Replace(url), nil)
		if err != nil {
			return "", "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", "", err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return "", "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", "", fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		k, i := ipxeKernel.FindSubmatch(body), ipxeInitrd.FindSubmatch(body)
		if k != nil && i != nil {
			return expand.Replace(string(k[1])), expand.Replace(string(i[1])), nil
		}
		c := ipxeChain.FindSubmatch(body)
		if c == nil {
			return "", "", fmt.Errorf("script %s boots no kernel: %.200s", url, body)
		}
		url = string(c[1])
	}
	return "", "", fmt.Errorf("script chains more than three times")
}

// download GETs url whole and checks the length against Content-Length.
func download(ctx context.Context, client *http.Client, url string, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	n, err := drain(resp.Body, buf)
	if err == nil && (resp.ContentLength < 0 || n != resp.ContentLength) {
		err = fmt.Errorf("%d bytes of %d", n, resp.ContentLength)
	}
	return n, err
}
