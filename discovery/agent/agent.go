// Package agent is the discovery system's loop: it reports the machine's
// facts to the edge that booted it and asks "what next?" until the edge
// says the machine is assigned, then reboots into the assignment. The
// system side (mounts, modules, DHCP, reboot) is in system_linux.go; the
// loop talks to it through small interfaces so tests drive it against a
// real HTTP server.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// Boot is what the edge put on the kernel command line.
type Boot struct {
	MAC   string // the NIC that booted (BOOTIF=01-aa-bb-…), canonical colon form
	Edge  string // fleetboot.edge=http://EDGE:PORT
	Token string // fleetboot.token=
}

// ParseCmdline reads Boot from /proc/cmdline's text. Every field is needed:
// without the edge or the token nobody would take the facts.
func ParseCmdline(cmdline string) (Boot, error) {
	var b Boot
	for _, w := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "BOOTIF":
			// pxelinux's form: the ARP hardware type (01, Ethernet), then
			// the MAC with dashes.
			hw, ok := strings.CutPrefix(strings.ToLower(v), "01-")
			if !ok {
				return b, fmt.Errorf("agent: BOOTIF=%s: want 01-aa-bb-cc-dd-ee-ff", v)
			}
			mac, err := proto.ParseMAC(hw)
			if err != nil {
				return b, fmt.Errorf("agent: BOOTIF: %w", err)
			}
			b.MAC = mac
		case "fleetboot.mac":
			mac, err := proto.ParseMAC(v)
			if err != nil {
				return b, fmt.Errorf("agent: fleetboot.mac: %w", err)
			}
			b.MAC = mac
		case "fleetboot.edge":
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return b, fmt.Errorf("agent: fleetboot.edge=%s: want http://HOST[:PORT]", v)
			}
			b.Edge = strings.TrimRight(v, "/")
		case "fleetboot.token":
			b.Token = v
		}
	}
	var missing []string
	if b.MAC == "" {
		missing = append(missing, "BOOTIF")
	}
	if b.Edge == "" {
		missing = append(missing, "fleetboot.edge")
	}
	if b.Token == "" {
		missing = append(missing, "fleetboot.token")
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("agent: kernel command line lacks %s (boot the discovery image through a fleetboot edge)", strings.Join(missing, ", "))
	}
	return b, nil
}

// maxSkip bounds the questions between two tries of a refused report: a
// minute at the default 5 s.
const maxSkip = 11

// Config wires the loop.
type Config struct {
	Boot   Boot
	Facts  func() (proto.Facts, error) // collected again before each report
	Client *http.Client                // nil: a client with a 10 s timeout
	Every  time.Duration               // between questions; 0: 5 s
	Reboot func() error                // called once the edge says reboot
	Logger *slog.Logger
}

// Run reports the facts until the edge takes them, asking "what next?"
// every Config.Every meanwhile, and calls Reboot when the answer is
// NextReboot. It returns Reboot's error, or the context's. A refused report
// is tried again after more and more questions (see maxSkip).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("mac", cfg.Boot.MAC, "edge", cfg.Boot.Edge)
	reported, described := false, false
	skip, backoff := 0, 1
	facts := cfg.Facts
	cfg.Facts = func() (proto.Facts, error) {
		f, err := facts()
		if err == nil && !described {
			// One line on the console says what the machine is, for the
			// operator standing at it.
			described = true
			log.Info("facts collected", "firmware", f.Firmware, "secure_boot", f.SecureBoot, "cpus", f.CPUs,
				"memory_gib", f.MemoryGiB, "nics", len(f.NICs), "disks", len(f.Disks), "vendor", f.DMI.Vendor, "product", f.DMI.Product)
		}
		return f, err
	}
	for {
		// Reporting is retried until it works; asking goes on meanwhile,
		// because an admin may assign the machine by its MAC alone while
		// the coordinator is unreachable for the facts.
		switch {
		case reported:
		case skip > 0:
			skip--
		default:
			if err := report(ctx, cfg); err != nil {
				// Every refusal is an event at the edge: further tries
				// come after 1, 2, 4 … up to maxSkip questions.
				skip, backoff = backoff, min(2*backoff, maxSkip)
				log.Warn("facts not taken yet", "err", err, "next_try_in", time.Duration(skip+1)*cfg.Every)
			} else {
				reported = true
				log.Info("facts reported")
			}
		}
		ans, err := next(ctx, cfg)
		switch {
		case err != nil:
			log.Warn("asking what next", "err", err)
		case ans.Action == proto.NextReboot:
			log.Info("assigned: rebooting", "image", ans.Image, "reason", ans.Reason)
			return cfg.Reboot()
		default:
			log.Debug("waiting", "reason", ans.Reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.Every):
		}
	}
}

func (cfg Config) url(path string) string {
	q := url.Values{"mac": {cfg.Boot.MAC}, "token": {cfg.Boot.Token}}
	return cfg.Boot.Edge + path + "?" + q.Encode()
}

func report(ctx context.Context, cfg Config) error {
	f, err := cfg.Facts()
	if err != nil {
		return err
	}
	body, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("agent: facts: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.url(proto.DiscoveryFactsPath), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("agent: report facts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("agent: report facts: %s: %s", resp.Status, firstLine(resp.Body))
	}
	return nil
}

func next(ctx context.Context, cfg Config) (proto.NextAnswer, error) {
	var ans proto.NextAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.url(proto.DiscoveryNextPath), nil)
	if err != nil {
		return ans, fmt.Errorf("agent: %w", err)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return ans, fmt.Errorf("agent: next: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ans, fmt.Errorf("agent: next: %s: %s", resp.Status, firstLine(resp.Body))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ans); err != nil {
		return ans, fmt.Errorf("agent: next: %w", err)
	}
	if ans.Action != proto.NextWait && ans.Action != proto.NextReboot {
		return ans, fmt.Errorf("agent: next: unknown action %q", ans.Action)
	}
	return ans, nil
}

func firstLine(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// ErrNoInterface: no NIC with the boot MAC appeared.
var ErrNoInterface = errors.New("agent: no network interface with the boot MAC")
