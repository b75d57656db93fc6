package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/test/e2e"
)

const (
	tftpSize = 16 << 20
	tftpRuns = 2 // downloads per server and block size; the mean is reported
)

// BenchmarkTFTP measures MiB/s of one client downloading a 16 MiB file at
// blksize 512 (the RFC 1350 default, what old PXE ROMs use) and 1468 (what
// iPXE and most UEFI clients negotiate on a 1500-byte MTU), from tftpd-hpa,
// dnsmasq and fleetboot. The client is pin/tftp in the client namespace.
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
		{fleetbootName, func(b *testing.B, env *benchEnv, dir string) {
			startFleetboot(b, env, edgeOpts{bootDir: dir})
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			env := newEnv(b)
			s.start(b, env, dir)
			b.ResetTimer()
			for _, bs := range []int{512, 1468} {
				start := time.Now()
				for i := 0; i < tftpRuns; i++ {
					tftpGet(b, env, bs, "blob16m")
				}
				mibs := float64(tftpSize*tftpRuns) / time.Since(start).Seconds() / (1 << 20)
				res.add(b, fmt.Sprintf("16 MiB, blksize %d", bs), s.name, mibs, "MiB/s", true)
			}
		})
	}
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
