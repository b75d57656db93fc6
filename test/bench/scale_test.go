package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/e2e"
)

// Issue 7's scale figures. All processes run on the loopback of one
// namespace the benchmark creates (so no port can clash with anything
// else on the machine).
const (
	scaleSites     = 10
	scaleHosts     = 10_000 // across scaleSites, through the API
	scaleEdges     = 3      // edges of sites s0..s2
	scaleChanges   = 1_000
	scaleWorkers   = 4                    // concurrent changers
	scalePoll      = 5 * time.Millisecond // how often a changer polls the edge
	scaleApplyMax  = 10 * time.Second     // a change not served by then fails the run
	scaleAPIFor    = 5 * time.Second      // host.get load duration
	scaleAPIMax    = 200_000              // and bound on its count
	scaleClients   = 16                   // concurrent API clients
	bigHosts       = 100_000              // the memory test's site, written to KV directly
	scaleSyncLimit = 3 * time.Minute      // an edge's initial sync
	scaleLoadLimit = 4 * time.Minute      // the API bulk load
)

// BenchmarkScale measures, with 10 000 hosts across 10 sites and 3 edges:
// the time from a `host set` API request to the edge serving the new
// script (p50, p99 over 1 000 changes); the coordinator API's requests per
// second (host.set while bulk-loading, then host.get) with 16 clients; and
// the resident memory of an edge whose site has 100 000 hosts.
func BenchmarkScale(b *testing.B) {
	e2e.RequireRoot(b)
	c := newCtl(b, "10.78.0.0/24", "10.78.0.1")
	dir, h, run := c.dir, c.h, c.run
	cli := func(args ...string) { c.cli(time.Minute, args...) }
	c.startCoordinator("coordinator")
	for i := range scaleSites {
		cli("site", "add", fmt.Sprintf("s%d", i), "--subnet", fmt.Sprintf("10.%d.0.0/16", 100+i), "--unknown", "exit")
	}
	cli("site", "add", "big", "--subnet", "10.200.0.0/16", "--unknown", "exit")
	for _, im := range []string{"img-a", "img-b"} {
		k, i := filepath.Join(dir, im+"-kernel"), filepath.Join(dir, im+"-initrd")
		for _, f := range []string{k, i} {
			if err := os.WriteFile(f, []byte(f), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		cli("image", "add", im, "--kernel", k, "--initrd", i, "--cmdline", "console=ttyS0")
	}
	conns := make([]*nats.Conn, scaleClients)
	for i := range conns {
		conns[i] = natsConn(b, h)
	}
	b.ResetTimer()
	res := newResults("SCALE")

	// 10 000 hosts through the API, 16 clients: host.set creating hosts.
	macs := make([]string, scaleHosts)
	for i := range macs {
		macs[i] = scaleMAC(0, i)
	}
	start := time.Now()
	apiLoad(b, conns, len(macs), scaleLoadLimit, func(nc *nats.Conn, i int) error {
		site, image := fmt.Sprintf("s%d", i%scaleSites), "img-a"
		return apiCall(nc, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: macs[i], Site: &site, Image: &image}, nil)
	})
	setRate := float64(len(macs)) / time.Since(start).Seconds()
	res.add(b, fmt.Sprintf("API host.set/s, %d clients", scaleClients), fleetbootName, setRate, "req/s", true)

	// host.get for 5 s (bounded in count too).
	var gets atomic.Int64
	start = time.Now()
	apiLoad(b, conns, scaleAPIMax, scaleAPIFor, func(nc *nats.Conn, i int) error {
		gets.Add(1)
		return apiCall(nc, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: macs[i%len(macs)]}, nil)
	})
	res.add(b, fmt.Sprintf("API host.get/s, %d clients", scaleClients), fleetbootName,
		float64(gets.Load())/time.Since(start).Seconds(), "req/s", true)

	// Three edges, one per site s0..s2, each holding 1 000 of the hosts.
	edges := make([]*scaleEdge, scaleEdges)
	for i := range edges {
		start := time.Now()
		edges[i] = startScaleEdge(b, h, run, dir, fmt.Sprintf("s%d", i), 8081+i)
		waitScript(b, h, edges[i], macs[i], "img-a", scaleSyncLimit)
		b.Logf("edge of site s%d serving its %d hosts %s after start", i, scaleHosts/scaleSites, time.Since(start).Round(time.Millisecond))
	}

	// 1 000 changes: each flips one host of an edge's site to img-b, then
	// polls that edge until its script names img-b.
	lat := applyLatencies(b, h, conns, edges, macs)
	res.add(b, "host set -> edge serves it, p50", fleetbootName, ms(percentile(lat, 50)), "ms", false)
	res.add(b, "host set -> edge serves it, p99", fleetbootName, ms(percentile(lat, 99)), "ms", false)
	res.add(b, "host set -> edge serves it, max", fleetbootName, ms(lat[len(lat)-1]), "ms", false)
	rss, _ := procMemory(b, edges[0].proc.PID())
	res.add(b, fmt.Sprintf("edge RSS, %d hosts", scaleHosts/scaleSites), fleetbootName, rss, "MiB", false)

	// 100 000 hosts in site "big", written to the KV buckets directly (the
	// API's one-by-one rate would make this minutes), then an edge of it.
	start = time.Now()
	bigMACs := writeHostsKV(b, conns[0], "big", "img-a", bigHosts, nil)
	b.Logf("%d hosts written to KV in %s", bigHosts, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	big := startScaleEdge(b, h, run, dir, "big", 8091)
	waitScript(b, h, big, bigMACs[len(bigMACs)-1], "img-a", scaleSyncLimit)
	res.add(b, fmt.Sprintf("edge start to serving, %dk hosts", bigHosts/1000), fleetbootName, ms(time.Since(start)), "ms", false)
	rss, hwm := procMemory(b, big.proc.PID())
	res.add(b, fmt.Sprintf("edge RSS, %dk hosts", bigHosts/1000), fleetbootName, rss, "MiB", false)
	res.add(b, fmt.Sprintf("edge peak RSS, %dk hosts", bigHosts/1000), fleetbootName, hwm, "MiB", false)
}

func scaleMAC(group, i int) string {
	return fmt.Sprintf("02:fb:%02x:%02x:%02x:%02x", group, byte(i>>16), byte(i>>8), byte(i))
}

// nsDialer dials inside the namespace, so a NATS client in this process
// reaches the coordinator on the namespace's loopback.
type nsDialer struct{ h *e2e.Host }

func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.h.DialContext(ctx, network, address)
}

func natsConn(b *testing.B, h *e2e.Host) *nats.Conn {
	b.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.SetCustomDialer(nsDialer{h}), nats.Name("fleetboot-bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// apiCall makes one coordinator API request, as the CLI does.
func apiCall(nc *nats.Conn, endpoint string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg, err := nc.Request(proto.APISubject(endpoint), body, 10*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	if rep.Error != "" {
		return fmt.Errorf("%s: %s", endpoint, rep.Error)
	}
	if out != nil {
		return json.Unmarshal(rep.Data, out)
	}
	return nil
}

// apiLoad runs fn for i in [0, n) from one goroutine per connection until
// all are done or limit passes; any error fails the benchmark.
func apiLoad(b *testing.B, conns []*nats.Conn, n int, limit time.Duration, fn func(nc *nats.Conn, i int) error) {
	b.Helper()
	deadline := time.Now().Add(limit)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(nc, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

type scaleEdge struct {
	site string
	url  string
	proc *e2e.Proc
}

func startScaleEdge(b *testing.B, h *e2e.Host, run func(string, ...string) *e2e.Proc, dir, site string, port int) *scaleEdge {
	b.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	e := &scaleEdge{site: site, url: "http://" + addr}
	e.proc = run("edge-"+site, "edge", "--coordinator", "nats://127.0.0.1:4222", "--name", "edge-"+site, "--site", site,
		"--state-dir", filepath.Join(dir, "state-"+site), "--cache-dir", filepath.Join(dir, "cache-"+site),
		"--http-listen", addr, "--tftp-listen", "", "--advertise", e.url)
	ctx, cancel := context.WithTimeout(context.Background(), scaleSyncLimit)
	defer cancel()
	if _, err := e.proc.WaitFor(ctx, regexp.MustCompile(`state in sync.*bucket=hosts`)); err != nil {
		b.Fatalf("edge %s: %v", site, err)
	}
	return e
}

// script fetches the edge's boot script for mac.
func script(client *http.Client, e *scaleEdge, mac string) (string, error) {
	resp, err := client.Get(e.url + "/boot.ipxe?mac=" + mac)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("script for %s: %s", mac, resp.Status)
	}
	return string(body), nil
}

// waitScript polls until the edge's script for mac boots image.
func waitScript(b *testing.B, h *e2e.Host, e *scaleEdge, mac, image string, limit time.Duration) {
	b.Helper()
	client := h.HTTPClient(5 * time.Second)
	want := "/artifacts/" + image + "/"
	deadline := time.Now().Add(limit)
	for {
		s, err := script(client, e, mac)
		if err == nil && strings.Contains(s, want) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("edge %s: script for %s does not boot %s after %s: %v\n%s", e.site, mac, image, limit, err, s)
		}
		time.Sleep(scalePoll) // polling interval of a benchmark client, not a readiness wait
	}
}

// applyLatencies makes scaleChanges host changes with scaleWorkers
// workers, each change on a host of an edge's site not changed before, and
// returns the sorted times from sending the host.set request to the edge
// serving a script with the new image.
func applyLatencies(b *testing.B, h *e2e.Host, conns []*nats.Conn, edges []*scaleEdge, macs []string) []time.Duration {
	b.Helper()
	// Hosts i with i%scaleSites < scaleEdges are at a site with an edge.
	var targets []int
	for i := range macs {
		if i%scaleSites < len(edges) {
			targets = append(targets, i)
		}
	}
	if len(targets) < scaleChanges {
		b.Fatalf("only %d hosts at sites with an edge", len(targets))
	}
	lat := make([]time.Duration, scaleChanges)
	var wg sync.WaitGroup
	errs := make(chan error, scaleWorkers)
	for w := range scaleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := h.HTTPClient(5 * time.Second)
			image := "img-b"
			for c := w; c < scaleChanges; c += scaleWorkers {
				i := targets[c]
				e := edges[i%scaleSites]
				start := time.Now()
				if err := apiCall(conns[w], proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: macs[i], Image: &image}, nil); err != nil {
					errs <- err
					return
				}
				for {
					s, err := script(client, e, macs[i])
					if err == nil && strings.Contains(s, "/artifacts/img-b/") {
						break
					}
					if time.Since(start) > scaleApplyMax {
						errs <- fmt.Errorf("edge %s: change of %s not served after %s: %v", e.site, macs[i], scaleApplyMax, err)
						return
					}
					time.Sleep(scalePoll)
				}
				lat[c] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	slices.Sort(lat)
	return lat
}

// writeHostsKV puts n hosts of site straight into the hosts and macs
// buckets, as the coordinator would write them, with asynchronous
// JetStream publishes, and returns their MACs. ip, if set, gives host i its
// fixed address.
func writeHostsKV(b *testing.B, nc *nats.Conn, site, image string, n int, ip func(i int) string) []string {
	b.Helper()
	return writeHostsKVAt(b, nc, image, n, func(i int) (string, string) { return scaleMAC(0xb1, i), site }, ip)
}

// writeHostsKVAt is writeHostsKV with host i's MAC and site from at.
func writeHostsKVAt(b *testing.B, nc *nats.Conn, image string, n int, at func(i int) (mac, site string), ip func(i int) string) []string {
	b.Helper()
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	stall := jetstream.WithStallWait(time.Minute)
	macs := make([]string, n)
	for i := range macs {
		var site string
		macs[i], site = at(i)
		k, err := proto.MACKey(macs[i])
		if err != nil {
			b.Fatal(err)
		}
		key := site + "." + k
		h := proto.Host{V: proto.Version, MAC: macs[i], Site: site, Image: image, State: proto.StateBoot, Updated: now}
		if ip != nil {
			h.IP = ip(i)
		}
		data, _ := json.Marshal(h)
		// A loaded machine acknowledges slowly: wait for room in the
		// window rather than fail after the default 200 ms stall.
		if _, err := js.PublishAsync("$KV."+proto.BucketHosts+"."+key, data, stall); err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync("$KV."+proto.BucketMACs+"."+k, []byte(key), stall); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("KV writes not acknowledged after 2 minutes")
	}
	if f := failed.Load(); f != 0 {
		b.Fatalf("%d KV writes failed", f)
	}
	return macs
}

// procMemory reads a process's resident set size and its peak (VmRSS and
// VmHWM of /proc/PID/status), in MiB.
func procMemory(b *testing.B, pid int) (rss, hwm float64) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	if rss == 0 {
		b.Fatal(errors.New("no VmRSS in /proc status"))
	}
	return rss, hwm
}
