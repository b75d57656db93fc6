package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/edge/cache"
	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/miniotest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// The fixture's machines, each on its own loopback address with a lease.
const (
	macA, ipA = "52:54:00:00:00:0a", "127.0.0.2"
	macB, ipB = "52:54:00:00:00:0b", "127.0.0.3"
	ipNobody  = "127.0.0.4" // no lease
)

// countingProxy sits between the edge's store client and a real MinIO: it
// counts GETs per object path, independently of the cache, and can hold a
// body after some bytes until released (a cold fetch still in flight).
type countingProxy struct {
	mu   sync.Mutex
	gets map[string]int

	holdAfter atomic.Int64 // > 0: bodies pause after this many bytes until release
	hold      chan struct{}
	once      sync.Once
}

func (p *countingProxy) release() { p.once.Do(func() { close(p.hold) }) }

func (p *countingProxy) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets["/artifacts/"+key]
}

func startCountingProxy(t testing.TB, target string) (*countingProxy, string) {
	p := &countingProxy{gets: map[string]int{}, hold: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1 // pass bytes on as they come: the cache streams them
	rp.ModifyResponse = func(resp *http.Response) error {
		if n := p.holdAfter.Load(); n > 0 && resp.Request.Method == http.MethodGet {
			resp.Body = &heldBody{ReadCloser: resp.Body, after: n, hold: p.hold, ctx: resp.Request.Context()}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 {
			p.mu.Lock()
			p.gets[r.URL.Path]++
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(p.release) // runs first: frees held handlers before Close waits for them
	return p, strings.TrimPrefix(srv.URL, "http://")
}

// heldBody passes `after` bytes, then blocks until hold is closed.
type heldBody struct {
	io.ReadCloser
	after, n int64
	hold     <-chan struct{}
	ctx      context.Context
}

func (h *heldBody) Read(b []byte) (int, error) {
	if h.n >= h.after {
		select {
		case <-h.hold:
		case <-h.ctx.Done():
			return 0, h.ctx.Err()
		}
		return h.ReadCloser.Read(b)
	}
	b = b[:min(int64(len(b)), h.after-h.n)]
	n, err := h.ReadCloser.Read(b)
	h.n += int64(n)
	return n, err
}

// leaseTable plays the DHCP server's leases.
type leaseTable map[string]string

func (l leaseTable) MACForIP(ip net.IP) string { return l[ip.String()] }

// lockedBuffer collects log lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type tftpCacheFixture struct {
	t       testing.TB
	bootDir string
	st      *state.State
	store   artifactstore.Store
	proxy   *countingProxy
	http    *httptest.Server
	tftp    string // the TFTP server's address
	logs    *lockedBuffer
	files   *watchedFiles
	images  map[string]proto.Image
	loaders []proto.Loader
}

// startTFTPCache starts what the edge wires for TFTP and HTTP (newTFTP, the
// cache, the boot handler) over a real MinIO behind a counting proxy. Images
// "deb" (host A) and "other" (host B) are assigned at the site; "stray" is
// known but assigned nowhere. put uploads each image's files: mutate may
// change the bytes stored after the digest was taken.
func startTFTPCache(t testing.TB, kernelSize int, mutate func(image, file string, b []byte)) *tftpCacheFixture {
	t.Helper()
	minio := miniotest.Start(t)
	proxy, proxyAddr := startCountingProxy(t, minio.Endpoint)
	ctx := context.Background()
	store, err := artifactstore.Open(ctx, artifactstore.Config{
		URL:       "s3://artifacts?endpoint=" + proxyAddr + "&region=us-east-1",
		AccessKey: minio.AccessKey, SecretKey: minio.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &tftpCacheFixture{t: t, st: state.New(), store: store, proxy: proxy, logs: &lockedBuffer{}, images: map[string]proto.Image{}}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.st.SetSite(proto.Site{Name: "lab", DHCP: proto.DHCPFull, Unknown: proto.UnknownIgnore})
	for i, name := range []string{"deb", "other", "stray"} {
		im := proto.Image{Name: name, Arch: "x86_64", Cmdline: "console=ttyS0 img={{image}} mac={{mac}}"}
		files := []string{"vmlinuz", "initrd.img"}
		if name == "deb" {
			// Early microcode first, as a distribution ships it.
			files = []string{"vmlinuz", "amd-ucode.img", "initrd.img"}
		}
		for j, file := range files {
			size := 64 << 10
			if file == "vmlinuz" {
				size = kernelSize
			}
			b := make([]byte, size)
			rand.NewChaCha8([32]byte{byte(i), byte(j)}).Read(b)
			sum := sha256.Sum256(b)
			a := proto.Artifact{Role: proto.RoleKernel, Name: file, Key: name + "/" + file, Size: int64(size), SHA256: hex.EncodeToString(sum[:])}
			if file != "vmlinuz" {
				a.Role = proto.RoleInitrd
			}
			if mutate != nil {
				mutate(name, file, b)
			}
			if err := store.Put(ctx, a.Key, bytes.NewReader(b), a.Size); err != nil {
				t.Fatal(err)
			}
			im.Artifacts = append(im.Artifacts, a)
		}
		f.st.PutImage(im)
		f.images[name] = im
	}
	// Loaders: "sb" is the site's (Secure Boot: shim, then GRUB from the
	// same directory); "unused" is known but used nowhere at this site.
	for i, name := range []string{"sb", "unused"} {
		l := proto.Loader{Name: name, Kind: proto.LoaderShimGrub}
		for j, fl := range []struct{ file, role string }{{"bootx64.efi", proto.RoleShim}, {"grubx64.efi", proto.RoleGrub}} {
			b := make([]byte, 96<<10+j)
			rand.NewChaCha8([32]byte{0xfe, byte(i), byte(j)}).Read(b)
			a := proto.Artifact{Role: fl.role, Name: fl.file, Key: "loaders/" + name + "/" + fl.file, Size: int64(len(b)), SHA256: sha(b)}
			if mutate != nil {
				mutate("loader:"+name, fl.file, b)
			}
			if err := store.Put(ctx, a.Key, bytes.NewReader(b), a.Size); err != nil {
				t.Fatal(err)
			}
			l.Files = append(l.Files, proto.LoaderFile{Firmware: proto.FirmwareX64, Artifact: a})
		}
		f.st.PutLoader(l)
		f.loaders = append(f.loaders, l)
	}
	f.st.SetSite(proto.Site{Name: "lab", DHCP: proto.DHCPFull, Unknown: proto.UnknownIgnore, Loader: "sb"})
	f.st.PutHost(proto.Host{MAC: macA, Site: "lab", Hostname: "a.lab", Image: "deb", State: proto.StateBoot})
	f.st.PutHost(proto.Host{MAC: macB, Site: "lab", Hostname: "b.lab", Image: "other", State: proto.StateBoot})

	c, err := cache.New(cache.Config{Dir: t.TempDir(), MaxBytes: 1 << 30, Fetcher: store, Logger: log, FetchTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	leases := leaseTable{ipA: macA, ipB: macB}
	// The listener first: the boot handler renders URLs from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boot := httpboot.New(httpboot.Config{State: f.st, BaseURL: "http://" + ln.Addr().String(), Artifacts: c, Leases: leases, Logger: log})
	f.http = &httptest.Server{Listener: ln, Config: &http.Server{Handler: boot}}
	f.http.Start()
	t.Cleanup(f.http.Close)
	rec, err := events.NewRecorder(events.Config{Dir: t.TempDir(), Site: "lab", Edge: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	f.files = &watchedFiles{Cache: c}
	f.bootDir = t.TempDir()
	// No per-source rate limit: the benchmark asks from one address at will.
	srv, err := newTFTP(Config{TFTPListen: "127.0.0.1:0", BootDir: f.bootDir, TFTPSourceRate: -1}, boot, f.files, rec, nil, leases.MACForIP, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := srv.Listen()
	f.tftp = addr.String()
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tftp serve: %v", err)
		}
	})
	return f
}

// loaderFile is a loader's file as the fixture stored it.
func (f *tftpCacheFixture) loaderFile(loader, file string) proto.Artifact {
	for _, l := range f.loaders {
		for _, lf := range l.Files {
			if l.Name == loader && lf.Name == file {
				return lf.Artifact
			}
		}
	}
	f.t.Fatalf("no loader file %s/%s", loader, file)
	return proto.Artifact{}
}

func (f *tftpCacheFixture) artifact(image, file string) proto.Artifact {
	for _, a := range f.images[image].Artifacts {
		if a.Name == file {
			return a
		}
	}
	f.t.Fatalf("no artifact %s/%s", image, file)
	return proto.Artifact{}
}

// tftpResult is what a real TFTP client got.
type tftpResult struct {
	tsize int64 // from the OACK; -1 when none came
	body  []byte
	err   error
}

// tftpFetch reads file from the fixture's server as a firmware would:
// blksize 1468 and a tsize request, from local address from. Safe in any
// goroutine: every failure is in the result.
func tftpFetch(server, from, file string) tftpResult {
	c, err := tftp.NewClient(server)
	if err == nil {
		err = c.SetLocalAddr(from)
	}
	if err != nil {
		return tftpResult{tsize: -1, err: fmt.Errorf("client setup: %w", err)}
	}
	c.SetTimeout(5 * time.Second) // the client's patience per packet, not a measurement
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return tftpResult{tsize: -1, err: err}
	}
	res := tftpResult{tsize: -1}
	if it, ok := wt.(tftp.IncomingTransfer); ok {
		if n, ok := it.Size(); ok {
			res.tsize = n
		}
	}
	var b bytes.Buffer
	_, res.err = wt.WriteTo(&b)
	res.body = b.Bytes()
	return res
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestTFTPArtifactColdFetch: an artifact not cached is fetched from the
// store once, verified, and served over TFTP with its true tsize; the next
// request is a hit. Today's TFTP server serves no artifacts ("file not
// found").
func TestTFTPArtifactColdFetch(t *testing.T) {
	f := startTFTPCache(t, 3<<20+123, nil)
	a := f.artifact("deb", "vmlinuz")
	for round := range 2 {
		res := tftpFetch(f.tftp, ipA, "/artifacts/deb/vmlinuz")
		if res.err != nil {
			t.Fatalf("round %d: %v", round, res.err)
		}
		if res.tsize != a.Size {
			t.Errorf("round %d: tsize = %d, want %d", round, res.tsize, a.Size)
		}
		if int64(len(res.body)) != a.Size || sha(res.body) != a.SHA256 {
			t.Errorf("round %d: got %d bytes sha256 %s, want %d bytes %s", round, len(res.body), sha(res.body), a.Size, a.SHA256)
		}
	}
	if n := f.proxy.count(a.Key); n != 1 {
		t.Errorf("store GETs of %s = %d, want 1", a.Key, n)
	}
}

// TestTFTPAndHTTPShareColdFetch: TFTP and HTTP clients asking for the same
// artifact while it downloads cause one store GET; each TFTP client waits
// (it has its OACK) and then gets the whole verified file.
func TestTFTPAndHTTPShareColdFetch(t *testing.T) {
	f := startTFTPCache(t, 2<<20, nil)
	a := f.artifact("deb", "vmlinuz")
	f.proxy.holdAfter.Store(256 << 10) // the fetch stays in flight until released
	const tftpClients, httpClients = 3, 3
	var wg sync.WaitGroup
	tftpRes := make([]tftpResult, tftpClients)
	httpErr := make([]error, httpClients)
	var started atomic.Int32 // HTTP clients that have their headers: joined the fetch
	for i := range tftpClients {
		wg.Go(func() { tftpRes[i] = tftpFetch(f.tftp, ipA, "artifacts/deb/vmlinuz") })
	}
	for i := range httpClients {
		wg.Go(func() {
			resp, err := http.Get(f.http.URL + "/artifacts/deb/vmlinuz")
			if err != nil {
				httpErr[i] = err
				return
			}
			defer resp.Body.Close()
			started.Add(1)
			b, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				httpErr[i] = err
			case resp.StatusCode != http.StatusOK || sha(b) != a.SHA256:
				httpErr[i] = fmt.Errorf("status %d, %d bytes, sha256 %s", resp.StatusCode, len(b), sha(b))
			}
		})
	}
	waitfor.True(t, "the store GET and every HTTP client's headers", func() bool {
		return f.proxy.count(a.Key) >= 1 && started.Load() == httpClients
	})
	// TFTP clients are held at the first data block: the OACK went out, the
	// file is not verified yet.
	waitfor.True(t, "every TFTP request to wait for the fetch", func() bool {
		return f.files.waiting.Load() == tftpClients
	})
	f.proxy.release()
	wg.Wait()
	for i, res := range tftpRes {
		if res.err != nil || res.tsize != a.Size || sha(res.body) != a.SHA256 {
			t.Errorf("tftp client %d: err %v, tsize %d, %d bytes", i, res.err, res.tsize, len(res.body))
		}
	}
	for i, err := range httpErr {
		if err != nil {
			t.Errorf("http client %d: %v", i, err)
		}
	}
	if n := f.proxy.count(a.Key); n != 1 {
		t.Errorf("store GETs of %s = %d, want 1 for %d TFTP and %d HTTP clients", a.Key, n, tftpClients, httpClients)
	}
}

// TestTFTPCorruptArtifactNeverServed: an object whose bytes do not match the
// registered digest (same size) is never sent over TFTP, cold or asked
// again: the client gets an error packet and no data; the edge logs why.
func TestTFTPCorruptArtifactNeverServed(t *testing.T) {
	f := startTFTPCache(t, 1<<20, func(image, file string, b []byte) {
		if image == "deb" && file == "vmlinuz" {
			b[len(b)/2] ^= 0xff
		}
	})
	a := f.artifact("deb", "vmlinuz")
	for round := range 2 {
		res := tftpFetch(f.tftp, ipA, "artifacts/deb/vmlinuz")
		if res.err == nil || len(res.body) != 0 {
			t.Fatalf("round %d: corrupt artifact served: err %v, %d bytes", round, res.err, len(res.body))
		}
		if !strings.Contains(res.err.Error(), "not available") {
			t.Errorf("round %d: client error = %v, want the not-available error packet", round, res.err)
		}
	}
	if !strings.Contains(f.logs.String(), "artifact not sent: not verified") {
		t.Errorf("no log line for the refused artifact; logs:\n%s", f.logs)
	}
	if n := f.proxy.count(a.Key); n != 2 {
		t.Errorf("store GETs = %d, want 2 (a corrupt object is not kept)", n)
	}
	// The other files of the image are unaffected.
	if res := tftpFetch(f.tftp, ipA, "artifacts/deb/initrd.img"); res.err != nil {
		t.Errorf("initrd: %v", res.err)
	}
}

// TestTFTPArtifactRefusals: traversal, unknown images and files, and images
// not assigned at this site are refused as over HTTP, with "file not found",
// a log line, and no store request.
func TestTFTPArtifactRefusals(t *testing.T) {
	f := startTFTPCache(t, 4096, nil)
	tests := []struct {
		name, file, log string
		httpStatus      int // the same path over HTTP
	}{
		{"traversal", "artifacts/../artifacts/deb/vmlinuz", "bad path", 0},
		{"traversal inside", "artifacts/deb/../stray/vmlinuz", "bad path", 0},
		{"unknown image", "artifacts/nope/vmlinuz", "unknown image", http.StatusNotFound},
		{"not assigned", "artifacts/stray/vmlinuz", "not assigned at this site", http.StatusNotFound},
		{"no such file", "artifacts/deb/secret", "no such file in the image", http.StatusNotFound},
		{"too deep", "artifacts/deb/x/vmlinuz", "bad artifact path", http.StatusBadRequest},
		{"no file", "artifacts/deb", "bad artifact path", http.StatusBadRequest},
		{"bad image name", "artifacts/DEB!/vmlinuz", "bad artifact path", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tftpFetch(f.tftp, ipA, tc.file)
			if res.err == nil || !strings.Contains(res.err.Error(), "file not found") {
				t.Errorf("err = %v, %d bytes; want file not found", res.err, len(res.body))
			}
			waitfor.True(t, "the refusal's log line", func() bool {
				return strings.Contains(f.logs.String(), tc.log)
			})
			if tc.httpStatus != 0 {
				resp, err := http.Get(f.http.URL + "/" + tc.file)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.httpStatus {
					t.Errorf("HTTP status = %d, want %d", resp.StatusCode, tc.httpStatus)
				}
			}
		})
	}
	for _, im := range []string{"deb", "stray"} {
		if n := f.proxy.count(f.artifact(im, "vmlinuz").Key); n != 0 {
			t.Errorf("store GETs of %s = %d, want 0", im, n)
		}
	}
}

// TestTFTPPerClientFiles: boot.ipxe and grub.cfg over TFTP are rendered for
// the machine leased the request's source address; each machine gets its
// own, and an address with no lease gets no machine's file.
func TestTFTPPerClientFiles(t *testing.T) {
	f := startTFTPCache(t, 4096, nil)
	for _, file := range []string{"boot.ipxe", "/grub/grub.cfg"} {
		for _, c := range []struct{ ip, mac, image, otherMAC string }{
			{ipA, macA, "deb", macB},
			{ipB, macB, "other", macA},
		} {
			res := tftpFetch(f.tftp, c.ip, file)
			body := string(res.body)
			if res.err != nil {
				t.Errorf("%s from %s: %v", file, c.ip, res.err)
				continue
			}
			if !strings.Contains(body, "mac="+c.mac) || !strings.Contains(body, "/artifacts/"+c.image+"/vmlinuz") {
				t.Errorf("%s from %s: not %s's file:\n%s", file, c.ip, c.mac, body)
			}
			if strings.Contains(body, c.otherMAC) {
				t.Errorf("%s from %s holds the other machine's MAC %s:\n%s", file, c.ip, c.otherMAC, body)
			}
		}
	}
	// No lease: no script at all.
	if res := tftpFetch(f.tftp, ipNobody, "boot.ipxe"); res.err == nil || !strings.Contains(res.err.Error(), "file not found") {
		t.Errorf("boot.ipxe with no lease: err %v, body %q", res.err, res.body)
	}
	// grub.cfg with no lease is the generic fallback, which names nobody.
	res := tftpFetch(f.tftp, ipNobody, "grub/grub.cfg")
	for _, s := range []string{macA, macB, "artifacts/"} {
		if bytes.Contains(res.body, []byte(s)) {
			t.Errorf("grub.cfg with no lease holds %q:\n%s", s, res.body)
		}
	}
	// A MAC-named config is refused to an address leased to another machine.
	name := "grub/grub.cfg-01-" + strings.ReplaceAll(macB, ":", "-")
	if res := tftpFetch(f.tftp, ipA, name); res.err == nil {
		t.Errorf("%s from %s (leased to %s) was served:\n%s", name, ipA, macA, res.body)
	}
	if res := tftpFetch(f.tftp, ipB, name); res.err != nil {
		t.Errorf("%s from %s: %v", name, ipB, res.err)
	}
}

// grubFileRE matches a file a GRUB config names on the TFTP server:
// '(tftp,SERVER)/PATH'.
var grubFileRE = regexp.MustCompile(`'\(tftp,([^)]+)\)/([^']+)'`)

// grubFiles returns the linux line's kernel and the initrd line's files,
// in order, as (server, path) pairs, from a GRUB config.
func grubFiles(t *testing.T, cfg string) (kernel [2]string, initrds [][2]string) {
	t.Helper()
	for _, l := range strings.Split(cfg, "\n") {
		l = strings.TrimSpace(l)
		cmd, _, _ := strings.Cut(l, " ")
		switch cmd {
		case "linux":
			m := grubFileRE.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("linux line names no file over TFTP: %q", l)
			}
			kernel = [2]string{m[1], m[2]}
		case "initrd":
			for _, m := range grubFileRE.FindAllStringSubmatch(l, -1) {
				initrds = append(initrds, [2]string{m[1], m[2]})
			}
		}
	}
	if kernel[1] == "" || len(initrds) == 0 {
		t.Fatalf("no kernel or no initrd over TFTP in:\n%s", cfg)
	}
	return kernel, initrds
}

// TestTFTPGRUBConfigPerClient: Debian's signed GRUB asks for
// <prefix>/grub.cfg over TFTP and has no http module. Each of two leased
// machines gets its own config, whose kernel and initrds (microcode first)
// are named on this edge's TFTP server, and fetching them over TFTP gives
// the image's verified bytes. An address with no lease gets the fallback,
// which names no host, no file and no token. Before, the config named the
// files over HTTP, which that GRUB cannot read.
func TestTFTPGRUBConfigPerClient(t *testing.T) {
	f := startTFTPCache(t, 1<<20+17, nil)
	edgeHost, _, _ := net.SplitHostPort(strings.TrimPrefix(f.http.URL, "http://"))
	tokens := map[string]string{}
	for _, c := range []struct {
		ip, mac, image string
		initrds        []string
		other          []string // what the other machine's config holds
	}{
		{ipA, macA, "deb", []string{"amd-ucode.img", "initrd.img"}, []string{macB, "/other/", "b.lab"}},
		{ipB, macB, "other", []string{"initrd.img"}, []string{macA, "/deb/", "a.lab"}},
	} {
		res := tftpFetch(f.tftp, c.ip, "/grub/grub.cfg")
		if res.err != nil {
			t.Fatalf("grub.cfg from %s: %v", c.ip, res.err)
		}
		cfg := string(res.body)
		for _, s := range c.other {
			if strings.Contains(cfg, s) {
				t.Errorf("grub.cfg from %s holds the other machine's %q:\n%s", c.ip, s, cfg)
			}
		}
		if !strings.Contains(cfg, "'mac="+c.mac+"'") {
			t.Errorf("grub.cfg from %s: no mac=%s on the command line:\n%s", c.ip, c.mac, cfg)
		}
		_, tok, ok := strings.Cut(cfg, "'fleetboot.token=")
		if !ok {
			t.Fatalf("grub.cfg from %s: no callback token:\n%s", c.ip, cfg)
		}
		tokens[c.mac], _, _ = strings.Cut(tok, "'")
		kernel, initrds := grubFiles(t, cfg)
		want := append([]string{"vmlinuz"}, c.initrds...)
		got := []string{kernel[1]}
		for _, ird := range initrds {
			got = append(got, ird[1])
		}
		for i, file := range want {
			want[i] = "artifacts/" + c.image + "/" + file
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("grub.cfg from %s: files (-want +got):\n%s", c.ip, diff)
		}
		for _, file := range append([][2]string{kernel}, initrds...) {
			if file[0] != edgeHost {
				t.Errorf("%s is named on server %s, want the edge %s", file[1], file[0], edgeHost)
			}
			a := f.artifact(c.image, path.Base(file[1]))
			// As GRUB reads it: the name as written after the device.
			got := tftpFetch(f.tftp, c.ip, "/"+file[1])
			if got.err != nil || sha(got.body) != a.SHA256 || int64(len(got.body)) != a.Size {
				t.Errorf("%s over TFTP from %s: err %v, %d bytes sha256 %s; want %d bytes %s",
					file[1], c.ip, got.err, len(got.body), sha(got.body), a.Size, a.SHA256)
			}
		}
	}
	if tokens[macA] == "" || tokens[macA] == tokens[macB] {
		t.Errorf("callback tokens %q and %q: want each machine's own", tokens[macA], tokens[macB])
	}
	// No lease on the address: the generic fallback (which exits to the
	// next boot device when GRUB cannot follow it), never a host's config.
	res := tftpFetch(f.tftp, ipNobody, "/grub/grub.cfg")
	if res.err != nil {
		t.Fatalf("grub.cfg with no lease: %v", res.err)
	}
	for _, s := range []string{macA, macB, "a.lab", "b.lab", "artifacts/", "token", "linux", "initrd"} {
		if bytes.Contains(res.body, []byte(s)) {
			t.Errorf("grub.cfg with no lease holds %q:\n%s", s, res.body)
		}
	}
	if !bytes.HasSuffix(res.body, []byte("exit\n")) {
		t.Errorf("grub.cfg with no lease does not end by leaving GRUB:\n%s", res.body)
	}
	// Nor by MAC: the site's DHCP is full, so every machine of the site
	// holds a lease; an address without one asks for someone else's.
	name := "grub/grub.cfg-01-" + strings.ReplaceAll(macA, ":", "-")
	if res := tftpFetch(f.tftp, ipNobody, name); res.err == nil || !strings.Contains(res.err.Error(), "file not found") {
		t.Errorf("%s with no lease: err %v, body:\n%s", name, res.err, res.body)
	}
}

// watchedFiles is the cache as the TFTP server sees it, counting the
// requests inside Open: waiting for a verified file.
type watchedFiles struct {
	*cache.Cache
	waiting atomic.Int32
}

func (w *watchedFiles) Open(ctx context.Context, a proto.Artifact) (*os.File, error) {
	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	return w.Cache.Open(ctx, a)
}

// BenchmarkTFTPArtifact compares a 10 MiB file over TFTP (blksize 1468, one
// block per ACK, loopback) from the cache (a hit: verified file) with the
// same bytes from the boot directory, as served before artifacts came from
// the cache.
func BenchmarkTFTPArtifact(b *testing.B) {
	const size = 10 << 20
	f := startTFTPCache(b, size, nil)
	a := f.artifact("deb", "vmlinuz")
	start := time.Now()
	warm := tftpFetch(f.tftp, ipA, "artifacts/deb/vmlinuz") // the cold fetch, outside the timing
	if warm.err != nil {
		b.Fatal(warm.err)
	}
	b.Logf("cold fetch over TFTP (store GET, verify, send): %v", time.Since(start))
	if err := os.WriteFile(filepath.Join(f.bootDir, "vmlinuz"), warm.body, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, file string }{
		{"cache", "artifacts/deb/vmlinuz"},
		{"bootdir", "vmlinuz"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(a.Size)
			for b.Loop() {
				res := tftpFetch(f.tftp, ipA, bc.file)
				if res.err != nil || int64(len(res.body)) != a.Size {
					b.Fatalf("%v, %d bytes", res.err, len(res.body))
				}
			}
		})
	}
}

// TestTFTPLoaderFiles: the files of the loader the site boots with are
// served over TFTP (as the DHCP answer names them, proto.LoaderPath) and
// HTTP from the verified cache; a loader used nowhere at the site, an
// unknown one and a file the loader lacks are refused without a store
// request; a loader file corrupted in the store is never served.
func TestTFTPLoaderFiles(t *testing.T) {
	f := startTFTPCache(t, 4096, nil)
	for _, file := range []string{"bootx64.efi", "grubx64.efi"} {
		a := f.loaderFile("sb", file)
		res := tftpFetch(f.tftp, ipA, proto.LoaderPath("sb", file))
		if res.err != nil || res.tsize != a.Size || sha(res.body) != a.SHA256 {
			t.Errorf("TFTP %s: err %v, tsize %d, sha %s; want tsize %d sha %s", file, res.err, res.tsize, sha(res.body), a.Size, a.SHA256)
		}
	}
	resp, err := http.Get(f.http.URL + "/" + proto.LoaderPath("sb", "grubx64.efi"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || sha(body) != f.loaderFile("sb", "grubx64.efi").SHA256 {
		t.Errorf("HTTP grubx64.efi: status %d, sha %s", resp.StatusCode, sha(body))
	}
	for _, file := range []string{"loaders/unused/bootx64.efi", "loaders/nope/bootx64.efi", "loaders/sb/secret.efi", "loaders/sb/../unused/bootx64.efi"} {
		if res := tftpFetch(f.tftp, ipA, file); res.err == nil || !strings.Contains(res.err.Error(), "file not found") {
			t.Errorf("%s: err %v, %d bytes; want file not found", file, res.err, len(res.body))
		}
	}
	if n := f.proxy.count(f.loaderFile("unused", "bootx64.efi").Key); n != 0 {
		t.Errorf("store GETs of the unused loader = %d, want 0", n)
	}

	bad := startTFTPCache(t, 4096, func(set, file string, b []byte) {
		if set == "loader:sb" && file == "grubx64.efi" {
			b[len(b)/2] ^= 0xff
		}
	})
	if res := tftpFetch(bad.tftp, ipA, proto.LoaderPath("sb", "grubx64.efi")); res.err == nil || len(res.body) != 0 {
		t.Errorf("corrupt loader file served: err %v, %d bytes", res.err, len(res.body))
	}
	if res := tftpFetch(bad.tftp, ipA, proto.LoaderPath("sb", "bootx64.efi")); res.err != nil {
		t.Errorf("the loader's intact file: %v", res.err)
	}
}
