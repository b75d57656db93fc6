package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// coordPanel is where the coordinator serves its panel and /metrics, inside
// the server namespace (its default, loopback).
const coordPanel = "127.0.0.1:8081"

// checkMetrics scrapes the edge's and the coordinator's /metrics after mac
// booted its image (kernelSize bytes) and checks that what the boot did
// moved the counters: the DHCP exchange, the script and artifacts over
// HTTP, the host set through the API, and the boot itself.
func (e *fbEnv) checkMetrics(t *testing.T, kernelSize int64) {
	t.Helper()
	edge := e.scrape(t, "http://"+edgeHTTP+"/metrics")
	for _, c := range []struct {
		series string
		min    float64
	}{
		{`fleetboot_dhcp_requests_total{type="discover"}`, 1},
		{`fleetboot_dhcp_requests_total{type="request"}`, 1},
		{`fleetboot_dhcp_replies_total{type="offer"}`, 1},
		{`fleetboot_dhcp_replies_total{type="ack"}`, 1},
		{`fleetboot_dhcp_handle_seconds_count`, 2},
		{`fleetboot_http_requests_total{code="200",route="script"}`, 1},
		{`fleetboot_http_requests_total{code="200",route="artifact"}`, 2},
		{`fleetboot_http_response_bytes_total{route="artifact"}`, float64(kernelSize)},
		{`fleetboot_cache_served_bytes_total`, float64(kernelSize)},
		{`fleetboot_events_sent_total`, 1},
	} {
		if got := edge[c.series]; got < c.min {
			t.Errorf("edge /metrics: %s = %v, want ≥ %v", c.series, got, c.min)
		}
	}
	if _, ok := edge[`fleetboot_events_backlog`]; !ok {
		t.Errorf("edge /metrics has no fleetboot_events_backlog")
	}

	// The coordinator counts the boot once the edge's events reach it.
	waitfor.OK(t, "the coordinator's /metrics to count the boot and the host set", func() error {
		coord := e.scrape(t, "http://"+coordPanel+"/metrics")
		started := coord[`fleetboot_boots_started_total`]
		set := coord[`fleetboot_api_requests_total{code="200",endpoint="host.set"}`]
		if started >= 1 && set >= 1 && coord[`fleetboot_api_request_seconds_count{endpoint="host.set"}`] >= 1 {
			return nil
		}
		return fmt.Errorf("boots started %v, host.set answered %v; want ≥ 1 each", started, set)
	})
}

// scrape reads a Prometheus text exposition into series → value (the
// series as written: name{labels}, labels in the exporter's order, which
// client_golang sorts by name).
func (e *fbEnv) scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.srv.HTTPClient(10 * time.Second).Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	out, err := parseExposition(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return out
}

func parseExposition(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
