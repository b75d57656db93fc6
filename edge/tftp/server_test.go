package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ptftp "github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/proto"
)

type event struct {
	Kind, MAC string
	Detail    map[string]string
}

// chanEvents hands events to the test as they happen, so it can wait for
// one without sleeping.
type chanEvents chan event

func (c chanEvents) Emit(kind, mac string, detail map[string]string) {
	select {
	case c <- event{kind, mac, detail}:
	default: // only benchmarks produce more than the buffer holds
	}
}

// waitEvent returns the first event of kind for file, skipping others.
func waitEvent(t *testing.T, c chanEvents, kind, file string) event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-c:
			if e.Kind == kind && e.Detail["file"] == file {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event for %q", kind, file)
		}
	}
}

type fixture struct {
	srv    *Server
	logs   *syncBuf
	addr   *net.UDPAddr
	root   string
	outer  string
	events chanEvents
	files  map[string][]byte
}

const grubCfg = "grub/grub.cfg-01-52-54-00-12-34-56"

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func startServer(t testing.TB, large bool) *fixture {
	t.Helper()
	return startServerWith(t, large, nil)
}

// startServerWith starts the fixture's server with mut applied to its config.
func startServerWith(t testing.TB, large bool, mut func(*Config)) *fixture {
	t.Helper()
	outer := t.TempDir()
	root := filepath.Join(outer, "root")
	f := &fixture{root: root, outer: outer, events: make(chanEvents, 4096), files: map[string][]byte{
		"undionly.kpxe":     randomBytes(t, 70_000),
		"EFI/BOOT/grub.efi": randomBytes(t, 1468*3), // a multiple of the block size: ends with an empty block
		"empty.bin":         {},
	}}
	if large {
		// 40 MB: 81 920 blocks of 512, so the 16-bit block number wraps.
		f.files["large.bin"] = randomBytes(t, 40<<20)
	}
	for name, b := range f.files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outer, "secret"), []byte("SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outer, "root-sibling"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outer, "root-sibling", "x"), []byte("SIBLING"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outer, "secret"), filepath.Join(root, "escape-abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("undionly.kpxe", filepath.Join(root, "inside-link")); err != nil {
		t.Fatal(err)
	}
	dyn := []byte("set timeout=0\n# generated for 52:54:00:12:34:56\n")
	f.files[grubCfg] = dyn
	f.files["inside-link"] = f.files["undionly.kpxe"]

	f.logs = &syncBuf{}
	cfg := Config{
		Listen: "127.0.0.1:0",
		Root:   root,
		Dynamic: DynamicFunc(func(p string, _ net.Addr) ([]byte, bool) {
			if p == grubCfg {
				return dyn, true
			}
			return nil, false
		}),
		Events:   f.events,
		Timeout:  time.Second,
		Retries:  3,
		MACForIP: func(ip net.IP) string { return "52:54:00:12:34:56" },
		Logger:   slog.New(slog.NewTextHandler(f.logs, nil)),
	}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	f.addr = a.(*net.UDPAddr)
	f.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func (f *fixture) rootListing(t *testing.T) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(f.outer, func(p string, _ os.DirEntry, err error) error {
		names = append(names, p)
		return err
	})
	slices.Sort(names)
	return names
}

// tftpHPA runs tftp-hpa's client; it exits 0 even on a TFTP error and prints
// the error packet, so the output is returned for the test to read.
func tftpHPA(t *testing.T, f *fixture, dir string, cmd ...string) string {
	t.Helper()
	args := append([]string{"127.0.0.1", fmt.Sprint(f.addr.Port), "-m", "binary", "-c"}, cmd...)
	c := exec.Command("tftp", args...)
	c.Dir = dir
	out, _ := c.CombinedOutput()
	return string(out)
}

func busybox(t *testing.T, f *fixture, dir string, args ...string) (string, error) {
	t.Helper()
	c := exec.Command("busybox", append(append([]string{"tftp"}, args...), "127.0.0.1", fmt.Sprint(f.addr.Port))...)
	c.Dir = dir
	out, err := c.CombinedOutput()
	return string(out), err
}

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"tftp", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (apt-get install tftp-hpa busybox-static): %v", tool, err)
		}
	}
}

func TestRealClientsFetch(t *testing.T) {
	requireTools(t)
	f := startServer(t, false)
	files := []string{"undionly.kpxe", "EFI/BOOT/grub.efi", "empty.bin", grubCfg, "inside-link"}
	for _, name := range files {
		want := f.files[name]
		t.Run("tftp-hpa/"+name, func(t *testing.T) {
			dir := t.TempDir()
			out := tftpHPA(t, f, dir, "get", name, "out")
			got, err := os.ReadFile(filepath.Join(dir, "out"))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes (err %v), want %d; client said %q", len(got), err, len(want), out)
			}
			e := waitEvent(t, f.events, proto.EventTFTPDone, strings.TrimPrefix(name, "/"))
			if e.Detail["bytes"] != fmt.Sprint(len(want)) || e.Detail["ip"] != "127.0.0.1" || e.MAC != "52:54:00:12:34:56" || e.Detail["duration_ms"] == "" {
				t.Errorf("event = %+v", e)
			}
		})
		for _, blksize := range []string{"512", "1468", "8192"} {
			t.Run("busybox-b"+blksize+"/"+name, func(t *testing.T) {
				dir := t.TempDir()
				out, err := busybox(t, f, dir, "-g", "-b", blksize, "-r", name, "-l", "out")
				if err != nil {
					t.Fatalf("busybox tftp: %v: %s", err, out)
				}
				got, err := os.ReadFile(filepath.Join(dir, "out"))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes (err %v), want %d", len(got), err, len(want))
				}
			})
		}
	}
	t.Run("backslash name", func(t *testing.T) {
		dir := t.TempDir()
		tftpHPA(t, f, dir, "get", `\EFI\BOOT\grub.efi`, "out")
		if got, _ := os.ReadFile(filepath.Join(dir, "out")); !bytes.Equal(got, f.files["EFI/BOOT/grub.efi"]) {
			t.Errorf("got %d bytes", len(got))
		}
	})
}

func TestGoClientBlksize(t *testing.T) {
	f := startServer(t, false)
	for _, blksize := range []int{512, 1468, 65464} {
		t.Run(fmt.Sprint(blksize), func(t *testing.T) {
			got, err := goGet(f.addr.String(), "undionly.kpxe", blksize)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.files["undionly.kpxe"]) {
				t.Fatalf("got %d bytes, want %d", len(got), len(f.files["undionly.kpxe"]))
			}
		})
	}
}

func goGet(addr, name string, blksize int) ([]byte, error) {
	c, err := ptftp.NewClient(addr)
	if err != nil {
		return nil, err
	}
	c.SetBlockSize(blksize)
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func TestRefusals(t *testing.T) {
	requireTools(t)
	f := startServer(t, false)
	before := f.rootListing(t)
	tests := []struct {
		name string
		file string
	}{
		{"missing", "nope.efi"},
		{"dotdot", "../secret"},
		{"absolute dotdot", "/../secret"},
		{"backslash dotdot", `..\secret`},
		{"sibling prefix", "../root-sibling/x"},
		{"symlink out", "escape"},
		{"absolute symlink out", "escape-abs"},
		{"directory", "EFI"},
		{"root", "/"},
		{"absolute path", "/etc/passwd"},
		{"percent-encoded", "%2e%2e/secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			start := time.Now()
			out := tftpHPA(t, f, dir, "get", tc.file, "out")
			if !strings.Contains(out, "Error code 1") {
				t.Errorf("tftp-hpa said %q, want a TFTP error packet", out)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "out")); len(b) != 0 {
				t.Errorf("received %q", b)
			}
			// A time-out would take Timeout × Retries of the client (5 s+);
			// the error must be the answer itself.
			if time.Since(start) > 4*time.Second {
				t.Errorf("no prompt error packet")
			}
			waitEvent(t, f.events, proto.EventTFTPError, tc.file)

			out, err := busybox(t, f, dir, "-g", "-r", tc.file, "-l", "out2")
			if err == nil {
				t.Errorf("busybox tftp succeeded: %s", out)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "out2")); bytes.Contains(b, []byte("SECRET")) || bytes.Contains(b, []byte("SIBLING")) {
				t.Errorf("served a file outside the root")
			}
		})
	}
	t.Run("write refused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "upload"), []byte("UPLOAD"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := tftpHPA(t, f, dir, "put", "upload", "uploaded")
		if !strings.Contains(out, "Error code 2") {
			t.Errorf("tftp-hpa put said %q, want error code 2 (access violation)", out)
		}
		waitEvent(t, f.events, proto.EventTFTPError, "uploaded")
		if out, err := busybox(t, f, dir, "-p", "-l", "upload", "-r", "uploaded2"); err == nil {
			t.Errorf("busybox put succeeded: %s", out)
		}
		if diff := slices.Compare(before, f.rootListing(t)); diff != 0 {
			t.Errorf("the tree changed: before %v after %v", before, f.rootListing(t))
		}
	})
}

// TestUEFISizeProbe plays the UEFI PXE client by hand: RRQ with tsize, read
// the OACK, abort with error 8. The server must report the size and log a
// probe, not an error.
func TestUEFISizeProbe(t *testing.T) {
	f := startServer(t, false)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rrq := []byte{0, 1}
	for _, s := range []string{"undionly.kpxe", "octet", "tsize", "0", "blksize", "1468"} {
		rrq = append(append(rrq, s...), 0)
	}
	if _, err := c.WriteToUDP(rrq, f.addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint16(buf) != 6 {
		t.Fatalf("want OACK, got opcode %d", binary.BigEndian.Uint16(buf))
	}
	opts := strings.Split(strings.TrimSuffix(string(buf[2:n]), "\x00"), "\x00")
	got := map[string]string{}
	for i := 0; i+1 < len(opts); i += 2 {
		got[opts[i]] = opts[i+1]
	}
	if got["tsize"] != fmt.Sprint(len(f.files["undionly.kpxe"])) || got["blksize"] != "1468" {
		t.Errorf("OACK options = %v", got)
	}
	abort := append([]byte{0, 5, 0, 8}, "User aborted the transfer\x00"...)
	if _, err := c.WriteToUDP(abort, from); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, f.events, proto.EventTFTPDone, "undionly.kpxe")
	if e.Detail["probe"] != "true" {
		t.Errorf("event = %+v, want probe=true", e)
	}
}

func TestLargeFileRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: 40 MB transfers")
	}
	requireTools(t)
	f := startServer(t, true)
	want := f.files["large.bin"]
	t.Run("tftp-hpa 512", func(t *testing.T) {
		dir := t.TempDir()
		out := tftpHPA(t, f, dir, "get", "large.bin", "out")
		got, err := os.ReadFile(filepath.Join(dir, "out"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes (err %v), want %d: %s", len(got), err, len(want), out)
		}
	})
	t.Run("busybox 1468", func(t *testing.T) {
		dir := t.TempDir()
		if out, err := busybox(t, f, dir, "-g", "-b", "1468", "-r", "large.bin", "-l", "out"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(dir, "out"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes (err %v), want %d", len(got), err, len(want))
		}
	})
}

func TestNewServerErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"nothing to serve", Config{}},
		{"missing root", Config{Root: filepath.Join(t.TempDir(), "nope")}},
		{"negative timeout", Config{Root: t.TempDir(), Timeout: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewServer(tc.cfg); err == nil {
				t.Error("NewServer accepted a bad config")
			}
		})
	}
	s, err := NewServer(Config{Root: t.TempDir(), Listen: "127.0.0.1:notaport"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Listen(); err == nil {
		t.Error("Listen accepted a bad address")
	}
}

// BenchmarkTFTP measures a 10 MB transfer over loopback with pin/tftp's Go
// client (reported as MB/s). dnsmasq and tftpd-hpa are compared in test/bench.
func BenchmarkTFTP(b *testing.B) {
	// Every transfer comes from 127.0.0.1: the default per-address limit
	// (a burst of 100, then 10 a second) would refuse requests once Go
	// scales b.N past it on a machine that transfers faster than 10 a
	// second. The limiter stays in the path, with room for any b.N.
	f := startServerWith(b, false, func(c *Config) {
		c.RateLimit = RateLimit{Rate: 1e9, Burst: math.MaxInt32}
	})
	data := randomBytes(b, 10<<20)
	if err := os.WriteFile(filepath.Join(f.root, "bench.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, blksize := range []int{512, 1468} {
		b.Run(fmt.Sprintf("blksize=%d", blksize), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				got, err := goGet(f.addr.String(), "bench.bin", blksize)
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != len(data) {
					b.Fatalf("got %d bytes", len(got))
				}
			}
		})
	}
}
