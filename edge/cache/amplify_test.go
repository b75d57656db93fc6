package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestOnlyAssignedImagesFetched: through the edge's HTTP handler, the files
// of an image no host of the site boots answer 404 to HEAD and GET without
// one request to the store, and a HEAD of an assigned but uncached file is
// answered from its registered size and digest, again without a download.
func TestOnlyAssignedImagesFetched(t *testing.T) {
	s := startStore(t)
	mk := func(image string, seed uint64) (proto.Image, proto.Artifact) {
		a := s.putBytes("vmlinuz", randomBytes(seed, 200_000+int(seed)))
		ird := s.putBytes("initrd.img", randomBytes(seed+100, 1000))
		ird.Role = proto.RoleInitrd
		return proto.Image{Name: image, Arch: "x86_64", Artifacts: []proto.Artifact{a, ird}}, a
	}
	booted, bootedK := mk("booted", 1)
	other, otherK := mk("other", 2)
	disc, discK := mk("discovery", 3)
	st := state.New()
	st.SetSite(proto.Site{Name: "lab", Unknown: proto.UnknownDiscover, DiscoveryImage: "discovery"})
	for _, im := range []proto.Image{booted, other, disc} {
		st.PutImage(im)
	}
	host := proto.Host{MAC: "52:54:00:00:00:01", Site: "lab", Image: "booted", State: proto.StateBoot}
	st.PutHost(host)
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
	srv := httptest.NewServer(httpboot.New(httpboot.Config{State: st, BaseURL: "http://127.0.0.1:1", Artifacts: c}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name    string
		method  string
		image   string
		a       proto.Artifact
		status  int
		getsNow int // store GETs of the artifact after the request
	}{
		{"HEAD of an unassigned image", "HEAD", "other", otherK, 404, 0},
		{"GET of an unassigned image", "GET", "other", otherK, 404, 0},
		{"HEAD of an assigned image, not cached", "HEAD", "booted", bootedK, 200, 0},
		{"HEAD of the discovery image, not cached", "HEAD", "discovery", discK, 200, 0},
		{"GET of an assigned image", "GET", "booted", bootedK, 200, 1},
		{"HEAD of an assigned image, cached", "HEAD", "booted", bootedK, 200, 1},
		{"GET of the discovery image", "GET", "discovery", discK, 200, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, srv.URL+"/artifacts/"+tc.image+"/vmlinuz", nil)
			if r.err != nil || r.status != tc.status {
				t.Fatalf("status %d err %v, want %d (%s)", r.status, r.err, tc.status, r.body)
			}
			if tc.status == 200 {
				if got := r.header.Get("Content-Length"); got != strconv.FormatInt(tc.a.Size, 10) {
					t.Errorf("Content-Length %s, want %d", got, tc.a.Size)
				}
				if got := r.header.Get("ETag"); got != `"`+tc.a.SHA256+`"` {
					t.Errorf("ETag %s", got)
				}
				if tc.method == "GET" && int64(len(r.body)) != tc.a.Size {
					t.Errorf("body %d bytes, want %d", len(r.body), tc.a.Size)
				}
			}
			if got := s.getCount(tc.a.Key); got != tc.getsNow {
				t.Errorf("store saw %d GETs of %s, want %d", got, tc.image, tc.getsNow)
			}
		})
	}
	t.Run("a HEAD range is answered from the registered size", func(t *testing.T) {
		r := do(t, "HEAD", srv.URL+"/artifacts/other/vmlinuz", map[string]string{"Range": "bytes=0-9"})
		if r.status != 404 {
			t.Errorf("unassigned: status %d", r.status)
		}
		st.PutHost(proto.Host{MAC: "52:54:00:00:00:02", Site: "lab", Image: "other", State: proto.StateBoot})
		r = do(t, "HEAD", srv.URL+"/artifacts/other/vmlinuz", map[string]string{"Range": "bytes=0-9"})
		if r.status != 206 || r.header.Get("Content-Range") != "bytes 0-9/"+strconv.FormatInt(otherK.Size, 10) {
			t.Errorf("assigned now: status %d, Content-Range %q", r.status, r.header.Get("Content-Range"))
		}
		if got := s.getCount(otherK.Key); got != 0 {
			t.Errorf("store saw %d GETs", got)
		}
	})
}

// TestAbandonedFetchCancelled: a client that hangs up on the cold download
// of an artifact no host of the site boots cancels the store GET (the proxy
// sees it end far short of the size); the next client starts a fresh one.
// A pinned artifact keeps downloading with no client left.
func TestAbandonedFetchCancelled(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		t.Run("pinned="+strconv.FormatBool(pinned), func(t *testing.T) {
			s := startStore(t)
			a := s.putRandom("live.iso", 7, 32<<20)
			// No stall time-out within the test: only the client's
			// leaving may end the download.
			c := newCache(t, t.TempDir(), 256<<20, s.fetcher, func(cfg *Config) { cfg.FetchTimeout = time.Hour })
			if pinned {
				c.SetPinned([]string{a.SHA256})
			}
			ts := serve(t, c)
			s.gateAfter.Store(1 << 20) // the store sends 1 MiB, then waits

			client := &http.Client{Timeout: time.Minute}
			resp, err := client.Get(ts.url(a))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
				t.Fatalf("first bytes: %v", err)
			}
			resp.Body.Close() // hang up mid-body
			client.CloseIdleConnections()

			if pinned {
				s.openGate()
				waitfor.True(t, "the pinned download to complete", func() bool { return c.Contains(a.SHA256) })
				if n, sent := s.ended(a.Key); n != 1 || sent != a.Size {
					t.Errorf("store GETs ended %d, %d bytes sent; want 1 with all %d", n, sent, a.Size)
				}
				return
			}
			waitfor.True(t, "the store GET to be cancelled", func() bool { n, _ := s.ended(a.Key); return n == 1 })
			if _, sent := s.ended(a.Key); sent > a.Size/4 {
				t.Errorf("store sent %d of %d bytes for an abandoned download", sent, a.Size)
			}
			waitfor.True(t, "the partial file to be removed", func() bool {
				return len(dirFiles(t, c.tmpDir)) == 0 && metricValue(t, c, "fleetboot_cache_fetches_in_flight") == 0
			})
			if c.Contains(a.SHA256) {
				t.Error("an abandoned download was kept")
			}
			s.openGate()
			n, sum, err := hashGet(client, ts.url(a))
			if err != nil || n != a.Size || sum != a.SHA256 {
				t.Fatalf("next client: %d bytes, sha256 %s, %v", n, sum, err)
			}
			if got := s.getCount(a.Key); got != 2 {
				t.Errorf("store saw %d GETs, want 2 (the cancelled one and a fresh one)", got)
			}
		})
	}
}

// holdEOF is the artifact store (a real MinIO) with the end of its first
// object held back: the first body, once it has given every byte, does not
// report the end until release is closed, whatever the cache's context
// says. It plays the window between the last byte and the commit (the
// fsync of a large file), where a cancel no longer stops the download.
type holdEOF struct {
	Fetcher
	first   atomic.Bool
	reached chan struct{} // closed when the held body has given every byte
	release chan struct{}
}

func (h *holdEOF) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	body, err := h.Fetcher.Get(ctx, key)
	if err != nil || !h.first.CompareAndSwap(false, true) {
		return body, err
	}
	return &heldBody{ReadCloser: body, h: h}, nil
}

type heldBody struct {
	io.ReadCloser
	h *holdEOF
}

func (b *heldBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		close(b.h.reached)
		<-b.h.release
	}
	return n, err
}

// TestAbandonedFetchThatCompletes: a client hangs up on an unpinned
// download after its last byte came in but before the download committed
// (the fetch is forgotten and cancelled, too late to stop it), and a second
// client meanwhile starts and completes a fresh download of the same
// artifact. The cache must hold the file once: counting it twice makes
// the cache believe it is fuller than it is, for good, and every repeat
// (a client can hang up at will) evicts more of what the site boots.
// (Issue 12 item 5.)
func TestAbandonedFetchThatCompletes(t *testing.T) {
	s := startStore(t)
	a := s.putRandom("live.iso", 9, 1<<20)
	hold := &holdEOF{Fetcher: s.fetcher, reached: make(chan struct{}), release: make(chan struct{})}
	c := newCache(t, t.TempDir(), 64<<20, hold, func(cfg *Config) { cfg.FetchTimeout = time.Hour })
	ts := serve(t, c)
	client := &http.Client{Timeout: time.Minute}

	resp, err := client.Get(ts.url(a))
	if err != nil {
		t.Fatal(err)
	}
	// Most of the body comes through (the last byte waits for the commit,
	// and the server's buffers hold a few KiB before it).
	if _, err := io.ReadFull(resp.Body, make([]byte, a.Size-64<<10)); err != nil {
		t.Fatalf("first client: %v", err)
	}
	<-hold.reached
	resp.Body.Close() // hang up before the commit
	client.CloseIdleConnections()
	waitfor.True(t, "the abandoned download to be forgotten", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.inflight) == 0
	})

	n, sum, err := hashGet(client, ts.url(a))
	if err != nil || n != a.Size || sum != a.SHA256 {
		t.Fatalf("second client: %d bytes, sha256 %s, %v", n, sum, err)
	}
	close(hold.release) // the first download now ends without error
	waitfor.True(t, "both downloads to end", func() bool {
		return metricValue(t, c, "fleetboot_cache_fetches_in_flight") == 0
	})
	if st := c.Stats(); st.Bytes != a.Size || st.Entries != 1 {
		t.Errorf("cache holds %d bytes in %d entries, want %d in 1", st.Bytes, st.Entries, a.Size)
	}
	if files := dirFiles(t, c.tmpDir); len(files) != 0 {
		t.Errorf("partial files left: %v", files)
	}
}

// TestMachinelessRequestsCounted: artifact requests that name no machine
// (no ?mac=; httpboot drops a MAC the site does not know) are what anyone
// on the boot network can send at will, so their artifact.start and
// artifact.end events are counted per source and window, not recorded two
// per request: a flood of them flushed the EVENTS stream as fast as the
// rate limit lets requests in. A request for a machine keeps its events.
// (Issue 12 item 4.)
func TestMachinelessRequestsCounted(t *testing.T) {
	s := startStore(t)
	a := s.putBytes("vmlinuz", randomBytes(52, 10_000))
	rec := &eventRecorder{}
	agg := events.NewAggregator(events.AggregatorConfig{Sink: rec, Window: time.Hour, Pass: 3})
	rep := &countingRepeats{Repeats: agg}
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, func(cfg *Config) { cfg.Events, cfg.Repeats = rec, rep })
	ts := serve(t, c)
	client := &http.Client{Timeout: time.Minute}
	const flood = 50
	for i := range flood {
		if n, sum, err := hashGet(client, ts.url(a)); err != nil || n != a.Size || sum != a.SHA256 {
			t.Fatalf("request %d: %d bytes, %v", i, n, err)
		}
	}
	mac := "52:54:00:00:00:01"
	if n, _, err := hashGet(client, ts.url(a)+"?mac="+mac); err != nil || n != a.Size {
		t.Fatalf("request for a machine: %d bytes, %v", n, err)
	}
	// artifact.end follows the response; the requests share one
	// connection, so the last one's end comes after all the others'.
	waitfor.True(t, "every request's events", func() bool {
		ends := 0
		for _, ev := range rec.snapshot() {
			if ev.MAC == mac && ev.Kind == proto.EventArtifactEnd {
				ends++
			}
		}
		return ends == 1
	})
	agg.Close()
	byKind := map[string]int{}
	counted := 0
	for _, ev := range rec.snapshot() {
		byKind[ev.Kind+" "+ev.MAC]++
		if n, err := strconv.Atoi(ev.Detail["count"]); err == nil {
			counted += n
		}
	}
	want := map[string]int{
		proto.EventArtifactStart + " ": 3 + 1, proto.EventArtifactEnd + " ": 3 + 1, // 3 as they came, then one counted
		proto.EventArtifactStart + " " + mac: 1, proto.EventArtifactEnd + " " + mac: 1,
	}
	if d := cmp.Diff(want, byKind); d != "" {
		t.Errorf("events by kind and MAC (-want +got):\n%s", d)
	}
	if counted != 2*(flood-3) {
		t.Errorf("counted %d requests' events, want %d", counted, 2*(flood-3))
	}
}

// countingRepeats counts the events handed to Repeats.
type countingRepeats struct {
	Repeats
	n atomic.Int64
}

func (c *countingRepeats) Count(source, kind, mac string, detail map[string]string) {
	c.n.Add(1)
	c.Repeats.Count(source, kind, mac, detail)
}
