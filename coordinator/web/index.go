package web

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// HostIndex keeps every host in memory, fed by a watch of the hosts
// bucket, so the hosts page searches and pages a fleet of 100 000 without
// reading them all from KV on each request (the API's host.list does, and
// times out there). It is read-only: changes still go through the API.
type HostIndex struct {
	log *slog.Logger

	mu     sync.Mutex
	byKey  map[string]proto.Host
	sorted []proto.Host // by MAC; nil when a change made it stale
}

// WatchHosts builds the index from the hosts bucket and keeps it current
// until ctx ends. It returns once the index holds every host the bucket had.
func WatchHosts(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*HostIndex, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.KeyValue(ctx, proto.BucketHosts)
	if err != nil {
		return nil, fmt.Errorf("web: hosts bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("web: watch hosts: %w", err)
	}
	x := &HostIndex{log: log, byKey: map[string]proto.Host{}}
	ready := make(chan struct{})
	go func() {
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			x.apply(e)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = w.Stop()
	}()
	select {
	case <-ready:
		return x, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("web: read hosts: %w", ctx.Err())
	}
}

func (x *HostIndex) apply(e jetstream.KeyValueEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.sorted = nil
	if e.Operation() != jetstream.KeyValuePut {
		delete(x.byKey, e.Key())
		return
	}
	var h proto.Host
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		x.log.Warn("web panel: unreadable host in KV", "key", e.Key(), "err", err)
		delete(x.byKey, e.Key())
		return
	}
	x.byKey[e.Key()] = h
}

// Hosts returns every host, sorted by MAC. The slice is shared: callers
// must not change it.
func (x *HostIndex) Hosts() []proto.Host {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.sorted == nil {
		all := make([]proto.Host, 0, len(x.byKey))
		for _, h := range x.byKey {
			all = append(all, h)
		}
		slices.SortFunc(all, func(a, b proto.Host) int { return strings.Compare(a.MAC, b.MAC) })
		x.sorted = all
	}
	return x.sorted
}

// Len is the number of hosts in the index.
func (x *HostIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byKey)
}
