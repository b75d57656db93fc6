package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// Stater is the part of the artifact store the coordinator needs: it checks
// that registered artifacts really exist with their recorded size.
type Stater interface {
	StatSize(ctx context.Context, key string) (int64, error)
}

// Config of a coordinator.
type Config struct {
	DataDir       string // JetStream storage of the embedded server
	NATSListen    string // host:port of the embedded server ("" with NATSURL set)
	NATSURL       string // an existing NATS cluster instead of the embedded server
	NATSOptions   []nats.Option
	MaxStoreBytes int64 // JetStream file storage limit of the embedded server
	Replicas      int
	StoreURL      string // shown to clients, without credentials
	Store         Stater // nil skips artifact checks
	Version       string
	Logger        *slog.Logger
	// Ready, if set, is called once the API is serving, with the client URL.
	Ready func(natsURL string)
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := cfg.NATSURL
	opts := append([]nats.Option{nats.Name("fleetboot-coordinator"), nats.MaxReconnects(-1)}, cfg.NATSOptions...)
	if url == "" {
		ns, err := StartEmbedded(EmbeddedConfig{Listen: cfg.NATSListen, StoreDir: filepath.Join(cfg.DataDir, "jetstream"), MaxStore: cfg.MaxStoreBytes})
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
		log.Info("embedded NATS with JetStream started", "url", url, "store", filepath.Join(cfg.DataDir, "jetstream"))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("coordinator: connect to NATS at %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("coordinator: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var checker service.ArtifactChecker
	if cfg.Store != nil {
		checker = storeChecker{cfg.Store}
	}
	svc, err := service.New(sctx, service.Config{JS: js, Replicas: cfg.Replicas, Checker: checker, Logger: log})
	if err != nil {
		return err
	}
	if err := EnsureStreams(sctx, js, cfg.Replicas); err != nil {
		return err
	}
	ms, err := api.Start(nc, api.Config{Service: svc, StoreURL: cfg.StoreURL, Version: cfg.Version, Logger: log})
	if err != nil {
		return err
	}
	defer ms.Stop()

	// Heartbeats: keep each edge's last status for `edge ls`.
	sub, err := nc.Subscribe(proto.SubjectStatusPrefix+".>", func(m *nats.Msg) {
		var st proto.EdgeStatus
		if err := json.Unmarshal(m.Data, &st); err != nil {
			log.Warn("malformed heartbeat", "subject", m.Subject, "err", err)
			return
		}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := svc.RecordStatus(hctx, st); err != nil {
			log.Warn("heartbeat not recorded", "edge", st.Name, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("coordinator: subscribe heartbeats: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("coordinator: flush: %w", err)
	}
	log.Info("coordinator API serving", "subject", proto.APIPrefix+".>", "nats", url)
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	<-ctx.Done()
	log.Info("coordinator stopping")
	return nil
}

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	Listen   string // host:port; port 0 picks a free one
	StoreDir string
	MaxStore int64
}

// StartEmbedded starts nats-server with JetStream in-process and waits until
// it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, portS, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("coordinator: --nats-listen %q: want host:port", cfg.Listen)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("coordinator: --nats-listen %q: bad port", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if cfg.MaxStore == 0 {
		cfg.MaxStore = 10 << 30
	}
	ns, err := server.NewServer(&server.Options{
		ServerName:        "fleetboot",
		Host:              host,
		Port:              port,
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		JetStreamMaxStore: cfg.MaxStore,
		NoSigs:            true,
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator: embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("coordinator: embedded NATS did not start listening on %s (port in use?)", cfg.Listen)
	}
	return ns, nil
}

// EnsureStreams creates the events stream: deduplicated by Nats-Msg-Id so an
// edge resending its buffer after an outage never records an event twice.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas < 1 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       proto.StreamEvents,
		Subjects:   []string{proto.SubjectEventsPrefix + ".>"},
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
		MaxAge:     30 * 24 * time.Hour,
		MaxBytes:   1 << 30,
		Duplicates: 15 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("coordinator: create stream %s: %w", proto.StreamEvents, err)
	}
	return nil
}

type storeChecker struct{ s Stater }

func (c storeChecker) CheckArtifact(ctx context.Context, a proto.Artifact) error {
	size, err := c.s.StatSize(ctx, a.Key)
	if err != nil {
		return fmt.Errorf("not in the artifact store (%s): %w", a.Key, err)
	}
	if size != a.Size {
		return fmt.Errorf("stored object %s has %d bytes, image says %d", a.Key, size, a.Size)
	}
	return nil
}
