package httpboot

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/edge/httpcount"
	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// Desired is the part of the edge's desired state a script is rendered from.
type Desired interface {
	Site() (proto.Site, bool)
	Host(mac string) (proto.Host, bool)
	Image(name string) (proto.Image, bool)
	// Template: the install templates ({{template_url}}; rendered at /t/).
	Template(name string) (proto.Template, bool)
}

// State is the part of the edge's desired state the handler reads;
// *state.State satisfies it.
type State interface {
	Desired
	// AssignedImages names the images a host of the site boots, and the
	// site's discovery image: the only ones whose artifacts are served.
	AssignedImages() []string
	// Loader and AssignedLoaders: the boot chains of the site's and its
	// hosts' --loader, the only loaders whose files are served.
	Loader(name string) (proto.Loader, bool)
	AssignedLoaders() []string
}

// ArtifactServer writes one artifact (Range, HEAD and ETag included); the
// edge cache implements it.
type ArtifactServer interface {
	ServeArtifact(w http.ResponseWriter, r *http.Request, a proto.Artifact)
}

// Callbacks forwards installer callbacks to the coordinator.
type Callbacks interface {
	Done(ctx context.Context, mac string) error
	Facts(ctx context.Context, mac string, body []byte) error
}

// Leases names the machine holding a DHCP lease on an address; the edge's
// DHCP server satisfies it.
type Leases interface {
	MACForIP(ip net.IP) string // "" when no machine holds one
}

// EventSink records boot-chain events.
type EventSink interface {
	Emit(kind, mac string, detail map[string]string)
}

// Repeats records events a client can repeat at will (refused callbacks,
// scripts for unknown MACs): per source address and window, the first few
// as they come and the rest as one counted event. events.Aggregator
// satisfies it.
type Repeats interface {
	Count(source, kind, mac string, detail map[string]string)
}

// MaxCallbackBody bounds a callback's JSON body: facts are a few KiB; more is
// a mistake or an attack on the edge's memory.
const MaxCallbackBody = 64 << 10

// Config wires the handler to the rest of the edge.
type Config struct {
	State     State
	BaseURL   string         // this edge as booting machines reach it: http://10.0.0.1:8080
	Artifacts ArtifactServer // nil: /artifacts answers 503
	BootDir   string         // bootstrap binaries (ipxe.efi, snponly.efi, ...); empty: /boot/ serves scripts only
	Callbacks Callbacks      // nil: callbacks are recorded as events only
	// CallbackKey signs the callback tokens (LoadCallbackKey); nil: a
	// random key for this process, so tokens die with it.
	CallbackKey []byte
	// Leases names the machine the edge's DHCP server leased an address
	// to; nil when the edge serves no DHCP. Callbacks are checked against it.
	Leases  Leases
	Events  EventSink    // nil: no events
	Repeats Repeats      // nil: repeatable events go to Events one by one
	Logger  *slog.Logger // nil: discard
}

// Handler serves boot scripts, artifacts, bootstrap binaries and installer
// callbacks. It also answers GRUB's TFTP config requests (LookupTFTP).
type Handler struct {
	cfg      Config
	log      *slog.Logger
	drops    *slog.Logger // rate-limited: refusals a client can repeat at will
	assigned *assigned
}

// New returns the edge's HTTP boot handler. A malformed BaseURL is reported
// by every script request (and by Check) rather than here, so the signature
// stays an http.Handler constructor.
func New(cfg Config) *Handler {
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	l = l.With("component", "httpboot")
	if len(cfg.CallbackKey) == 0 {
		cfg.CallbackKey = make([]byte, CallbackKeySize)
		rand.Read(cfg.CallbackKey) // never fails on supported platforms
	}
	h := &Handler{cfg: cfg, log: l, drops: ratelog.Logger(l, 0)}
	if cfg.State != nil {
		h.assigned = newAssigned(cfg.State)
	}
	return h
}

// Check validates the configuration, for start-up.
func (h *Handler) Check() error {
	if h.cfg.State == nil {
		return errors.New("httpboot: no state")
	}
	_, err := ChainScript(h.cfg.BaseURL)
	return err
}

func (h *Handler) emit(kind, mac string, detail map[string]string) {
	if h.cfg.Events != nil {
		h.cfg.Events.Emit(kind, mac, detail)
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	// An encoded slash would let a segment look like two; nothing here needs one.
	if strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") || strings.Contains(p, "\x00") {
		http.Error(w, "httpboot: bad path", http.StatusBadRequest)
		return
	}
	switch {
	case p == "/api/v1/done" || p == "/api/v1/facts":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		h.serveCallback(w, r, path.Base(p))
		return
	case p == proto.DiscoveryNextPath:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, http.MethodGet)
			return
		}
		h.serveNext(w, r)
		return
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	switch {
	case p == "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	case p == "/boot.ipxe":
		if !r.URL.Query().Has("mac") {
			h.serveChain(w)
			return
		}
		h.serveScript(w, r, r.URL.Query().Get("mac"), false)
	case p == "/chain.ipxe":
		h.serveChain(w)
	case strings.HasPrefix(p, "/t/"):
		h.serveTemplate(w, r, strings.TrimPrefix(p, "/t/"))
	case p == "/grub.cfg":
		h.serveScript(w, r, r.URL.Query().Get("mac"), true)
	case strings.HasPrefix(p, "/artifacts/"):
		h.serveArtifact(w, r, strings.TrimPrefix(p, "/artifacts/"), h.ArtifactFor)
	case strings.HasPrefix(p, "/loaders/"):
		h.serveArtifact(w, r, strings.TrimPrefix(p, "/loaders/"), h.LoaderFileFor)
	case strings.HasPrefix(p, "/"+proto.GrubPrefix+"/") && strings.Count(p, "/") == 3:
		// A GRUB loaded over HTTP asks for its modules at its prefix;
		// the client's loader's module, else the boot directory's file.
		name := strings.TrimPrefix(p, "/"+proto.GrubPrefix+"/")
		if a, ok := h.GrubModuleFor(net.ParseIP(remoteIP(r)), name); ok && h.cfg.Artifacts != nil {
			h.cfg.Artifacts.ServeArtifact(w, h.withMachine(r), a)
			return
		}
		h.serveBootFile(w, r, p[1:])
	case strings.HasPrefix(p, "/boot/"):
		name := strings.TrimPrefix(p, "/boot/")
		// /boot/<mac>.ipxe is the per-MAC script pattern of the gPXE seed.
		if m, ok := strings.CutSuffix(name, ".ipxe"); ok {
			if _, err := proto.ParseMAC(m); err == nil {
				h.serveScript(w, r, m, false)
				return
			}
		}
		h.serveBootFile(w, r, name)
	case strings.Count(p, "/") == 1 && proto.ValidFileName(p[1:]) == nil:
		// UEFI HTTP boot clients are handed http://EDGE/<file> by the DHCP
		// boot-file table (edge/dhcp BootFor), so the bootstrap binaries
		// answer at the root too; the same rules as /boot/ apply.
		h.serveBootFile(w, r, p[1:])
	default:
		http.NotFound(w, r)
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "httpboot: method not allowed", http.StatusMethodNotAllowed)
}

func (h *Handler) serveChain(w http.ResponseWriter) {
	text, err := ChainScript(h.cfg.BaseURL)
	if err != nil {
		h.log.Error("chain script", "err", err)
		http.Error(w, "httpboot: edge misconfigured", http.StatusInternalServerError)
		return
	}
	writeScript(w, http.StatusOK, text)
}

func writeScript(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// The answer changes whenever the desired state does.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(text)))
	w.WriteHeader(status)
	io.WriteString(w, text)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return ""
}

// sourceKey is the rate limit's and the counted events' key of a client
// address (remoteIP's form): its /64 for IPv6, see ratelimit.AddrKey.
func sourceKey(ip string) string { return ratelimit.AddrKey(net.ParseIP(ip)) }

// InputFor gathers a script's input from the edge state: the host by any of
// its MACs, and the image it (or, if unknown, the site's discovery policy)
// boots. `fleetboot explain` uses it too, so both see the same decision.
func InputFor(st Desired, baseURL, mac, arch, platform, clientIP string, try int) Input {
	in := Input{BaseURL: baseURL, MAC: mac, Arch: arch, Platform: platform, ClientIP: clientIP, Try: try}
	in.Site, _ = st.Site()
	image := in.Site.DiscoveryImage
	if host, ok := st.Host(mac); ok {
		in.Host = &host
		image = host.Image
		if t, ok := st.Template(host.Template); ok && host.Template != "" {
			in.TemplateKind = t.Kind
		}
	}
	if image != "" {
		if im, ok := st.Image(image); ok {
			in.Image = &im
		}
	}
	return in
}

func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request, rawMAC string, grub bool) {
	q := r.URL.Query()
	mac, err := proto.ParseMAC(rawMAC)
	if err != nil {
		http.Error(w, "httpboot: "+err.Error(), http.StatusBadRequest)
		return
	}
	arch, platform := q.Get("arch"), q.Get("platform")
	for _, v := range []string{arch, platform} {
		if v != "" && !tokenRE.MatchString(v) {
			http.Error(w, fmt.Sprintf("httpboot: invalid arch or platform %q", v), http.StatusBadRequest)
			return
		}
	}
	try := 0
	if t := q.Get("try"); t != "" {
		try, err = strconv.Atoi(t)
		if err != nil || try < 0 || try > MaxTries {
			http.Error(w, fmt.Sprintf("httpboot: invalid try %q: want 0..%d", t, MaxTries), http.StatusBadRequest)
			return
		}
	}
	ip := remoteIP(r)
	in := InputFor(h.cfg.State, h.cfg.BaseURL, mac, arch, platform, ip, try)
	in.Token = token(h.cfg.CallbackKey, mac, in.Host)
	render := Render
	if grub {
		render = RenderGRUB
	}
	s, err := render(in)
	if err != nil {
		h.log.Error("render script", "mac", mac, "err", err)
		http.Error(w, "httpboot: edge misconfigured", http.StatusInternalServerError)
		return
	}
	format := "ipxe"
	if grub {
		format = "grub"
	}
	detail := map[string]string{
		"decision": s.Decision.Action, "image": s.Decision.Image, "reason": s.Decision.Reason,
		"arch": arch, "platform": platform, "ip": ip, "try": strconv.Itoa(try), "format": format,
	}
	if in.Host == nil {
		// Anyone can ask for any MAC: one log line per interval, and
		// counted events, whatever the rate.
		h.drops.Info("script for an unknown MAC", "mac", mac, "ip", ip, "decision", s.Decision.Action)
		h.repeat(ip, proto.EventScriptUnknown, mac, detail)
	} else {
		h.log.Info("script", "mac", mac, "ip", ip, "arch", arch, "platform", platform, "try", try,
			"format", format, "decision", s.Decision.Action, "image", s.Decision.Image, "reason", s.Decision.Reason)
		h.emit(proto.EventScript, mac, detail)
	}
	writeScript(w, s.Status, s.Text)
}

// Why ArtifactFor refuses a request. The HTTP side answers ErrBadArtifactPath
// with 400 and the others with 404; TFTP answers every one "file not found".
var (
	ErrBadArtifactPath = errors.New("httpboot: bad artifact path")
	ErrUnknownImage    = errors.New("httpboot: unknown image")
	ErrNotAssigned     = errors.New("httpboot: image not assigned at this site")
	ErrNoSuchArtifact  = errors.New("httpboot: no such file in the image")
	// ErrUnknownLoader and ErrLoaderNotAssigned: LoaderFileFor's refusals.
	ErrUnknownLoader     = errors.New("httpboot: unknown loader")
	ErrLoaderNotAssigned = errors.New("httpboot: loader not used at this site")
)

// ArtifactFor maps an artifact path's image and file name to the image's
// artifact of that file name, for HTTP (/artifacts/<image>/<file>) and TFTP
// (edge/tftp serves the same path) alike, so both transports refuse the same
// requests. Nothing here touches a file system: the name only selects an
// entry of the image, so no path can reach a file outside it. Only images
// assigned at this site are served; any other is refused, as an unknown one
// is, without asking the cache (or the store behind it).
func (h *Handler) ArtifactFor(image, file string) (proto.Artifact, error) {
	if strings.Contains(file, "/") || proto.ValidImageRef(image) != nil || proto.ValidFileName(file) != nil {
		return proto.Artifact{}, fmt.Errorf("%w: %q/%q", ErrBadArtifactPath, image, file)
	}
	im, ok := h.cfg.State.Image(image)
	if !ok {
		return proto.Artifact{}, fmt.Errorf("%w: %q", ErrUnknownImage, image)
	}
	if !h.assigned.has(image) {
		return proto.Artifact{}, fmt.Errorf("%w: %q", ErrNotAssigned, image)
	}
	for _, a := range im.Artifacts {
		if a.Name == file {
			return a, nil
		}
	}
	return proto.Artifact{}, fmt.Errorf("%w: %q in %q", ErrNoSuchArtifact, file, image)
}

// LoaderFileFor maps a loader path's loader and file name
// (proto.LoaderPath: loaders/<loader>/<file>, over HTTP and TFTP alike) to
// the loader's file of that name. Only loaders this site boots with (the
// site's and its hosts' --loader) are served; any other is refused as an
// unknown one, without asking the cache.
//
// A GRUB module is there too, under its name (loaders/<loader>/x86_64-efi/
// http.mod), besides where GRUB asks for it (GrubModuleFor).
func (h *Handler) LoaderFileFor(loader, file string) (proto.Artifact, error) {
	if proto.ValidName("loader", loader) != nil || !validLoaderFileName(file) {
		return proto.Artifact{}, fmt.Errorf("%w: %q/%q", ErrBadArtifactPath, loader, file)
	}
	l, ok := h.cfg.State.Loader(loader)
	if !ok {
		return proto.Artifact{}, fmt.Errorf("%w: %q", ErrUnknownLoader, loader)
	}
	if !h.assigned.hasLoader(loader) {
		return proto.Artifact{}, fmt.Errorf("%w: %q", ErrLoaderNotAssigned, loader)
	}
	for _, f := range l.Files {
		if f.Name == file {
			return f.Artifact, nil
		}
	}
	return proto.Artifact{}, fmt.Errorf("%w: %q in loader %q", ErrNoSuchArtifact, file, loader)
}

// validLoaderFileName: a file name, or a GRUB module's <platform>/<file>.
func validLoaderFileName(file string) bool {
	dir, base, ok := strings.Cut(file, "/")
	if !ok {
		return proto.ValidFileName(file) == nil
	}
	return (dir == proto.GrubPlatform(proto.FirmwareX64) || dir == proto.GrubPlatform(proto.FirmwareARM64)) &&
		proto.ValidFileName(base) == nil
}

// GrubModuleFor finds the GRUB module a client asks for at GRUB's prefix
// (grub/<platform>/<file>, proto.GrubModulePath; name is <platform>/<file>)
// in the loader the client boots: its host's --loader, else the site's, as
// the DHCP answer chose; the host is the one leased the client's address,
// and with no lease the site's loader answers (a module is the same for
// every machine of a loader, unlike grub.cfg). false: that loader has no
// such module, and the boot directory may answer instead.
func (h *Handler) GrubModuleFor(ip net.IP, name string) (proto.Artifact, bool) {
	if !validLoaderFileName(name) || !strings.Contains(name, "/") {
		return proto.Artifact{}, false
	}
	site, _ := h.cfg.State.Site()
	loader := site.Loader
	if mac := h.leasedMAC(ip.String()); mac != "" {
		if host, ok := h.cfg.State.Host(mac); ok && host.Loader != "" {
			loader = host.Loader
		}
	}
	if loader == "" || !h.assigned.hasLoader(loader) {
		return proto.Artifact{}, false
	}
	l, ok := h.cfg.State.Loader(loader)
	if !ok {
		return proto.Artifact{}, false
	}
	f, ok := l.GrubModule(name)
	return f.Artifact, ok
}

// serveArtifact maps /artifacts/<image>/<file> or /loaders/<loader>/<file>
// to its artifact (lookup: ArtifactFor or LoaderFileFor): a malformed path
// is a 400, anything not served here a 404.
func (h *Handler) serveArtifact(w http.ResponseWriter, r *http.Request, rest string, lookup func(set, file string) (proto.Artifact, error)) {
	set, file, ok := strings.Cut(rest, "/")
	if !ok {
		http.Error(w, "httpboot: bad artifact path", http.StatusBadRequest)
		return
	}
	a, err := lookup(set, file)
	switch {
	case errors.Is(err, ErrBadArtifactPath):
		http.Error(w, "httpboot: bad artifact path", http.StatusBadRequest)
		return
	case err != nil:
		http.NotFound(w, r)
		return
	case h.cfg.Artifacts == nil:
		http.Error(w, "httpboot: no artifact source", http.StatusServiceUnavailable)
		return
	}
	h.cfg.Artifacts.ServeArtifact(w, h.withMachine(r), a)
}

// serveBootFile serves one regular file of BootDir, in a sub-folder or not
// (/boot/x86_64-efi/http.mod): the same tree TFTP serves. Each segment of
// the name must be a plain file name, so "..", "." and empty segments are
// refused before any lookup; os.Root then refuses any name that would leave
// the directory through a symlink.
func (h *Handler) serveBootFile(w http.ResponseWriter, r *http.Request, name string) {
	if h.cfg.BootDir == "" || !validBootPath(name) {
		http.NotFound(w, r)
		return
	}
	root, err := os.OpenRoot(h.cfg.BootDir)
	if err != nil {
		h.log.Error("boot dir", "dir", h.cfg.BootDir, "err", err)
		http.NotFound(w, r)
		return
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.log.Warn("boot file refused", "file", name, "ip", remoteIP(r), "err", err)
		}
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	mac := h.leasedHost(remoteIP(r))
	if mac == "" {
		// ServeContent over an *os.File: Range, HEAD, If-Modified-Since, sendfile.
		http.ServeContent(w, r, path.Base(name), fi.ModTime(), f)
		return
	}
	// A machine of the site (a UEFI HTTP boot firmware fetching iPXE):
	// the same pair of events as an artifact from the cache, so its
	// timeline shows the download. Requests from nobody's address record
	// nothing, as before: anyone can repeat them.
	start := time.Now()
	h.emit(proto.EventArtifactStart, mac, map[string]string{"file": name, "size": strconv.FormatInt(fi.Size(), 10), "source": "boot-dir"})
	cw := &httpcount.Writer{ResponseWriter: w}
	http.ServeContent(cw, r, path.Base(name), fi.ModTime(), f)
	status := "aborted"
	if cl, _ := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); cw.Status < 400 &&
		(r.Method == http.MethodHead || cw.Status == http.StatusNotModified || cw.N == cl) {
		status = "complete"
	}
	h.emit(proto.EventArtifactEnd, mac, map[string]string{"file": name, "source": "boot-dir", "status": status,
		"bytes": strconv.FormatInt(cw.N, 10), "http_status": strconv.Itoa(cw.Status),
		"duration_ms": strconv.FormatInt(time.Since(start).Milliseconds(), 10)})
}

// validBootPath: a path of at most 8 segments, each a file name
// (proto.ValidFileName: no "..", no ".", nothing empty, no control bytes),
// as stageBootFiles bounds the tree.
func validBootPath(name string) bool {
	segs := strings.Split(name, "/")
	if len(segs) > 8 {
		return false
	}
	for _, s := range segs {
		if proto.ValidFileName(s) != nil {
			return false
		}
	}
	return true
}

// leasedHost is the MAC of the known host holding the edge's DHCP lease on
// ip, "" if none.
func (h *Handler) leasedHost(ip string) string {
	mac := h.leasedMAC(ip)
	if _, known := h.cfg.State.Host(mac); !known {
		return ""
	}
	return mac
}

// withMachine returns r with ?mac= naming the machine the request is for,
// or none. A ?mac= in the URL stays only if the site knows that MAC: the
// cache records artifact events under it, one pair per request, and counts
// requests that name nobody per source instead (cache.Config.Repeats), so a
// made-up MAC must not buy a client events of its own. A request with no
// ?mac= is named from the edge's DHCP lease on its source address, as TFTP
// requests are, when that lease is a known host's: a UEFI HTTP boot
// firmware getting its loader, or dracut's livenet fetching root=live:URL
// (a boot's largest download), cannot put the MAC in the URL. A ?mac= is
// never replaced by the lease.
func (h *Handler) withMachine(r *http.Request) *http.Request {
	q := r.URL.Query()
	if q.Has("mac") {
		if mac, err := proto.ParseMAC(q.Get("mac")); err == nil {
			if _, ok := h.cfg.State.Host(mac); ok {
				return r
			}
		}
		q.Del("mac")
	} else {
		mac := h.leasedHost(remoteIP(r))
		if mac == "" {
			return r
		}
		q.Set("mac", mac)
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	return r2
}

// refusedBody is the one answer to a callback refused for its token or its
// address. It is the same whether or not the MAC is known, so a refusal
// tells a prober nothing about which machines exist.
const refusedBody = "httpboot: callback refused: no valid token for this machine from this address\n"

// caller is a request that passed authorize.
type caller struct {
	mac  string
	host *proto.Host // nil for a MAC the edge does not know
	ip   string
}

// authorize checks what every machine-to-edge API request (a callback,
// "what next?") must pass: a MAC, a token tokenOK accepts (in the query or
// TokenHeader; the token first, so a forged request costs an HMAC, not a
// body read), whatever more refuse says (a reason, or ""), and the
// caller's address (fromKnownAddress). A refusal is answered here, alike
// for known and unknown MACs, and ok is false.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, kind string,
	tokenOK func(mac string, host *proto.Host, token string) bool, refuse func(host *proto.Host) string) (c caller, ok bool) {
	mac, err := proto.ParseMAC(r.URL.Query().Get("mac"))
	if err != nil {
		http.Error(w, "httpboot: "+err.Error(), http.StatusBadRequest)
		return c, false
	}
	c = caller{mac: mac, ip: remoteIP(r)}
	got := r.URL.Query().Get("token")
	if got == "" {
		got = r.Header.Get(TokenHeader)
	}
	if hst, ok := h.cfg.State.Host(mac); ok {
		c.host = &hst
	}
	var reason string
	switch {
	case got == "":
		reason = "no token"
	case !tokenOK(mac, c.host, got):
		reason = "wrong token" // forged, another machine's, or from an earlier assignment
	case refuse != nil:
		reason = refuse(c.host)
	}
	if reason == "" {
		reason = h.fromKnownAddress(mac, c.host, c.ip)
	}
	if reason != "" {
		h.drops.Warn("callback refused", "reason", reason, "mac", mac, "ip", c.ip, "kind", kind)
		h.repeat(c.ip, proto.EventCallbackRefused, mac, map[string]string{"reason": reason, "ip": c.ip, "callback": kind})
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, refusedBody)
		return c, false
	}
	return c, true
}

func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request, kind string) {
	c, ok := h.authorize(w, r, kind, func(mac string, host *proto.Host, token string) bool {
		return validToken(h.cfg.CallbackKey, mac, host, token)
	}, func(host *proto.Host) string {
		if host == nil && kind == "facts" && !h.discovers() {
			// Facts of a machine the coordinator does not know are
			// taken only where unknown machines boot the discovery image.
			return "unknown machine and the site does not discover"
		}
		return ""
	})
	if !ok {
		return
	}
	mac, ip := c.mac, c.ip
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCallbackBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.drops.Warn("callback refused", "reason", "body too large", "mac", mac, "ip", ip, "content_length", r.ContentLength)
			http.Error(w, fmt.Sprintf("httpboot: body larger than %d bytes", MaxCallbackBody), http.StatusRequestEntityTooLarge)
			return
		}
		// A body cut off or too slow (the Guard's deadline); the
		// connection is not reused after a failed body read.
		h.drops.Warn("callback refused", "reason", "body read failed", "mac", mac, "ip", ip, "err", err)
		http.Error(w, "httpboot: reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	// The body is in: the forward to the coordinator below must not be cut
	// by the body deadline (net/http's read after the body would cancel
	// the request context). No deadline support (tests) is fine.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	// "done" may come with no body at all (curl -X POST); facts need JSON.
	if (kind == "facts" || len(strings.TrimSpace(string(body))) > 0) && !json.Valid(body) {
		http.Error(w, "httpboot: body is not valid JSON", http.StatusBadRequest)
		return
	}
	event := proto.EventCallbackDone
	if kind == "facts" {
		event = proto.EventCallbackFacts
	}
	detail := map[string]string{"ip": ip, "bytes": strconv.Itoa(len(body))}
	if cb := h.cfg.Callbacks; cb != nil {
		if kind == "facts" {
			err = cb.Facts(r.Context(), mac, body)
		} else {
			err = cb.Done(r.Context(), mac)
		}
		if err != nil {
			detail["error"] = err.Error()
			h.emit(event, mac, detail)
			h.log.Warn("callback not forwarded", "mac", mac, "kind", kind, "err", err)
			// The reason stays in the log and the event: the coordinator's
			// answer is not the caller's business.
			http.Error(w, "httpboot: the coordinator did not take the callback", http.StatusBadGateway)
			return
		}
		detail["forwarded"] = "true"
	} else {
		detail["forwarded"] = "false"
	}
	h.emit(event, mac, detail)
	h.log.Info("callback", "mac", mac, "kind", kind, "bytes", len(body), "forwarded", detail["forwarded"])
	w.WriteHeader(http.StatusNoContent)
}

// fromKnownAddress says why a callback for mac may not come from ip, or ""
// when it may. Where the site's DHCP hands out the host's address (its
// reservation in full or reservations mode; any address in full mode),
// the caller must be at the host's reservation or at an address the edge
// leased to one of the machine's MACs; elsewhere, an address the edge
// leased to another machine is still refused. When the
// edge knows no address at all (proxy DHCP, no DHCP here and no
// reservation), the token alone decides.
func (h *Handler) fromKnownAddress(mac string, host *proto.Host, ip string) string {
	addr := net.ParseIP(ip)
	site, _ := h.cfg.State.Site()
	handsOut := site.DHCP == proto.DHCPFull || site.DHCP == proto.DHCPReservations
	reserved := handsOut && host != nil && host.IP != ""
	if reserved && addr != nil && addr.Equal(net.ParseIP(host.IP)) {
		return ""
	}
	if h.cfg.Leases != nil && addr != nil {
		if m := h.cfg.Leases.MACForIP(addr); m != "" {
			if m == mac || (host != nil && slices.Contains(host.MACs(), m)) {
				return ""
			}
			return "address leased to another machine"
		}
	}
	switch {
	case reserved:
		return "not the host's reserved address"
	case site.DHCP == proto.DHCPFull && h.cfg.Leases != nil:
		// Only in full mode does every machine's address come from
		// this edge; in reservations mode a host without a reservation
		// gets one from another server, which the edge never sees.
		return "no lease on the caller's address"
	}
	return ""
}

// repeat records an event a client can repeat at will, through
// Config.Repeats when there is one.
func (h *Handler) repeat(source, kind, mac string, detail map[string]string) {
	if h.cfg.Repeats != nil {
		h.cfg.Repeats.Count(sourceKey(source), kind, mac, detail)
		return
	}
	h.emit(kind, mac, detail)
}

// TFTPScript is the per-client iPXE script over TFTP: what /boot.ipxe?mac=
// renders over HTTP, for the machine the edge's DHCP leased the request's
// source address to (a firmware that chains to iPXE by TFTP name, or an
// iPXE built without HTTP).
const TFTPScript = "boot.ipxe"

// LookupTFTP answers the files rendered per client over TFTP (the edge
// passes it to the TFTP server as its Dynamic source):
//
//   - boot.ipxe (at the root): the iPXE script of the machine holding the
//     DHCP lease on the request's source address. No lease: nothing (the
//     client gets "file not found"), so one machine's script is never
//     served to another.
//   - grub.cfg (in any directory: the prefix differs between builds, /grub,
//     /EFI/BOOT, the shim's directory): the GRUB config of the machine
//     holding the lease on the source address. Debian's signed GRUB reads
//     only <prefix>/grub.cfg, never a per-MAC name. With no lease (proxy
//     DHCP, another server's lease) the generic fallback is served, as
//     before: it holds no host's data and asks over HTTP by
//     ${net_default_mac}. A GRUB without http (Debian's signed one) cannot
//     follow it: it prints why and exits to the next boot device, where
//     "file not found" would leave it at a GRUB prompt.
//     The kernel and initrds a config names are read over TFTP too, as
//     (tftp,EDGE)/artifacts/<image>/<file> (Input.Via).
//   - grub.cfg-01-aa-bb-cc-dd-ee-ff: GRUB's net config search
//     (grub_net_search_config_file) tries, in the directory of its prefix,
//     the MAC (lower-case, dashes), then the client IP in upper-case hex
//     shortened one digit at a time (grub.cfg-C0A80064 ... grub.cfg-C),
//     then grub.cfg. The MAC file is refused when the source address is
//     leased to another machine, or to none while the edge's DHCP leases
//     every client (full mode); the IP files are never answered.
//
// Unknown machines under the ignore policy get nothing.
func (h *Handler) LookupTFTP(p string, remote net.Addr) ([]byte, bool) {
	ip := ""
	if ua, ok := remote.(*net.UDPAddr); ok {
		ip = ua.IP.String()
	}
	base := path.Base(p)
	switch {
	case p == TFTPScript:
		mac := h.leasedMAC(ip)
		if mac == "" {
			h.drops.Info("tftp script refused: no lease on the source address", "ip", ip, "file", p)
			return nil, false
		}
		return h.renderTFTP(mac, ip, false)
	case base == "grub.cfg":
		if mac := h.leasedMAC(ip); mac != "" {
			return h.renderTFTP(mac, ip, true)
		}
		text, err := GRUBFallback(h.cfg.BaseURL)
		if err != nil {
			h.log.Error("grub fallback", "err", err)
			return nil, false
		}
		return []byte(text), true
	}
	rest, ok := strings.CutPrefix(base, "grub.cfg-01-")
	if !ok {
		return nil, false
	}
	mac, err := proto.ParseMAC(rest)
	if err != nil {
		return nil, false
	}
	leased := h.leasedMAC(ip)
	switch {
	case leased != "" && !h.sameMachine(leased, mac):
		h.drops.Warn("tftp script refused: source address leased to another machine", "ip", ip, "mac", mac, "leased_to", leased)
		return nil, false
	case leased == "" && h.leasesEveryClient():
		h.drops.Warn("tftp script refused: no lease on the source address", "ip", ip, "mac", mac)
		return nil, false
	}
	return h.renderTFTP(mac, ip, true)
}

// leasedMAC is the MAC holding the edge's DHCP lease on ip, "" if none (or
// the edge serves no DHCP).
func (h *Handler) leasedMAC(ip string) string {
	addr := net.ParseIP(ip)
	if h.cfg.Leases == nil || addr == nil {
		return ""
	}
	return h.cfg.Leases.MACForIP(addr)
}

// leasesEveryClient reports whether every machine booting here holds a
// lease from this edge: its DHCP runs in full mode. Then an address with no
// lease is no machine of the site's, and gets no host's config by MAC. (In
// reservations, proxy or off mode other servers hand out addresses.)
func (h *Handler) leasesEveryClient() bool {
	if h.cfg.Leases == nil {
		return false
	}
	site, _ := h.cfg.State.Site()
	return site.DHCP == proto.DHCPFull
}

// sameMachine reports whether MACs a and b are one host's (or equal).
func (h *Handler) sameMachine(a, b string) bool {
	if a == b {
		return true
	}
	host, ok := h.cfg.State.Host(a)
	return ok && slices.Contains(host.MACs(), b)
}

// renderTFTP renders mac's iPXE script or GRUB config for a TFTP request
// from ip, with the same events as over HTTP (via=tftp).
func (h *Handler) renderTFTP(mac, ip string, grub bool) ([]byte, bool) {
	// Over TFTP the arch is not known; GRUB on this path is UEFI.
	platform, render, format := "", Render, "ipxe"
	if grub {
		platform, render, format = "efi", RenderGRUB, "grub"
	}
	in := InputFor(h.cfg.State, h.cfg.BaseURL, mac, "", platform, ip, 0)
	in.Token = token(h.cfg.CallbackKey, mac, in.Host)
	// A GRUB that asks over TFTP fetches its kernel and initrds over TFTP:
	// Debian's signed GRUB has no http module.
	in.Via = ViaTFTP
	s, err := render(in)
	if err != nil {
		h.log.Error("render "+format, "mac", mac, "err", err)
		return nil, false
	}
	detail := map[string]string{
		"decision": s.Decision.Action, "image": s.Decision.Image, "reason": s.Decision.Reason,
		"ip": ip, "format": format, "via": "tftp",
	}
	if in.Host == nil {
		h.repeat(ip, proto.EventScriptUnknown, mac, detail)
	} else {
		h.emit(proto.EventScript, mac, detail)
	}
	if s.Status != http.StatusOK {
		return nil, false
	}
	return []byte(s.Text), true
}
