package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// Workload sizes: bounded so a run stays within a few minutes on 2 cores.
const (
	doraCount    = 300
	doraLimit    = 60 * time.Second
	tftpSize     = 10 << 20
	httpSize     = 1 << 30
	httpClients  = 8
	serverAddr   = "10.77.0.1"
	serverPrefix = "10.77.0.0/16"
)

// target is one implementation under test, serving on the server host.
type target struct {
	name string
	// dhcp, tftp and http start the server for that protocol (DHCP pool
	// 10.77.1.0-10.77.200.255; TFTP and HTTP serving files from dir) and
	// return the TFTP server address or HTTP base URL. Nil: not measured.
	dhcp func(b *testing.B, env *benchEnv)
	tftp func(b *testing.B, env *benchEnv, dir string) string
	http func(b *testing.B, env *benchEnv, dir string) string
}

// benchEnv is a private network with a server host and a client host.
type benchEnv struct {
	net *e2e.Network
	srv *e2e.Host
	cli *e2e.Host
	dir string
}

// newEnv builds a fresh network per target so servers never share ports.
func newEnv(b *testing.B) *benchEnv {
	b.Helper()
	e2e.RequireRoot(b)
	env := &benchEnv{dir: b.TempDir()}
	env.net = e2e.NewNetwork(b, serverPrefix)
	env.srv = env.net.AddHost(b, "srv", serverAddr, "")
	env.cli = env.net.AddHost(b, "cli", "10.77.0.2", "")
	return env
}

func referenceTarget() target {
	return target{
		name: "reference",
		dhcp: func(b *testing.B, env *benchEnv) {
			e2e.StartDnsmasq(b, env.srv, env.dir, e2e.DnsmasqConfig{Iface: env.srv.Iface,
				RangeStart: "10.77.1.0", RangeEnd: "10.77.200.255", Netmask: "255.255.0.0", NoPing: true})
		},
		tftp: func(b *testing.B, env *benchEnv, dir string) string {
			e2e.StartDnsmasq(b, env.srv, env.dir, e2e.DnsmasqConfig{Iface: env.srv.Iface,
				RangeStart: "10.77.1.0", RangeEnd: "10.77.200.255", Netmask: "255.255.0.0", NoPing: true, BIOSFile: "x", TFTPRoot: dir})
			return serverAddr
		},
		http: startNginx,
	}
}

func targets() []target { return append([]target{referenceTarget()}, extraTargets()...) }

// BenchmarkDHCP measures sequential DORA exchanges per second, each from a
// new MAC, with insomniacslk/dhcp's nclient4 in the client namespace.
func BenchmarkDHCP(b *testing.B) {
	rates := map[string]float64{}
	for _, tg := range targets() {
		if tg.dhcp == nil {
			continue
		}
		b.Run(tg.name, func(b *testing.B) {
			env := newEnv(b)
			tg.dhcp(b, env)
			b.ResetTimer()
			var total float64
			for i := 0; i < b.N; i++ {
				total += doraRate(b, env)
			}
			rates[tg.name] = total / float64(b.N)
			b.ReportMetric(rates[tg.name], "dora/s")
			reportRatio(b, rates, tg.name, "dora/s")
		})
	}
}

func doraRate(b *testing.B, env *benchEnv) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), doraLimit)
	defer cancel()
	start := time.Now()
	n := 0
	for ; n < doraCount && ctx.Err() == nil; n++ {
		hw := net.HardwareAddr{0x02, 0xbe, 0x00, byte(n >> 16), byte(n >> 8), byte(n)}
		c, err := e2e.NewDHCPClient(env.cli, hw, 2*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_, err = c.Request(ctx)
		c.Close()
		if err != nil && ctx.Err() != nil {
			break // the time bound ended this exchange: count the finished ones
		}
		if err != nil {
			b.Fatalf("DORA %d: %v", n, err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkTFTP measures one 10 MB TFTP download (blksize 1468, as iPXE
// and most UEFI clients negotiate).
func BenchmarkTFTP(b *testing.B) {
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "blob10m"), tftpSize)
	rates := map[string]float64{}
	for _, tg := range targets() {
		if tg.tftp == nil {
			continue
		}
		b.Run(tg.name, func(b *testing.B) {
			env := newEnv(b)
			server := tg.tftp(b, env, dir)
			b.ResetTimer()
			b.SetBytes(tftpSize)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				tftpGet(b, env, server, "blob10m")
			}
			rates[tg.name] = float64(tftpSize*b.N) / time.Since(start).Seconds() / 1e6
			b.ReportMetric(rates[tg.name], "MB/s")
			reportRatio(b, rates, tg.name, "MB/s")
		})
	}
}

func tftpGet(b *testing.B, env *benchEnv, server, file string) {
	b.Helper()
	c, err := tftp.NewClient(server + ":69")
	if err != nil {
		b.Fatal(err)
	}
	c.SetBlockSize(1468)
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
		b.Fatalf("tftp %s: %d bytes, %v", file, n, err)
	}
}

// BenchmarkHTTP measures 8 clients each downloading the same 1 GB artifact
// at once: aggregate throughput.
func BenchmarkHTTP(b *testing.B) {
	dir := filepath.Join(e2e.CacheDir(), "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	blob := filepath.Join(dir, "blob1g")
	if st, err := os.Stat(blob); err != nil || st.Size() != httpSize {
		writeFile(b, blob, httpSize)
	}
	rates := map[string]float64{}
	for _, tg := range targets() {
		if tg.http == nil {
			continue
		}
		b.Run(tg.name, func(b *testing.B) {
			env := newEnv(b)
			base := tg.http(b, env, dir)
			client := env.cli.HTTPClient(5 * time.Minute)
			b.ResetTimer()
			b.SetBytes(httpSize * httpClients)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				parallelGet(b, client, base+"/blob1g")
			}
			rates[tg.name] = float64(httpSize*httpClients*b.N) / time.Since(start).Seconds() / 1e6
			b.ReportMetric(rates[tg.name], "MB/s")
			reportRatio(b, rates, tg.name, "MB/s")
		})
	}
}

func parallelGet(b *testing.B, client *http.Client, url string) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, httpClients)
	for i := 0; i < httpClients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && n != httpSize {
				err = fmt.Errorf("short body: %d bytes, status %s", n, resp.Status)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatalf("GET %s: %v", url, err)
		}
	}
}

// startNginx serves dir on 10.77.0.1:8080 with sendfile, as a tuned static
// server would.
func startNginx(b *testing.B, env *benchEnv, dir string) string {
	b.Helper()
	conf := filepath.Join(env.dir, "nginx.conf")
	body := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root;
pid %s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_timeout 65;
	client_body_temp_path %s;
	proxy_temp_path %s;
	fastcgi_temp_path %s;
	uwsgi_temp_path %s;
	scgi_temp_path %s;
	server {
		listen %s:8080;
		root %s;
	}
}
`, env.dir, env.dir, env.dir, env.dir, env.dir, env.dir, serverAddr, dir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := env.srv.Command(context.Background(), "nginx", "-c", conf, "-p", env.dir, "-e", "stderr")
	p := e2e.StartProc(b, env.dir, "nginx", cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e2e.WaitListening(ctx, env.srv.NS, "tcp", 8080); err != nil {
		b.Fatalf("nginx: %v\n%s", err, p.Output())
	}
	return "http://" + serverAddr + ":8080"
}

// reportRatio reports a target's rate relative to the reference's (which
// runs first, in the same environment and run) as the metric
// "x-reference" on the target's own result line.
func reportRatio(b *testing.B, rates map[string]float64, name, unit string) {
	ref, ok := rates["reference"]
	if name == "reference" || !ok || ref == 0 {
		return
	}
	b.ReportMetric(rates[name]/ref, "x-reference")
	b.Logf("%s: %.1f %s vs reference %.1f %s: ratio %.2f", name, rates[name], unit, ref, unit, rates[name]/ref)
}

// writeFile writes size bytes of a repeating non-zero pattern (not sparse:
// servers must really read it).
func writeFile(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for n := int64(0); n < size; n += int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
}
