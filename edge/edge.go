package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fleetboot/fleetboot/edge/cache"
	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/edge/statesync"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
)

// Config of an edge agent.
type Config struct {
	Name          string // edge identity, unique in the fleet
	Site          string
	NATSURL       string
	NATSOptions   []nats.Option
	StateDir      string // snapshot, leases, event buffer (keep it off the cache disk)
	CacheDir      string
	CacheSize     int64
	Store         artifactstore.Config
	Interface     string // DHCP interface; "" disables DHCP
	ServerIP      net.IP // the edge's address on Interface (default: its first IPv4)
	HTTPListen    string
	TFTPListen    string // "" disables TFTP
	AdvertiseURL  string // base URL machines use to reach HTTP; default from ServerIP and HTTPListen
	BootDir       string // iPXE binaries, e.g. /usr/lib/ipxe
	EFIBootFile   string // ipxe.efi or snponly.efi
	Force         bool   // start DHCP in full mode even when another server answers
	ConflictCheck bool   // ping an address before offering it
	DHCPMode      string // overrides the site's mode: full, reservations, proxy or off; "" keeps it
	Heartbeat     time.Duration
	Drain         time.Duration // on stop: how long transfers in flight and the event buffer get (default 30 s)
	Version       string
	Logger        *slog.Logger
	// Ready, if set, is called once every listener is bound.
	Ready func(httpAddr string)
}

// Run starts the edge and serves until ctx ends. Listeners are bound before
// any goroutine starts, so a bad address fails at once.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("edge", cfg.Name, "site", cfg.Site)
	if err := proto.ValidSiteName(cfg.Site); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if err := proto.ValidEdgeName(cfg.Name); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	for _, d := range []string{cfg.StateDir, cfg.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("edge: %w", err)
		}
	}

	if cfg.BootDir != "" {
		staged := filepath.Join(cfg.StateDir, "boot")
		n, err := stageBootFiles(cfg.BootDir, staged)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Scripts and artifacts still work; only firmware that needs an
			// iPXE binary first (TFTP, UEFI HTTP) cannot be served.
			log.Warn("no boot files: the boot directory does not exist (install Debian's ipxe package or pass --boot-dir)", "dir", cfg.BootDir)
			cfg.BootDir = ""
		case err != nil:
			return err
		default:
			log.Info("boot files staged", "from", cfg.BootDir, "files", n)
			cfg.BootDir = staged
		}
	}

	st := state.New()
	syncer, err := statesync.New(statesync.Config{Site: cfg.Site, State: st, SnapshotPath: filepath.Join(cfg.StateDir, "state.json"), Logger: log})
	if err != nil {
		return err
	}
	rec, err := events.NewRecorder(events.Config{Dir: filepath.Join(cfg.StateDir, "events"), Site: cfg.Site, Edge: cfg.Name, Logger: log})
	if err != nil {
		return err
	}
	defer rec.Close()
	// Refusals and requests for unknown MACs, which anyone on the boot
	// network can send at will, are counted per address and window.
	agg := events.NewAggregator(events.AggregatorConfig{Sink: rec})
	defer agg.Close()

	store := &lazyStore{cfg: cfg.Store, log: log}
	c, err := cache.New(cache.Config{Dir: cfg.CacheDir, MaxBytes: cfg.CacheSize, Fetcher: store, Logger: log, Events: rec})
	if err != nil {
		return err
	}
	defer c.Close()

	httpLn, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("edge: HTTP listen on %s: %w", cfg.HTTPListen, err)
	}
	defer httpLn.Close()
	// The edge's address on the DHCP segment is what machines reach it at.
	if cfg.Interface != "" && cfg.ServerIP == nil {
		if cfg.ServerIP, err = interfaceIPv4(cfg.Interface); err != nil {
			return err
		}
	}
	base := cfg.AdvertiseURL
	if base == "" {
		base = advertise(cfg.ServerIP, httpLn.Addr().(*net.TCPAddr))
	}
	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("fleetboot-edge-" + cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected; serving from local state", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return fmt.Errorf("edge: NATS %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("edge: jetstream: %w", err)
	}

	store.resolve = func(ctx context.Context) (string, error) {
		var info proto.StoreInfo
		err := natsCallbacks{nc: nc}.callOut(ctx, proto.APIStoreInfo, proto.ListRequest{V: proto.Version}, &info)
		return info.URL, err
	}
	policy := siteMode{State: st, mode: cfg.DHCPMode}
	var dhcpSrv *dhcp.Server
	if cfg.Interface != "" {
		dhcpSrv, err = dhcp.NewServer(dhcp.Config{
			Interface: cfg.Interface, ServerIP: cfg.ServerIP, HTTPBase: base,
			BootFiles: dhcp.BootFiles{EFI64: cfg.EFIBootFile},
			LeaseFile: filepath.Join(cfg.StateDir, "leases.json"),
			State:     policy, Events: rec, Logger: log, Force: cfg.Force, NoConflictCheck: !cfg.ConflictCheck,
		})
		if err != nil {
			return err
		}
	}
	var macForIP func(net.IP) string
	var leases httpboot.Leases // callbacks must come from the machine's lease
	if dhcpSrv != nil {
		macForIP, leases = dhcpSrv.MACForIP, dhcpSrv
	}
	key, err := httpboot.LoadCallbackKey(filepath.Join(cfg.StateDir, "callback.key"))
	if err != nil {
		return err
	}
	boot := httpboot.New(httpboot.Config{
		State: policy, BaseURL: base, Artifacts: c, BootDir: cfg.BootDir,
		Callbacks: natsCallbacks{nc: nc}, CallbackKey: key, Leases: leases, Events: rec, Repeats: agg, Logger: log,
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", c.Metrics())
	mux.Handle("/", boot)
	// Header, query and body limits and slow-client deadlines; no whole-
	// request WriteTimeout, which would cut ISO downloads (httpboot.Limits).
	srv := httpboot.NewServer(mux, httpboot.Limits{Logger: log, Repeats: agg})
	tftpSrv, err := newTFTP(cfg, boot, rec, agg, macForIP, log)
	if err != nil {
		return err
	}

	// Prefetch what the site's hosts will boot, and keep it in the cache longest.
	prefetch := make(chan struct{}, 1)
	st.OnChange(func() {
		select {
		case prefetch <- struct{}{}:
		default:
		}
	})
	prefetch <- struct{}{}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return syncer.Run(ctx, js) })
	// The event sender outlives ctx by up to the drain time, so a clean stop
	// sends what the last boots produced instead of leaving it for the next
	// start (it would not be lost either way: the buffer is on disk).
	recCtx, stopRec := context.WithCancel(context.Background())
	defer stopRec()
	g.Go(func() error { return rec.Run(recCtx, js) })
	g.Go(func() error {
		<-ctx.Done()
		agg.Close() // the last window's counts go out with the drain
		defer stopRec()
		deadline := time.Now().Add(cfg.Drain)
		for rec.Stats().Buffered > 0 && nc.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := rec.Stats().Buffered; n > 0 {
			log.Warn("stopping with events still buffered; they are sent at the next start", "events", n)
		}
		return nil
	})
	g.Go(func() error {
		if err := srv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("edge: HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		// Stop taking requests; transfers in flight get until the drain
		// deadline to finish.
		sctx, cancel := context.WithTimeout(context.Background(), cfg.Drain)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("HTTP transfers still running at the drain deadline were cut", "drain", cfg.Drain)
			srv.Close()
		}
		return nil
	})
	if dhcpSrv != nil {
		g.Go(func() error { return dhcpSrv.Serve(ctx) })
	}
	if tftpSrv != nil {
		g.Go(func() error { return tftpSrv.Serve(ctx) })
	}
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-prefetch:
			}
			var pins []string
			var arts []proto.Artifact
			for _, name := range st.AssignedImages() {
				if im, ok := st.Image(name); ok {
					for _, a := range im.Artifacts {
						pins = append(pins, a.SHA256)
						arts = append(arts, a)
					}
				}
			}
			c.SetPinned(pins)
			c.Prefetch(ctx, arts)
			select { // coalesce bursts of changes
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	g.Go(func() error {
		t := time.NewTicker(cfg.Heartbeat)
		defer t.Stop()
		for {
			rev, lag := syncer.Revision()
			cs := c.Stats()
			hb := proto.EdgeStatus{
				V: proto.Version, Name: cfg.Name, Site: cfg.Site, Version: cfg.Version,
				CacheBytes: cs.Bytes, HitRatio: cs.HitRatio, Revision: rev, Lag: lag,
				Time: time.Now().UTC(), HTTPAddr: base, IntervalSecs: int(cfg.Heartbeat / time.Second),
			}
			if cfg.Interface != "" {
				hb.Interfaces = []string{cfg.Interface}
			}
			if data, err := json.Marshal(hb); err == nil && nc.IsConnected() {
				_ = nc.Publish(proto.StatusSubject(cfg.Site, cfg.Name), data)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	log.Info("edge serving", "http", httpLn.Addr().String(), "base_url", base, "tftp", cfg.TFTPListen, "dhcp_interface", cfg.Interface, "nats", cfg.NATSURL)
	if cfg.Ready != nil {
		cfg.Ready(httpLn.Addr().String())
	}
	return g.Wait()
}

// advertise derives the base URL machines use from the DHCP address and the
// HTTP port, falling back to the listener's own address.
func advertise(ip net.IP, addr *net.TCPAddr) string {
	host := addr.IP
	if ip != nil {
		host = ip
	}
	if host == nil || host.IsUnspecified() {
		host = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(host.String(), fmt.Sprint(addr.Port))
}

func interfaceIPv4(name string) (net.IP, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("edge: interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("edge: interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("edge: interface %s has no IPv4 address", name)
}

// lazyStore opens the artifact store on first use and again after a failure,
// so an edge starts (and serves its cache) while the store is unreachable.
type lazyStore struct {
	cfg artifactstore.Config
	log *slog.Logger
	// resolve finds the store URL when none was configured: the coordinator's.
	resolve func(ctx context.Context) (string, error)
	mu      gosync.Mutex
	s       artifactstore.Store
}

func (l *lazyStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	l.mu.Lock()
	s := l.s
	l.mu.Unlock()
	if s == nil {
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		cfg := l.cfg
		if cfg.URL == "" && l.resolve != nil {
			u, err := l.resolve(octx)
			if err != nil {
				return nil, fmt.Errorf("edge: no --store given and the coordinator's is unknown: %w", err)
			}
			cfg = artifactstore.ConfigFromEnv(u)
		}
		var err error
		if s, err = artifactstore.Open(octx, cfg); err != nil {
			return nil, err
		}
		l.mu.Lock()
		l.s = s
		l.mu.Unlock()
	}
	return s.Get(ctx, key)
}

// natsCallbacks forwards installer callbacks to the coordinator.
type natsCallbacks struct{ nc *nats.Conn }

func (n natsCallbacks) Done(ctx context.Context, mac string) error {
	return n.call(ctx, proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: mac})
}

func (n natsCallbacks) Facts(ctx context.Context, mac string, body []byte) error {
	return n.call(ctx, proto.APIHostFacts, proto.FactsRequest{V: proto.Version, MAC: mac, Facts: body})
}

func (n natsCallbacks) call(ctx context.Context, endpoint string, req any) error {
	return n.callOut(ctx, endpoint, req, nil)
}

func (n natsCallbacks) callOut(ctx context.Context, endpoint string, req, out any) error {
	data, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := n.nc.RequestWithContext(ctx, proto.APISubject(endpoint), data)
	if err != nil {
		return fmt.Errorf("edge: forward %s to the coordinator: %w", endpoint, err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("edge: %s: malformed reply: %w", endpoint, err)
	}
	if rep.Error != "" {
		return fmt.Errorf("edge: %s: %s", endpoint, rep.Error)
	}
	if out != nil {
		return json.Unmarshal(rep.Data, out)
	}
	return nil
}

// siteMode lets the edge's --dhcp flag override the site's DHCP mode, for an
// edge that must stay quiet (off) or defer to another server (proxy).
type siteMode struct {
	*state.State
	mode string // "" keeps the site's
}

func (p siteMode) Site() (proto.Site, bool) {
	site, ok := p.State.Site()
	if ok && p.mode != "" {
		site.DHCP = p.mode
	}
	return site, ok
}
