package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/bootstats"
	"github.com/fleetboot/fleetboot/coordinator/rollout"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
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
	// NATSSync is the embedded server's JetStream sync interval: 0 fsyncs
	// every write (the default: an acknowledged change survives a power
	// loss), a positive value syncs in the background that often.
	NATSSync time.Duration
	Replicas int
	StoreURL string // shown to clients, without credentials
	Store    Stater // nil skips artifact checks
	Version  string
	Logger   *slog.Logger
	// HTTPListen is the web panel's address; "" turns it off. People log
	// in with their identities' web passwords (with Auth) or, without, as
	// admin with the password in DataDir/web-admin.password. Served over
	// TLS when TLS is set.
	HTTPListen string
	// HTTPNames are the other names the panel is reached by; it refuses
	// requests for any other Host (see web.Config).
	HTTPNames []string
	// Ready, if set, is called once the API is serving, with the client URL.
	Ready func(natsURL string)
	// TLS, if set, makes the embedded server require TLS of every client.
	TLS *tls.Config
	// Auth turns on identities (NATS JWTs, see package auth). With the
	// embedded server the keys and the registry live under DataDir/auth.
	// With NATSURL the accounts are those of `fleetboot nats init`
	// (AccountKey, SystemCreds) and the registry is the cluster's
	// identities bucket, shared by every coordinator.
	Auth bool
	// AccountKey (Auth with NATSURL) is the `nats init` directory's
	// fleetboot-signing.nk; operator-signing.nk, fleetboot.jwt,
	// api-signing.nk and api.jwt are read from the same directory.
	AccountKey string
	// SystemCreds (Auth with NATSURL) is the system account's credentials
	// the coordinator pushes account updates with; "" is sys.creds next to
	// AccountKey.
	SystemCreds string
	// AdminCreds is where the first admin's credentials go; "" is
	// DataDir/admin.creds. With NATSURL it is written only when the
	// cluster's registry has no live admin.
	AdminCreds string
	// Metrics receives the coordinator's counters (audit records stored and
	// refused, callback refusals); the web panel serves them on /metrics.
	// Nil: a registry of its own.
	Metrics *prometheus.Registry
	// AuditMaxBytes, if positive, replaces the AUDIT stream's byte limit
	// (proto.AuditMaxBytes); tests fill a small one.
	AuditMaxBytes int64
	// RolloutTick is how often the rollout driver steps and renews its
	// leases (rollout.DefaultTick when 0); tests shorten it.
	RolloutTick time.Duration
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := cfg.NATSURL
	base := append([]nats.Option{nats.Name("fleetboot-coordinator"), nats.MaxReconnects(-1)}, cfg.NATSOptions...)
	opts := base
	var authority *auth.Authority
	var cluster *clusterAuth
	var apiOpts, sysOpts []nats.Option
	switch {
	case cfg.Auth && url != "":
		// Every file is checked before the first connection.
		var err error
		if cluster, err = openClusterAuth(cfg); err != nil {
			return err
		}
		if opts, apiOpts, sysOpts, err = cluster.options(base); err != nil {
			return err
		}
	case cfg.Auth:
		var err error
		if authority, err = auth.Open(filepath.Join(cfg.DataDir, "auth"), log); err != nil {
			return err
		}
		credsFile := adminCredsPath(cfg)
		wrote, err := authority.WriteAdminCreds(credsFile)
		if err != nil {
			return err
		}
		if wrote {
			log.Info("first admin credentials written (keep this file secret)", "file", credsFile)
		}
	}
	connURL := ""
	if url == "" {
		ns, err := StartEmbedded(EmbeddedConfig{Listen: cfg.NATSListen, StoreDir: filepath.Join(cfg.DataDir, "jetstream"), MaxStore: cfg.MaxStoreBytes, TLS: cfg.TLS, Authority: authority, SyncInterval: cfg.NATSSync})
		if err != nil {
			return err
		}
		if cfg.TLS != nil || authority != nil {
			// Our own connections stay inside the process: no TLS to verify
			// against ourselves, and credentials minted here, never on disk.
			base := []nats.Option{nats.Name("fleetboot-coordinator"), nats.MaxReconnects(-1), nats.InProcessServer(ns)}
			opts = base
			// The in-process pipe skips TLS, and a tls:// URL would make
			// the client insist on it.
			connURL = "nats://" + strings.TrimPrefix(strings.TrimPrefix(url, "tls://"), "nats://")
			if authority != nil {
				var o [3]nats.Option
				for i, acc := range []auth.Account{auth.AccountFleet, auth.AccountAPI, auth.AccountSys} {
					if o[i], err = authority.ConnectOption(acc); err != nil {
						return err
					}
				}
				opts = append(slices.Clone(base), o[0])
				apiOpts = append(slices.Clone(base), o[1])
				sysOpts = append(slices.Clone(base), o[2])
			}
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
		log.Info("embedded NATS with JetStream started", "url", url, "store", filepath.Join(cfg.DataDir, "jetstream"))
	}
	if connURL == "" {
		connURL = url
	}
	nc, err := nats.Connect(connURL, opts...)
	if err != nil {
		return connectError("connect to NATS at "+proto.RedactURL(url), cluster != nil, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("coordinator: jetstream: %w", err)
	}
	var checker service.ArtifactChecker
	if cfg.Store != nil {
		checker = storeChecker{cfg.Store}
	}
	// A cluster that is still electing its JetStream leaders refuses to
	// create buckets for a while: keep trying rather than exit.
	var svc *service.Service
	err = retrying(ctx, cfg, log, func() error {
		var err error
		if svc, err = setupState(ctx, js, cfg, checker, log); err != nil || cluster == nil || authority != nil {
			return err
		}
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		authority, err = cluster.open(octx, js, cfg.Replicas, log)
		return err
	})
	if err != nil {
		return err
	}
	if authority != nil {
		defer authority.Close()
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	auditLog := audit.NewLog(js, log)
	if err := auditLog.Register(reg); err != nil {
		return err
	}
	apiMetrics, err := api.NewMetrics(reg)
	if err != nil {
		return err
	}
	rollouts, err := rollout.New(ctx, rollout.Config{JS: js, Hosts: svc, Audit: auditLog, Tick: cfg.RolloutTick, Logger: log})
	if err != nil {
		return err
	}
	apiCfg := api.Config{Service: svc, StoreURL: cfg.StoreURL, Version: cfg.Version, Logger: log, Audit: auditLog, Metrics: apiMetrics, Rollouts: rollouts}
	apiNC := nc
	if authority != nil {
		// The API answers in its own account: requests reach it through the
		// FLEET account's import, which stamps each with the caller.
		if apiNC, err = nats.Connect(connURL, apiOpts...); err != nil {
			return connectError("connect the API", cluster != nil, err)
		}
		defer apiNC.Close()
		sysNC, err := nats.Connect(connURL, sysOpts...)
		if err != nil {
			return connectError("connect the system account", cluster != nil, err)
		}
		defer sysNC.Close()
		if cluster != nil {
			// The registry's bucket may have just been created: its
			// leader may not answer yet.
			if err := retrying(ctx, cfg, log, func() error { return cluster.attach(ctx, authority, sysNC, log) }); err != nil {
				return err
			}
		} else {
			authority.Attach(sysNC)
		}
		apiCfg.Guard = &auth.Guard{
			Account:   authority.FleetAccount(),
			Directory: authority,
			HostSite: func(ctx context.Context, mac string) (string, error) {
				h, err := svc.GetHost(ctx, mac)
				return h.Site, err
			},
			RolloutSites:   rollouts.Sites,
			SelectionSites: rollouts.SelectionSites,
		}
		apiCfg.Enrol = authority
	}
	ms, err := api.Start(apiNC, apiCfg)
	if err != nil {
		return err
	}
	defer ms.Stop()

	// Heartbeats: keep each edge's last status for `edge ls`.
	edgeHistory := web.NewEdgeHistory()
	hb := heartbeats{svc: svc, drop: ratelog.Logger(log, time.Minute), history: edgeHistory}
	sub, err := nc.Subscribe(proto.SubjectStatusPrefix+".>", func(m *nats.Msg) { hb.handle(ctx, m) })
	if err != nil {
		return fmt.Errorf("coordinator: subscribe heartbeats: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("coordinator: flush: %w", err)
	}
	// Boots started, completed and failed by diagnosis, for /metrics.
	boots, err := bootstats.New(reg, bootstats.Options{})
	if err != nil {
		return err
	}
	var bootsDone sync.WaitGroup
	bootsCtx, stopBoots := context.WithCancel(ctx)
	bootsDone.Go(func() { boots.Run(bootsCtx, js, log) })
	// The rollout driver: one per coordinator; leases keep two from
	// driving one rollout.
	bootsDone.Go(func() { rollouts.Run(bootsCtx) })
	defer bootsDone.Wait()
	defer stopBoots() // before the Wait: whatever ends Run ends the tracker and the driver

	panelDone := make(<-chan error)
	if cfg.HTTPListen != "" {
		pc := panelConfig{addr: cfg.HTTPListen, names: cfg.HTTPNames, tls: cfg.TLS, api: api.NewLocal(apiCfg), boots: boots, edges: edgeHistory}
		if authority != nil {
			pc.login = authority
		} else if pc.login, err = openDevLogin(filepath.Join(cfg.DataDir, "web-admin.password"), log); err != nil {
			return err
		}
		if panelDone, err = startPanel(ctx, pc, js, reg, log); err != nil {
			return err
		}
	}
	log.Info("coordinator API serving", "subject", proto.APIPrefix+".>", "nats", proto.RedactURL(url))
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	select {
	case <-ctx.Done():
	case err := <-panelDone:
		return err
	}
	log.Info("coordinator stopping")
	return nil
}

// retrying runs step until it succeeds; on a cluster (and only there: the
// embedded server is ready when it starts) it retries a failed step until
// ctx ends.
func retrying(ctx context.Context, cfg Config, log *slog.Logger, step func() error) error {
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil || ctx.Err() != nil || cfg.NATSURL == "" {
			return err
		}
		log.Warn("JetStream not ready; retrying", "attempt", attempt, "err", proto.RedactErr(err))
		// Jitter: coordinators started together that both timed out
		// must not retry in step. When two ask the cluster to create the
		// same stream at once, one of them may get no answer (it waits
		// out the attempt); in step, they would collide on every bucket.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second + rand.N(3*time.Second)):
		}
	}
}

// setupState creates the KV buckets and the streams.
func setupState(ctx context.Context, js jetstream.JetStream, cfg Config, checker service.ArtifactChecker, log *slog.Logger) (*service.Service, error) {
	// On a cluster a create can hang on a meta leader that is still being
	// elected, or go unanswered when another coordinator creates the same
	// stream at that moment; a short attempt that the caller retries gets
	// past it sooner (what an attempt created stays created).
	limit := 30 * time.Second
	if cfg.NATSURL != "" {
		limit = 5 * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	svc, err := service.New(sctx, service.Config{JS: js, Replicas: cfg.Replicas, Checker: checker, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := EnsureStreams(sctx, js, cfg.Replicas, cfg.AuditMaxBytes); err != nil {
		return nil, err
	}
	return svc, nil
}

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	Listen   string // host:port; port 0 picks a free one
	StoreDir string
	MaxStore int64
	TLS      *tls.Config // require TLS of every client
	// Authority, if set, puts the server in operator (JWT) mode.
	Authority *auth.Authority
	// SyncInterval 0 (the default) fsyncs every JetStream write; a positive
	// value syncs in the background that often (JetStream's own default is
	// two minutes). Benchmarks compare the two.
	SyncInterval time.Duration
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
	sopts := &server.Options{
		ServerName:        "fleetboot",
		Host:              host,
		Port:              port,
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		JetStreamMaxStore: cfg.MaxStore,
		NoSigs:            true,
		// A single node has no replica to recover an acknowledged write
		// from: fsync each one (the state is small and writes are few).
		SyncAlways: cfg.SyncInterval == 0,
	}
	if cfg.SyncInterval > 0 {
		sopts.SyncInterval = cfg.SyncInterval
	}
	if cfg.TLS != nil {
		sopts.TLSConfig = cfg.TLS
		sopts.TLSTimeout = 5
	}
	if cfg.Authority != nil {
		if err := cfg.Authority.Configure(sopts); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(sopts)
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

// EnsureStreams creates (or updates to the contract's configuration) the
// EVENTS and AUDIT streams; auditMaxBytes > 0 overrides the audit stream's
// byte limit (tests fill a small one).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int, auditMaxBytes int64) error {
	au := proto.AuditStreamConfig(replicas)
	if auditMaxBytes > 0 {
		au.MaxBytes = auditMaxBytes
	}
	for _, sc := range []jetstream.StreamConfig{proto.EventsStreamConfig(replicas), au} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("coordinator: create stream %s: %w", sc.Name, err)
		}
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
