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
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/fleetboot/fleetboot/test/e2e"
	"github.com/fleetboot/fleetboot/test/miniotest"
)

const (
	httpSize     = 1 << 30
	httpClients  = 8
	coldSize     = 128 << 20
	coldClients  = 50
	minioUser    = "fleetbootadmin"
	minioSecret  = "fleetboot-secret-key"
	minioBucket  = "bench"
	minioAddress = serverAddr + ":9000"
)

// BenchmarkHTTP measures a cache hit: 8 clients each downloading the same
// 1 GiB artifact at once, aggregate throughput, from nginx (sendfile on)
// and from fleetboot's edge cache (warmed by one untimed download).
func BenchmarkHTTP(b *testing.B) {
	dir := filepath.Join(e2e.CacheDir(), "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	blob := filepath.Join(dir, "blob1g")
	if st, err := os.Stat(blob); err != nil || st.Size() != httpSize {
		writeFile(b, blob, httpSize, 1)
	}
	res := newResults("HTTP")
	servers := []struct {
		name  string
		start func(b *testing.B, env *benchEnv) string // returns the blob's URL
	}{
		{"nginx", func(b *testing.B, env *benchEnv) string { return startNginx(b, env, dir) + "/blob1g" }},
		{fleetbootName, func(b *testing.B, env *benchEnv) string {
			// The blob is an image's kernel: the edge serves it from its
			// cache as /artifacts/bench/blob1g.
			startFleetboot(b, env, edgeOpts{images: []image{{"bench", blob}}})
			url := "http://" + serverAddr + ":8080/artifacts/bench/blob1g"
			if _, _, err := get(env.cli.HTTPClient(10*time.Minute), url, httpSize); err != nil {
				b.Fatalf("warm: %v", err)
			}
			return url
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			env := newEnv(b)
			url := s.start(b, env)
			client := env.cli.HTTPClient(5 * time.Minute)
			b.ResetTimer()
			b.SetBytes(httpSize * httpClients)
			start := time.Now()
			parallelGet(b, client, url, httpClients, httpSize)
			mibs := float64(httpSize*httpClients) / time.Since(start).Seconds() / (1 << 20)
			res.add(b, fmt.Sprintf("hit 1 GiB x %d clients", httpClients), s.name, mibs, "MiB/s", true)
		})
	}
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

// BenchmarkHTTPCold measures cache misses: the edge's store is a MinIO
// server on the server host. Time to first byte and total time of one
// client on a cold 128 MiB artifact, and of 50 clients asking for another
// cold one at the same moment (one S3 GET streamed to all), each against a
// direct GET of the same object from MinIO by the same client host.
func BenchmarkHTTPCold(b *testing.B) {
	env := newEnv(b)
	startMinIO(b, env)
	blobs := []string{filepath.Join(env.dir, "cold-a"), filepath.Join(env.dir, "cold-b")}
	keys := make([]string, len(blobs))
	for i, p := range blobs {
		writeFile(b, p, coldSize, uint64(100+i))
		keys[i] = "sha256/" + fileSHA256(b, p)
	}
	fb := startFleetboot(b, env, edgeOpts{
		images: []image{{"cold1", blobs[0]}, {"cold50", blobs[1]}}, assignLater: true,
		store: "s3://" + minioBucket + "?tls=false&endpoint=" + minioAddress,
		env:   []string{"FLEETBOOT_S3_ACCESS_KEY=" + minioUser, "FLEETBOOT_S3_SECRET_KEY=" + minioSecret},
	})
	client := env.cli.HTTPClient(5 * time.Minute)
	direct := make([]string, len(keys))
	for i, k := range keys {
		direct[i] = presign(b, k)
	}
	b.ResetTimer()
	res := newResults("HTTP")

	// One client. MinIO first, so both read the object from the page cache.
	dTTFB, dTotal, err := get(client, direct[0], coldSize)
	if err != nil {
		b.Fatalf("direct MinIO GET: %v", err)
	}
	fb.assign(b, client, 0, "cold1", "http://"+serverAddr+":8080/artifacts/cold1/cold-a")
	eTTFB, eTotal, err := get(client, "http://"+serverAddr+":8080/artifacts/cold1/cold-a", coldSize)
	if err != nil {
		b.Fatalf("cold edge GET: %v", err)
	}
	res.add(b, "miss 128 MiB: first byte", "minio", ms(dTTFB), "ms", false)
	res.add(b, "miss 128 MiB: first byte", fleetbootName, ms(eTTFB), "ms", false)
	res.add(b, "miss 128 MiB: total", "minio", ms(dTotal), "ms", false)
	res.add(b, "miss 128 MiB: total", fleetbootName, ms(eTotal), "ms", false)

	// 50 clients at once.
	start := time.Now()
	dt := parallelGet(b, client, direct[1], coldClients, coldSize)
	dWall := time.Since(start)
	fb.assign(b, client, 1, "cold50", "http://"+serverAddr+":8080/artifacts/cold50/cold-b")
	start = time.Now()
	et := parallelGet(b, client, "http://"+serverAddr+":8080/artifacts/cold50/cold-b", coldClients, coldSize)
	eWall := time.Since(start)
	m := fmt.Sprintf("miss 128 MiB x %d:", coldClients)
	res.add(b, m+" first byte p50", "minio", ms(percentile(dt, 50)), "ms", false)
	res.add(b, m+" first byte p50", fleetbootName, ms(percentile(et, 50)), "ms", false)
	res.add(b, m+" first byte max", "minio", ms(dt[len(dt)-1]), "ms", false)
	res.add(b, m+" first byte max", fleetbootName, ms(et[len(et)-1]), "ms", false)
	res.add(b, m+" all done", "minio", ms(dWall), "ms", false)
	res.add(b, m+" all done", fleetbootName, ms(eWall), "ms", false)
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
