package httpboot

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// macRecorder is an ArtifactServer that records the ?mac= each request
// reaches it with: the MAC the cache files its events under.
type macRecorder struct {
	mu   sync.Mutex
	macs []string
}

func (m *macRecorder) ServeArtifact(w http.ResponseWriter, r *http.Request, _ proto.Artifact) {
	m.mu.Lock()
	m.macs = append(m.macs, r.URL.Query().Get("mac"))
	m.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// TestArtifactMachine: the cache hears of the machine a request is for
// from the URL when the site knows that MAC; a request with no MAC in the
// URL from the DHCP lease on the source address, which is how a UEFI HTTP
// boot firmware fetching its loader gets events under its own MAC.
func TestArtifactMachine(t *testing.T) {
	f := newFixture(t)
	ipxe := proto.Loader{Name: "ipxe-http", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{{
		Firmware: proto.FirmwareX64, Artifact: proto.Artifact{Role: proto.RoleIPXE, Name: "ipxe.efi", Key: "sha256/cc", Size: 3}}}}
	f.st.PutLoader(ipxe)
	h := *web01()
	h.Loader = ipxe.Name
	f.st.PutHost(h)
	rec := &macRecorder{}
	f.h.cfg.Artifacts = rec
	// 10.0.0.50 holds web01's lease, 10.0.0.51 a stranger's, 10.0.0.52 none.
	f.h.cfg.Leases = staticLeases{"10.0.0.50": h.MAC, "10.0.0.51": "52:54:00:99:99:99"}

	tests := []struct {
		name, target, from, want string
	}{
		{"loader, no MAC, leased to a host", "/loaders/ipxe-http/ipxe.efi", "10.0.0.50", h.MAC},
		{"loader, no MAC, leased to a stranger", "/loaders/ipxe-http/ipxe.efi", "10.0.0.51", ""},
		{"loader, no MAC, no lease", "/loaders/ipxe-http/ipxe.efi", "10.0.0.52", ""},
		{"artifact, known MAC in the URL", "/artifacts/debian-12/vmlinuz?mac=" + h.MAC, "10.0.0.52", h.MAC},
		{"artifact, made-up MAC, no lease", "/artifacts/debian-12/vmlinuz?mac=52:54:00:99:99:99", "10.0.0.52", ""},
		{"artifact, made-up MAC from a host's lease: the URL's MAC is never replaced", "/artifacts/debian-12/vmlinuz?mac=52:54:00:99:99:99", "10.0.0.50", ""},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		r.RemoteAddr = tc.from + ":40000"
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.name, w.Code, w.Body)
		}
	}
	var want []string
	for _, tc := range tests {
		want = append(want, tc.want)
	}
	if diff := cmp.Diff(want, rec.macs); diff != "" {
		t.Errorf("MACs the cache heard of (-want +got):\n%s", diff)
	}
}

// TestBootFileEvents: a bootstrap binary from the boot directory (what a
// UEFI HTTP boot firmware without a loader fetches) is recorded as an
// artifact pair under the MAC of the known host leased the source
// address; a request from any other address records nothing.
func TestBootFileEvents(t *testing.T) {
	f := newFixture(t)
	h := *web01()
	f.h.cfg.Leases = staticLeases{"10.0.0.50": h.MAC, "10.0.0.51": "52:54:00:99:99:99"}
	size := strconv.Itoa(len(bootBytes()))
	tests := []struct {
		name, method, from string
		want               []event
	}{
		{"GET from a host's lease", http.MethodGet, "10.0.0.50", []event{
			{proto.EventArtifactStart, h.MAC, map[string]string{"file": "undionly.kpxe", "size": size, "source": "boot-dir"}},
			{proto.EventArtifactEnd, h.MAC, map[string]string{"file": "undionly.kpxe", "source": "boot-dir", "status": "complete", "bytes": size, "http_status": "200"}},
		}},
		{"HEAD from a host's lease", http.MethodHead, "10.0.0.50", []event{
			{proto.EventArtifactStart, h.MAC, map[string]string{"file": "undionly.kpxe", "size": size, "source": "boot-dir"}},
			{proto.EventArtifactEnd, h.MAC, map[string]string{"file": "undionly.kpxe", "source": "boot-dir", "status": "complete", "bytes": "0", "http_status": "200"}},
		}},
		{"a stranger's lease", http.MethodGet, "10.0.0.51", nil},
		{"no lease", http.MethodGet, "10.0.0.52", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/undionly.kpxe", nil)
			r.RemoteAddr = tc.from + ":40000"
			w := httptest.NewRecorder()
			f.h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d", w.Code)
			}
			got := f.events.take()
			for _, ev := range got {
				delete(ev.Detail, "duration_ms")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}
