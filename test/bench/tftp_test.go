package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/test/e2e"
)

const (
	tftpSize   = 16 << 20
	tftpRounds = 5 // downloads per server and row, interleaved; the median is reported
)

// BenchmarkTFTP measures MiB/s of one client downloading a 16 MiB file at
// blksize 512 (the RFC 1350 default, what old PXE ROMs use) and 1468 (what
// iPXE and most UEFI clients negotiate on a 1500-byte MTU), from tftpd-hpa,
// dnsmasq, atftpd and fleetboot, with pin/tftp as the client in the client
// namespace; then with atftp's client asking for windowsize 1, 8 and 32
// (RFC 7440) at blksize 1468, as OVMF does (it asks for 4). A server that
// leaves windowsize out of its OACK (the summary says which) serves those
// rows one block per ACK.
//
// All four servers run at once, each on a network of its own, and the
// downloads go round-robin (row by row, server by server, tftpRounds
// times): on a shared machine a burst of load then lands on every server
// alike instead of on whichever was being measured, and the median of the
// rounds is what the table shows (the spread is logged).
func BenchmarkTFTP(b *testing.B) {
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "blob16m"), tftpSize, 16)
	res := newResults("TFTP")
	servers := []struct {
		name  string
		start func(b *testing.B, env *benchEnv, dir string)
	}{
		{"tftpd-hpa", startTFTPDHPA},
		{"dnsmasq", startDnsmasqTFTP},
		{"atftpd", startATFTPD},
		{fleetbootName, func(b *testing.B, env *benchEnv, dir string) {
			startFleetboot(b, env, edgeOpts{bootDir: dir})
		}},
	}
	envs := make([]*benchEnv, len(servers))
	for i, s := range servers {
		envs[i] = newEnv(b)
		s.start(b, envs[i], dir)
		oack := tftpOACK(b, envs[i], "blob16m", "blksize", "1468", "windowsize", "8")
		acked := "no (one block per ACK)"
		if oack["windowsize"] != "" {
			acked = "yes: " + oack["windowsize"]
		}
		summary(b, "TFTP", "windowsize in OACK (asked 8)", s.name, acked, "")
	}
	rows := []struct {
		name string
		get  func(b *testing.B, env *benchEnv)
	}{
		{"16 MiB, blksize 512", func(b *testing.B, env *benchEnv) { tftpGet(b, env, 512, "blob16m") }},
		{"16 MiB, blksize 1468", func(b *testing.B, env *benchEnv) { tftpGet(b, env, 1468, "blob16m") }},
		{"16 MiB, 1468, atftp windowsize 1", func(b *testing.B, env *benchEnv) { atftpGet(b, env, 1, "blob16m") }},
		{"16 MiB, 1468, atftp windowsize 8", func(b *testing.B, env *benchEnv) { atftpGet(b, env, 8, "blob16m") }},
		{"16 MiB, 1468, atftp windowsize 32", func(b *testing.B, env *benchEnv) { atftpGet(b, env, 32, "blob16m") }},
	}
	samples := make([][][]float64, len(rows)) // row, server -> MiB/s of each round
	for r := range rows {
		samples[r] = make([][]float64, len(servers))
	}
	b.ResetTimer()
	for range tftpRounds {
		for r, row := range rows {
			for i := range servers {
				start := time.Now()
				row.get(b, envs[i])
				samples[r][i] = append(samples[r][i], tftpSize/time.Since(start).Seconds()/(1<<20))
			}
		}
	}
	for r, row := range rows {
		for i, s := range servers {
			v := slices.Clone(samples[r][i])
			slices.Sort(v)
			b.Logf("TFTP %s, %s: MiB/s of %d rounds %.1f", row.name, s.name, len(v), v)
			res.add(b, row.name, s.name, v[len(v)/2], "MiB/s", true)
		}
	}
}

// atftpGet downloads file with atftp's client in the client namespace,
// asking for blksize 1468 and windowsize w, and checks the size it wrote.
func atftpGet(b *testing.B, env *benchEnv, w int, file string) {
	b.Helper()
	out := filepath.Join(env.dir, "atftp.out")
	cmd := env.cli.Command(context.Background(), "atftp", "-g", "-r", file, "-l", out,
		"--option", "blksize 1468", "--option", fmt.Sprintf("windowsize %d", w), env.addr, "69")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("atftp %s (windowsize %d): %v: %s", file, w, err, o)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != tftpSize {
		b.Fatalf("atftp %s (windowsize %d): %v, want %d bytes", file, w, err, tftpSize)
	}
	os.Remove(out)
}

// tftpOACK sends one RRQ with opts (name, value pairs) from the client
// namespace and returns the options of the server's OACK (empty when it
// answered with data), then aborts the transfer.
func tftpOACK(b *testing.B, env *benchEnv, file string, opts ...string) map[string]string {
	b.Helper()
	rrq := []byte{0, 1}
	for _, f := range append([]string{file, "octet"}, opts...) {
		rrq = append(append(rrq, f...), 0)
	}
	var conn *net.UDPConn
	if err := e2e.InNS(env.cli.NS, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDP(rrq, &net.UDPAddr{IP: net.ParseIP(env.addr), Port: 69}); err != nil {
		b.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil {
		b.Fatalf("RRQ with %v: %v", opts, err)
	}
	conn.WriteToUDP(append([]byte{0, 5, 0, 8}, "probe done\x00"...), from)
	got := map[string]string{}
	if n < 2 || buf[1] != 6 {
		return got
	}
	parts := strings.Split(strings.TrimSuffix(string(buf[2:n]), "\x00"), "\x00")
	for i := 0; i+1 < len(parts); i += 2 {
		got[strings.ToLower(parts[i])] = parts[i+1]
	}
	return got
}

func tftpGet(b *testing.B, env *benchEnv, blksize int, file string) {
	b.Helper()
	c, err := tftp.NewClient(env.addr + ":69")
	if err != nil {
		b.Fatal(err)
	}
	c.SetBlockSize(blksize)
	c.SetTimeout(2 * time.Second)
	var rcv io.WriterTo
	// The client's UDP socket is made in Receive: make it in the namespace.
	if err := e2e.InNS(env.cli.NS, func() error {
		r, err := c.Receive(file, "octet")
		rcv = r
		return err
	}); err != nil {
		b.Fatalf("tftp %s: %v", file, err)
	}
	n, err := rcv.WriteTo(io.Discard)
	if err != nil || n != tftpSize {
		b.Fatalf("tftp %s (blksize %d): %d bytes, %v", file, blksize, n, err)
	}
}

// startTFTPDHPA runs tftpd-hpa's in.tftpd in the foreground (-L), chrooted
// to dir (-s), on the server address only.
func startTFTPDHPA(b *testing.B, env *benchEnv, dir string) {
	b.Helper()
	if _, err := os.Stat("/usr/sbin/in.tftpd"); err != nil {
		b.Fatal("in.tftpd not installed: run `make deps` (Debian package tftpd-hpa)")
	}
	// -u root: the benchmark's temporary directories are not readable by
	// the default user, nobody.
	cmd := env.srv.Command(context.Background(), "in.tftpd", "-L", "-4", "-a", env.addr+":69", "-u", "root", "-s", dir)
	p := e2e.StartProc(b, env.dir, "in.tftpd", cmd)
	waitUDP(b, env, p, 69)
}

// startDnsmasqTFTP runs dnsmasq as a TFTP server only (no DNS, no DHCP).
func startDnsmasqTFTP(b *testing.B, env *benchEnv, dir string) {
	b.Helper()
	conf := filepath.Join(env.dir, "dnsmasq-tftp.conf")
	body := fmt.Sprintf("port=0\ninterface=%s\nbind-interfaces\nenable-tftp\ntftp-root=%s\n", env.srv.Iface, dir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := env.srv.Command(context.Background(), "dnsmasq", "--keep-in-foreground", "--log-facility=-",
		"--conf-file="+conf, "--pid-file=", "--user=root")
	p := e2e.StartProc(b, env.dir, "dnsmasq-tftp", cmd)
	waitUDP(b, env, p, 69)
}

// startATFTPD runs atftpd (the reference that honours windowsize) in the
// foreground on the server address only, serving dir.
func startATFTPD(b *testing.B, env *benchEnv, dir string) {
	b.Helper()
	cmd := env.srv.Command(context.Background(), atftpdPath(b), "--daemon", "--no-fork", "--no-multicast",
		"--bind-address", env.addr, "--port", "69", "--user", "root", "--group", "root", "--logfile", "-", dir)
	p := e2e.StartProc(b, env.dir, "atftpd", cmd)
	waitUDP(b, env, p, 69)
}

// atftpdPath returns the atftpd binary: the installed one, or one unpacked
// from `apt-get download atftpd` into the cache. Debian's atftpd and
// tftpd-hpa conflict (both ship /usr/sbin/in.tftpd), so test/deps.sh
// installs tftpd-hpa and the benchmark runs atftpd from the cache.
func atftpdPath(b *testing.B) string {
	b.Helper()
	if _, err := os.Stat("/usr/sbin/atftpd"); err == nil {
		return "/usr/sbin/atftpd"
	}
	// Keyed by the version apt would download.
	show, err := exec.Command("apt-cache", "show", "--no-all-versions", "atftpd").Output()
	if err != nil {
		b.Fatalf("atftpd: apt-cache show: %v", err)
	}
	version := "unknown"
	for _, l := range strings.Split(string(show), "\n") {
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			version = v
			break
		}
	}
	cached := filepath.Join(e2e.CacheDir(), "atftpd-"+version, "atftpd")
	if _, err := os.Stat(cached); err == nil {
		return cached
	}
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		b.Fatal(err)
	}
	work, err := os.MkdirTemp(filepath.Dir(cached), "dl-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("atftpd: %s %v: %v: %s", name, args, err, out)
		}
	}
	run("apt-get", "download", "atftpd")
	debs, _ := filepath.Glob(filepath.Join(work, "atftpd_*.deb"))
	if len(debs) != 1 {
		b.Fatalf("atftpd: apt-get download left %d .debs", len(debs))
	}
	run("dpkg-deb", "-x", debs[0], "x")
	// Renamed into place: a concurrent run finds the whole file or none.
	if err := os.Rename(filepath.Join(work, "x", "usr", "sbin", "atftpd"), cached); err != nil {
		b.Fatal(err)
	}
	return cached
}
