package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// The agent's loops, one method each, started by Run.

// serveHTTP serves scripts and artifacts; when ctx ends it stops taking
// requests and gives transfers in flight until the drain deadline.
func (a *Agent) serveHTTP(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(a.httpLn) }()
	select {
	case err := <-errc:
		return fmt.Errorf("edge: HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Drain)
	defer cancel()
	if err := a.srv.Shutdown(sctx); err != nil {
		a.log.Warn("HTTP transfers still running at the drain deadline were cut", "drain", a.cfg.Drain)
		a.srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("edge: HTTP: %w", err)
	}
	return nil
}

// serveDHCP answers DHCP. A fresh edge (no snapshot) does not know its
// site's mode at start, and the probe for other DHCP servers decides by the
// mode (full refuses to run next to one): it waits for the first sync.
// Nothing is answered before: the sockets are bound, requests wait in them.
// That can last (coordinator unreachable, site not added yet, --site
// mistyped), so a warning repeats every siteWaitEvery while it lasts; no
// line per state change (images arrive before the site).
func (a *Agent) serveDHCP(ctx context.Context) error {
	if a.dhcp.ProbePending() {
		known := make(chan struct{}, 1)
		a.st.OnChange(func() { signal(known) })
		start := time.Now()
		var remind *time.Ticker
		for {
			if _, ok := a.st.Site(); ok {
				break
			}
			if remind == nil {
				// Info: on a fresh edge's normal start the config follows
				// within moments; the reminders are the warnings.
				a.log.Info("DHCP answers nothing until the site's config arrives from the coordinator: it decides the DHCP mode and the probe for other DHCP servers")
				remind = time.NewTicker(a.siteWaitEvery)
				defer remind.Stop()
			}
			select {
			case <-ctx.Done():
				return nil
			case <-known:
			case <-remind.C:
				a.log.Warn("DHCP answers nothing yet: the site's config has not arrived (is the coordinator reachable, and does it know this site?)",
					"waited", time.Since(start).Round(time.Second))
			}
		}
		if remind != nil {
			a.log.Info("site config arrived; DHCP probes for other DHCP servers, then answers", "waited", time.Since(start).Round(time.Second))
		}
		if err := a.dhcp.Probe(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return a.dhcp.Serve(ctx)
}

// drainEvents waits, once ctx ends, until the event buffer is sent, NATS is
// lost or the drain deadline passes, then stops the sender.
func (a *Agent) drainEvents(ctx context.Context, stopSender func()) {
	<-ctx.Done()
	a.agg.Close() // the last window's counts go out with the drain
	defer stopSender()
	dctx, cancel := context.WithTimeout(context.Background(), a.cfg.Drain)
	defer cancel()
	// A disconnect before now is over if the connection is up again.
	select {
	case <-a.disconnected:
	default:
	}
	if a.nc.IsConnected() {
		go func() {
			select {
			case <-a.disconnected:
				cancel()
			case <-dctx.Done():
			}
		}()
		a.rec.WaitDrained(dctx)
	}
	if n := a.rec.Stats().Buffered; n > 0 {
		a.log.Warn("stopping with events still buffered; they are sent at the next start", "events", n)
	}
}

// prefetchLoop fetches what the site's hosts will boot and pins it in the
// cache. One round at a time: a trigger during a round (state changes come
// in bursts) is coalesced into one more round, which replaces the previous
// one instead of queueing every artifact again beside it.
func (a *Agent) prefetchLoop(ctx context.Context) {
	cancelRound := func() {}
	defer func() { cancelRound() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.prefetch:
		}
		var pins []string
		var arts []proto.Artifact
		for _, name := range a.st.AssignedImages() {
			if im, ok := a.st.Image(name); ok {
				for _, art := range im.Artifacts {
					pins = append(pins, art.SHA256)
					arts = append(arts, art)
				}
			}
			// The revision a rollback would return to: kept as long as
			// the current one (a rollback then serves from the cache),
			// but not fetched if it is not there.
			if prev, ok := a.st.PreviousRevision(name); ok {
				for _, art := range prev.Artifacts {
					pins = append(pins, art.SHA256)
				}
			}
		}
		// The loaders this site boots with are fetched ahead too: a
		// firmware's first request is for its loader, and it waits on it.
		for _, name := range a.st.AssignedLoaders() {
			if l, ok := a.st.Loader(name); ok {
				for _, f := range l.Files {
					pins = append(pins, f.SHA256)
					arts = append(arts, f.Artifact)
				}
			}
		}
		a.cache.SetPinned(pins)
		// Stop the previous round's queue: fetches already running go on
		// (they are pinned) and this round's joins them.
		cancelRound()
		rctx, cancel := context.WithCancel(ctx)
		cancelRound = cancel
		if !a.cfg.NoPrefetch {
			a.cache.Prefetch(rctx, arts)
		}
		if a.prefetchRound != nil {
			a.prefetchRound()
		}
		select { // coalesce bursts of changes
		case <-ctx.Done():
			return
		case <-time.After(a.prefetchPause):
		}
	}
}

// heartbeatLoop publishes the edge's status every Heartbeat.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		rev, lag := a.syncer.Revision()
		cs := a.cache.Stats()
		hb := proto.EdgeStatus{
			V: proto.Version, Name: a.cfg.Name, Site: a.cfg.Site, Version: a.cfg.Version,
			CacheBytes: cs.Bytes, HitRatio: cs.HitRatio, Revision: rev, Lag: lag,
			Time: time.Now().UTC(), HTTPAddr: a.base, IntervalSecs: int(a.cfg.Heartbeat / time.Second),
		}
		hb.XKey, _ = a.xkey.PublicKey()
		if a.cfg.Interface != "" {
			hb.Interfaces = []string{a.cfg.Interface}
		}
		if data, err := json.Marshal(hb); err == nil && a.nc.IsConnected() {
			_ = a.nc.Publish(proto.StatusSubject(a.cfg.Site, a.cfg.Name), data)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckAdvertise refuses an --advertise URL the edge would refuse at start
// (checkAdvertise, then the renderer's own Check), for --check-config.
func CheckAdvertise(s string) error {
	if err := checkAdvertise(s); err != nil {
		return err
	}
	if err := httpboot.New(httpboot.Config{State: state.New(), BaseURL: s}).Check(); err != nil {
		return fmt.Errorf("edge: --advertise: %w", err)
	}
	return nil
}

// checkAdvertise refuses a base URL machines could not use: the scripts,
// DHCP options and GRUB configs append paths to it.
func checkAdvertise(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" ||
		u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Trim(u.Path, "/") != "" || u.Opaque != "" {
		return fmt.Errorf("edge: --advertise %q: want http://HOST[:PORT] or https://HOST[:PORT], without a path, query or user", s)
	}
	// url.Parse checks only that a port is digits: 80800, 0 or an empty
	// port after the colon would pass and no machine could connect.
	if strings.HasSuffix(u.Host, ":") {
		return fmt.Errorf("edge: --advertise %q: empty port", s)
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		// A listen address copied into --advertise: machines need the
		// address they reach the edge at.
		return fmt.Errorf("edge: --advertise %q: %s is the any-address, not one machines can reach", s, ip)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("edge: --advertise %q: port %s: want 1 to 65535", s, p)
		}
	}
	return nil
}
