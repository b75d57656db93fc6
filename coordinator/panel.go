package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
)

// startPanel binds the web panel's listener and serves it until ctx ends.
// It returns once the listener is bound; the returned channel reports the
// server's end.
func startPanel(ctx context.Context, addr string, names []string, svc *service.Service, js jetstream.JetStream, metrics prometheus.Gatherer, log *slog.Logger) (<-chan error, error) {
	h, err := web.New(web.Config{Desired: svc, Edges: svc, Events: streamEvents{js: js}, Logger: log, Listen: addr, Names: names})
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	// /metrics sits beside the panel, so it gets the same Host check.
	mux.Handle("GET /metrics", web.RequireHost(addr, names, promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
	mux.Handle("/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("web panel serving", "url", "http://"+ln.Addr().String())
	return done, nil
}

// streamEvents reads a machine's events from the EVENTS stream for the panel.
type streamEvents struct{ js jetstream.JetStream }

func (s streamEvents) Events(ctx context.Context, macs []string, since time.Time) ([]proto.Event, error) {
	subjects, err := eventlog.Subjects("", "", macs)
	if err != nil {
		return nil, err
	}
	st, err := s.js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	var out []proto.Event
	err = eventlog.Read(ctx, st, eventlog.Query{Subjects: subjects, Since: since}, io.Discard, func(ev proto.Event) error {
		out = append(out, ev)
		return nil
	})
	return out, err
}
