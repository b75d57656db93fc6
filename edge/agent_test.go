package edge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/procfd"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// baseConfig is an edge on loopback with NATS unreachable: the agent
// starts (it serves from local state) and retries the connection.
// runAgent runs a until the test ends, then stops it; an error from Run
// fails the test.
func runAgent(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func baseConfig(t *testing.T) Config {
	return Config{
		Name: "e1", Site: "lab", NATSURL: "nats://127.0.0.1:1", StateDir: t.TempDir(), CacheDir: t.TempDir(),
		CacheSize: 1 << 30, Store: artifactstore.Config{URL: "dir://" + t.TempDir()}, HTTPListen: "127.0.0.1:0",
	}
}

// A base URL that would make every script request fail is refused at start,
// with one line naming the flag, and nothing is left bound.
func TestBadAdvertiseRefused(t *testing.T) {
	cases := []struct {
		url string
		ok  bool
	}{
		{"http://10.0.0.1:8080", true},
		{"https://boot.example.com", true},
		{"http://10.0.0.1:8080/", true},
		{"http://[fd00::1]:8080", true},
		{"https://boot.example.com:8443", true},
		{"https://[fd00::1]", true},
		// A port machines cannot connect to.
		{"http://10.0.0.1:80800", false},
		{"http://10.0.0.1:0", false},
		{"http://10.0.0.1:", false},
		{"http://[fd00::1]:65536", false},
		// The listen-all address: no machine can connect to it.
		{"http://0.0.0.0:8080", false},
		{"http://[::]:8080", false},
		{"http://10.0.0.1:8080/boot", false},
		{"http://10.0.0.1:8080?x=1", false},
		{"http://10.0.0.1:8080#frag", false},
		{"http://user:pw@10.0.0.1:8080", false},
		{"10.0.0.1:8080", false},
		{"ftp://10.0.0.1", false},
		{"http://", false},
		{"http://:8080", false},
		{"http://10.0.0.1:8080/a b", false},
		// Past the URL check, refused by the renderer's own Check: its
		// scripts could not carry them.
		{"http://boot;x", false},
		{"http://boot'x", false},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.AdvertiseURL = tc.url
			cfg.StateDir = filepath.Join(cfg.StateDir, "state")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ready := make(chan Addrs, 1)
			cfg.Ready = func(a Addrs) { ready <- a }
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg) }()
			select {
			case err := <-done:
				if tc.ok {
					t.Fatalf("Run(%q) = %v; want it to start", tc.url, err)
				}
				if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "advertise") {
					t.Fatalf("Run(%q) = %v; want one line naming --advertise", tc.url, err)
				}
				if _, err := os.Stat(cfg.StateDir); err == nil {
					t.Errorf("Run(%q) refused but created the state directory", tc.url)
				}
			case <-ready:
				cancel()
				<-done
				if !tc.ok {
					t.Fatalf("Run(%q) started; want a refusal", tc.url)
				}
			}
		})
	}
}

// After a failed start (the second listener cannot bind) the first one's
// port is free again, and so is everything else New opened.
func TestFailedStartReleasesSockets(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// The HTTP port must be known before New fails, so it is picked here.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := l.Addr().String()
	l.Close()
	cfg := baseConfig(t)
	cfg.HTTPListen, cfg.TFTPListen, cfg.BootDir = httpAddr, taken.LocalAddr().String(), t.TempDir()
	os.WriteFile(filepath.Join(cfg.BootDir, "undionly.kpxe"), []byte("x"), 0o644)
	before := runtime.NumGoroutine()
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "tftp") {
		t.Fatalf("New with the TFTP port taken = %v; want a TFTP error", err)
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatalf("HTTP port still bound after the failed start: %v", err)
	}
	ln.Close()
	// The NATS connection, the cache and the event writer are closed too:
	// their goroutines end.
	waitfor.True(t, "goroutines of the failed start gone", func() bool { return runtime.NumGoroutine() <= before })
}

// silentS3 accepts connections and never answers: every fetch from it hangs
// until the cache is closed.
func silentS3(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "s3://fleet?endpoint=" + l.Addr().String() + "&tls=false"
}

// Every state change triggers a prefetch round; with downloads stuck, rounds
// must not pile up goroutines that each queue every artifact again.
func TestPrefetchRoundsBounded(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Store = artifactstore.Config{URL: silentS3(t), Timeout: time.Hour}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// More artifacts than the cache fetches at once, so a round's queue waits.
	var arts []proto.Artifact
	for i := range 8 {
		sum := sha256.Sum256([]byte{byte(i)})
		arts = append(arts, proto.Artifact{Role: proto.RoleKernel, Name: fmt.Sprintf("k%d", i), Key: fmt.Sprintf("sha256/%x", sum), Size: 1, SHA256: hex.EncodeToString(sum[:])})
	}
	a.st.SetSite(proto.Site{V: 1, Name: "lab"})
	a.st.PutImage(proto.Image{V: 1, Name: "one", Arch: "x86_64", Artifacts: arts})
	a.st.PutHost(proto.Host{V: 1, MAC: "52:54:00:00:00:01", Site: "lab", Image: "one", State: proto.StateBoot})
	rounds := make(chan struct{})
	a.prefetchPause = 0
	a.prefetchRound = func() { rounds <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		go func() {
			for range rounds { // a round may be finishing as Run stops
			}
		}()
		err := <-done
		close(rounds) // Run has returned: no round sends any more; the drain ends
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	round := func(n int) {
		for range n {
			signal(a.prefetch)
			<-rounds
		}
	}
	round(20)
	settled := runtime.NumGoroutine()
	round(200)
	// Each stuck fetch and its waiters may hold a few goroutines; rounds
	// themselves must not add any. A cancelled round's goroutine ends when
	// the scheduler gets to it, which on a loaded machine can be after the
	// next hundred rounds: wait (bounded) for the count to come down.
	bound := 4*len(arts) + 10
	waitfor.Within(t, 10*time.Second, "the cancelled rounds' goroutines to end", func() error {
		if grown := runtime.NumGoroutine() - settled; grown > bound {
			return fmt.Errorf("200 more prefetch rounds added %d goroutines; want them bounded by the artifacts (%d)", grown, len(arts))
		}
		return nil
	})
	t.Logf("goroutines: %d after 20 rounds, %+d after 200 more", settled, runtime.NumGoroutine()-settled)
}

// A start that fails at the TFTP bind closes the TFTP server's root (the
// staged boot directory) too: an edge supervisor retrying the start must
// not pile up open directories.
func TestFailedStartClosesTFTPRoot(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := baseConfig(t)
	cfg.TFTPListen, cfg.BootDir = taken.LocalAddr().String(), t.TempDir()
	os.WriteFile(filepath.Join(cfg.BootDir, "undionly.kpxe"), []byte("x"), 0o644)
	staged := filepath.Join(cfg.StateDir, "boot")
	for range 3 {
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "tftp") {
			t.Fatalf("New with the TFTP port taken = %v; want a TFTP error", err)
		}
	}
	if n := procfd.OpenTo(t, staged); n != 0 {
		t.Fatalf("after 3 failed starts %d descriptors are still open on the boot directory %s; want 0", n, staged)
	}
}

// A change that lands while a prefetch round runs is not lost: the newest
// assignment is fetched (the host moves from image a to b during the
// first round).
func TestPrefetchNewestAssignment(t *testing.T) {
	cfg := baseConfig(t)
	store, err := artifactstore.Open(context.Background(), cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	upload := func(content string) proto.Artifact {
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte(content), 0o644)
		up, err := artifactstore.UploadFile(context.Background(), store, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return proto.Artifact{Role: proto.RoleKernel, Name: "vmlinuz", Key: up.Key, Size: up.Size, SHA256: up.SHA256}
	}
	ka, kb := upload("kernel a"), upload("kernel b")
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:00:00:01"
	a.st.SetSite(proto.Site{V: 1, Name: "lab"})
	a.st.PutImage(proto.Image{V: 1, Name: "a", Arch: "x86_64", Artifacts: []proto.Artifact{ka}})
	a.st.PutImage(proto.Image{V: 1, Name: "b", Arch: "x86_64", Artifacts: []proto.Artifact{kb}})
	a.st.PutHost(proto.Host{V: 1, MAC: mac, Site: "lab", Image: "a", State: proto.StateBoot})
	var once sync.Once
	a.prefetchRound = func() {
		once.Do(func() { a.st.PutHost(proto.Host{V: 1, MAC: mac, Site: "lab", Image: "b", State: proto.StateBoot}) })
	}
	runAgent(t, a)
	waitfor.True(t, "the newest assignment's kernel in the cache", func() bool { return a.cache.Contains(kb.SHA256) })
}

// With NoPrefetch (--prefetch=false) an assignment fetches nothing ahead:
// the artifact comes on its first request only. The same set-up with
// prefetch on has it in the cache, which is what makes the absence mean
// something.
func TestNoPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noPrefetch bool
	}{{"prefetch", false}, {"no prefetch", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.NoPrefetch = tc.noPrefetch
			store, err := artifactstore.Open(context.Background(), cfg.Store)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "f")
			os.WriteFile(p, []byte("kernel"), 0o644)
			up, err := artifactstore.UploadFile(context.Background(), store, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			k := proto.Artifact{Role: proto.RoleKernel, Name: "vmlinuz", Key: up.Key, Size: up.Size, SHA256: up.SHA256}
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			a.st.SetSite(proto.Site{V: 1, Name: "lab"})
			a.st.PutImage(proto.Image{V: 1, Name: "a", Arch: "x86_64", Artifacts: []proto.Artifact{k}})
			a.st.PutHost(proto.Host{V: 1, MAC: "52:54:00:00:00:01", Site: "lab", Image: "a", State: proto.StateBoot})
			rounds := make(chan struct{}, 64)
			a.prefetchRound = func() {
				select {
				case rounds <- struct{}{}:
				default:
				}
			}
			runAgent(t, a)
			<-rounds
			if !tc.noPrefetch {
				waitfor.True(t, "the assigned kernel in the cache", func() bool { return a.cache.Contains(k.SHA256) })
				return
			}
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				if a.cache.Contains(k.SHA256) {
					t.Fatal("the assigned kernel was fetched with NoPrefetch")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
