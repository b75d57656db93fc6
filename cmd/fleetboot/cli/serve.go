package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"golang.org/x/sync/errgroup"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/edge"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/shared/bytesize"
	"github.com/fleetboot/fleetboot/shared/pprofserve"
)

func (a *app) logger() *slog.Logger {
	level := slog.LevelInfo
	if a.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
}

// coordinatorFlags are the settings of `fleetboot coordinator`, shared with `dev`.
type coordinatorFlags struct {
	data, natsListen, natsURL, store, maxStore, natsSync, httpListen string
	panelFlag                                                        string
	httpNames                                                        []string
	replicas                                                         int
	checkConfig, insecure                                            bool
	panelTLS                                                         bool // --tls-cert given: the panel is served over HTTPS
	// auth is --auth (coordinator only): with it NATS checks credentials.
	auth bool
}

// register adds the flags; panelFlag names the web panel's address flag
// (dev mode leaves --http-listen to its edge).
func (f *coordinatorFlags) register(cmd *cobra.Command, defaultData, defaultStore, panelFlag string) {
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", defaultData, "data directory (JetStream storage of the embedded NATS server)")
	fl.StringVar(&f.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server")
	f.panelFlag = panelFlag
	fl.StringVar(&f.httpListen, panelFlag, "127.0.0.1:8081", "address of the web panel (\"\" turns it off); beyond loopback it needs --tls-cert (or --insecure)")
	names := strings.TrimSuffix(panelFlag, "-listen") + "-name"
	fl.StringArrayVar(&f.httpNames, names, nil, "a DNS name the web panel is reached by (repeatable; comma-separated in FLEETBOOT_"+
		strings.ToUpper(strings.ReplaceAll(names, "-", "_"))+"); it refuses requests for other names")
	markEnvList(fl, names)
	fl.BoolVar(&f.insecure, "insecure", false, "run unprotected beyond loopback: the web panel (it has no login) on another address and, without --auth, NATS on another address or an existing cluster (--nats-url); warns at every start")
	fl.StringVar(&f.natsURL, "nats-url", "", "use this existing NATS cluster (with JetStream) instead of the embedded server")
	fl.StringVar(&f.store, "store", defaultStore, "artifact store: s3://BUCKET?endpoint=HOST:PORT&region=R or dir:///PATH")
	fl.StringVar(&f.maxStore, "max-store", "10GiB", "JetStream disk limit of the embedded server")
	fl.StringVar(&f.natsSync, "nats-sync", "always", "how the embedded NATS server syncs JetStream to disk: always (fsync each write; an acknowledged change survives a power loss) or an interval such as 1m (several times the write rate; a power loss can lose the last interval's writes)")
	fl.IntVar(&f.replicas, "replicas", 1, "replicas of KV buckets and streams (3 on a NATS cluster)")
	fl.BoolVar(&f.checkConfig, "check-config", false, "validate the configuration and the store, then exit")
}

// config validates the flags and opens the store.
func (f *coordinatorFlags) config(ctx context.Context, a *app) (coordinator.Config, error) {
	var cfg coordinator.Config
	maxStore, err := bytesize.Parse(f.maxStore)
	if err != nil {
		return cfg, fmt.Errorf("--max-store: %w", err)
	}
	sync, err := parseSync(f.natsSync)
	if err != nil {
		return cfg, err
	}
	if f.natsURL != "" && sync != 0 {
		return cfg, fmt.Errorf("--nats-sync applies to the embedded server; with --nats-url set sync_interval in that cluster's configuration")
	}
	if err := f.checkPanel(a); err != nil {
		return cfg, err
	}
	if err := f.checkOpenDoor(a); err != nil {
		return cfg, err
	}
	if f.replicas < 1 || f.replicas > 5 {
		return cfg, fmt.Errorf("--replicas %d: want 1 to 5", f.replicas)
	}
	if f.natsURL == "" && f.data == "" {
		return cfg, fmt.Errorf("--data is required with the embedded NATS server")
	}
	if f.store == "" {
		return cfg, fmt.Errorf("--store is required")
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := artifactstore.Open(sctx, a.storeConfig(f.store))
	if err != nil {
		return cfg, err
	}
	return coordinator.Config{
		DataDir:       f.data,
		NATSListen:    f.natsListen,
		HTTPListen:    f.httpListen,
		HTTPNames:     f.httpNames,
		NATSURL:       f.natsURL,
		NATSOptions:   a.natsOptions("fleetboot-coordinator"),
		MaxStoreBytes: maxStore,
		NATSSync:      sync,
		Replicas:      f.replicas,
		StoreURL:      artifactstore.Redact(f.store),
		Store:         stater{st},
		Version:       a.version,
		Logger:        a.logger(),
	}, nil
}

// checkPanel refuses to serve the panel's logins in clear beyond loopback
// (no TLS), unless the operator says --insecure; then it warns.
func (f *coordinatorFlags) checkPanel(a *app) error {
	// The panel compares names with the request's Host, port dropped: a
	// name given with a port or a scheme would never match.
	for _, n := range f.httpNames {
		h := strings.TrimSuffix(n, ".")
		if net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")) != nil {
			continue
		}
		if h == "" || proto.ValidHostname(h) != nil {
			return fmt.Errorf("invalid --%s-name %q: want a DNS name or an IP address, without a port", strings.TrimSuffix(f.panelFlag, "-listen"), n)
		}
	}
	if f.httpListen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(f.httpListen); err != nil {
		return fmt.Errorf("invalid --%s %q: want HOST:PORT, e.g. 127.0.0.1:8081", f.panelFlag, f.httpListen)
	}
	if web.Loopback(f.httpListen) {
		return nil
	}
	if f.panelTLS {
		return nil
	}
	if !f.insecure {
		return fmt.Errorf("--%s %s: this address is not loopback and the web panel would serve logins without TLS; give --tls-cert/--tls-key, keep it on 127.0.0.1 (reach it over an SSH tunnel), or add --insecure to send passwords and session cookies in clear", f.panelFlag, f.httpListen)
	}
	a.logger().Warn("INSECURE: the web panel listens beyond loopback without TLS: passwords and session cookies cross the network in clear", "addr", f.httpListen)
	return nil
}

// clusterAuthFlags are --auth's files on a NATS cluster (see
// clusterAuthConfig).
type clusterAuthFlags struct{ accountKey, systemCreds, adminCreds string }

func (c *clusterAuthFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&c.accountKey, "account-key", "", "with --auth --nats-url: the `FILE` DIR/fleetboot-signing.nk made by \"fleetboot nats init DIR\" (0600); the other keys it needs are read from DIR")
	fl.StringVar(&c.systemCreds, "system-creds", "", "with --auth --nats-url: the system account's credentials `FILE` (default: sys.creds next to --account-key)")
	fl.StringVar(&c.adminCreds, "admin-creds", "", "with --auth: the `FILE` the first admin's credentials go to (default DATA/admin.creds); on a cluster, written only if it has no live admin")
}

// apply checks the flags and puts them in cfg (after secureConfig set
// cfg.Auth), then checks the files before any connection.
func (c *clusterAuthFlags) apply(cfg *coordinator.Config, creds string) error {
	if !cfg.Auth {
		for _, f := range []struct{ name, v string }{{"account-key", c.accountKey}, {"system-creds", c.systemCreds}, {"admin-creds", c.adminCreds}} {
			if f.v != "" {
				return fmt.Errorf("--%s needs --auth", f.name)
			}
		}
		return nil
	}
	cfg.AdminCreds = c.adminCreds
	if cfg.NATSURL == "" {
		if c.accountKey != "" || c.systemCreds != "" {
			return fmt.Errorf("--account-key and --system-creds are for a NATS cluster (--nats-url); the embedded server keeps its keys under --data")
		}
		return nil
	}
	if c.accountKey == "" {
		return fmt.Errorf("--auth with --nats-url needs --account-key DIR/fleetboot-signing.nk (run `fleetboot nats init DIR` and include DIR/resolver.conf in every node's config)")
	}
	if cfg.DataDir == "" && c.adminCreds == "" {
		return fmt.Errorf("--auth with --nats-url needs --admin-creds FILE (or --data): where the first admin's credentials go")
	}
	if creds != "" {
		return fmt.Errorf("--creds is for clients and edges: with --auth --nats-url the coordinator signs its own users with --account-key")
	}
	cfg.AccountKey, cfg.SystemCreds = c.accountKey, c.systemCreds
	if err := coordinator.CheckAuthFiles(*cfg); err != nil {
		return err
	}
	if cfg.Logger != nil && !allTLS(cfg.NATSURL) {
		cfg.Logger.Warn("--auth on a cluster reached without TLS (not tls://): credentials are checked, but traffic crosses the network in clear")
	}
	return nil
}

// allTLS tells whether every URL of a comma-separated list is tls://.
func allTLS(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		if !strings.HasPrefix(strings.TrimSpace(u), "tls://") {
			return false
		}
	}
	return true
}

// checkOpenDoor refuses to run the API and the desired state where anyone
// who reaches NATS may change them, unless the operator says --insecure;
// then it warns at every start. Without --auth nothing checks who calls
// host.set or writes a KV bucket: on the embedded server that is whoever
// reaches --nats-listen, on an existing cluster every client of it (each
// edge of each branch office included), whatever its own user/password.
func (f *coordinatorFlags) checkOpenDoor(a *app) error {
	if f.auth {
		return nil
	}
	var what string
	switch {
	case f.natsURL != "":
		what = "--nats-url without --auth: every client of that cluster (each edge included) could change every site, host and image, or write the KV buckets directly"
	case !web.Loopback(f.natsListen):
		what = fmt.Sprintf("--nats-listen %s without --auth: whoever reaches this address could change every site, host and image", f.natsListen)
	default:
		return nil
	}
	if !f.insecure {
		return fmt.Errorf("%s; add --auth (see fleetboot nats init and edge add), keep NATS on 127.0.0.1, or add --insecure to run unprotected", what)
	}
	a.logger().Warn("INSECURE: " + what)
	return nil
}

func (a *app) coordinatorCmd() *cobra.Command {
	var f coordinatorFlags
	var tlsCert, tlsKey, pprofListen string
	var cf clusterAuthFlags
	cmd := &cobra.Command{
		Use:   "coordinator [flags]",
		Short: "Run the coordinator: desired state on NATS JetStream and the admin API",
		Long: `Run the coordinator. It embeds a NATS server with JetStream (storage under
--data), or uses an existing NATS cluster given with --nats-url, creates the KV
buckets (sites, images, hosts) and serves the admin API that the CLI and the
web panel use. It is the only writer of the desired state and validates every
change.

Secured: --tls-cert and --tls-key (and the global --tls-ca, checked against
the certificate) make the embedded NATS server require TLS of every client;
--auth turns on credentials enforced by the NATS server (see "fleetboot edge
add" and "fleetboot user add") and writes the first admin's to DATA/admin.creds
(or --admin-creds).

On a NATS cluster (--nats-url) in operator mode, prepared with "fleetboot nats
init DIR" (every node's config includes DIR/resolver.conf): give --auth and
--account-key DIR/fleetboot-signing.nk; the coordinator reads the other keys
it needs from DIR and pushes revocations through the system account
(--system-creds, default DIR/sys.creds). Every coordinator of the cluster
shares DIR's keys and the registry of identities (a KV bucket), so each knows
every edge and user the others enrolled. The first admin's credentials are
written to --admin-creds (default DATA/admin.creds) only if the cluster has no
live admin yet: of coordinators started together, exactly one writes them.
Give tls:// URLs and the cluster's CA with the global --tls-ca.`,
		Example: `  fleetboot coordinator --data /var/lib/fleetboot --store dir:///var/lib/fleetboot/artifacts
  fleetboot pki init /etc/fleetboot/pki --host coord.example.net
  fleetboot coordinator --data /var/lib/fleetboot --store dir:///srv/artifacts --nats-listen 0.0.0.0:4222 \
    --tls-cert /etc/fleetboot/pki/server.pem --tls-key /etc/fleetboot/pki/server-key.pem \
    --tls-ca /etc/fleetboot/pki/ca.pem --auth
  FLEETBOOT_S3_ACCESS_KEY=… FLEETBOOT_S3_SECRET_KEY=… \
    fleetboot coordinator --data /var/lib/fleetboot --store 's3://boot?endpoint=minio:9000'
  fleetboot nats init /etc/fleetboot/nats --resolver-dir /var/lib/nats/fleetboot-jwt
  fleetboot coordinator --data /var/lib/fleetboot --store 's3://boot?endpoint=minio:9000' \
    --nats-url tls://nats1:4222,tls://nats2:4222,tls://nats3:4222 --tls-ca /etc/fleetboot/pki/ca.pem \
    --replicas 3 --auth --account-key /etc/fleetboot/nats/fleetboot-signing.nk`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.panelTLS = tlsCert != ""
			cfg, err := f.config(cmd.Context(), a)
			if err != nil {
				return err
			}
			if err := secureConfig(&cfg, tlsCert, tlsKey, a.tlsCA, f.auth); err != nil {
				return err
			}
			if err := cf.apply(&cfg, a.creds); err != nil {
				return err
			}
			if f.checkConfig {
				return a.configOK(f.settings(cfg))
			}
			if err := pprofserve.Start(cmd.Context(), pprofListen, a.logger()); err != nil {
				return err
			}
			return coordinator.Run(cmd.Context(), cfg)
		},
	}
	f.register(cmd, "", "", "http-listen")
	cmd.Flags().StringVar(&pprofListen, "pprof-listen", "", pprofHelp)
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "server certificate (PEM): the embedded NATS server then requires TLS, and the web panel serves HTTPS with it")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "server certificate's private key (PEM)")
	cmd.Flags().BoolVar(&f.auth, "auth", false, "require credentials (NATS JWTs); the first admin's go to DATA/admin.creds; with --nats-url give --account-key")
	cf.register(cmd)
	return cmd
}

func (a *app) devCmd() *cobra.Command {
	var f coordinatorFlags
	var ef edgeFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "All-in-one on this machine: coordinator, embedded NATS, local artifact directory and an edge",
		Long: `Run everything on one machine with embedded defaults: NATS with JetStream and
the coordinator on 127.0.0.1:4222, artifacts in ./fleetboot-data/artifacts, and an
edge serving HTTP on 127.0.0.1:8080 and TFTP on 127.0.0.1:6969 (DHCP stays off
unless --interface is given).`,
		Example: "  fleetboot dev\n  fleetboot dev --data /tmp/fb",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("store") {
				abs, err := filepath.Abs(filepath.Join(f.data, "artifacts"))
				if err != nil {
					return err
				}
				f.store = "dir://" + abs
			}
			if err := os.MkdirAll(f.data, 0o755); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			cfg, err := f.config(cmd.Context(), a)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("state-dir") {
				ef.stateDir = filepath.Join(f.data, "edge")
			}
			if !cmd.Flags().Changed("cache-dir") {
				ef.cacheDir = filepath.Join(f.data, "cache")
			}
			ecfg, err := ef.config(a, "nats://"+f.natsListen)
			if err != nil {
				return err
			}
			ecfg.Store = a.storeConfig(f.store)
			if f.checkConfig {
				return a.configOK(append(f.settings(cfg), edgeSettings(ecfg)...))
			}
			return a.runDev(cmd.Context(), cfg, ecfg)
		},
	}
	f.register(cmd, "fleetboot-data", "", "panel-listen")
	ef.register(cmd, "", "", "127.0.0.1:8080", "127.0.0.1:6969")
	cmd.Flags().Lookup("site").DefValue = "lab"
	_ = cmd.Flags().Set("site", "lab")
	cmd.Flags().Lookup("name").DefValue = "dev"
	_ = cmd.Flags().Set("name", "dev")
	return cmd
}

func (a *app) runDev(ctx context.Context, cfg coordinator.Config, ecfg edge.Config) error {
	g, ctx := errgroup.WithContext(ctx)
	coordReady := make(chan string, 1)
	cfg.Ready = func(url string) { coordReady <- url }
	g.Go(func() error { return coordinator.Run(ctx, cfg) })
	var url string
	select {
	case url = <-coordReady:
	case <-ctx.Done():
		return g.Wait()
	}
	ecfg.NATSURL = url
	edgeReady := make(chan edge.Addrs, 1)
	ecfg.Ready = func(addrs edge.Addrs) { edgeReady <- addrs }
	g.Go(func() error { return edge.Run(ctx, ecfg) })
	select {
	case <-edgeReady:
	case <-ctx.Done():
		return g.Wait()
	}
	fmt.Fprintf(a.stdout, `fleetboot dev is running, without TLS or credentials: for a lab only
  NATS + coordinator API: %s
  web panel:              %s
  artifact store:         %s
  data:                   %s
  edge %q of site %q: HTTP %s/boot.ipxe, TFTP %s, DHCP %s

Try, from another shell:
  fleetboot site add lab --subnet 10.0.0.0/24 --range 10.0.0.100-10.0.0.200
  fleetboot image add demo --kernel /boot/vmlinuz-$(uname -r) --initrd /boot/initrd.img-$(uname -r) --cmdline 'console=ttyS0'
  fleetboot host set 52:54:00:12:34:56 --image demo --site lab && curl 'http://%s/boot.ipxe?mac=52:54:00:12:34:56'
`, proto.RedactURL(url), panelURL(cfg.HTTPListen, cfg.DataDir), cfg.StoreURL, cfg.DataDir, ecfg.Name, ecfg.Site, "http://"+ecfg.HTTPListen, ecfg.TFTPListen, dhcpNote(ecfg.Interface), ecfg.HTTPListen)
	return g.Wait()
}

func panelURL(addr, data string) string {
	if addr == "" {
		return "off"
	}
	return "http://" + addr + "/ (log in as admin, password in " + filepath.Join(data, "web-admin.password") + ")"
}

func dhcpNote(iface string) string {
	if iface == "" {
		return "off (no --interface)"
	}
	return "on " + iface
}

// setting is one line of --check-config's report.
type setting struct{ name, value string }

// configOK is what --check-config prints: the settings as they will be used
// once flags, FLEETBOOT_* variables and the config file are combined, sizes
// in bytes, so an operator sees which source won and what a size became.
func (a *app) configOK(settings []setting) error {
	fmt.Fprintln(a.stdout, "configuration OK")
	for _, s := range settings {
		if s.value == "" {
			s.value = "-"
		}
		fmt.Fprintf(a.stdout, "  %s: %s\n", s.name, s.value)
	}
	return nil
}

const pprofHelp = "serve Go's runtime profiles (/debug/pprof/: heap, CPU, goroutines) on this loopback address, for diagnosing memory or CPU use"

// parseSync reads --nats-sync: "always" or a positive interval.
func parseSync(s string) (time.Duration, error) {
	if s == "always" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--nats-sync %q: want always or a positive interval such as 1m", s)
	}
	return d, nil
}

func syncSetting(d time.Duration) string {
	if d == 0 {
		return "always"
	}
	return d.String()
}

func sizeSetting(n int64) string { return fmt.Sprintf("%d (%s)", n, bytesize.Format(n)) }

// settings names each setting after its flag (dev's panel flags differ).
func (f *coordinatorFlags) settings(cfg coordinator.Config) []setting {
	name := strings.TrimSuffix(f.panelFlag, "-listen") + "-name"
	return []setting{
		{"data", cfg.DataDir}, {"nats-listen", cfg.NATSListen}, {f.panelFlag, cfg.HTTPListen}, {name, strings.Join(cfg.HTTPNames, ",")},
		{"store", cfg.StoreURL}, {"max-store", sizeSetting(cfg.MaxStoreBytes)}, {"nats-sync", syncSetting(cfg.NATSSync)}, {"replicas", fmt.Sprint(cfg.Replicas)},
	}
}

// storeConfig is artifactstore.ConfigFromEnv reading this invocation's
// environment instead of the process's.
func (a *app) storeConfig(url string) artifactstore.Config {
	get := func(k string) string { v, _ := a.getenv(k); return v }
	cfg := artifactstore.Config{URL: url, AccessKey: get("FLEETBOOT_S3_ACCESS_KEY"), SecretKey: get("FLEETBOOT_S3_SECRET_KEY")}
	if cfg.AccessKey == "" && cfg.SecretKey == "" {
		cfg.AccessKey, cfg.SecretKey = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
	}
	return cfg
}

// stater adapts the artifact store to what the coordinator checks.
type stater struct{ s artifactstore.Store }

func (s stater) StatSize(ctx context.Context, key string) (int64, error) {
	info, err := s.s.Stat(ctx, key)
	return info.Size, err
}
