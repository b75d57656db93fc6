package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// IPXEDir is Debian's ipxe package: undionly.kpxe, ipxe.efi, snponly.efi.
const IPXEDir = "/usr/lib/ipxe"

// DnsmasqConfig is the reference DHCP+TFTP server (dnsmasq) of a run.
type DnsmasqConfig struct {
	Iface      string // interface inside the host namespace, e.g. eth0
	RangeStart string // first address of the pool
	RangeEnd   string
	Netmask    string // 255.255.255.0 if empty
	// IPXEURL is the boot file given to iPXE (user class "iPXE"), e.g.
	// http://10.77.0.1:8080/boot.ipxe. Empty: no boot file at all (a plain
	// site DHCP server, as for fleetboot's proxy mode).
	IPXEURL  string
	BIOSFile string // boot file for PXE with client arch 0, e.g. undionly.kpxe
	EFIFile  string // boot file for client arch 7/9, e.g. snponly.efi
	TFTPRoot string // IPXEDir if empty and a boot file is set
	// NoPXEDHCP sends iPXE option 175.176 = 1 so it does not wait for
	// ProxyDHCP offers.
	NoPXEDHCP bool
	// NoPing skips dnsmasq's ICMP check of an address before offering it
	// (about 3 s per new client): on for load tests.
	NoPing bool
	// EnableRA makes the same dnsmasq send IPv6 router advertisements
	// (enable-ra, RA only: no DHCPv6) for the prefix of Iface's IPv6
	// address, which Iface must have: how dnsmasq users end iPXE's IPv6
	// autoconfiguration wait on a segment without a router.
	EnableRA bool
}

// Render writes the dnsmasq configuration.
func (c DnsmasqConfig) Render() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("port=0") // no DNS
	w("interface=%s", c.Iface)
	w("bind-interfaces")
	w("log-dhcp")
	w("dhcp-authoritative")
	mask := c.Netmask
	if mask == "" {
		mask = "255.255.255.0"
	}
	w("dhcp-range=%s,%s,%s,1h", c.RangeStart, c.RangeEnd, mask)
	if c.IPXEURL != "" || c.BIOSFile != "" || c.EFIFile != "" {
		root := c.TFTPRoot
		if root == "" {
			root = IPXEDir
		}
		w("enable-tftp")
		w("tftp-root=%s", root)
		w("dhcp-userclass=set:ipxe,iPXE")
		w("dhcp-match=set:efi64,option:client-arch,7")
		w("dhcp-match=set:efi64,option:client-arch,9")
		if c.IPXEURL != "" {
			w("dhcp-boot=tag:ipxe,%s", c.IPXEURL)
		}
		if c.EFIFile != "" {
			w("dhcp-boot=tag:!ipxe,tag:efi64,%s", c.EFIFile)
		}
		if c.BIOSFile != "" {
			w("dhcp-boot=tag:!ipxe,tag:!efi64,%s", c.BIOSFile)
		}
	}
	if c.NoPing {
		w("no-ping")
	}
	if c.EnableRA {
		w("enable-ra")
		w("dhcp-range=::,constructor:%s,ra-only,64,1h", c.Iface)
	}
	if c.NoPXEDHCP {
		w("dhcp-option=tag:ipxe,encap:175,176,1b")
	}
	return b.String()
}

// StartDnsmasq runs dnsmasq in the host's namespace and waits until its
// DHCP port is bound and, with EnableRA, until it advertises.
func StartDnsmasq(t testing.TB, h *Host, dir string, c DnsmasqConfig) *Proc {
	t.Helper()
	conf := filepath.Join(dir, "dnsmasq-"+h.Name+".conf")
	if err := os.WriteFile(conf, []byte(c.Render()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), "dnsmasq", "--keep-in-foreground", "--log-facility=-",
		"--conf-file="+conf, "--pid-file=", "--user=root",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq-"+h.Name+".leases"))
	p := StartProc(t, dir, "dnsmasq-"+h.Name, cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitListening(ctx, h.NS, "udp", 67); err != nil {
		t.Fatalf("dnsmasq: %v\n%s", err, p.Output())
	}
	if c.EnableRA {
		if _, err := p.WaitFor(ctx, regexp.MustCompile(`router advertisement on`)); err != nil {
			t.Fatalf("dnsmasq enable-ra: %v\n%s", err, p.Output())
		}
	}
	return p
}

// Reference is the reference harness: a network whose server host runs
// dnsmasq (DHCP, TFTP and, with EnableRA, IPv6 router advertisements) and
// Go's file server for the boot script and the boot assets. It is what
// fleetboot's boots are compared with, in the e2e tests and in test/bench.
type Reference struct {
	Net  *Network
	Srv  *Host
	Dir  string
	HTTP *RequestLog
	Base string // the HTTP server's base URL
	DHCP *Proc  // dnsmasq

	mu    sync.Mutex
	files map[string]string // Serve's: name under /files/ → path
}

// Serve makes the file at path available as Base/files/name (the LiveOS's
// initramfs and ISO, say) and returns its URL.
func (e *Reference) Serve(name, path string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.files == nil {
		e.files = map[string]string{}
	}
	e.files[name] = path
	return e.Base + "/files/" + name
}

// Reference addresses: the server host, and the pool dnsmasq hands out.
const (
	RefServer     = "10.77.0.1"
	refRangeStart = "10.77.0.100"
	refRangeEnd   = "10.77.0.200"
)

// RefCmdline is the kernel command line of the reference's boot scripts.
const RefCmdline = "console=ttyS0 panic=-1 fleetboot.ref=1"

// StartReference builds the reference environment on a fresh network, with
// logs in dir. script renders boot.ipxe for the request (the VM's MAC is in
// the query). dc's interface and pool are filled in; with dc.EnableRA the
// server host has an IPv6 address (fd77::1/64) for dnsmasq to advertise,
// else IPv6 is off on it and nothing on the segment advertises.
func StartReference(t testing.TB, dir string, assets Assets, dc DnsmasqConfig, script func(base string, r *http.Request) string) *Reference {
	t.Helper()
	e := &Reference{Dir: dir}
	e.Net = NewNetwork(t, "10.77.0.0/24")
	ipv6 := ""
	if dc.EnableRA {
		ipv6 = "fd77::1/64"
	}
	e.Srv = e.Net.AddHost(t, "srv", RefServer, ipv6)
	mux := http.NewServeMux()
	var base string
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, script(base, r))
	})
	mux.HandleFunc("GET /vmlinuz", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, assets.Kernel) })
	mux.HandleFunc("GET /initrd.gz", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, assets.Initrd) })
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		path, ok := e.files[r.PathValue("name")]
		e.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, path)
	})
	e.HTTP = NewRequestLog(mux)
	base = ServeHTTP(t, e.Srv, RefServer+":8080", e.HTTP)
	e.Base = base
	dc.Iface = e.Srv.Iface
	dc.RangeStart, dc.RangeEnd = refRangeStart, refRangeEnd
	if dc.IPXEURL == "" {
		dc.IPXEURL = base + "/boot.ipxe"
	}
	e.DHCP = StartDnsmasq(t, e.Srv, dir, dc)
	return e
}

// PlainScript boots the reference's kernel and initrd with RefCmdline and
// the VM's MAC on the command line.
func PlainScript(base string, _ *http.Request) string {
	return BootScript(base, "vmlinuz", "initrd.gz", RefCmdline+" fleetboot.mac=${net0/mac}")
}

// BootScript is an iPXE script that boots kernel and initrd from baseURL.
// The initrd is named and the command line names it too: OVMF + this iPXE +
// the Linux EFI stub find the initrd only through initrd=<name>.
func BootScript(baseURL, kernel, initrd, cmdline string) string {
	return fmt.Sprintf("#!ipxe\necho fleetboot-ref: net0 chip ${net0/chip} bustype ${net0/bustype} busid ${net0/busid} platform ${platform}\n"+
		"kernel %s/%s initrd=%s %s\ninitrd --name %s %s/%s\nboot\n",
		baseURL, kernel, initrd, cmdline, initrd, baseURL, initrd)
}

// ServeHTTP serves handler on addr inside the host's namespace until the
// test ends and returns the base URL.
func ServeHTTP(t testing.TB, h *Host, addr string, handler http.Handler) string {
	t.Helper()
	l, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("e2e: http listen %s in %s: %v", addr, h.NS, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("e2e: http serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "http://" + l.Addr().(*net.TCPAddr).String()
}

// RequestLog is an http.Handler wrapper that records "METHOD path status"
// of every request, so tests can assert what a VM fetched.
type RequestLog struct {
	Next http.Handler
	Log  *watchBuffer
}

// NewRequestLog wraps next.
func NewRequestLog(next http.Handler) *RequestLog {
	return &RequestLog{Next: next, Log: newWatchBuffer()}
}

func (l *RequestLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	l.Next.ServeHTTP(sw, r)
	fmt.Fprintf(l.Log, "%s %s %d %s\n", r.Method, r.URL.RequestURI(), sw.status, r.RemoteAddr)
}

// Lines are the requests served so far.
func (l *RequestLog) Lines() string { return l.Log.String() }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
