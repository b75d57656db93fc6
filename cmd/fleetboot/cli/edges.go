package cli

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/edge"
	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/shared/bytesize"
	"github.com/fleetboot/fleetboot/shared/pprofserve"
)

// edgeFlags are the settings of the edge agent, shared with `dev`.
type edgeFlags struct {
	name, site, iface, serverIP, stateDir, cacheDir, cacheSize, store, dhcp string
	httpListen, tftpListen, advertise, bootDir, efiFile, ipv6RA             string
	force, ping, prefetch                                                   bool
	drain                                                                   time.Duration
	sourceRate, httpRate, tftpRate                                          float64
}

func (f *edgeFlags) register(cmd *cobra.Command, stateDir, cacheDir, httpListen, tftpListen string) {
	host, _ := os.Hostname()
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", strings.ToLower(host), "this edge's name, unique in the fleet")
	fl.StringVar(&f.site, "site", "", "the site this edge serves (required)")
	fl.StringVar(&f.iface, "interface", "", "interface to answer DHCP on (empty: no DHCP)")
	fl.StringVar(&f.serverIP, "server-ip", "", "this edge's IPv4 address on --interface (default: the interface's first)")
	fl.StringVar(&f.stateDir, "state-dir", stateDir, "leases, state snapshot and event buffer (keep it off the cache disk)")
	fl.StringVar(&f.cacheDir, "cache-dir", cacheDir, "artifact cache directory")
	fl.StringVar(&f.cacheSize, "cache-size", "20GiB", "artifact cache bound, e.g. 50GiB")
	if fl.Lookup("store") == nil { // dev mode shares the coordinator's --store
		fl.StringVar(&f.store, "store", "", "artifact store URL (default: the coordinator's, with credentials from FLEETBOOT_S3_*)")
	}
	fl.StringVar(&f.dhcp, "dhcp", "", "override the site's DHCP mode here: full, reservations, proxy or off")
	fl.StringVar(&f.httpListen, "http-listen", httpListen, "HTTP address for scripts, artifacts, callbacks and /metrics")
	fl.StringVar(&f.tftpListen, "tftp-listen", tftpListen, "TFTP address (empty: no TFTP)")
	fl.StringVar(&f.advertise, "advertise", "", "base URL machines reach this edge's HTTP at (default: http://SERVER-IP:PORT)")
	fl.StringVar(&f.bootDir, "boot-dir", "/usr/lib/ipxe", "directory of iPXE binaries (and other boot files, sub-folders included) served over TFTP and at /boot/ over HTTP")
	fl.StringVar(&f.efiFile, "efi-boot-file", "ipxe.efi", "iPXE binary for UEFI x64 clients: ipxe.efi or snponly.efi")
	fl.DurationVar(&f.drain, "drain", 30*time.Second, "on SIGTERM: how long transfers in flight and unsent events get before exit")
	fl.BoolVar(&f.ping, "conflict-check", true, "ping an address before offering it (off: faster, for segments where nothing else takes addresses)")
	fl.Float64Var(&f.sourceRate, "dhcp-source-rate", dhcp.DefaultSourceRate,
		"DHCP requests per second from unknown MACs per relay or source address, after a burst of "+strconv.Itoa(dhcp.DefaultSourceBurst)+" (negative: no limit)")
	fl.Float64Var(&f.httpRate, "http-source-rate", 20, "HTTP requests per second per client address, after a burst of 200; more get 429 (negative: no limit, e.g. behind a reverse proxy)")
	fl.Float64Var(&f.tftpRate, "tftp-source-rate", 10, "TFTP requests per second per client address, after a burst of 100 (negative: no limit)")
	fl.StringVar(&f.ipv6RA, "ipv6-ra", edge.RAAuto, "IPv6 router advertisements on --interface that end iPXE's IPv6 wait without routing (lifetime 0): auto (in full and reservations mode), on or off")
	fl.BoolVar(&f.prefetch, "prefetch", true, "fetch the artifacts of assigned images and the site's loaders before the first machine asks (off: on first request only, for a metered or slow link to the store)")
	fl.BoolVar(&f.force, "force", false, "answer DHCP in full mode even when another DHCP server is on the segment")
}

func (f *edgeFlags) config(a *app, natsURL string) (edge.Config, error) {
	var cfg edge.Config
	if f.site == "" {
		return cfg, fmt.Errorf("--site is required")
	}
	size, err := bytesize.Parse(f.cacheSize)
	if err != nil {
		return cfg, fmt.Errorf("--cache-size: %w", err)
	}
	switch f.dhcp {
	case "", proto.DHCPFull, proto.DHCPReservations, proto.DHCPProxy, proto.DHCPOff:
	default:
		return cfg, fmt.Errorf("invalid --dhcp %q: want full, reservations, proxy or off", f.dhcp)
	}
	var ip net.IP
	if f.serverIP != "" {
		if ip = net.ParseIP(f.serverIP).To4(); ip == nil {
			return cfg, fmt.Errorf("invalid --server-ip %q: want an IPv4 address", f.serverIP)
		}
	}
	if f.advertise != "" {
		if u, err := url.Parse(f.advertise); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("invalid --advertise %q: want http://HOST:PORT", f.advertise)
		}
		// What the edge refuses at start, --check-config refuses too.
		if err := edge.CheckAdvertise(strings.TrimRight(f.advertise, "/")); err != nil {
			return cfg, err
		}
	}
	if f.ipv6RA != edge.RAAuto && f.ipv6RA != edge.RAOn && f.ipv6RA != edge.RAOff {
		return cfg, fmt.Errorf("invalid --ipv6-ra %q: want auto, on or off", f.ipv6RA)
	}
	if f.efiFile != "ipxe.efi" && f.efiFile != "snponly.efi" {
		return cfg, fmt.Errorf("invalid --efi-boot-file %q: want ipxe.efi or snponly.efi", f.efiFile)
	}
	store := artifactstore.Config{}
	if f.store != "" {
		store = a.storeConfig(f.store)
	}
	natsOpts, err := a.edgeNATSOptions()
	if err != nil {
		return cfg, err
	}
	return edge.Config{
		Name: f.name, Site: f.site, NATSURL: natsURL, NATSOptions: natsOpts,
		StateDir: f.stateDir, CacheDir: f.cacheDir, CacheSize: size, Store: store,
		Interface: f.iface, ServerIP: ip, HTTPListen: f.httpListen, TFTPListen: f.tftpListen,
		AdvertiseURL: strings.TrimRight(f.advertise, "/"), BootDir: f.bootDir, EFIBootFile: f.efiFile,
		Force: f.force, ConflictCheck: f.ping, NoPrefetch: !f.prefetch, DHCPSourceRate: f.sourceRate, HTTPSourceRate: f.httpRate, TFTPSourceRate: f.tftpRate, Drain: f.drain, DHCPMode: f.dhcp, IPv6RA: f.ipv6RA, Version: a.version, Logger: a.logger(),
	}, nil
}

func edgeSettings(cfg edge.Config) []setting {
	return []setting{
		{"name", cfg.Name}, {"site", cfg.Site}, {"state-dir", cfg.StateDir}, {"cache-dir", cfg.CacheDir},
		{"cache-size", sizeSetting(cfg.CacheSize)}, {"http-listen", cfg.HTTPListen}, {"tftp-listen", cfg.TFTPListen},
		{"advertise", cfg.AdvertiseURL}, {"interface", cfg.Interface}, {"dhcp", cfg.DHCPMode}, {"ipv6-ra", cfg.IPv6RA},
	}
}

func (a *app) edgeCmd() *cobra.Command {
	var f edgeFlags
	var coord, pprofListen string
	var check bool
	cmd := &cobra.Command{
		Use:   "edge --site NAME [--interface IF] [flags] | edge ls|add|revoke",
		Short: "Run the edge agent of a site, list the edges, enrol or revoke one",
		Long: `Run the edge agent of one site: it follows the site's desired state over NATS
(keeping a snapshot on disk, so it keeps booting machines when the coordinator
is unreachable), answers DHCP on --interface, serves iPXE binaries over TFTP,
renders boot scripts per MAC and serves artifacts over HTTP from its disk
cache, filled from the artifact store. "fleetboot edge ls" lists the edges;
"edge add SITE NAME" writes an edge's credentials, "edge revoke NAME" ends them.
In a secured deployment, run the edge with --creds FILE --tls-ca ca.pem.`,
		Example: `  fleetboot edge --coordinator nats://coord:4222 --site lab --interface eth1 \
      --state-dir /var/lib/fleetboot-edge --cache-dir /srv/fleetboot-cache --cache-size 50GiB
  fleetboot edge --nats tls://coord:4222 --creds lab-edge1.creds --tls-ca ca.pem --site lab --name lab-edge1
  fleetboot edge ls`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			natsURL := a.natsURL
			if coord != "" {
				natsURL = coord
			}
			cfg, err := f.config(a, natsURL)
			if err != nil {
				return err
			}
			if check {
				return a.configOK(edgeSettings(cfg))
			}
			if err := pprofserve.Start(cmd.Context(), pprofListen, a.logger()); err != nil {
				return err
			}
			return edge.Run(cmd.Context(), cfg)
		},
	}
	f.register(cmd, "/var/lib/fleetboot-edge", "/var/cache/fleetboot", ":8080", ":69")
	cmd.Flags().StringVar(&pprofListen, "pprof-listen", "", pprofHelp)
	cmd.Flags().StringVar(&coord, "coordinator", "", "NATS URL of the coordinator (default: --nats)")
	cmd.Flags().BoolVar(&check, "check-config", false, "validate the configuration, then exit")
	cmd.AddCommand(a.edgeLsCmd(), a.edgeAddCmd(), a.revokeCmd(true))
	return cmd
}

func (a *app) edgeLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List edges and their last heartbeat (stale ones flagged)",
		Example: "  fleetboot edge ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			edges, err := request[[]proto.EdgeView](cmd.Context(), a, proto.APIEdgeList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			if out == "json" {
				if edges == nil {
					edges = []proto.EdgeView{}
				}
				return writeJSON(a.stdout, edges)
			}
			var rows [][]string
			for _, e := range edges {
				status := "ok"
				if e.Stale {
					status = "STALE"
				}
				rows = append(rows, []string{e.Name, e.Site, status, time.Since(e.Time).Round(time.Second).String() + " ago",
					e.Version, fmt.Sprint(e.Revision), fmt.Sprint(e.Lag), bytesize.Format(e.CacheBytes), fmt.Sprintf("%.0f%%", e.HitRatio*100), strings.Join(e.Interfaces, ",")})
			}
			return table(a.stdout, []string{"EDGE", "SITE", "STATUS", "LAST SEEN", "VERSION", "REVISION", "LAG", "CACHE", "HIT", "INTERFACES"}, rows)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}
