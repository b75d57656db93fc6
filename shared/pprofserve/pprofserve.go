// Package pprofserve serves Go's runtime profiles (net/http/pprof) for
// diagnosing a running coordinator or edge: where its memory and CPU go.
// Profiles show internals (goroutine stacks, allocation sites), so only a
// loopback address is accepted.
package pprofserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// Sampling of the mutex and block profiles while profiles are served.
const (
	mutexFraction = 10
	blockRate     = 10_000 // ns
)

// Start listens on addr (loopback only) and serves /debug/pprof/ until ctx
// ends. "" serves nothing.
func Start(ctx context.Context, addr string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("pprof: %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("pprof: %s is not a loopback address: profiles show the process's internals", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	// Sample lock contention and blocking too (off by default in Go):
	// where requests wait, not only where they spend CPU. One in
	// mutexFraction contention events, and blocking events by duration
	// (one per blockRate ns on average), cost little next to serving.
	runtime.SetMutexProfileFraction(mutexFraction)
	runtime.SetBlockProfileRate(blockRate)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof: serve", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("pprof: serving runtime profiles", "addr", ln.Addr().String())
	return nil
}
