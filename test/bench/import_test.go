package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// BenchmarkImport measures issue 15's bulk figures through the CLI as an
// operator runs it: `host import` of 10 000 and of 100 000 hosts (hosts/s,
// every line checked first, the coordinator fsyncing each batch), then,
// with an edge of the site running, how long after the import returned the
// edge serves the last imported host, and the latency of each host's first
// script (p50, p99 over a sample), as a newly racked machine would ask.
// There is no reference server with bulk import to put beside it.
func BenchmarkImport(b *testing.B) {
	e2e.RequireRoot(b)
	c := newCtl(b, "10.80.0.0/24", "10.80.0.1")
	dir, h, run := c.dir, c.h, c.run
	cli := func(args ...string) string { return c.cli(10*time.Minute, args...) }
	c.startCoordinator("coordinator")
	k, i := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd")
	for _, f := range []string{k, i} {
		if err := os.WriteFile(f, []byte(f), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cli("image", "add", "img-a", "--kernel", k, "--initrd", i, "--cmdline", "console=ttyS0")
	cli("site", "add", "ten", "--subnet", "10.81.0.0/16", "--unknown", "exit")
	cli("site", "add", "big", "--subnet", "10.84.0.0/14", "--unknown", "exit")
	b.ResetTimer()
	res := newResults("IMPORT")

	imp := func(site string, group, n int) []string {
		var sb strings.Builder
		sb.WriteString("mac,site,image,hostname,labels\n")
		macs := make([]string, n)
		for j := range n {
			macs[j] = scaleMAC(group, j)
			fmt.Fprintf(&sb, "%s,%s,img-a,h%d,rack=r%d\n", macs[j], site, j, j%40)
		}
		file := filepath.Join(dir, site+".csv")
		if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		out := cli("host", "import", file)
		took := time.Since(start)
		if !strings.Contains(out, fmt.Sprintf("created %d,", n)) {
			b.Fatalf("host import of %d hosts:\n%s", n, out)
		}
		res.add(b, fmt.Sprintf("host import, %dk hosts (CLI, checked, fsynced)", n/1000), fleetbootName, float64(n)/took.Seconds(), "hosts/s", true)
		return macs
	}
	imp("ten", 0xd0, 10_000)

	edge := startScaleEdge(b, h, run, dir, "big", 8086)
	macs := imp("big", 0xd1, 100_000)
	imported := time.Now()
	waitScript(b, h, edge, macs[len(macs)-1], "img-a", scaleSyncLimit)
	res.add(b, "import returned -> edge serves the last of 100k", fleetbootName, ms(time.Since(imported)), "ms", false)

	// Each sampled host's first script, one at a time, each from its own
	// address on a new connection, as newly racked machines ask (one
	// address asking for 1 000 scripts is what the edge's per-address rate
	// limit is there to refuse).
	rng := rand.New(rand.NewPCG(3, 4))
	lat := make([]time.Duration, 0, 1000)
	for j := range 1000 {
		mac := macs[rng.IntN(len(macs))]
		client := machineClient(h, net.IPv4(127, 1, byte(j>>8), byte(j+1)))
		t0 := time.Now()
		s, err := script(client, edge, mac)
		if err != nil || !strings.Contains(s, "/artifacts/img-a/") {
			b.Fatalf("first script of %s: %v\n%s", mac, err, s)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	res.add(b, "first script of an imported host, p50", fleetbootName, ms(percentile(lat, 50)), "ms", false)
	res.add(b, "first script of an imported host, p99", fleetbootName, ms(percentile(lat, 99)), "ms", false)
}

// machineClient is an HTTP client in h's namespace whose connections come
// from local (any 127.0.0.0/8 address is the loopback's) and are not reused.
func machineClient(h *e2e.Host, local net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = e2e.InNS(h.NS, func() error {
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}
