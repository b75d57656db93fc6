package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// syncBuffer is a bytes.Buffer a running command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPanelAddress: the web panel, whose logins would cross the network in
// clear without TLS, is refused on an address other than loopback unless
// --insecure, which warns; in dev mode too.
func TestPanelAddress(t *testing.T) {
	dir := t.TempDir()
	coord := func(extra ...string) []string {
		return append([]string{"coordinator", "--data", filepath.Join(dir, "data"), "--store", "dir://" + filepath.Join(dir, "artifacts"),
			"--nats-listen", "127.0.0.1:0"}, extra...)
	}
	refused := "this address is not loopback and the web panel would serve logins without TLS"
	cases := []struct {
		name  string
		args  []string
		fails string
		warns bool
	}{
		{name: "every address, at start", args: coord("--http-listen", "0.0.0.0:0"), fails: "--http-listen 0.0.0.0:0: " + refused},
		{name: "every address, port only", args: coord("--check-config", "--http-listen", ":8081"), fails: "--http-listen :8081: " + refused},
		{name: "one address", args: coord("--check-config", "--http-listen", "10.0.0.5:8081"), fails: refused},
		{name: "from the environment", args: coord("--check-config"), fails: refused},
		{name: "dev", args: []string{"dev", "--check-config", "--data", filepath.Join(dir, "dev"), "--panel-listen", "0.0.0.0:8081"}, fails: "--panel-listen 0.0.0.0:8081: " + refused},
		{name: "not an address", args: coord("--check-config", "--http-listen", "8081"), fails: `invalid --http-listen "8081"`},
		{name: "insecure", args: coord("--check-config", "--http-listen", "0.0.0.0:8081", "--insecure"), warns: true},
		{name: "loopback", args: coord("--check-config", "--http-listen", "127.0.0.1:8081")},
		{name: "off", args: coord("--check-config", "--http-listen", "")},
		{name: "names", args: coord("--check-config", "--http-name", "Panel.Example.net.", "--http-name", "10.0.0.5", "--http-name", "[fd00::5]")},
		{name: "name with a port", args: coord("--check-config", "--http-name", "panel.example.net:8081"), fails: `invalid --http-name "panel.example.net:8081": want a DNS name or an IP address, without a port`},
		{name: "name as a URL", args: coord("--check-config", "--http-name", "http://panel.example.net"), fails: `invalid --http-name "http://panel.example.net"`},
		{name: "dev name with a port", args: []string{"dev", "--check-config", "--data", filepath.Join(dir, "dev2"), "--panel-name", "panel:80"}, fails: `invalid --panel-name "panel:80"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{}
			if c.name == "from the environment" {
				env["FLEETBOOT_HTTP_LISTEN"] = "0.0.0.0:8081"
			}
			r := runEnv(t, env, c.args...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				return
			}
			if r.code != 0 || !strings.HasPrefix(r.stdout, "configuration OK\n") {
				t.Fatalf("code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			if warned := strings.Contains(r.stderr, "level=WARN msg=\"INSECURE: the web panel listens beyond loopback without TLS"); warned != c.warns {
				t.Errorf("warned %v, want %v: stderr %q", warned, c.warns, r.stderr)
			}
		})
	}
}

// TestOpenDoor: without --auth the coordinator refuses NATS beyond loopback
// (embedded, --nats-listen) and any existing cluster (--nats-url), where
// every client could change the fleet, unless --insecure, which warns at
// each start. The refusal comes before anything listens or connects.
func TestOpenDoor(t *testing.T) {
	dir := t.TempDir()
	coord := func(extra ...string) []string {
		return append([]string{"coordinator", "--data", filepath.Join(dir, "data"), "--store", "dir://" + filepath.Join(dir, "artifacts"),
			"--http-listen", ""}, extra...)
	}
	cluster := "--nats-url without --auth: every client of that cluster (each edge included) could change every site, host and image"
	cases := []struct {
		name, fails, warns string
		args               []string
	}{
		{name: "every address, at start", args: coord("--nats-listen", "0.0.0.0:0"),
			fails: "--nats-listen 0.0.0.0:0 without --auth: whoever reaches this address could change every site, host and image; add --auth"},
		{name: "port only", args: coord("--check-config", "--nats-listen", ":4222"), fails: "--nats-listen :4222 without --auth"},
		{name: "one address", args: coord("--check-config", "--nats-listen", "10.0.0.5:4222"), fails: "--nats-listen 10.0.0.5:4222 without --auth"},
		{name: "cluster, at start", args: coord("--nats-url", "nats://127.0.0.1:1"), fails: cluster},
		{name: "cluster on loopback", args: coord("--check-config", "--nats-url", "nats://127.0.0.1:4222"), fails: cluster},
		{name: "dev", args: []string{"dev", "--check-config", "--data", filepath.Join(dir, "dev"), "--nats-listen", "0.0.0.0:4222"}, fails: "--nats-listen 0.0.0.0:4222 without --auth"},
		{name: "insecure", args: coord("--check-config", "--nats-listen", "0.0.0.0:4222", "--insecure"), warns: "INSECURE: --nats-listen 0.0.0.0:4222 without --auth"},
		{name: "insecure cluster", args: coord("--check-config", "--nats-url", "nats://127.0.0.1:4222", "--insecure"), warns: "INSECURE: " + cluster},
		{name: "auth", args: coord("--check-config", "--nats-listen", "0.0.0.0:4222", "--auth")},
		{name: "loopback", args: coord("--check-config", "--nats-listen", "127.0.0.1:4222")},
		{name: "localhost", args: coord("--check-config", "--nats-listen", "localhost:4222")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runEnv(t, nil, c.args...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				return
			}
			if r.code != 0 || !strings.HasPrefix(r.stdout, "configuration OK\n") {
				t.Fatalf("code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			warned := strings.Contains(r.stderr, "level=WARN msg=\"INSECURE:")
			if warned != (c.warns != "") || !strings.Contains(r.stderr, c.warns) {
				t.Errorf("stderr %q, want a warning %q", r.stderr, c.warns)
			}
		})
	}
}

// TestPanelHostNames runs a real coordinator with its panel on loopback and
// a --http-name: a request whose Host is another name (what a browser sends
// after DNS rebinding) is refused with 421 and one line.
func TestPanelHostNames(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, cli.Invocation{Version: "test", Env: cli.EnvMap(nil), Stdout: io.Discard, Stderr: &stderr, Args: []string{
			"coordinator", "--data", filepath.Join(dir, "data"), "--store", "dir://" + filepath.Join(dir, "artifacts"),
			"--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--http-name", "panel.example.net"}})
	}()
	served := regexp.MustCompile(`msg="web panel serving" url=http://(127\.0\.0\.1:\d+)`)
	var addr string
	waitfor.True(t, "the web panel to serve", func() bool {
		select {
		case code := <-done:
			t.Fatalf("coordinator ended with code %d: %s", code, stderr.String())
		default:
		}
		if m := served.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	cases := []struct {
		host string
		code int
	}{
		{"evil.example", 421},
		{"evil.example:" + strings.Split(addr, ":")[1], 421},
		{addr, 200},
		{"localhost", 200},
		{"panel.example.net", 200},
	}
	for _, c := range cases {
		req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = c.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("Host %s: HTTP %d, want %d: %.200s", c.host, resp.StatusCode, c.code, body)
		}
		if want := fmt.Sprintf("fleetboot: the web panel does not answer to host %q; give its names with --http-name\n", c.host); c.code == 421 && string(body) != want {
			t.Errorf("Host %s: body %q, want %q", c.host, body, want)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("coordinator exit code %d: %s", code, stderr.String())
	}
}

// TestPanelHostNamesFromEnv: FLEETBOOT_HTTP_NAME takes several names,
// comma-separated, as a repeated --http-name does; taken whole, "a,b" is
// one name that no Host matches, and --check-config shows it as two.
func TestPanelHostNamesFromEnv(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, cli.Invocation{Version: "test", Stdout: io.Discard, Stderr: &stderr,
			Env: cli.EnvMap(map[string]string{"FLEETBOOT_HTTP_NAME": "panel.example.net, boot.example.net"}),
			Args: []string{"coordinator", "--data", filepath.Join(dir, "data"), "--store", "dir://" + filepath.Join(dir, "artifacts"),
				"--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}})
	}()
	served := regexp.MustCompile(`msg="web panel serving" url=http://(127\.0\.0\.1:\d+)`)
	var addr string
	waitfor.True(t, "the web panel to serve", func() bool {
		select {
		case code := <-done:
			t.Fatalf("coordinator ended with code %d: %s", code, stderr.String())
		default:
		}
		if m := served.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	for host, want := range map[string]int{"panel.example.net": 200, "boot.example.net": 200, "other.example.net": 421} {
		req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: HTTP %d, want %d", host, resp.StatusCode, want)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("coordinator exit code %d: %s", code, stderr.String())
	}
}
