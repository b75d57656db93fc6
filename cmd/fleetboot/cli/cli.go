// Package cli is fleetboot's command tree: every subcommand parses its flags
// (and FLEETBOOT_* variables and an optional YAML file), calls into the
// coordinator, edge or API client packages, and prints one clear line on
// failure.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// app carries what every command shares; one per invocation, never global.
type app struct {
	version string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	getenv  func(string) (string, bool) // os.LookupEnv, or a test's map

	natsURL string
	creds   string
	tlsCA   string
	config  string
	timeout string
	verbose bool
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// Main runs the command line with the process environment and returns the
// process exit code.
func Main(ctx context.Context, version string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, Invocation{Version: version, Args: args, Env: os.LookupEnv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Invocation is one run of the command line: everything it reads and writes
// besides the network and the files it is told about, so a test can run many
// in one process with different arguments and environments.
type Invocation struct {
	Version string
	Args    []string
	// Env looks up FLEETBOOT_* variables; nil means none are set.
	Env            func(key string) (string, bool)
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// EnvMap is an Invocation's Env from a map.
func EnvMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Run runs one invocation and returns its exit code.
func Run(ctx context.Context, inv Invocation) int {
	if inv.Env == nil {
		inv.Env = EnvMap(nil)
	}
	if inv.Stdin == nil {
		inv.Stdin = strings.NewReader("")
	}
	stdout, stderr := inv.Stdout, inv.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	a := &app{version: inv.Version, stdin: inv.Stdin, stdout: stdout, stderr: stderr, getenv: inv.Env}
	root := a.rootCmd()
	root.SetArgs(inv.Args)
	root.SetIn(inv.Stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "fleetboot: "+oneLine(err.Error()))
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "fleetboot",
		Short: "Network boot for fleets of machines across many sites",
		Long: `fleetboot boots fleets of machines over the network. A coordinator holds which
machine boots which image and publishes it over NATS to edge agents; each edge
answers DHCP and TFTP on its segment, renders iPXE scripts per MAC and serves
kernels, initrds and ISOs from a disk cache filled from S3-compatible storage.

Every flag can also be set with a FLEETBOOT_<FLAG> environment variable
(FLEETBOOT_NATS, FLEETBOOT_CACHE_DIR, …) or in a YAML file given with --config
(keys are flag names). Flags win over the environment, which wins over the file.`,
		Example: `  fleetboot dev                      # everything on one machine
  fleetboot site add lab --subnet 10.0.0.0/24 --range 10.0.0.100-10.0.0.200
  fleetboot image add debian12 --kernel vmlinuz --initrd initrd.img --cmdline 'console=ttyS0'
  fleetboot host set 52:54:00:12:34:56 --image debian12 --site lab
  fleetboot host ls -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Our own `completion` is a group that refuses unknown shells.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.applyEnvAndFile(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL of the coordinator (env FLEETBOOT_NATS)")
	pf.StringVar(&a.creds, "creds", "", "NATS credentials file (env FLEETBOOT_CREDS)")
	pf.StringVar(&a.tlsCA, "tls-ca", "", "CA certificate to verify the NATS server's TLS certificate (env FLEETBOOT_TLS_CA)")
	pf.StringVar(&a.config, "config", "", "YAML file with flag values (env FLEETBOOT_CONFIG)")
	pf.StringVar(&a.timeout, "timeout", "10s", "how long to wait for the coordinator")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "debug logging")

	root.AddCommand(
		a.versionCmd(),
		a.coordinatorCmd(),
		a.devCmd(),
		a.siteCmd(),
		a.imageCmd(),
		a.loaderCmd(),
		a.hostCmd(),
		a.policyCmd(),
		a.rolloutCmd(),
		a.templateCmd(),
		a.edgeCmd(),
		a.pkiCmd(),
		a.natsCmd(),
		a.userCmd(),
		a.auditCmd(),
		a.eventsCmd(),
		a.explainCmd(),
		a.discoverCmd(),
		a.discoveryCmd(),
		a.completionCmd(),
	)
	a.addCompletions(root)
	root.SetHelpCommand(helpCmd())
	return root
}

// helpCmd replaces cobra's, which answers a mistyped topic with the usage
// and exit 0: a script would believe it worked.
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help shows what a command does, its flags and an example: fleetboot help host set.",
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || cmd == nil || len(rest) > 0 {
				return fmt.Errorf("unknown help topic %q; see fleetboot --help", strings.Join(args, " "))
			}
			return cmd.Help()
		},
	}
}

// applyEnvAndFile fills every flag the user did not set from FLEETBOOT_<NAME>,
// then from the YAML config file.
func (a *app) applyEnvAndFile(cmd *cobra.Command) error {
	var fileVals map[string]any
	cfgPath := a.config
	if !cmd.Flags().Changed("config") {
		if v, _ := a.getenv("FLEETBOOT_CONFIG"); v != "" {
			cfgPath = v
		}
	}
	if cfgPath != "" {
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &fileVals); err != nil {
			return fmt.Errorf("config file %s: %w", cfgPath, err)
		}
	}
	var firstErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "help" || f.Name == "config" {
			return
		}
		env := "FLEETBOOT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := a.getenv(env); ok {
			if err := setFromEnv(f, v); err != nil {
				firstErr = fmt.Errorf("%s=%q: %w", env, v, err)
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			if err := setFromFile(f, v); err != nil {
				firstErr = fmt.Errorf("config file %s: %s: %w", cfgPath, f.Name, err)
			}
		}
	})
	return firstErr
}

// envList marks a repeatable flag whose FLEETBOOT_* variable is a
// comma-separated list (its values never hold a comma, unlike --network's
// or --var's).
const envList = "fleetboot-env-list"

// markEnvList marks flag name of fs as an envList flag.
func markEnvList(fs *pflag.FlagSet, name string) {
	_ = fs.SetAnnotation(name, envList, []string{"true"})
}

// setFromEnv sets a flag from its FLEETBOOT_* variable. A repeatable flag
// marked envList (--http-name) takes a comma-separated list there, as one
// variable cannot be repeated; taken whole, "a,b" would be one value.
func setFromEnv(f *pflag.Flag, v string) error {
	sv, ok := f.Value.(pflag.SliceValue)
	if !ok || f.Annotations[envList] == nil {
		return f.Value.Set(v)
	}
	var vals []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			vals = append(vals, x)
		}
	}
	return sv.Replace(vals)
}

// setFromFile sets a flag from its config file value. A YAML list sets a
// repeatable flag (--http-name) one element at a time; printed whole, it
// would become one value "[a b]", and a one-value flag would take it so.
func setFromFile(f *pflag.Flag, v any) error {
	list, isList := v.([]any)
	if !isList {
		return f.Value.Set(fmt.Sprint(v))
	}
	sv, ok := f.Value.(pflag.SliceValue)
	if !ok {
		return fmt.Errorf("want one value, not a list")
	}
	vals := make([]string, len(list))
	for i, x := range list {
		vals[i] = fmt.Sprint(x)
	}
	return sv.Replace(vals)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the fleetboot version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.stdout, "fleetboot", a.version)
			return nil
		},
	}
}
