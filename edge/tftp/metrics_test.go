package tftp

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/test/promtest"
	"github.com/fleetboot/fleetboot/test/waitfor"
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
// _count) until it shows want: the server counts a transfer after its last
// packet, which the client may see first.
func waitGathered(t *testing.T, reg prometheus.Gatherer, want map[string]float64) map[string]float64 {
	t.Helper()
	var got map[string]float64
	waitfor.OK(t, "the transfers counted", func() error {
		var err error
		if got, err = promtest.Values(reg); err != nil {
			return err
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		return nil
	})
	return got
}
