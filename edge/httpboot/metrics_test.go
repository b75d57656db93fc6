package httpboot

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/test/promtest"
)

func TestRouteOf(t *testing.T) {
	for path, want := range map[string]string{
		"/boot.ipxe": "script", "/chain.ipxe": "script", "/grub.cfg": "grub_cfg",
		"/artifacts/img-a/vmlinuz": "artifact", "/loaders/shim/bootx64.efi": "loader",
		"/api/v1/done": "callback", "/t/web/52:54:00:00:00:01/user-data": "template",
		"/metrics": "metrics", "/healthz": "health", "/undionly.kpxe": "boot_dir",
		"/boot/x86_64/ipxe.efi": "boot_dir", "/": "other", "/a/b/c": "other",
	} {
		if got := routeOf(path); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestMetricsByRoute: over a real socket, requests are counted by route and
// code, with the body bytes of a file sent through the sendfile path
// (http.ServeContent of an *os.File, larger than one WriteChunk) and of a
// rendered script, and the limits' refusals as 429s.
func TestMetricsByRoute(t *testing.T) {
	f := newFixture(t)
	kernel := bytes.Repeat([]byte("fleetboot"), (3*WriteChunk)/9+7)
	path := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(path, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", f.h)
	mux.HandleFunc("/artifacts/", func(w http.ResponseWriter, r *http.Request) {
		file, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer file.Close()
		http.ServeContent(w, r, "vmlinuz", time.Time{}, file)
	})
	reg := prometheus.NewRegistry()
	lim := testLimits(f.logs)
	lim.Rate, lim.Burst, lim.Metrics = 0.001, 4, reg // no refill within the test
	srv := httptest.NewServer(Guard(mux, lim))
	t.Cleanup(srv.Close)

	var script int64
	for i, p := range []string{knownScript, "/artifacts/img-a/vmlinuz", knownScript, "/nope/x/y", knownScript, knownScript} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i == 0 {
			script = n
		}
	}
	if script == 0 {
		t.Fatal("the script came back empty")
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"script", "200", 2}, {"script", "429", 2}, {"artifact", "200", 1}, {"other", "404", 1},
	} {
		got := values(t, reg)["fleetboot_http_requests_total{code="+c.code+",route="+c.route+"}"]
		if got != c.want {
			t.Errorf("requests{route=%s,code=%s} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
	if got := values(t, reg)["fleetboot_http_response_bytes_total{route=artifact}"]; got != float64(len(kernel)) {
		t.Errorf("artifact bytes = %v, want %d", got, len(kernel))
	}
	if got := values(t, reg)["fleetboot_http_response_bytes_total{route=script}"]; got < float64(2*script) {
		t.Errorf("script bytes = %v, want ≥ %d (two scripts and two refusals)", got, 2*script)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "fleetboot_http_request_seconds" && len(f.GetMetric()) != 3 {
			t.Errorf("latency series = %d, want 3 (script, artifact, other)", len(f.GetMetric()))
		}
	}
}

func values(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	v, err := promtest.Values(reg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
