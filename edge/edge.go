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
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/fleetboot/fleetboot/edge/cache"
	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/ra"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/edge/statesync"
	"github.com/fleetboot/fleetboot/edge/tftp"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/shared/sealbox"
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
	// Ready, if set, is called by Run once every loop has started, with the
	// addresses every listener is bound to.
	Ready func(Addrs)
	// DHCPSourceRate: DHCP requests per second from unknown MACs per relay
	// or source address (0: dhcp.DefaultSourceRate; negative: no limit).
	DHCPSourceRate float64
	// HTTPSourceRate and TFTPSourceRate: requests per second per client
	// address (0: the servers' defaults, 20 and 10; negative: no limit).
	// An edge behind a reverse proxy sees one address for every machine.
	HTTPSourceRate float64
	TFTPSourceRate float64
	IPv6RA         string // router advertisements on Interface: auto (""), on or off (edge/ra)
	// NoPrefetch: artifacts are fetched on their first request only, not
	// when their image is assigned (they are still kept in the cache
	// longest). For a site whose link to the store is metered or slow.
	NoPrefetch bool
}

// Addrs are the addresses an agent's listeners are bound to ("" when the
// service is off), so a caller that asked for port 0 learns the real ones.
type Addrs struct {
	HTTP string // TCP
	TFTP string // UDP
	DHCP string // the interface DHCP listens on
}

// Agent is an edge: New binds every listener and connects, Run serves.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	base string // the base URL machines use

	st     *state.State
	syncer *statesync.Syncer
	rec    *events.Recorder
	agg    *events.Aggregator // counts what the boot network may repeat at will
	cache  *cache.Cache
	nc     *nats.Conn
	js     jetstream.JetStream
	httpLn net.Listener
	srv    *http.Server
	dhcp   *dhcp.Server // nil when DHCP is off
	tftp   *tftp.Server // nil when TFTP is off
	ra     *ra.Sender   // nil when router advertisements are off
	addrs  Addrs
	xkey   nkeys.KeyPair // curve key BMC passwords are sealed to (power.go)

	// closers release what New opened, in reverse order.
	closers   []func()
	closeOnce gosync.Once

	prefetch      chan struct{} // coalescing trigger of the prefetch loop
	prefetchPause time.Duration // least time between two prefetch rounds
	prefetchRound func()        // tests: called after each round started
	disconnected  chan struct{} // NATS connection lost (the drain stops waiting)
	siteWaitEvery time.Duration // how often DHCP waiting for the site's config says so again
}

// Run starts the edge and serves until ctx ends. Listeners are bound before
// any goroutine starts, so a bad address fails at once.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New checks the configuration, loads the snapshot and binds every listener
// (HTTP, DHCP, TFTP) and the NATS connection. On error everything it opened
// is closed again.
func New(cfg Config) (_ *Agent, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("edge", cfg.Name, "site", cfg.Site)
	if err := proto.ValidSiteName(cfg.Site); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	if err := proto.ValidEdgeName(cfg.Name); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	if cfg.AdvertiseURL != "" {
		// Before anything is created or bound: a refused URL changes nothing.
		if err := CheckAdvertise(cfg.AdvertiseURL); err != nil {
			return nil, err
		}
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	for _, d := range []string{cfg.StateDir, cfg.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
	}

	if cfg.BootDir != "" {
		staged := filepath.Join(cfg.StateDir, "boot")
		n, err := stageBootFiles(cfg.BootDir, staged, cfg.StateDir, cfg.CacheDir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Scripts and artifacts still work; only firmware that needs an
			// iPXE binary first (TFTP, UEFI HTTP) cannot be served.
			log.Warn("no boot files: the boot directory does not exist (install Debian's ipxe package or pass --boot-dir)", "dir", cfg.BootDir)
			cfg.BootDir = ""
		case err != nil:
			return nil, err
		default:
			log.Info("boot files staged", "from", cfg.BootDir, "files", n)
			cfg.BootDir = staged
		}
	}

	a := &Agent{cfg: cfg, log: log, st: state.New(), prefetch: make(chan struct{}, 1), prefetchPause: time.Second,
		disconnected: make(chan struct{}, 1), siteWaitEvery: time.Minute}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.syncer, err = statesync.New(statesync.Config{Site: cfg.Site, State: a.st, SnapshotPath: filepath.Join(cfg.StateDir, "state.json"), Logger: log})
	if err != nil {
		return nil, err
	}
	a.rec, err = events.NewRecorder(events.Config{Dir: filepath.Join(cfg.StateDir, "events"), Site: cfg.Site, Edge: cfg.Name, Logger: log})
	if err != nil {
		return nil, err
	}
	a.onClose(func() { a.rec.Close() })
	// One registry for everything the edge serves, on its /metrics.
	reg := prometheus.NewRegistry()
	if err := a.rec.RegisterMetrics(reg); err != nil {
		return nil, err
	}
	// Refusals and requests for unknown MACs, which anyone on the boot
	// network can send at will, are counted per address and window.
	// Closed before the recorder (closers run in reverse), so the last
	// window's counts are recorded.
	a.agg = events.NewAggregator(events.AggregatorConfig{Sink: a.rec})
	a.onClose(func() { a.agg.Close() })

	store := &lazyStore{cfg: cfg.Store, log: log}
	a.cache, err = cache.New(cache.Config{Dir: cfg.CacheDir, MaxBytes: cfg.CacheSize, Fetcher: store, Logger: log, Events: a.rec, Repeats: a.agg, Registerer: reg})
	if err != nil {
		return nil, err
	}
	a.onClose(func() { a.cache.Close() })

	a.httpLn, err = net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("edge: HTTP listen on %s: %w", cfg.HTTPListen, err)
	}
	a.onClose(func() { a.httpLn.Close() })
	a.addrs.HTTP = a.httpLn.Addr().String()
	// The edge's address on the DHCP segment is what machines reach it at.
	if cfg.Interface != "" && cfg.ServerIP == nil {
		if cfg.ServerIP, err = interfaceIPv4(cfg.Interface); err != nil {
			return nil, err
		}
	}
	a.base = cfg.AdvertiseURL
	if a.base == "" {
		a.base = advertise(cfg.ServerIP, a.httpLn.Addr().(*net.TCPAddr))
	}
	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("fleetboot-edge-" + cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected; serving from local state", "err", err)
			signal(a.disconnected)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("edge: NATS %s: %w", proto.RedactURL(cfg.NATSURL), proto.RedactErr(err))
	}
	a.nc = nc
	a.onClose(nc.Close)
	if a.js, err = jetstream.New(nc); err != nil {
		return nil, fmt.Errorf("edge: jetstream: %w", err)
	}

	store.resolve = func(ctx context.Context) (string, error) {
		var info proto.StoreInfo
		err := natsCallbacks{nc: nc}.callOut(ctx, proto.APIStoreInfo, proto.ListRequest{V: proto.Version}, &info)
		return info.URL, err
	}
	if cfg.Interface != "" {
		a.dhcp, err = dhcp.NewServer(dhcp.Config{
			Interface: cfg.Interface, ServerIP: cfg.ServerIP, HTTPBase: a.base,
			BootFiles: dhcp.BootFiles{EFI64: cfg.EFIBootFile}, Loaders: a.st,
			LeaseFile: filepath.Join(cfg.StateDir, "leases.json"),
			State:     siteMode{State: a.st, mode: cfg.DHCPMode}, Events: a.rec, Logger: log,
			Force: cfg.Force, NoConflictCheck: !cfg.ConflictCheck, SourceRate: cfg.DHCPSourceRate, Metrics: reg,
		})
		if err != nil {
			return nil, err
		}
		a.onClose(func() { a.dhcp.Close() })
		a.addrs.DHCP = cfg.Interface
		if err := a.openRA(); err != nil {
			return nil, err
		}
	}
	var macForIP func(net.IP) string
	var leases httpboot.Leases // callbacks must come from the machine's lease
	if a.dhcp != nil {
		macForIP, leases = a.dhcp.MACForIP, a.dhcp
	}
	key, err := httpboot.LoadCallbackKey(filepath.Join(cfg.StateDir, "callback.key"))
	if err != nil {
		return nil, err
	}
	if a.xkey, err = sealbox.LoadOrCreateKey(filepath.Join(cfg.StateDir, "xkey.seed")); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	boot := httpboot.New(httpboot.Config{
		State: siteMode{State: a.st, mode: cfg.DHCPMode}, BaseURL: a.base, Artifacts: a.cache, BootDir: cfg.BootDir,
		Callbacks: natsCallbacks{nc: nc, site: cfg.Site}, CallbackKey: key, Leases: leases, Events: a.rec, Repeats: a.agg, Logger: log,
	})
	// A configuration the renderer refuses would make every script request
	// a 500: refuse it here, once, instead.
	if err := boot.Check(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", boot)
	// Header, query and body limits and slow-client deadlines; no whole-
	// request WriteTimeout, which would cut ISO downloads (httpboot.Limits).
	a.srv = httpboot.NewServer(mux, httpboot.Limits{Logger: log, Repeats: a.agg, Rate: cfg.HTTPSourceRate, Metrics: reg})
	if a.tftp, err = newTFTP(cfg, boot, a.cache, a.rec, a.agg, macForIP, reg, log); err != nil {
		return nil, err
	}
	if a.tftp != nil {
		a.onClose(func() { a.tftp.Close() })
		addr, _ := a.tftp.Listen()
		a.addrs.TFTP = addr.String()
	}

	// Prefetch what the site's hosts will boot, and keep it in the cache longest.
	a.st.OnChange(func() { signal(a.prefetch) })
	signal(a.prefetch)
	return a, nil
}

// onClose registers f to run at Close.
func (a *Agent) onClose(f func()) { a.closers = append(a.closers, f) }

// Close releases everything New opened. Run does it on return; Close is for
// an agent that will not run. It may be called more than once.
func (a *Agent) Close() {
	a.closeOnce.Do(func() {
		for i := len(a.closers) - 1; i >= 0; i-- {
			a.closers[i]()
		}
	})
}

// Addrs returns the bound addresses.
func (a *Agent) Addrs() Addrs { return a.addrs }

// signal wakes a coalescing trigger: one pending wake-up is enough.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends, then drains (transfers in flight and the event
// buffer get up to Config.Drain) and closes everything New opened. It runs
// once.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	g, ctx := errgroup.WithContext(ctx)
	// The event sender outlives ctx by up to the drain time, so a clean stop
	// sends what the last boots produced instead of leaving it for the next
	// start (it would not be lost either way: the buffer is on disk).
	recCtx, stopRec := context.WithCancel(context.Background())
	defer stopRec()
	g.Go(func() error { return a.syncer.Run(ctx, a.js) })
	g.Go(func() error { return a.rec.Run(recCtx, a.js) })
	g.Go(func() error { a.drainEvents(ctx, stopRec); return nil })
	g.Go(func() error { return a.serveHTTP(ctx) })
	if a.dhcp != nil {
		g.Go(func() error { return a.serveDHCP(ctx) })
	}
	if a.tftp != nil {
		g.Go(func() error { return a.tftp.Serve(ctx) })
	}
	if a.ra != nil {
		g.Go(func() error { return a.ra.Serve(ctx) })
	}
	g.Go(func() error { a.prefetchLoop(ctx); return nil })
	g.Go(func() error { a.heartbeatLoop(ctx); return nil })
	g.Go(func() error { a.powerLoop(ctx); return nil })
	a.log.Info("edge serving", "http", a.httpLn.Addr().String(), "base_url", a.base, "tftp", a.addrs.TFTP, "dhcp_interface", a.cfg.Interface, "nats", proto.RedactURL(a.cfg.NATSURL))
	if a.cfg.Ready != nil {
		a.cfg.Ready(a.addrs)
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
	s, err := l.open(ctx)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, key)
}

// GetRange lets the cache fetch large artifacts in parts (cache.RangeFetcher);
// both store kinds read ranges.
func (l *lazyStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, int64, error) {
	s, err := l.open(ctx)
	if err != nil {
		return nil, 0, err
	}
	rr, ok := s.(artifactstore.RangeReader)
	if !ok {
		return nil, 0, fmt.Errorf("edge: artifact store %T cannot read ranges", s)
	}
	return rr.GetRange(ctx, key, off, n)
}

func (l *lazyStore) open(ctx context.Context) (artifactstore.Store, error) {
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
	return s, nil
}

// natsCallbacks forwards installer callbacks to the coordinator.
type natsCallbacks struct {
	nc   *nats.Conn
	site string // this edge's: a report of an unknown machine is kept at it
}

func (n natsCallbacks) Done(ctx context.Context, mac string) error {
	return n.call(ctx, proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: mac})
}

func (n natsCallbacks) Facts(ctx context.Context, mac string, body []byte) error {
	// The site says where an unknown machine (a discovery report) waits;
	// with --auth the coordinator takes it from the edge's credentials
	// instead of trusting this field.
	return n.call(ctx, proto.APIHostFacts, proto.FactsRequest{V: proto.Version, MAC: mac, Site: n.site, Facts: body})
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
