package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestFloodOfUnknownMACs: 100 000 script requests for random MACs from one
// address, over keep-alive connections of several clients, against a real
// edge recording to a real JetStream EVENTS stream. The stream grows by a
// bounded number of events (the edge rate-limits the address and counts
// refusals and unknown MACs per address and window), every request is
// accounted for in those counts, and a known machine on another address
// gets its script throughout.
func TestFloodOfUnknownMACs(t *testing.T) {
	const (
		requests  = 100_000
		clients   = 8
		timeLimit = 3 * time.Minute // bounds the flood on a slow machine; the count is checked as sent
		maxGrowth = 1000
	)
	ns, fc := startNATS(t)
	known := "52:54:00:00:0b:01"
	fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPOff})
	fc.put(proto.BucketImages, "img", proto.Image{V: 1, Name: "img", Arch: "x86_64", Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "k", Size: 1, SHA256: strings.Repeat("a", 64)},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "i", Size: 1, SHA256: strings.Repeat("b", 64)},
	}})
	key, _ := proto.MACKey(known)
	fc.put(proto.BucketHosts, "lab."+key, proto.Host{V: 1, MAC: known, Site: "lab", Image: "img", State: proto.StateBoot})

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Name: "e1", Site: "lab", NATSURL: ns.ClientURL(), StateDir: t.TempDir(), CacheDir: t.TempDir(), CacheSize: 1 << 20,
			Store: artifactstore.Config{URL: "dir://" + t.TempDir()}, HTTPListen: "127.0.0.1:0",
			Ready: func(a Addrs) { ready <- a.HTTP },
		})
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge: %v", err)
			}
		}
	}
	defer stop()
	var base string
	select {
	case a := <-ready:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("edge: %v", err)
	}
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: clients}}
	}
	machine := from("127.0.0.2")
	knownScript := func() error {
		resp, err := machine.Get(base + "/boot.ipxe?mac=" + known)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "/artifacts/img/vmlinuz") {
			return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
		}
		return nil
	}
	waitfor.OK(t, "the known machine's script", knownScript)

	_, js := natstest.Connect(t, ns.ClientURL())
	before := streamMsgs(t, js)

	// The flood, from 127.0.0.1.
	flooder := from("127.0.0.1")
	var next, sent, failed atomic.Int64
	statuses := sync.Map{}
	deadline := time.Now().Add(timeLimit)
	var wg sync.WaitGroup
	// Meanwhile the known machine, on its own address, asks for its script
	// at a booting machine's pace (its own rate limit is not under test).
	flooding := make(chan struct{})
	var knownOK, knownFailed atomic.Int64
	var knownErr atomic.Value
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond) // at most 360 script events within timeLimit
		defer tick.Stop()
		for range 400 { // bounded; the flood ends first
			select {
			case <-flooding:
				return
			case <-tick.C:
			}
			if err := knownScript(); err != nil {
				knownFailed.Add(1)
				knownErr.Store(err.Error())
			} else {
				knownOK.Add(1)
			}
		}
	})
	var floodWG sync.WaitGroup
	for range clients {
		floodWG.Go(func() {
			for next.Add(1) <= requests && time.Now().Before(deadline) {
				mac := fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", rand.IntN(256), rand.IntN(256), rand.IntN(256), rand.IntN(256), rand.IntN(256))
				resp, err := flooder.Get(base + "/boot.ipxe?mac=" + mac)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
				n, _ := statuses.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		})
	}
	floodWG.Wait()
	close(flooding)
	wg.Wait()
	if knownFailed.Load() != 0 || knownOK.Load() == 0 {
		t.Errorf("the known machine during the flood: %d scripts, %d failures (last: %v)", knownOK.Load(), knownFailed.Load(), knownErr.Load())
	}
	codes := map[any]int64{}
	statuses.Range(func(k, v any) bool { codes[k] = v.(*atomic.Int64).Load(); return true })
	t.Logf("flood: %d requests answered (%v), %d failed; the known machine got %d scripts meanwhile", sent.Load(), codes, failed.Load(), knownOK.Load())
	if failed.Load() != 0 {
		t.Errorf("%d flood requests failed at the transport", failed.Load())
	}
	if err := knownScript(); err != nil {
		t.Fatalf("the known machine after the flood: %v", err)
	}

	// A clean stop sends what is buffered, and the counts of the last window.
	stop()
	grown := streamMsgs(t, js) - before
	t.Logf("EVENTS grew by %d messages for %d flood requests", grown, sent.Load())
	if grown >= maxGrowth {
		t.Fatalf("EVENTS grew by %d messages for %d requests, want fewer than %d", grown, sent.Load(), maxGrowth)
	}
	// Every request is in the stream: one by one or in a count.
	var accounted int64
	for _, ev := range streamEventsAfter(t, js, before) {
		if (ev.Kind != proto.EventScriptUnknown && ev.Kind != proto.EventHTTPLimited) ||
			(ev.Detail["ip"] != "127.0.0.1" && ev.Detail["source"] != "127.0.0.1") {
			continue // the known machine's requests before its host arrived
		}
		if c := ev.Detail["count"]; c != "" {
			n, err := strconv.ParseInt(c, 10, 64)
			if err != nil {
				t.Errorf("counted event %+v", ev)
			}
			accounted += n
		} else {
			accounted++
		}
	}
	if accounted != sent.Load() {
		t.Errorf("events account for %d flood requests, %d were answered", accounted, sent.Load())
	}
}

// streamMsgs is the number of messages in the EVENTS stream.
func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// streamEventsAfter reads the events stored after the first `skip`.
func streamEventsAfter(t *testing.T, js jetstream.JetStream, skip uint64) []proto.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []proto.Event
	for seq := info.State.FirstSeq + skip; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		var ev proto.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("msg %d: %v", seq, err)
		}
		out = append(out, ev)
	}
	return out
}
