package httpboot

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
)

// Actions a Decision can take.
const (
	ActionBoot     = "boot"     // boot the host's image
	ActionDiscover = "discover" // unknown machine, site policy discover: boot the discovery image
	ActionLocal    = "local"    // leave network boot for the local disk
	ActionIgnore   = "ignore"   // unknown machine, site policy ignore: 404
	ActionExit     = "exit"     // leave network boot for the next boot device
	ActionMissing  = "missing"  // the image is not (yet) known at this edge: wait and ask again
	ActionInvalid  = "invalid"  // host or image data cannot be rendered safely: wait and ask again
)

// MaxTries bounds how often a failing machine asks for its script again
// before it leaves network boot, so a rack with a broken image does not spin
// forever and a transient failure (edge restart, image still syncing) heals.
const MaxTries = 5

// maxCmdline is the x86 kernel's COMMAND_LINE_SIZE; longer lines are cut by
// the kernel, silently dropping whatever came last.
const maxCmdline = 2048

// Input is everything a script depends on. The handler fills it from the
// request and the edge state; tests and `fleetboot explain` fill it directly.
type Input struct {
	BaseURL  string       // this edge, e.g. http://10.0.0.1:8080 (no path)
	MAC      string       // the booting NIC, canonical colon form
	Arch     string       // iPXE ${buildarch}: i386, x86_64, arm64; empty if not sent
	Platform string       // iPXE ${platform}: pcbios, efi; empty if not sent
	ClientIP string       // where the request came from; {{ip}} when the host has no reservation
	Try      int          // failed attempts so far (the script's retry loop counts them)
	Site     proto.Site   // zero value if the edge has no site config yet
	Host     *proto.Host  // nil: the coordinator does not know this MAC
	Image    *proto.Image // the host's image, or the discovery image; nil if not found
	// Token is the MAC's callback token (see token.go), rendered as
	// fleetboot.token= and in {{token}} and {{callback}}; empty when the
	// renderer is not an edge (explain), which leaves them out.
	Token string
	// Via is the transport the loader asked for its config on: "" or
	// ViaHTTP, or ViaTFTP. A GRUB config asked for over TFTP names the
	// kernel and initrds as (tftp,EDGE)/artifacts/...: Debian's signed
	// GRUB has no http module (and Secure Boot forbids loading one), and
	// it asks over TFTP, so the transport of the request is what says
	// whether this GRUB can fetch over HTTP. iPXE scripts ignore it.
	Via string
}

// Transports a config can be asked for on (Input.Via).
const (
	ViaHTTP = "http"
	ViaTFTP = "tftp"
)

// Decision says what a script does and why, for events, logs and explain.
type Decision struct {
	Action string `json:"action"`
	Image  string `json:"image,omitempty"`
	Reason string `json:"reason"`
}

func (d Decision) String() string {
	if d.Image != "" {
		return d.Action + " " + d.Image + ": " + d.Reason
	}
	return d.Action + ": " + d.Reason
}

// Script is a rendered boot script.
type Script struct {
	Text     string
	Status   int // HTTP status to answer with
	Decision Decision
}

var tokenRE = regexp.MustCompile(`^[a-z0-9_]{1,16}$`)

// validateInput rejects the caller's own mistakes. Host and image data errors
// are not errors of Render: they become an ActionInvalid decision.
func validateInput(in Input) (base *url.URL, err error) {
	base, err = url.Parse(in.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" ||
		base.User != nil || base.RawQuery != "" || base.Fragment != "" || strings.Trim(base.Path, "/") != "" ||
		proto.ValidCmdlineToken(in.BaseURL) != nil {
		return nil, fmt.Errorf("httpboot: invalid base URL %q: want http://HOST[:PORT]", in.BaseURL)
	}
	if mac, err := proto.ParseMAC(in.MAC); err != nil || mac != in.MAC {
		return nil, fmt.Errorf("httpboot: MAC %q is not in canonical form", in.MAC)
	}
	if in.Arch != "" && !tokenRE.MatchString(in.Arch) {
		return nil, fmt.Errorf("httpboot: invalid arch %q", in.Arch)
	}
	if in.Platform != "" && !tokenRE.MatchString(in.Platform) {
		return nil, fmt.Errorf("httpboot: invalid platform %q", in.Platform)
	}
	if in.Try < 0 || in.Try > MaxTries {
		return nil, fmt.Errorf("httpboot: try %d out of range 0..%d", in.Try, MaxTries)
	}
	if in.Token != "" && proto.ValidCmdlineToken(in.Token) != nil {
		return nil, fmt.Errorf("httpboot: invalid callback token %q", in.Token)
	}
	if in.Via != "" && in.Via != ViaHTTP && in.Via != ViaTFTP {
		return nil, fmt.Errorf("httpboot: unknown transport %q", in.Via)
	}
	return base, nil
}

// plan is the outcome of the decision, before it is written in a script
// language: everything in it has been validated.
type plan struct {
	decision   Decision
	status     int
	image      string   // image name for URLs
	kernel     string   // artifact file names
	initrds    []string // in the image's order: early microcode first
	cmdline    []string // tokens after initrd=..., already expanded and validated
	hostname   string
	liveRootOn bool
}

// decide walks the decision table of DESIGN.md §1 for one machine.
func decide(in Input) plan {
	base := strings.TrimRight(in.BaseURL, "/")
	if in.Host == nil {
		policy := in.Site.Unknown
		if policy == "" {
			policy = proto.UnknownIgnore
		}
		switch policy {
		case proto.UnknownDiscover:
			if in.Site.DiscoveryImage == "" {
				return plan{decision: Decision{Action: ActionExit, Reason: "unknown host: site policy discover, but the site has no discovery image"}, status: http.StatusOK}
			}
			p := bootPlan(in, base, in.Site.DiscoveryImage, proto.Host{MAC: in.MAC})
			if p.decision.Action == ActionBoot {
				p.decision = Decision{Action: ActionDiscover, Image: p.image, Reason: "unknown host: site policy discover"}
				// The discovery system reports to this edge: it is named
				// even when the image's command line does not say
				// fleetboot.edge={{edge}} (as `discovery build` makes it).
				if !slices.ContainsFunc(p.cmdline, func(t string) bool { return strings.HasPrefix(t, "fleetboot.edge=") }) {
					p.cmdline = append(p.cmdline, "fleetboot.edge="+base)
					if n := len(initrdArgs(p.initrds)) + len(strings.Join(p.cmdline, " ")) + 1; n > maxCmdline {
						return invalid(p.image, fmt.Errorf("kernel command line is %d bytes, the kernel keeps %d", n, maxCmdline))
					}
				}
			}
			return p
		case proto.UnknownExit:
			return plan{decision: Decision{Action: ActionExit, Reason: "unknown host: site policy exit"}, status: http.StatusOK}
		case proto.UnknownIgnore:
			return plan{decision: Decision{Action: ActionIgnore, Reason: "unknown host: site policy ignore"}, status: http.StatusNotFound}
		default:
			return plan{decision: Decision{Action: ActionIgnore, Reason: fmt.Sprintf("unknown host: unknown site policy %q, treated as ignore", policy)}, status: http.StatusNotFound}
		}
	}
	h := *in.Host
	switch h.State {
	case proto.StateLocal:
		return plan{decision: Decision{Action: ActionLocal, Reason: "host state is local"}, status: http.StatusOK}
	case proto.StateBoot, "":
	default:
		return invalid(h.Image, fmt.Errorf("unknown host state %q", h.State))
	}
	if h.Image == "" {
		return plan{decision: Decision{Action: ActionExit, Reason: "host has no image assigned"}, status: http.StatusOK}
	}
	return bootPlan(in, base, h.Image, h)
}

func invalid(image string, err error) plan {
	return plan{decision: Decision{Action: ActionInvalid, Image: image, Reason: err.Error()}, status: http.StatusOK}
}

// archCompatible tolerates i386 for x86_64 images on purpose: undionly.kpxe is
// a 32-bit iPXE, so ${buildarch} says i386 on every 64-bit BIOS machine.
func archCompatible(client, image string) bool {
	if client == "" || image == "" {
		return true
	}
	family := func(a string) string {
		switch a {
		case "i386", "x86_64", "amd64":
			return "x86"
		case "arm64", "aarch64":
			return "arm64"
		}
		return a
	}
	return family(client) == family(image)
}

func bootPlan(in Input, base, imageName string, h proto.Host) plan {
	if in.Image == nil || in.Image.Name != imageName {
		return plan{decision: Decision{Action: ActionMissing, Image: imageName, Reason: "image " + imageName + " is not known at this edge"}, status: http.StatusOK, image: imageName}
	}
	im := *in.Image
	if err := proto.ValidName("image", im.Name); err != nil {
		return invalid(imageName, err)
	}
	if !archCompatible(in.Arch, im.Arch) {
		return invalid(im.Name, fmt.Errorf("image %s is for %s, the machine runs %s", im.Name, im.Arch, in.Arch))
	}
	k, ok := im.Artifact(proto.RoleKernel)
	if !ok {
		return invalid(im.Name, fmt.Errorf("image %s has no kernel", im.Name))
	}
	initrds := initrdNames(im)
	if len(initrds) == 0 {
		return invalid(im.Name, fmt.Errorf("image %s has no initrd", im.Name))
	}
	for _, n := range append([]string{k.Name}, initrds...) {
		if err := proto.ValidFileName(n); err != nil {
			return invalid(im.Name, fmt.Errorf("image %s: %w", im.Name, err))
		}
	}
	if err := proto.ValidHostname(h.Hostname); err != nil {
		return invalid(im.Name, err)
	}
	for name, v := range h.Vars {
		if err := proto.ValidVar(name, v); err != nil {
			return invalid(im.Name, err)
		}
	}
	ip := h.IP
	if ip == "" {
		ip = in.ClientIP
	}
	if ip != "" && proto.ValidCmdlineToken(ip) != nil {
		return invalid(im.Name, fmt.Errorf("invalid client address %q", ip))
	}
	lookup := func(name string) (string, bool) {
		switch name {
		case "mac":
			return in.MAC, true
		case "hostname":
			return h.Hostname, true
		case "ip":
			return ip, true
		case "site":
			return in.Site.Name, true
		case "edge":
			return base, true
		case "image":
			return im.Name, true
		case "token":
			return in.Token, true
		case "callback":
			// The done callback, ready to POST to.
			u := base + "/api/v1/done?mac=" + in.MAC
			if in.Token != "" {
				u += "&token=" + in.Token
			}
			return u, true
		}
		if v, ok := strings.CutPrefix(name, "var."); ok {
			val, ok := h.Vars[v]
			return val, ok
		}
		return "", false
	}
	var tokens []string
	live, isLive := im.Artifact(proto.RoleISO)
	if isLive {
		if err := proto.ValidFileName(live.Name); err != nil {
			return invalid(im.Name, fmt.Errorf("image %s: %w", im.Name, err))
		}
		// dracut's livenet module fetches the ISO and pivots into its rootfs
		// (Azure Linux seed). No ?mac= here: dracut derives a local file
		// name from the URL, and a query string has no business in it.
		tokens = append(tokens, "root=live:"+base+"/artifacts/"+im.Name+"/"+live.Name)
	}
	hasBootif := false
	// Split on the ASCII space alone: any other whitespace (newline, tab,
	// U+2028) is refused by the token check below instead of quietly
	// becoming a separator.
	for _, word := range strings.Split(im.Cmdline, " ") {
		if word == "" {
			continue
		}
		tok, err := expand(word, lookup)
		if err != nil {
			return invalid(im.Name, fmt.Errorf("image %s command line: %w", im.Name, err))
		}
		if tok == "" {
			continue // e.g. "{{var.extra}}" with an empty value
		}
		if err := proto.ValidCmdlineToken(tok); err != nil {
			return invalid(im.Name, fmt.Errorf("image %s command line: %w", im.Name, err))
		}
		hasBootif = hasBootif || strings.HasPrefix(tok, "BOOTIF=")
		tokens = append(tokens, tok)
	}
	if !hasBootif {
		// BOOTIF (pxelinux's IPAPPEND 2 convention) tells dracut, anaconda and
		// most installers which NIC booted; on multi-NIC machines they would
		// otherwise pick the first one with a link.
		tokens = append(tokens, "BOOTIF=01-"+strings.ReplaceAll(in.MAC, ":", "-"))
	}
	if in.Token != "" {
		// For installers that build their callback themselves.
		tokens = append(tokens, "fleetboot.token="+in.Token)
	}
	if n := len(initrdArgs(initrds)) + len(strings.Join(tokens, " ")) + 1; n > maxCmdline {
		return invalid(im.Name, fmt.Errorf("kernel command line is %d bytes, the kernel keeps %d", n, maxCmdline))
	}
	return plan{
		decision:   Decision{Action: ActionBoot, Image: im.Name, Reason: "host boots image " + im.Name},
		status:     http.StatusOK,
		image:      im.Name,
		kernel:     k.Name,
		initrds:    initrds,
		cmdline:    tokens,
		hostname:   h.Hostname,
		liveRootOn: isLive,
	}
}

// initrdNames lists the image's initrd artifacts in the image's order. An
// image may have several: the CPU's early microcode must come first (the
// kernel looks for it only at the start of the initramfs), then the initrd.
func initrdNames(im proto.Image) []string {
	var names []string
	for _, a := range im.Artifacts {
		if a.Role == proto.RoleInitrd {
			names = append(names, a.Name)
		}
	}
	return names
}

// initrdArgs is "initrd=a initrd=b": the Linux EFI stub under iPXE loads
// each named initrd, in order.
func initrdArgs(initrds []string) string {
	args := make([]string, len(initrds))
	for i, n := range initrds {
		args[i] = "initrd=" + n
	}
	return strings.Join(args, " ")
}

// printable makes a reason safe for an echo line or comment in a script:
// reasons may quote hostile host data.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '$' || c == '#' || c == '&' || c == '|' || c == '\\' || c == '"' || c == '\'' || c == ';' || c == '`' {
			b[i] = '_'
		}
	}
	return string(b)
}

// Render renders the iPXE script for one machine. An error means the input
// itself is malformed (base URL, MAC, arch); problems with the host's or
// image's data are a Decision (ActionInvalid) with a script that says so.
func Render(in Input) (Script, error) {
	if _, err := validateInput(in); err != nil {
		return Script{}, err
	}
	p := decide(in)
	base := strings.TrimRight(in.BaseURL, "/")
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# fleetboot %s: %s\n", in.MAC, printable(p.decision.String()))
	switch p.decision.Action {
	case ActionBoot, ActionDiscover:
		q := "?mac=" + in.MAC
		if p.hostname != "" {
			fmt.Fprintf(&b, "echo fleetboot: %s (%s) boots %s\n", in.MAC, p.hostname, p.image)
		} else {
			fmt.Fprintf(&b, "echo fleetboot: %s boots %s\n", in.MAC, p.image)
		}
		// The initrd is named and initrd=<name> is on the command line:
		// the UEFI Linux EFI stub under this iPXE finds its initrd only so.
		fmt.Fprintf(&b, "kernel --name %s %s/artifacts/%s/%s%s %s %s || goto retry\n",
			p.kernel, base, p.image, p.kernel, q, initrdArgs(p.initrds), strings.Join(p.cmdline, " "))
		for _, n := range p.initrds {
			fmt.Fprintf(&b, "initrd --name %s %s/artifacts/%s/%s%s || goto retry\n", n, base, p.image, n, q)
		}
		b.WriteString("boot || goto retry\n")
		writeRetry(&b, in, base, "loading "+p.image+" failed")
	case ActionMissing, ActionInvalid:
		fmt.Fprintf(&b, "echo fleetboot: cannot boot %s now: %s\n", in.MAC, printable(p.decision.Reason))
		b.WriteString("goto retry\n")
		writeRetry(&b, in, base, "no bootable image")
	case ActionLocal:
		b.WriteString("echo fleetboot: booting from local disk\n")
		writeLocal(&b, in.Platform)
	default: // ActionExit, ActionIgnore
		fmt.Fprintf(&b, "echo fleetboot: %s: %s\n", in.MAC, printable(p.decision.Reason))
		b.WriteString("exit 1\n")
	}
	return Script{Text: b.String(), Status: p.status, Decision: p.decision}, nil
}

// writeLocal leaves network boot for the disk. UEFI: "exit 1", because a boot
// option that returns an error makes the boot manager continue down BootOrder,
// while EFI_SUCCESS may stop at the boot menu. BIOS: sanboot of the first hard
// disk (Razor's choice), because returning to some BIOSes hangs or reboots;
// if there is no disk 0x80 the exit still hands over to the BIOS.
func writeLocal(b *strings.Builder, platform string) {
	switch platform {
	case "efi":
		b.WriteString("exit 1\n")
	case "pcbios":
		b.WriteString("sanboot --no-describe --drive 0x80 || exit 1\n")
	default:
		b.WriteString("iseq ${platform} efi && goto efi || goto bios\n")
		b.WriteString(":bios\n")
		b.WriteString("sanboot --no-describe --drive 0x80 || goto efi\n")
		b.WriteString(":efi\n")
		b.WriteString("exit 1\n")
	}
}

// writeRetry asks the edge again after a failure, counting attempts in the
// URL (the server is stateless and old iPXE builds have no arithmetic). A
// failed chain gets one fresh DHCP, for a link that flapped under spanning
// tree, then the machine leaves network boot.
func writeRetry(b *strings.Builder, in Input, base, what string) {
	b.WriteString(":retry\n")
	if in.Try+1 >= MaxTries {
		fmt.Fprintf(b, "echo fleetboot: %s, %d tries: leaving network boot\n", what, MaxTries)
		b.WriteString("sleep 10\n")
		b.WriteString("exit 1\n")
		return
	}
	next := scriptURL(base, in.MAC, in.Arch, in.Platform, in.Try+1)
	fmt.Fprintf(b, "echo fleetboot: %s (try %d of %d): asking again in 5 s\n", what, in.Try+1, MaxTries)
	b.WriteString("sleep 5\n")
	fmt.Fprintf(b, "chain --replace %s || goto redhcp\n", next)
	b.WriteString(":redhcp\n")
	fmt.Fprintf(b, "dhcp && chain --replace %s || goto giveup\n", next)
	b.WriteString(":giveup\n")
	fmt.Fprintf(b, "echo fleetboot: %s unreachable: leaving network boot\n", base)
	b.WriteString("exit 1\n")
}

func scriptURL(base, mac, arch, platform string, try int) string {
	u := base + "/boot.ipxe?mac=" + mac
	if arch != "" {
		u += "&arch=" + arch
	}
	if platform != "" {
		u += "&platform=" + platform
	}
	if try > 0 {
		u += fmt.Sprintf("&try=%d", try)
	}
	return u
}

// ChainScript is what iPXE gets when it asks for /boot.ipxe without saying
// who it is (the DHCP boot file is the same for every machine). It asks again
// with the MAC of the NIC that booted (${netX} is the last one opened), then,
// as Foreman's intermediate script does, tries each NIC in turn so a
// multi-NIC machine is found by whichever port is cabled.
func ChainScript(baseURL string) (string, error) {
	if _, err := validateInput(Input{BaseURL: baseURL, MAC: "00:00:00:00:00:00"}); err != nil {
		return "", err
	}
	base := strings.TrimRight(baseURL, "/")
	q := func(nic string) string {
		return fmt.Sprintf("%s/boot.ipxe?mac=${%s/mac}&arch=${buildarch}&platform=${platform}", base, nic)
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	b.WriteString("# fleetboot: ask for this machine's script by the MAC of the NIC that booted\n")
	fmt.Fprintf(&b, "chain --replace %s || goto nics\n", q("netX"))
	b.WriteString(":nics\n")
	const nics = 4
	for i := range nics {
		fmt.Fprintf(&b, ":net%d\n", i)
		fmt.Fprintf(&b, "isset ${net%d/mac} || goto failed\n", i)
		fmt.Fprintf(&b, "dhcp net%d || goto net%d\n", i, i+1)
		fmt.Fprintf(&b, "chain --replace %s || goto net%d\n", q(fmt.Sprintf("net%d", i)), i+1)
	}
	fmt.Fprintf(&b, ":net%d\n", nics)
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo fleetboot: no network interface reached %s\n", base)
	b.WriteString("sleep 10\n")
	b.WriteString("exit 1\n")
	return b.String(), nil
}

// errHTTPS: GRUB's http module speaks plain HTTP only.
var errHTTPS = errors.New("httpboot: GRUB fetches over plain http only")

// grubDevice turns http://10.0.0.1:8080 into GRUB's (http,10.0.0.1:8080).
func grubDevice(baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", fmt.Errorf("httpboot: base URL: %w", err)
	}
	if u.Scheme != "http" {
		return "", errHTTPS
	}
	return "(http," + u.Host + ")", nil
}

// grubTFTPDevice turns http://10.0.0.1:8080 into (tftp,10.0.0.1): the edge
// serves TFTP on the address it serves HTTP on, at port 69 (GRUB 2.06 has
// no way to name another port).
func grubTFTPDevice(baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("httpboot: base URL %q: no host", baseURL)
	}
	return "(tftp," + u.Hostname() + ")", nil
}

// grubFiles returns the GRUB device the kernel and initrds are read from
// and the suffix of each path. Over HTTP the path carries ?mac=, which
// names the machine in the edge's artifact events; over TFTP a query would
// be part of the file name, and the TFTP server names the machine from its
// lease on the source address instead.
func grubFiles(in Input) (dev, suffix string, err error) {
	switch in.Via {
	case "", ViaHTTP:
		dev, err = grubDevice(in.BaseURL)
		return dev, "?mac=" + in.MAC, err
	case ViaTFTP:
		dev, err = grubTFTPDevice(in.BaseURL)
		return dev, "", err
	}
	return "", "", fmt.Errorf("httpboot: unknown transport %q", in.Via)
}

// RenderGRUB renders the grub.cfg for one machine (the shim + GRUB Secure
// Boot path). Every argument is single-quoted: inside single quotes GRUB
// expands nothing, and validated values cannot hold a quote. The kernel and
// initrds are fetched over in.Via (see Input.Via): a GRUB that asked over
// TFTP gets (tftp,EDGE)/artifacts/<image>/<file>.
func RenderGRUB(in Input) (Script, error) {
	if _, err := validateInput(in); err != nil {
		return Script{}, err
	}
	dev, q, err := grubFiles(in)
	if err != nil {
		return Script{}, err
	}
	p := decide(in)
	var b strings.Builder
	fmt.Fprintf(&b, "# fleetboot %s: %s\n", in.MAC, printable(p.decision.String()))
	switch p.decision.Action {
	case ActionBoot, ActionDiscover:
		// Plain commands, no menu (the form booted under Secure Boot in
		// SECUREBOOT-FACTS.md): when one fails (a kernel Secure Boot
		// refuses: "bad shim signature") the config goes on to the lines
		// after boot and leaves GRUB, where a menu entry would stop at
		// "Press any key to continue".
		fmt.Fprintf(&b, "echo 'fleetboot: %s boots %s'\n", in.MAC, p.image)
		fmt.Fprintf(&b, "linux '%s/artifacts/%s/%s%s'", dev, p.image, p.kernel, q)
		for _, t := range p.cmdline {
			fmt.Fprintf(&b, " '%s'", t)
		}
		b.WriteString("\n")
		// One initrd command with every file: GRUB concatenates them in
		// order, so the early microcode stays first.
		b.WriteString("initrd")
		for _, n := range p.initrds {
			fmt.Fprintf(&b, " '%s/artifacts/%s/%s%s'", dev, p.image, n, q)
		}
		b.WriteString("\n")
		b.WriteString("boot\n")
		fmt.Fprintf(&b, "echo 'fleetboot: booting %s failed: leaving network boot'\n", p.image)
		b.WriteString("sleep 10\n")
		b.WriteString("exit\n")
	default:
		fmt.Fprintf(&b, "echo 'fleetboot: %s: %s'\n", in.MAC, printable(p.decision.Reason))
		if p.decision.Action == ActionMissing || p.decision.Action == ActionInvalid {
			b.WriteString("sleep 10\n")
		}
		// GRUB on this path always runs on UEFI: exit hands back to the
		// boot manager, which goes on down BootOrder (the disk).
		b.WriteString("exit\n")
	}
	return Script{Text: b.String(), Status: p.status, Decision: p.decision}, nil
}

// GRUBFallback is the grub.cfg GRUB reads when no per-MAC file answered (an
// older GRUB that does not search by MAC, or an unknown machine): it asks
// the edge over HTTP with the MAC GRUB booted from.
func GRUBFallback(baseURL string) (string, error) {
	dev, err := grubDevice(baseURL)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# fleetboot: no per-MAC configuration matched; ask the edge by MAC\n")
	fmt.Fprintf(&b, "configfile \"%s/grub.cfg?mac=${net_default_mac}\"\n", dev)
	b.WriteString("echo 'fleetboot: no boot configuration for this machine'\n")
	b.WriteString("sleep 5\n")
	b.WriteString("exit\n")
	return b.String(), nil
}
