package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/fleetboot/fleetboot/test/e2e"
	"github.com/fleetboot/fleetboot/test/miniotest"
)

const (
	httpSize       = 1 << 30
	smallSize      = 4 << 10 // the small-file figure: requests/s
	loadClients    = 16      // concurrent keep-alive clients of the small-file and script loads
	loadRequests   = 20_000  // requests per load (each also bounded by loadLimit)
	loadLimit      = 60 * time.Second
	scriptHosts    = 100_000 // hosts of the site while scripts are measured
	coldSize       = 1 << 30 // one client's cold miss
	coldMultiSize  = 128 << 20
	coldClients    = 50
	minioUser      = "fleetbootadmin"
	minioSecret    = "fleetboot-secret-key"
	minioBucket    = "bench"
	minioAddress   = serverAddr + ":9000"
	scriptRefBytes = 1024 // the reference's static "script": a file of this size
)

// hitClients are the concurrent downloads of the 1 GiB hit figure, each
// count measured reps times (the median is the figure): one 1 GiB download
// lasts about half a second here, and a single one swung 0.78x-1.2x
// between runs of the same binaries.
var hitClients = []struct{ n, reps int }{{1, 5}, {8, 3}, {64, 1}}

// BenchmarkHTTP measures cache hits against nginx (sendfile on, two
// workers) serving the same files: a 1 GiB artifact downloaded by 1, 8 and
// 64 clients at once (aggregate MiB/s); a 4 KiB artifact requested by 16
// keep-alive clients (requests/s); and fleetboot's per-MAC script
// (/boot.ipxe?mac=, random MACs of a site with 100 000 hosts) against nginx
// serving a static file of 1 KiB (scripts/s, p99). fleetboot's edge runs
// with --http-source-rate=-1, as nginx has no per-address limit.
func BenchmarkHTTP(b *testing.B) {
	dir := filepath.Join(e2e.CacheDir(), "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	blob := filepath.Join(dir, "blob1g")
	if st, err := os.Stat(blob); err != nil || st.Size() != httpSize {
		writeFile(b, blob, httpSize, 1)
	}
	small := filepath.Join(dir, "small4k")
	if st, err := os.Stat(small); err != nil || st.Size() != smallSize {
		writeFile(b, small, smallSize, 2)
	}
	script := filepath.Join(dir, "script1k")
	if st, err := os.Stat(script); err != nil || st.Size() != scriptRefBytes {
		writeFile(b, script, scriptRefBytes, 3)
	}
	type urls struct{ big, small, script string }
	res := newResults("HTTP")
	servers := []struct {
		name  string
		start func(b *testing.B, env *benchEnv) (urls, func(i int) string)
	}{
		{"nginx", func(b *testing.B, env *benchEnv) (urls, func(int) string) {
			base := startNginx(b, env, dir)
			// Warmed as fleetboot's cache is: both serve from the page cache.
			client := env.cli.HTTPClient(10 * time.Minute)
			for _, w := range []struct {
				url  string
				size int64
			}{{base + "/blob1g", httpSize}, {base + "/small4k", smallSize}} {
				if _, _, err := get(client, w.url, w.size); err != nil {
					b.Fatalf("warm: %v", err)
				}
			}
			return urls{base + "/blob1g", base + "/small4k", base + "/script1k"},
				func(int) string { return base + "/script1k" }
		}},
		{fleetbootName, func(b *testing.B, env *benchEnv) (urls, func(int) string) {
			// The files are images' kernels: the edge serves them from
			// its cache as /artifacts/<image>/<file>.
			o := edgeOpts{images: []image{{"bench", blob}, {"small", small}}, args: []string{"--http-source-rate=-1"}}
			if os.Getenv(profileEnv) != "" {
				o.args = append(o.args, "--pprof-listen="+profileAddr)
			}
			startFleetboot(b, env, o)
			base := "http://" + serverAddr + ":8080"
			u := urls{big: base + "/artifacts/bench/blob1g", small: base + "/artifacts/small/small4k"}
			client := env.cli.HTTPClient(10 * time.Minute)
			for _, w := range []struct {
				url  string
				size int64
			}{{u.big, httpSize}, {u.small, smallSize}} {
				if _, _, err := get(client, w.url, w.size); err != nil {
					b.Fatalf("warm: %v", err)
				}
			}
			// The site's hosts, written to KV as the coordinator would;
			// the edge serves the last one's script once it has them all.
			macs := writeHostsKV(b, natsConn(b, env.srv), "lab", "bench", scriptHosts, nil)
			se := &scaleEdge{site: "lab", url: base}
			waitScript(b, env.cli, se, macs[len(macs)-1], "bench", scaleSyncLimit)
			body, err := scriptBody(client, se.url+"/boot.ipxe?mac="+macs[0])
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("a script of the %d hosts' site: %d bytes", scriptHosts, len(body))
			return u, func(i int) string { return se.url + "/boot.ipxe?mac=" + macs[(i*7919)%len(macs)] }
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			env := newEnv(b)
			u, scriptURL := s.start(b, env)
			client := env.cli.HTTPClient(10 * time.Minute)
			b.ResetTimer()
			for _, h := range hitClients {
				var took []time.Duration
				what := fmt.Sprintf("hit 1 GiB x %d clients", h.n)
				stop := func() {}
				if h.n == 1 {
					// The single download is the figure that swings most:
					// where the edge's time goes while it runs.
					stop = profileLoad(b, env, s.name, what, hitProfileSeconds)
				}
				cpu0 := readCPU(b)
				for range h.reps {
					start := time.Now()
					parallelGet(b, client, u.big, h.n, httpSize)
					took = append(took, time.Since(start))
				}
				busy := busyPercent(cpu0, readCPU(b))
				stop()
				mibs := float64(httpSize*int64(h.n)) / median(took).Seconds() / (1 << 20)
				res.add(b, fmt.Sprintf("%s, med. of %d", what, h.reps), s.name, mibs, "MiB/s", true)
				res.add(b, what+": machine CPU busy", s.name, busy, "%", false)
			}
			load := func(what string, url func(i int) string) {
				stop := profileLoad(b, env, s.name, what, 1) // the 4 KiB load lasts about two
				rps, lat := loadGet(b, env.cli, url)
				stop()
				res.add(b, what+": requests/s", s.name, rps, "req/s", true)
				res.add(b, what+": p50", s.name, ms(percentile(lat, 50)), "ms", false)
				res.add(b, what+": p99", s.name, ms(percentile(lat, 99)), "ms", false)
			}
			load(fmt.Sprintf("hit 4 KiB x %d clients", loadClients), func(int) string { return u.small })
			load(fmt.Sprintf("script, %dk hosts, x %d", scriptHosts/1000, loadClients), scriptURL)
		})
	}
}

// hitProfileSeconds is the profile of the single 1 GiB download: its five
// repetitions last about four seconds.
const hitProfileSeconds = 3

// profileLoad saves the edge's CPU profile over the first seconds of a
// load to FLEETBOOT_BENCH_PROFILE/http-WHAT.cpu.prof; stop waits for it.
func profileLoad(b *testing.B, env *benchEnv, server, what string, seconds int) (stop func()) {
	dir := os.Getenv(profileEnv)
	if dir == "" || server != fleetbootName {
		return func() {}
	}
	name := strings.NewReplacer(" ", "-", ",", "", ":", "").Replace(what)
	return cpuProfile(b, env, filepath.Join(dir, "http-"+name+".cpu.prof"), seconds)
}

// loadGet makes loadRequests GETs (fewer if loadLimit passes first) with
// loadClients keep-alive clients, each reading its body whole, and returns
// the requests per second and the sorted latencies.
func loadGet(b *testing.B, h *e2e.Host, url func(i int) string) (float64, []time.Duration) {
	b.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: h.DialContext, MaxIdleConnsPerHost: loadClients, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	lats := make([][]time.Duration, loadClients)
	errs := make([]error, loadClients)
	deadline := time.Now().Add(loadLimit)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range loadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				i := next.Add(1) - 1
				if i >= loadRequests || time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				resp, err := client.Get(url(int(i)))
				if err != nil {
					errs[c] = err
					return
				}
				_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET %s: %s", url(int(i)), resp.Status)
				}
				if err != nil {
					errs[c] = err
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	return float64(len(all)) / wall.Seconds(), all
}

// scriptBody GETs a script and returns it.
func scriptBody(client *http.Client, url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// parallelGet runs n simultaneous GETs of url and returns each one's time
// to first byte, sorted.
func parallelGet(b *testing.B, client *http.Client, url string, n int, size int64) []time.Duration {
	b.Helper()
	var wg sync.WaitGroup
	ttfbs := make([]time.Duration, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ttfbs[i], _, errs[i] = get(client, url, size)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(ttfbs)
	return ttfbs
}

// startNginx serves dir on the server's port 8080 with sendfile, as a
// tuned static server would.
func startNginx(b *testing.B, env *benchEnv, dir string) string {
	b.Helper()
	conf := filepath.Join(env.dir, "nginx.conf")
	body := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 8192;
user root;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_timeout 65;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	server {
		listen %[2]s:8080;
		root %[3]s;
	}
}
`, env.dir, env.addr, dir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := env.srv.Command(context.Background(), "nginx", "-c", conf, "-p", env.dir, "-e", "stderr")
	p := e2e.StartProc(b, env.dir, "nginx", cmd)
	waitPort(b, env.srv.NS, p, "tcp", 8080)
	return "http://" + env.addr + ":8080"
}

// coldProfileSeconds is the profile of the single 1 GiB cold miss, which
// lasts two to four seconds here.
const coldProfileSeconds = 2

// BenchmarkHTTPCold measures cache misses: the edge's store is a MinIO
// server on the server host. Time to first byte and total time of one
// client on a cold 1 GiB artifact, and of 50 clients asking for a cold
// 128 MiB one at the same moment (one fetch streamed to all), each against
// a direct GET of the same object from MinIO by the same client host. The
// edge fetches objects of 32 MiB and more as 16 MiB ranged GETs, 4 at once,
// and only when asked (--prefetch=false). The machine's CPU busy share over
// each single GET is reported beside it: both cores serve the store, the
// edge and the client here.
func BenchmarkHTTPCold(b *testing.B) {
	env := newEnv(b)
	startMinIO(b, env)
	blobs := []string{filepath.Join(env.dir, "cold-a"), filepath.Join(env.dir, "cold-b")}
	sizes := []int64{coldSize, coldMultiSize}
	keys := make([]string, len(blobs))
	for i, p := range blobs {
		writeFile(b, p, sizes[i], uint64(100+i))
		keys[i] = "sha256/" + fileSHA256(b, p)
	}
	o := edgeOpts{
		images: []image{{"cold1", blobs[0]}, {"cold50", blobs[1]}}, assignLater: true,
		store: "s3://" + minioBucket + "?tls=false&endpoint=" + minioAddress,
		env:   []string{"FLEETBOOT_S3_ACCESS_KEY=" + minioUser, "FLEETBOOT_S3_SECRET_KEY=" + minioSecret},
	}
	// Without --prefetch=false the assignment itself would start the fetch
	// (the edge prefetches assigned images), and the GET that follows would
	// join a fetch already under way: a miss, but not a cold one.
	o.args = append(o.args, "--prefetch=false")
	if os.Getenv(profileEnv) != "" {
		o.args = append(o.args, "--pprof-listen="+profileAddr)
	}
	fb := startFleetboot(b, env, o)
	keepEdgeLog(b, env, "http-cold") // its "cache: fetched" lines time the store's answers
	client := env.cli.HTTPClient(5 * time.Minute)
	direct := make([]string, len(keys))
	for i, k := range keys {
		direct[i] = presign(b, k)
	}
	recycleMemory(b, env.dir, recycleSize)
	b.ResetTimer()
	res := newResults("HTTP")

	// One client. MinIO first, so both read the object from the page cache.
	cpu0 := readCPU(b)
	dTTFB, dTotal, err := get(client, direct[0], coldSize)
	if err != nil {
		b.Fatalf("direct MinIO GET: %v", err)
	}
	dBusy := busyPercent(cpu0, readCPU(b))
	fb.assign(b, client, 0, "cold1", "http://"+serverAddr+":8080/artifacts/cold1/cold-a")
	stop := profileLoad(b, env, fleetbootName, "miss 1 GiB", coldProfileSeconds)
	cpu0 = readCPU(b)
	eTTFB, eTotal, err := get(client, "http://"+serverAddr+":8080/artifacts/cold1/cold-a", coldSize)
	if err != nil {
		b.Fatalf("cold edge GET: %v", err)
	}
	eBusy := busyPercent(cpu0, readCPU(b))
	stop()
	res.add(b, "miss 1 GiB: first byte", "minio", ms(dTTFB), "ms", false)
	res.add(b, "miss 1 GiB: first byte", fleetbootName, ms(eTTFB), "ms", false)
	res.add(b, "miss 1 GiB: total", "minio", ms(dTotal), "ms", false)
	res.add(b, "miss 1 GiB: total", fleetbootName, ms(eTotal), "ms", false)
	res.add(b, "miss 1 GiB: machine CPU busy", "minio", dBusy, "%", false)
	res.add(b, "miss 1 GiB: machine CPU busy", fleetbootName, eBusy, "%", false)

	// 50 clients at once.
	start := time.Now()
	dt := parallelGet(b, client, direct[1], coldClients, coldMultiSize)
	dWall := time.Since(start)
	fb.assign(b, client, 1, "cold50", "http://"+serverAddr+":8080/artifacts/cold50/cold-b")
	start = time.Now()
	et := parallelGet(b, client, "http://"+serverAddr+":8080/artifacts/cold50/cold-b", coldClients, coldMultiSize)
	eWall := time.Since(start)
	m := fmt.Sprintf("miss 128 MiB x %d:", coldClients)
	res.add(b, m+" first byte p50", "minio", ms(percentile(dt, 50)), "ms", false)
	res.add(b, m+" first byte p50", fleetbootName, ms(percentile(et, 50)), "ms", false)
	res.add(b, m+" first byte max", "minio", ms(dt[len(dt)-1]), "ms", false)
	res.add(b, m+" first byte max", fleetbootName, ms(et[len(et)-1]), "ms", false)
	res.add(b, m+" all done", "minio", ms(dWall), "ms", false)
	res.add(b, m+" all done", fleetbootName, ms(eWall), "ms", false)
}

// recycleSize is the free memory cycled through the page cache before the
// cold misses: the edge's cache writes 1 GiB + 128 MiB, the direct GETs
// write nothing.
const recycleSize = 4 << 30

// recycleMemory writes size bytes to a file in dir and deletes it. On a
// virtual machine the first write to a page of guest memory costs a trap
// to the hypervisor: measured here, writing 1 GiB into the page cache took
// 1.9-2.5 s of system CPU on memory never touched since boot and 0.15 s
// on pages freed a moment before. A cold miss writes the artifact to the
// cache and a direct GET writes nothing, so on a freshly booted machine the
// comparison would measure the hypervisor; an edge that has run for a
// while has no untouched memory left. Deleting the file frees its pages,
// and the next page-cache writes (the edge's) get them back.
func recycleMemory(b *testing.B, dir string, size int64) {
	b.Helper()
	path := filepath.Join(dir, "recycle")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(path)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) | 1
	}
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			b.Fatalf("recycle memory: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatalf("recycle memory: %v", err)
	}
	if err := os.Remove(path); err != nil {
		b.Fatalf("recycle memory: %v", err)
	}
	b.Logf("recycled %d MiB of free memory through the page cache in %s (about 2 s a GiB on memory never touched, 0.15 s on recycled)",
		size>>20, time.Since(start).Round(time.Millisecond))
}

// startMinIO runs MinIO on the server host's address (so the client host
// can GET from it directly) and waits until it is ready.
func startMinIO(b *testing.B, env *benchEnv) {
	b.Helper()
	bin := miniotest.Binary()
	if _, err := os.Stat(bin); err != nil {
		b.Fatalf("minio server binary %s not found: run `make deps`", bin)
	}
	cmd := env.srv.Command(context.Background(), bin, "server", "--quiet", "--address", minioAddress,
		"--console-address", "127.0.0.1:9001", filepath.Join(env.dir, "minio-data"))
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioSecret,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	p := e2e.StartProc(b, env.dir, "minio", cmd)
	c := env.cli.HTTPClient(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		resp, err := c.Get("http://" + minioAddress + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.Exited():
			b.Fatalf("minio exited:\n%s", p.Output())
		case <-ctx.Done():
			b.Fatalf("minio not ready after 60s:\n%s", p.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// presign returns a URL that GETs the object with no other credentials,
// so the direct MinIO GET is a plain HTTP GET like the edge's. The region
// is given, so signing needs no request.
func presign(b *testing.B, key string) string {
	b.Helper()
	c, err := minio.New(minioAddress, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioSecret, ""), Region: "us-east-1"})
	if err != nil {
		b.Fatal(err)
	}
	u, err := c.PresignedGetObject(context.Background(), minioBucket, key, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	return u.String()
}

func fileSHA256(b *testing.B, path string) string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
