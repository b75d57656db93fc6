package tftp

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetrics: a windowed transfer, a plain one and a refusal show on the
// server's registry by result and negotiated windowsize, with the bytes.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startServerWith(t, false, func(c *Config) { c.Metrics = reg })
	kpxe := f.files["undionly.kpxe"]
	c := newRawClient(t, "127.0.0.1")
	if got, _ := c.windowGet(f.addr, "undionly.kpxe", "blksize", "1468", "windowsize", "8"); !bytes.Equal(got, kpxe) {
		t.Fatalf("windowed get: %d bytes, want %d", len(got), len(kpxe))
	}
	if got, _ := c.windowGet(f.addr, "undionly.kpxe"); !bytes.Equal(got, kpxe) {
		t.Fatalf("plain get: %d bytes, want %d", len(got), len(kpxe))
	}
	c.send(f.addr, rrq("no-such-file", "octet"))
	if p := c.recv(); p.op != opERROR {
		t.Fatalf("missing file answered with %v, want ERROR", p)
	}
	// The server counts after the reply: wait for the refusal's count.
	want := map[string]float64{
		"fleetboot_tftp_transfers_total{result=complete,windowsize=8}": 1,
		"fleetboot_tftp_transfers_total{result=complete,windowsize=1}": 1,
		"fleetboot_tftp_transfers_total{result=refused,windowsize=1}":  1,
		"fleetboot_tftp_sent_bytes_total":                              float64(2 * len(kpxe)),
		"fleetboot_tftp_transfer_seconds_count":                        2,
	}
	got := waitGathered(t, reg, want)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// waitGathered reads reg (name{label=value,...} → value, histograms as
// _count) until it shows want or 10 s pass: the server counts a transfer
// after its last packet, which the client may see first.
func waitGathered(t *testing.T, reg prometheus.Gatherer, want map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]float64{}
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				name := f.GetName()
				if len(labels) > 0 {
					name += "{" + strings.Join(labels, ",") + "}"
				}
				switch {
				case m.GetCounter() != nil:
					got[name] = m.GetCounter().GetValue()
				case m.GetHistogram() != nil:
					got[f.GetName()+"_count"] = float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		done := true
		for k, v := range want {
			done = done && got[k] == v
		}
		if done || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond) // polling counters, not waiting for a server
	}
}
