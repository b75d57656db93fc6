package edge

import (
	"fmt"

	"github.com/fleetboot/fleetboot/edge/ra"
	"github.com/fleetboot/fleetboot/proto"
)

// IPv6 router advertisement modes (Config.IPv6RA).
const (
	RAAuto = "auto" // on while the edge hands out addresses (full, reservations); the default
	RAOn   = "on"   // also in proxy and off mode, for a segment with no advertising router
	RAOff  = "off"
)

// openRA opens the router advertisement sender on the DHCP interface
// (edge/ra: it ends iPXE's ~15 s IPv6 wait on segments without routers).
// In auto mode an interface without IPv6 is not an error: the edge runs
// without adverts and says so; asked for explicitly ("on"), it is.
func (a *Agent) openRA() error {
	mode := a.cfg.IPv6RA
	switch mode {
	case "", RAAuto:
		mode = RAAuto
	case RAOn, RAOff:
	default:
		return fmt.Errorf("edge: invalid IPv6 RA mode %q: want auto, on or off", a.cfg.IPv6RA)
	}
	if mode == RAOff || a.cfg.Interface == "" {
		return nil
	}
	cfg := ra.Config{Interface: a.cfg.Interface, Logger: a.log}
	if mode == RAAuto {
		cfg.Active = handsOutAddresses(siteMode{State: a.st, mode: a.cfg.DHCPMode})
	}
	s, err := ra.New(cfg)
	switch {
	case err != nil && mode == RAAuto:
		a.log.Warn("no IPv6 router advertisements (iPXE will wait for IPv6 autoconfiguration on this segment)", "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("edge: --ipv6-ra on: %w", err)
	}
	a.ra = s
	a.onClose(func() { s.Close() })
	return nil
}

// handsOutAddresses is auto mode's test: advertise while the edge is the
// segment's DHCP server (full or reservations mode, the site's or the
// edge's override); not in proxy mode, where another server and maybe a
// router own the segment, nor before the site's mode is known.
func handsOutAddresses(sites interface{ Site() (proto.Site, bool) }) func() bool {
	return func() bool {
		site, ok := sites.Site()
		return ok && (site.DHCP == proto.DHCPFull || site.DHCP == proto.DHCPReservations)
	}
}
