package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/pki"
)

func (a *app) pkiCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "pki", Short: "Make the certificates for TLS on NATS"})
	var hosts []string
	initCmd := &cobra.Command{
		Use:   "init DIR [--host NAME...]",
		Short: "Create a private CA and a server certificate in DIR",
		Long: `Create DIR/ca.pem (a private certificate authority), DIR/server.pem and
DIR/server-key.pem (0600), a server certificate for the names given with
--host (default localhost and 127.0.0.1). Give the coordinator --tls-cert,
--tls-key and --tls-ca, and every client and edge --tls-ca DIR/ca.pem.
Existing files are never overwritten.`,
		Example: `  fleetboot pki init /etc/fleetboot/pki --host coord.example.net --host 10.0.0.5`,
		Args:    exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := pki.Init(args[0], hosts, time.Now())
			if err != nil {
				return err
			}
			if len(hosts) == 0 {
				hosts = pki.DefaultHosts
			}
			fmt.Fprintf(a.stdout, "CA:          %s\ncertificate: %s (for %s)\nkey:         %s (keep it secret)\n",
				p.CA, p.Cert, strings.Join(hosts, ", "), p.Key)
			return nil
		},
	}
	initCmd.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address the server certificate is for (repeatable)")
	cmd.AddCommand(initCmd)
	return cmd
}

func (a *app) userCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "user", Short: "Manage people's credentials: admins, site admins and viewers"})
	var role, site, out string
	var webLogin bool
	add := &cobra.Command{
		Use:   "add NAME --role admin|viewer|site-admin [--site SITE] [--out FILE] [--web]",
		Short: "Enrol a person and write their NATS credentials file",
		Long: `Enrol a person with one of three roles:
  admin       may change the whole desired state and enrol edges and people;
  site-admin  (with --site SITE) may create and change SITE's configuration
              and hosts, sees only SITE (its hosts, edges, events) and the
              images, and may not remove SITE, move a host to or from another
              site, change images or enrol anyone;
  viewer      may list, show and watch everything, and change nothing.
Every change a role may not make is refused (and audited). SITE need not
exist yet: its site admin may create it. The key pair is made here; only its
public key goes to the coordinator, which signs it. The credentials file
(default ./NAME.creds, 0600) is a standard NATS .creds file: give it with
--creds or FLEETBOOT_CREDS.
With --web the person may also log in to the web panel with the same role:
the password is read from FLEETBOOT_WEB_PASSWORD, or else as the first line
of standard input (at least 12 characters); only its bcrypt hash is sent.`,
		Example: `  fleetboot user add alice --role admin --out alice.creds
  FLEETBOOT_WEB_PASSWORD=… fleetboot user add dana --role admin --web
  fleetboot user add bob --role site-admin --site branch1
  fleetboot user add carol --role viewer`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := userEnrolRequest(args[0], role, site)
			if err != nil {
				return err
			}
			if webLogin {
				if req.WebPassword, err = a.webPassword(); err != nil {
					return err
				}
			}
			id, path, err := a.enrol(cmd, auth.APIUserAdd, req, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "enrolled %s; credentials in %s (keep them secret)\n", id, path)
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", "", "admin, viewer or site-admin (required)")
	add.Flags().StringVar(&site, "site", "", "the site a site-admin manages (only with --role site-admin)")
	add.Flags().StringVar(&out, "out", "", "credentials file to write (default ./NAME.creds; never overwritten)")
	add.Flags().BoolVar(&webLogin, "web", false, "also let the person log in to the web panel (password from FLEETBOOT_WEB_PASSWORD or the first line of stdin)")
	cmd.AddCommand(add, a.revokeCmd(false))
	return cmd
}

// userEnrolRequest checks `user add`'s name, role and site before anything
// is made or sent.
func userEnrolRequest(name, role, site string) (auth.EnrolRequest, error) {
	req := auth.EnrolRequest{Name: name, Role: auth.Role(role), Site: site}
	switch req.Role {
	case auth.RoleAdmin, auth.RoleViewer:
		if site != "" {
			return req, fmt.Errorf("--site applies only to --role site-admin (an admin or a viewer has no site)")
		}
		return req, proto.ValidName("user", name)
	case auth.RoleSiteAdmin:
		if site == "" {
			return req, fmt.Errorf("--role site-admin needs --site SITE: the site this admin manages")
		}
		return req, auth.ValidSiteAdmin(site, name)
	}
	return req, fmt.Errorf("invalid --role %q: want admin, viewer or site-admin", role)
}

func (a *app) edgeAddCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "add SITE NAME [--out FILE]",
		Short: "Enrol an edge of a site and write its NATS credentials file",
		Long: `Enrol an edge: its credentials let it read only its own site's hosts and
configuration and the images, publish only its own heartbeats and events, and
call only the API requests an edge makes; the NATS server enforces it. The
credentials file (default ./NAME.creds, 0600) goes to the edge box: run it
with --creds FILE --tls-ca ca.pem.`,
		Example: `  fleetboot edge add lab lab-edge1 --out lab-edge1.creds`,
		Args:    exactArgs(2, "SITE NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidEdge(args[0], args[1]); err != nil {
				return err
			}
			id, path, err := a.enrol(cmd, auth.APIEdgeAdd, auth.EnrolRequest{Name: args[1], Site: args[0], Role: auth.RoleEdge}, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "enrolled %s; credentials in %s (keep them secret)\n", id, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "credentials file to write (default ./NAME.creds; never overwritten)")
	return cmd
}

// revokeCmd is `edge revoke NAME` or `user revoke NAME`.
func (a *app) revokeCmd(edge bool) *cobra.Command {
	kind, endpoint := "user", auth.APIUserRevoke
	if edge {
		kind, endpoint = "edge", auth.APIEdgeRevoke
	}
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "End an " + kind + "'s credentials: it is disconnected and refused from then on",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := request[[]auth.Identity](cmd.Context(), a, endpoint, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(a.stdout, "revoked %s (key %s)\n", id, id.PublicKey)
			}
			return nil
		},
	}
}

// enrol makes a key pair, has the coordinator sign its public key and
// writes the credentials file. The file is created before the request so a
// bad path fails before anything is enrolled.
func (a *app) enrol(cmd *cobra.Command, endpoint string, req auth.EnrolRequest, out string) (auth.Identity, string, error) {
	if out == "" {
		out = req.Name + ".creds"
	}
	if _, err := os.Stat(out); err == nil {
		return auth.Identity{}, "", fmt.Errorf("%s exists; choose another --out (credentials are never overwritten)", out)
	}
	if dir := filepath.Dir(out); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return auth.Identity{}, "", fmt.Errorf("--out %s: directory %s does not exist", out, dir)
		}
	}
	pub, seed, err := auth.NewUserKey()
	if err != nil {
		return auth.Identity{}, "", err
	}
	c, err := a.connect()
	if err != nil {
		return auth.Identity{}, "", err
	}
	defer c.Close()
	req.V, req.PublicKey = proto.Version, pub
	var rep auth.EnrolReply
	if err := c.call(cmd.Context(), endpoint, req, &rep); err != nil {
		return auth.Identity{}, "", err
	}
	if err := auth.WriteCreds(out, rep.JWT, seed); err != nil {
		return auth.Identity{}, "", fmt.Errorf("%s is enrolled but its credentials could not be written (revoke it and retry): %w", rep.Identity, err)
	}
	return rep.Identity, out, nil
}

func (a *app) auditCmd() *cobra.Command {
	var since, out string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--since 24h] [-o json]",
		Short: "Show who changed what, and which changes were refused",
		Long: `Print the audit log: every change request the coordinator accepted or
refused, with the identity of the credential that sent it, the request, the
time and the outcome. Refused reads are listed too.`,
		Example: "  fleetboot audit --since 1h\n  fleetboot audit --since 168h -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			d, err := time.ParseDuration(since)
			if err != nil || d <= 0 {
				return fmt.Errorf("invalid --since %q: want a duration such as 24h", since)
			}
			if limit < 1 {
				return fmt.Errorf("invalid --limit %d: want at least 1", limit)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			js, err := jetstream.New(c.nc)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			recs, err := audit.Read(ctx, js, time.Now().Add(-d), limit)
			if err != nil {
				return exitError{code: 3, err: fmt.Errorf("read the audit log at %s: %v", c.url, err)}
			}
			if out == "json" {
				if recs == nil {
					recs = []audit.Record{}
				}
				return writeJSON(a.stdout, recs)
			}
			var rows [][]string
			for _, r := range recs {
				who := r.Who
				if r.Role != "" {
					who += " (" + r.Role + ")"
				}
				rows = append(rows, []string{r.Time.Local().Format(time.DateTime), who, r.Action, r.Outcome, oneLine(r.Error), string(r.Request)})
			}
			return table(a.stdout, []string{"TIME", "WHO", "ACTION", "OUTCOME", "ERROR", "REQUEST"}, rows)
		},
	}
	cmd.Flags().StringVar(&since, "since", "24h", "how far back")
	cmd.Flags().IntVar(&limit, "limit", 10000, "at most this many records (the newest)")
	outputFlag(cmd, &out)
	return cmd
}

// edgeNATSOptions: an edge with credentials uses the private inbox prefix
// its permissions allow (see auth.EdgeInboxPrefix).
func (a *app) edgeNATSOptions() ([]nats.Option, error) {
	opts := a.natsOptions("fleetboot-edge")
	if a.creds == "" {
		return opts, nil
	}
	p, err := auth.InboxPrefix(a.creds)
	if err != nil {
		return nil, fmt.Errorf("--creds: %w", err)
	}
	if p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts, nil
}

// confinedSite is the one site the credentials may read events of, "" when
// any (or when the file is unreadable: connecting reports that).
func (a *app) confinedSite() string {
	if a.creds == "" {
		return ""
	}
	site, err := auth.CredsSite(a.creds)
	if err != nil {
		return ""
	}
	return site
}

// secureConfig applies the coordinator's TLS and --auth flags.
func secureConfig(cfg *coordinator.Config, cert, key, ca string, withAuth bool) error {
	if cert != "" || key != "" {
		tc, err := pki.ServerTLS(cert, key, ca)
		if err != nil {
			return err
		}
		cfg.TLS = tc
	}
	if cfg.TLS != nil && cfg.NATSURL != "" {
		return fmt.Errorf("--tls-cert/--tls-key configure the embedded NATS server; with --nats-url the cluster has its own TLS (give its CA with --tls-ca)")
	}
	cfg.Auth = withAuth
	if cfg.TLS == nil && withAuth && cfg.NATSURL == "" && cfg.Logger != nil {
		cfg.Logger.Warn("--auth without TLS: credentials are checked, but traffic (desired state, events) crosses the network in clear")
	}
	return nil
}

// webPassword reads `user add --web`'s password (FLEETBOOT_WEB_PASSWORD,
// else stdin's first line) and returns its bcrypt hash.
func (a *app) webPassword() (string, error) {
	pw, ok := a.getenv("FLEETBOOT_WEB_PASSWORD")
	if !ok {
		if a.stdin == nil {
			return "", fmt.Errorf("--web: give the password in FLEETBOOT_WEB_PASSWORD or on standard input")
		}
		line, err := bufio.NewReader(io.LimitReader(a.stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("--web: read the password: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	h, err := auth.HashWebPassword(pw)
	if err != nil {
		return "", fmt.Errorf("--web: %w", err)
	}
	return h, nil
}
