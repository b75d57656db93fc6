package pprofserve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestStart(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"0.0.0.0:0", "10.0.0.1:6060", "example.com:6060", "nonsense"} {
		if err := Start(context.Background(), addr, log); err == nil {
			t.Errorf("Start(%q) accepted a non-loopback address", addr)
		}
	}
	if err := Start(context.Background(), "", log); err != nil {
		t.Errorf(`Start("") = %v, want nothing served and no error`, err)
	}
	// A free loopback port, then the heap profile's text form from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Start(ctx, addr, log); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Errorf("heap profile: %s\n%.200s", resp.Status, body)
	}
}
