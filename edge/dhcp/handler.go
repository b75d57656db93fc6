package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// Policy is the desired state the handler asks; *state.State satisfies it.
type Policy interface {
	Site() (proto.Site, bool)
	Host(mac string) (proto.Host, bool)
	// Reservation names the host (primary MAC) whose fixed address ip is,
	// so the pool never offers it to another machine. It is asked per
	// address considered, and must not list the site's hosts to answer.
	Reservation(ip netip.Addr) (mac string, ok bool)
}

// EventSink records boot-chain events; nil discards them.
type EventSink interface {
	Emit(kind, mac string, detail map[string]string)
}

// AddressProber tells whether an address already answers on the segment
// (ICMP echo, ARP). A probe error is not a conflict.
type AddressProber interface {
	InUse(ctx context.Context, ip netip.Addr) (bool, error)
}

// PXE boot-server port: the PXE spec's second exchange (proxy mode).
const pxePort = 4011

// Input is the context of one request that is not in the packet.
type Input struct {
	Port int // local port it arrived on: 67, or 4011 (PXE boot-server requests)
}

// HandlerConfig configures a Handler. ServerIP, HTTPBase, Policy and Leases
// are required.
type HandlerConfig struct {
	ServerIP    net.IP // the edge's address on the segment: server identifier
	HTTPBase    string // e.g. http://10.0.0.1:8080, for iPXE scripts and UEFI HTTP boot
	TFTPServer  net.IP // next-server for TFTP boots; default ServerIP
	BootFiles   BootFiles
	Loaders     LoaderSource // boot chains hosts and sites name; nil: BootFiles for all
	Policy      Policy
	Leases      *Leases
	Prober      AddressProber // nil: no conflict check
	Events      EventSink
	Logger      *slog.Logger
	Now         func() time.Time
	OfferHold   time.Duration // how long an OFFER holds its address; default 60 s
	DeclineHold time.Duration // how long a DECLINEd or conflicting address rests; default 10 min
	MaxProbes   int           // addresses tried per DISCOVER when probes find conflicts; default 8
	// Events about MACs the site does not know pass as they are up to
	// EventBudget per EventWindow; the rest are counted and reported once
	// per window (dhcp.unknown with a count). Defaults: 200 per minute, a
	// rack's worth of new machines' first exchanges.
	EventWindow time.Duration
	EventBudget int
}

// Handler decides DHCP replies. It is safe for concurrent use.
type Handler struct {
	cfg      HandlerConfig
	serverIP netip.Addr
	tftpIP   net.IP
	log      *slog.Logger
	nosite   *slog.Logger  // once a minute: requests before the site's config are the boot network's to repeat
	counted  *eventCounter // events strangers cause: budgeted, then counted
	// logBudget bounds the requests of unknown MACs logged line by line
	// per window; unlogged says once per window how many were not.
	logBudget *windowBudget
	unlogged  *slog.Logger
	// fallbacks holds "loader/arch" pairs already logged as falling back
	// to BootFiles: every boot of such a machine would log it again.
	fallbacks sync.Map
}

// NewHandler checks cfg and fills in defaults.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	sip := addr4(cfg.ServerIP)
	if !sip.IsValid() {
		return nil, fmt.Errorf("dhcp: server IP %q is not an IPv4 address", cfg.ServerIP)
	}
	if cfg.HTTPBase == "" {
		return nil, errors.New("dhcp: HTTP base URL of the edge is required (e.g. http://10.0.0.1:8080)")
	}
	if cfg.Policy == nil || cfg.Leases == nil {
		return nil, errors.New("dhcp: policy and lease store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OfferHold <= 0 {
		cfg.OfferHold = time.Minute
	}
	if cfg.DeclineHold <= 0 {
		cfg.DeclineHold = 10 * time.Minute
	}
	if cfg.MaxProbes <= 0 {
		cfg.MaxProbes = 8
	}
	if cfg.EventWindow <= 0 {
		cfg.EventWindow = time.Minute
	}
	if cfg.EventBudget <= 0 {
		cfg.EventBudget = 200
	}
	cfg.BootFiles = cfg.BootFiles.withDefaults()
	tftp := cfg.TFTPServer.To4()
	if tftp == nil {
		tftp = sip.AsSlice()
	}
	return &Handler{cfg: cfg, serverIP: sip, tftpIP: net.IP(tftp), log: cfg.Logger, nosite: ratelog.Logger(cfg.Logger, time.Minute),
		counted:   newEventCounter(cfg.Events, cfg.EventWindow, cfg.EventBudget, cfg.Now),
		logBudget: &windowBudget{window: cfg.EventWindow, budget: cfg.EventBudget, now: cfg.Now},
		unlogged:  ratelog.Logger(cfg.Logger, cfg.EventWindow)}, nil
}

// request is one request on its way through the handler.
type request struct {
	req   *dhcpv4.DHCPv4
	m     Machine
	host  proto.Host
	known bool
	site  proto.Site
	boot  Boot
	log   *slog.Logger
}

// Handle answers one request: a reply to send, or nil to stay silent. An
// error means the request could not be served (a lease could not be saved, a
// malformed packet); the caller logs it.
func (h *Handler) Handle(ctx context.Context, req *dhcpv4.DHCPv4, in Input) (*dhcpv4.DHCPv4, error) {
	m, err := ParseMachine(req)
	if err != nil {
		return nil, err
	}
	r := &request{req: req, m: m}
	site, ok := h.cfg.Policy.Site()
	if !ok {
		h.nosite.Warn("dhcp: dropped: no site configuration yet", "mac", m.MAC)
		return nil, nil
	}
	r.site = site
	r.host, r.known = h.cfg.Policy.Host(m.MAC)
	r.log = h.requestLogger(r)
	r.boot = h.bootFor(r)

	if reason, ok := h.admit(r); !ok {
		r.log.Info("dhcp: dropped", "reason", reason)
		h.emitReceived(r, netip.Addr{}, "ignored: "+reason)
		return nil, nil
	}
	if site.DHCP == proto.DHCPProxy {
		return h.proxy(r, in)
	}
	if in.Port == pxePort {
		return nil, nil // full mode does not run a boot server on 4011
	}
	return h.full(ctx, r)
}

// requestLogger is the logger of one request, its MAC, xid, type and arch
// attached. A request from a MAC the site does not know logs its lines
// (offer, ack, ...) while the window's budget of such requests lasts
// (EventBudget per EventWindow, as for events); past it only its warnings
// and errors are logged, and one line per window tells how many requests
// went unlogged. Random MACs at thousands a second otherwise cost two
// formatted lines and two writes per exchange, about a seventh of the
// edge's CPU under perfdhcp, and drown the lines of the site's own hosts.
func (h *Handler) requestLogger(r *request) *slog.Logger {
	next := h.log.Handler()
	if !r.known && !h.logBudget.take() {
		h.unlogged.Info("dhcp: requests from unknown MACs past the log budget are not logged one by one",
			"budget", h.cfg.EventBudget, "window", h.cfg.EventWindow.String())
		next = &minLevel{next: next, min: slog.LevelWarn}
	}
	l := slog.New(next).With("mac", r.m.MAC, "xid", r.m.XID, "msg", r.m.Type.String(), "arch", r.m.ArchString())
	if r.m.Relayed() {
		l = l.With("giaddr", r.m.GIAddr.String())
	}
	return l
}

// bootFor chooses the boot file, with the loader the host or site names.
// A loader missing from the edge's copy, without a file for the client's
// architecture, or not for its way of booting (a GRUB chain for UEFI HTTP
// boot), leaves today's answer, logged once per loader and arch.
func (h *Handler) bootFor(r *request) Boot {
	name := LoaderFor(r.host, r.known, r.site)
	if name == "" {
		return BootFor(r.m, h.cfg.BootFiles, h.cfg.HTTPBase)
	}
	var l *proto.Loader
	if h.cfg.Loaders != nil {
		if found, ok := h.cfg.Loaders.Loader(name); ok {
			l = &found
		}
	}
	if l == nil {
		if _, seen := h.fallbacks.LoadOrStore(name, true); !seen {
			r.log.Warn("dhcp: loader unknown to this edge, booting the default ipxe", "loader", name)
		}
		return BootFor(r.m, h.cfg.BootFiles, h.cfg.HTTPBase)
	}
	b, fallback := BootWith(r.m, l, h.cfg.BootFiles, h.cfg.HTTPBase)
	if fallback {
		if _, seen := h.fallbacks.LoadOrStore(name+"/"+r.m.ArchString(), true); !seen {
			r.log.Warn("dhcp: loader not used for this client, booting the default", "loader", name, "file", b.File, "reason", b.Reason)
		}
	}
	return b
}

// admit applies the site's mode and unknown-MAC policy.
func (h *Handler) admit(r *request) (string, bool) {
	switch r.site.DHCP {
	case proto.DHCPFull, proto.DHCPProxy, proto.DHCPReservations:
	case proto.DHCPOff, "":
		return "dhcp is off at this site", false
	default:
		return fmt.Sprintf("unknown dhcp mode %q", r.site.DHCP), false
	}
	if r.known {
		return "", true
	}
	if r.site.DHCP == proto.DHCPReservations {
		return "unknown MAC in reservations-only mode", false
	}
	switch r.site.Unknown {
	case proto.UnknownDiscover, proto.UnknownExit:
		return "", true
	}
	return "unknown MAC, site policy ignore", false
}

// decision describes who the machine is, for events and explain.
func (r *request) decision() string {
	who := "known host"
	if !r.known {
		who = "unknown MAC, policy " + r.site.Unknown
	}
	if r.boot.File == "" {
		return who + "; " + r.boot.Reason
	}
	return who + "; " + r.boot.Reason + ": " + r.boot.File
}

func (h *Handler) emit(kind string, r *request, ip netip.Addr, decision string) {
	if h.cfg.Events == nil || (!r.known && !h.counted.pass(kind)) {
		return
	}
	d := map[string]string{"xid": r.m.XID, "decision": decision}
	if ip.IsValid() {
		d["ip"] = ip.String()
	}
	if kind == proto.EventDHCPDiscover {
		// The client's secs field: how long it has been asking (RFC 2131;
		// iPXE counts its transmissions there instead). The timeline tells
		// a DISCOVER a blocked switch port held back from a slow client's
		// first one by it.
		d["secs"] = strconv.Itoa(int(r.req.NumSeconds))
	}
	if r.m.HasArch {
		d["arch"] = r.m.ArchString()
	}
	h.cfg.Events.Emit(kind, r.m.MAC, d)
}

// emitReceived records the client's message itself.
func (h *Handler) emitReceived(r *request, ip netip.Addr, decision string) {
	kind := ""
	switch r.m.Type {
	case dhcpv4.MessageTypeDiscover:
		kind = proto.EventDHCPDiscover
	case dhcpv4.MessageTypeRequest:
		kind = proto.EventDHCPRequest
	case dhcpv4.MessageTypeDecline:
		kind = proto.EventDHCPDecline
	case dhcpv4.MessageTypeRelease:
		kind = proto.EventDHCPRelease
	default:
		return
	}
	h.emit(kind, r, ip, decision)
}

// newReply starts a reply: xid, chaddr, flags, giaddr, relay info and client
// id copied, server identifier set.
func (h *Handler) newReply(r *request, mt dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	resp, err := dhcpv4.NewReplyFromRequest(r.req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(h.serverIP.AsSlice())),
	)
	if err != nil {
		return nil, fmt.Errorf("dhcp: build reply: %w", err)
	}
	return resp, nil
}

// addBoot puts the boot decision into a reply.
func (h *Handler) addBoot(r *request, resp *dhcpv4.DHCPv4, proxy bool) {
	switch {
	case r.m.IsHTTPClient:
		// UEFI HTTP boot ignores offers without this echo.
		resp.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	case r.m.IsPXE && proxy:
		// The PXE spec: a proxy server that supplies boot information says
		// so. Not in full mode: EDK2/OVMF takes an offer with PXEClient and
		// no option 43 for a BINL offer and asks port 4011 for the boot
		// file, which full mode does not serve ("PXE-E16: No valid offer
		// received"). A plain offer with a boot file, as dnsmasq sends,
		// is what every PXE client takes.
		resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	}
	if r.boot.File == "" {
		if r.m.IsPXE || r.m.IsHTTPClient || r.m.IsIPXE {
			r.log.Warn("dhcp: no boot file for this client", "reason", r.boot.Reason)
		}
		return
	}
	resp.BootFileName = r.boot.File
	resp.UpdateOption(dhcpv4.OptBootFileName(r.boot.File))
	if r.boot.TFTP {
		resp.ServerIPAddr = h.tftpIP
		resp.UpdateOption(dhcpv4.OptTFTPServerName(h.tftpIP.String()))
	} else {
		resp.ServerIPAddr = h.serverIP.AsSlice()
	}
	if r.m.IsIPXE && !proxy {
		// Sub-option 176 (no-pxedhcp) = 1: iPXE would otherwise wait seconds
		// for ProxyDHCP offers that never come. In proxy mode a ProxyDHCP
		// offer is exactly what it must wait for.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{optIPXENoPXEDHCP, 1, 1}))
	}
}

// proxy answers PXE and HTTP boot clients with boot information only, never
// an address: on 67 an OFFER to a DISCOVER, on 4011 an ACK to the REQUEST the
// PXE client sends to the boot server.
func (h *Handler) proxy(r *request, in Input) (*dhcpv4.DHCPv4, error) {
	if !r.m.IsPXE && !r.m.IsHTTPClient {
		r.log.Debug("dhcp: proxy mode ignores a client that is not a PXE or HTTP boot client", "vendor_class", r.m.VendorClass)
		return nil, nil
	}
	var mt dhcpv4.MessageType
	switch {
	case in.Port != pxePort && r.m.Type == dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case in.Port == pxePort && (r.m.Type == dhcpv4.MessageTypeRequest || r.m.Type == dhcpv4.MessageTypeInform):
		mt = dhcpv4.MessageTypeAck
	default:
		// REQUESTs on 67 belong to the site's DHCP server.
		return nil, nil
	}
	decision := "proxy; " + r.decision()
	h.emitReceived(r, netip.Addr{}, decision)
	if r.boot.File == "" {
		r.log.Warn("dhcp: proxy: no boot file, not answering", "reason", r.boot.Reason)
		return nil, nil
	}
	resp, err := h.newReply(r, mt)
	if err != nil {
		return nil, err
	}
	resp.YourIPAddr = net.IPv4zero
	h.addBoot(r, resp, true)
	if r.m.IsPXE {
		// PXE discovery control (sub-option 6) bit 3: download the boot file
		// named in this packet; no boot server discovery, no menu.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	if r.m.GUID != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, r.m.GUID))
	}
	kind := proto.EventDHCPOffer
	if mt == dhcpv4.MessageTypeAck {
		kind = proto.EventDHCPAck
	}
	h.emit(kind, r, netip.Addr{}, decision)
	r.log.Info("dhcp: proxy answer", "reply", mt.String(), "file", r.boot.File, "reason", r.boot.Reason)
	return resp, nil
}
