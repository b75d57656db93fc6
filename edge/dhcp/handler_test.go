package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

const (
	edgeIP   = "10.0.0.1"
	httpBase = "http://10.0.0.1:8080"
	knownMAC = "52:54:00:00:00:01"
	otherMAC = "52:54:00:00:00:02"
	strayMAC = "52:54:00:00:00:99"
)

// clock is a settable time source for lease expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// sink records events.
type sink struct {
	mu     sync.Mutex
	events []string
}

func (s *sink) Emit(kind, mac string, d map[string]string) {
	s.mu.Lock()
	s.events = append(s.events, fmt.Sprintf("%s %s ip=%s arch=%s", kind, mac, d["ip"], d["arch"]))
	s.mu.Unlock()
}

// fakeProber reports the listed addresses as taken; it stands in for ICMP,
// which the namespace test exercises for real.
type fakeProber map[netip.Addr]bool

func (f fakeProber) InUse(_ context.Context, a netip.Addr) (bool, error) { return f[a], nil }

func testSite(mode, unknown string) proto.Site {
	return proto.Site{V: 1, Name: "lab", DHCP: mode, Unknown: unknown, Networks: []proto.Network{
		{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.100", RangeEnd: "10.0.0.104", Router: "10.0.0.254", DNS: []string{"10.0.0.53"}, Domain: "lab.example", LeaseSeconds: 600},
		{Subnet: "10.1.0.0/24", RangeStart: "10.1.0.50", RangeEnd: "10.1.0.60", Router: "10.1.0.1"},
	}}
}

type fixture struct {
	h     *Handler
	st    *state.State
	clk   *clock
	ev    *sink
	lease *Leases
}

func newFixture(t *testing.T, site proto.Site, leaseFile string, prober AddressProber, hosts ...proto.Host) *fixture {
	t.Helper()
	st := state.New()
	st.SetSite(site)
	for _, h := range hosts {
		st.PutHost(h)
	}
	l, err := OpenLeases(leaseFile)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, clk: &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, ev: &sink{}, lease: l}
	f.h, err = NewHandler(HandlerConfig{
		ServerIP: net.ParseIP(edgeIP), HTTPBase: httpBase, Policy: st, Leases: l, Prober: prober,
		Events: f.ev, Now: f.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) handle(t *testing.T, req *dhcpv4.DHCPv4, port int) *dhcpv4.DHCPv4 {
	t.Helper()
	resp, err := f.h.Handle(context.Background(), req, Input{Port: port})
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	return resp
}

// Request builders.

func pkt(t testing.TB, mt dhcpv4.MessageType, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0xde, 0xad, 0xbe, 0xef}),
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(mt),
	}, mods...)
	p, err := dhcpv4.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func arch(a uint16) dhcpv4.Modifier {
	b := binary.BigEndian.AppendUint16(nil, a)
	return dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, b))
}

func pxe(a uint16) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{arch(a), dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", a)))}
}

func httpClient() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{arch(16), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))}
}

var (
	ipxeUserClass = dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))
	ipxeOpt175    = dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0xeb, 0x03, 0x01, 0x00, 0x00}))
)

func join(ms ...any) []dhcpv4.Modifier {
	var out []dhcpv4.Modifier
	for _, m := range ms {
		switch v := m.(type) {
		case dhcpv4.Modifier:
			out = append(out, v)
		case []dhcpv4.Modifier:
			out = append(out, v...)
		}
	}
	return out
}

func requested(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip)))
}

func serverID(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(ip)))
}

// view is the part of a reply the tests compare.
type view struct {
	Type     string
	YIAddr   string
	SIAddr   string
	File     string
	Opt66    string
	Opt67    string
	Opt60    string
	Opt175   []byte
	Opt43    []byte
	Router   string
	Mask     string
	Lease    string
	GIAddr   string
	ServerID string
}

func viewOf(r *dhcpv4.DHCPv4) *view {
	if r == nil {
		return nil
	}
	v := &view{
		Type: r.MessageType().String(), YIAddr: ipStr(r.YourIPAddr), SIAddr: ipStr(r.ServerIPAddr),
		File: r.BootFileName, Opt66: r.TFTPServerName(), Opt67: r.BootFileNameOption(), Opt60: r.ClassIdentifier(),
		Opt175: r.Options.Get(dhcpv4.GenericOptionCode(175)), Opt43: r.Options.Get(dhcpv4.OptionVendorSpecificInformation),
		GIAddr: ipStr(r.GatewayIPAddr), ServerID: ipStr(r.ServerIdentifier()),
	}
	if rt := r.Router(); len(rt) > 0 {
		v.Router = rt[0].String()
	}
	if m := r.SubnetMask(); m != nil {
		v.Mask = net.IP(m).String()
	}
	if r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		v.Lease = r.IPAddressLeaseTime(0).String()
	}
	return v
}

func ipStr(ip net.IP) string {
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}

var no175 = []byte{176, 1, 1}

// TestBootFileTable walks every row of DESIGN.md §1's table in full mode.
func TestBootFileTable(t *testing.T) {
	host := proto.Host{MAC: knownMAC, Site: "lab", State: proto.StateBoot}
	base := view{Type: "OFFER", YIAddr: "10.0.0.100", Router: "10.0.0.254", Mask: "255.255.255.0", Lease: "10m0s", ServerID: edgeIP}
	with := func(f func(*view)) *view { v := base; f(&v); return &v }
	tests := []struct {
		name  string
		files BootFiles
		mods  []dhcpv4.Modifier
		want  *view
	}{
		{"bios arch 0", BootFiles{}, pxe(0), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "undionly.kpxe", "undionly.kpxe", edgeIP, edgeIP
		})},
		{"uefi x64 arch 7", BootFiles{}, pxe(7), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "ipxe.efi", "ipxe.efi", edgeIP, edgeIP
		})},
		{"uefi bc arch 9", BootFiles{}, pxe(9), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "ipxe.efi", "ipxe.efi", edgeIP, edgeIP
		})},
		{"uefi x64 snponly configured", BootFiles{EFI64: "snponly.efi"}, pxe(7), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "snponly.efi", "snponly.efi", edgeIP, edgeIP
		})},
		{"uefi arm64 arch 11", BootFiles{}, pxe(11), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "ipxe-arm64.efi", "ipxe-arm64.efi", edgeIP, edgeIP
		})},
		{"uefi http boot arch 16", BootFiles{}, httpClient(), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt60 = httpBase+"/ipxe.efi", httpBase+"/ipxe.efi", edgeIP, "HTTPClient"
		})},
		{"ipxe by user class", BootFiles{}, join(pxe(0), ipxeUserClass), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt175 = httpBase+"/boot.ipxe", httpBase+"/boot.ipxe", edgeIP, no175
		})},
		{"ipxe by option 175 only", BootFiles{}, join(pxe(7), ipxeOpt175), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt175 = httpBase+"/boot.ipxe", httpBase+"/boot.ipxe", edgeIP, no175
		})},
		{"ipxe over uefi http", BootFiles{}, join(httpClient(), ipxeUserClass), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt60, v.Opt175 = httpBase+"/boot.ipxe", httpBase+"/boot.ipxe", edgeIP, "HTTPClient", no175
		})},
		{"custom script path", BootFiles{Script: "/boot/menu.ipxe"}, join(ipxeUserClass), with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt175 = httpBase+"/boot/menu.ipxe", httpBase+"/boot/menu.ipxe", edgeIP, no175
		})},
		{"unknown arch: address, no boot file", BootFiles{}, pxe(42), &base},
		{"arch 16 without HTTPClient is unknown", BootFiles{}, []dhcpv4.Modifier{arch(16)}, &base},
		{"plain client: address only", BootFiles{}, nil, &base},
		{"arch from vendor class only", BootFiles{}, []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))}, with(func(v *view) {
			v.File, v.Opt67, v.SIAddr, v.Opt66 = "undionly.kpxe", "undionly.kpxe", edgeIP, edgeIP
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownIgnore), "", nil, host)
			f.h.cfg.BootFiles = tc.files.withDefaults()
			got := viewOf(f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, knownMAC, tc.mods...), 67))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("reply (-want +got):\n%s", d)
			}
		})
	}
}

// TestProxyMode: boot information only, never an address, never option 175,
// PXE and HTTP boot clients only; OFFER on 67 and ACK on 4011.
func TestProxyMode(t *testing.T) {
	host := proto.Host{MAC: knownMAC, Site: "lab", State: proto.StateBoot}
	ciaddr := dhcpv4.WithClientIP(net.ParseIP("10.0.0.77"))
	tests := []struct {
		name string
		mt   dhcpv4.MessageType
		port int
		mods []dhcpv4.Modifier
		want *view
	}{
		{"bios pxe discover", dhcpv4.MessageTypeDiscover, 67, pxe(0),
			&view{Type: "OFFER", SIAddr: edgeIP, File: "undionly.kpxe", Opt66: edgeIP, Opt67: "undionly.kpxe", Opt60: "PXEClient", Opt43: []byte{6, 1, 8, 255}, ServerID: edgeIP}},
		{"uefi pxe request on 4011", dhcpv4.MessageTypeRequest, 4011, join(pxe(7), ciaddr),
			&view{Type: "ACK", SIAddr: edgeIP, File: "ipxe.efi", Opt66: edgeIP, Opt67: "ipxe.efi", Opt60: "PXEClient", Opt43: []byte{6, 1, 8, 255}, ServerID: edgeIP}},
		{"ipxe discover gets no option 175", dhcpv4.MessageTypeDiscover, 67, join(pxe(0), ipxeUserClass),
			&view{Type: "OFFER", SIAddr: edgeIP, File: httpBase + "/boot.ipxe", Opt67: httpBase + "/boot.ipxe", Opt60: "PXEClient", Opt43: []byte{6, 1, 8, 255}, ServerID: edgeIP}},
		{"http boot discover", dhcpv4.MessageTypeDiscover, 67, httpClient(),
			&view{Type: "OFFER", SIAddr: edgeIP, File: httpBase + "/ipxe.efi", Opt67: httpBase + "/ipxe.efi", Opt60: "HTTPClient", ServerID: edgeIP}},
		{"non-pxe client ignored", dhcpv4.MessageTypeDiscover, 67, nil, nil},
		{"ipxe without PXEClient class ignored", dhcpv4.MessageTypeDiscover, 67, join(ipxeUserClass), nil},
		{"request on 67 belongs to the other server", dhcpv4.MessageTypeRequest, 67, join(pxe(0), requested("10.0.0.77"), serverID("10.0.0.2")), nil},
		{"unknown arch: no answer", dhcpv4.MessageTypeDiscover, 67, pxe(42), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testSite(proto.DHCPProxy, proto.UnknownIgnore), "", nil, host)
			got := viewOf(f.handle(t, pkt(t, tc.mt, knownMAC, tc.mods...), tc.port))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("reply (-want +got):\n%s", d)
			}
			if len(f.lease.All()) != 0 {
				t.Errorf("proxy mode recorded leases: %v", f.lease.All())
			}
		})
	}
}

// TestAdmission covers the unknown-MAC policies and reservations-only mode.
func TestAdmission(t *testing.T) {
	host := proto.Host{MAC: knownMAC, Site: "lab", State: proto.StateBoot}
	tests := []struct {
		name    string
		mode    string
		unknown string
		mac     string
		answer  bool
	}{
		{"known host, full", proto.DHCPFull, "", knownMAC, true},
		{"unknown, default policy drops", proto.DHCPFull, "", strayMAC, false},
		{"unknown, ignore", proto.DHCPFull, proto.UnknownIgnore, strayMAC, false},
		{"unknown, discover", proto.DHCPFull, proto.UnknownDiscover, strayMAC, true},
		{"unknown, exit", proto.DHCPFull, proto.UnknownExit, strayMAC, true},
		{"reservations-only, known", proto.DHCPReservations, proto.UnknownDiscover, knownMAC, true},
		{"reservations-only, unknown despite discover", proto.DHCPReservations, proto.UnknownDiscover, strayMAC, false},
		{"proxy, unknown, ignore", proto.DHCPProxy, proto.UnknownIgnore, strayMAC, false},
		{"proxy, unknown, discover", proto.DHCPProxy, proto.UnknownDiscover, strayMAC, true},
		{"dhcp off", proto.DHCPOff, proto.UnknownDiscover, knownMAC, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testSite(tc.mode, tc.unknown), "", nil, host)
			got := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, tc.mac, pxe(0)...), 67)
			if (got != nil) != tc.answer {
				t.Fatalf("answered = %v, want %v", got != nil, tc.answer)
			}
		})
	}
}

// TestNoSiteYetDrops: before the site's config arrives every request is
// dropped, and the drops are logged at most once a minute: anyone on the
// boot network could otherwise write a log line per packet.
func TestNoSiteYetDrops(t *testing.T) {
	l, _ := OpenLeases("")
	var logs bytes.Buffer
	h, err := NewHandler(HandlerConfig{ServerIP: net.ParseIP(edgeIP), HTTPBase: httpBase, Policy: state.New(), Leases: l,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mac := fmt.Sprintf("02:00:00:00:00:%02x", i)
		resp, err := h.Handle(context.Background(), pkt(t, dhcpv4.MessageTypeDiscover, mac, pxe(0)...), Input{Port: 67})
		if err != nil || resp != nil {
			t.Fatalf("got %v, %v; want a silent drop", resp, err)
		}
	}
	if n := strings.Count(logs.String(), "no site configuration yet"); n != 1 {
		t.Fatalf("100 requests before the site arrived wrote %d log lines, want 1:\n%s", n, logs.String())
	}
}

// TestRelay: giaddr picks the network and the reply goes back to the relay.
func TestRelay(t *testing.T) {
	tests := []struct {
		name   string
		giaddr string
		want   *view
	}{
		{"second network", "10.1.0.1", &view{Type: "OFFER", YIAddr: "10.1.0.50", Router: "10.1.0.1", Mask: "255.255.255.0", Lease: "1h0m0s", GIAddr: "10.1.0.1", ServerID: edgeIP}},
		{"relay on the edge's network", "10.0.0.2", &view{Type: "OFFER", YIAddr: "10.0.0.100", Router: "10.0.0.254", Mask: "255.255.255.0", Lease: "10m0s", GIAddr: "10.0.0.2", ServerID: edgeIP}},
		{"relay on no site network", "192.168.7.1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil)
			req := pkt(t, dhcpv4.MessageTypeDiscover, strayMAC, dhcpv4.WithGatewayIP(net.ParseIP(tc.giaddr)))
			resp := f.handle(t, req, 67)
			if d := cmp.Diff(tc.want, viewOf(resp)); d != "" {
				t.Fatalf("reply (-want +got):\n%s", d)
			}
			if resp != nil {
				got := replyAddr(req, resp, 67, &net.UDPAddr{IP: net.ParseIP(tc.giaddr), Port: 67})
				if got.String() != tc.giaddr+":67" {
					t.Errorf("reply sent to %s, want the relay %s:67", got, tc.giaddr)
				}
			}
		})
	}
}

// dora runs DISCOVER + REQUEST(selecting) and returns the ACKed address.
func (f *fixture) dora(t *testing.T, mac string, mods ...dhcpv4.Modifier) string {
	t.Helper()
	off := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, mac, mods...), 67)
	if off == nil {
		t.Fatalf("%s: no OFFER", mac)
	}
	ack := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, mac, append(mods, requested(off.YourIPAddr.String()), serverID(edgeIP))...), 67)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("%s: REQUEST %s: got %v, want ACK", mac, off.YourIPAddr, ack)
	}
	return ack.YourIPAddr.String()
}

// TestRequestStates covers RFC 2131 §4.3.2 REQUEST handling.
func TestRequestStates(t *testing.T) {
	reserved := proto.Host{MAC: knownMAC, Site: "lab", IP: "10.0.0.20", State: proto.StateBoot}
	type step struct {
		mac  string
		mods []dhcpv4.Modifier
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		req   step
		want  string // reply type, "" = silence
		yi    string
	}{
		{"selecting: ack the offered address", func(t *testing.T, f *fixture) {
			f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, otherMAC), 67)
		}, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.100"), serverID(edgeIP)}}, "ACK", "10.0.0.100"},
		{"selecting another server: silence", nil, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.100"), serverID("10.0.0.9")}}, "", ""},
		{"init-reboot on a wrong network: nak", nil, step{otherMAC, []dhcpv4.Modifier{requested("192.168.1.5")}}, "NAK", ""},
		{"init-reboot outside the range: nak", nil, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.30")}}, "NAK", ""},
		{"init-reboot for a free pool address: ack", nil, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.103")}}, "ACK", "10.0.0.103"},
		{"address leased to another MAC: nak", func(t *testing.T, f *fixture) {
			f.dora(t, strayMAC)
		}, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.100")}}, "NAK", ""},
		{"another host's reservation: nak", nil, step{otherMAC, []dhcpv4.Modifier{requested("10.0.0.20")}}, "NAK", ""},
		{"reserved host asks for a pool address: nak", nil, step{knownMAC, []dhcpv4.Modifier{requested("10.0.0.101")}}, "NAK", ""},
		{"reserved host init-reboot: ack", nil, step{knownMAC, []dhcpv4.Modifier{requested("10.0.0.20")}}, "ACK", "10.0.0.20"},
		{"renewing: ack ciaddr", func(t *testing.T, f *fixture) {
			f.dora(t, otherMAC)
		}, step{otherMAC, []dhcpv4.Modifier{dhcpv4.WithClientIP(net.ParseIP("10.0.0.100"))}}, "ACK", "10.0.0.100"},
		{"renewing someone else's address: nak", func(t *testing.T, f *fixture) {
			f.dora(t, strayMAC)
		}, step{otherMAC, []dhcpv4.Modifier{dhcpv4.WithClientIP(net.ParseIP("10.0.0.100"))}}, "NAK", ""},
		{"no address at all: silence", nil, step{otherMAC, nil}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil, reserved)
			if tc.setup != nil {
				tc.setup(t, f)
			}
			resp := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, tc.req.mac, tc.req.mods...), 67)
			got, yi := "", ""
			if resp != nil {
				got, yi = resp.MessageType().String(), ipStr(resp.YourIPAddr)
			}
			if d := cmp.Diff([]string{tc.want, tc.yi}, []string{got, yi}); d != "" {
				t.Errorf("reply type, yiaddr (-want +got):\n%s", d)
			}
		})
	}
}

// TestPool: never outside the range, never another MAC's address or
// reservation, and silence when the pool is exhausted.
func TestPool(t *testing.T) {
	// 10.0.0.102 is reserved for knownMAC inside the range.
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil, proto.Host{MAC: knownMAC, Site: "lab", IP: "10.0.0.102", State: proto.StateBoot})
	var got []string
	for i := range 4 {
		got = append(got, f.dora(t, fmt.Sprintf("52:54:00:00:10:%02x", i)))
	}
	want := []string{"10.0.0.100", "10.0.0.101", "10.0.0.103", "10.0.0.104"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("leased addresses (-want +got):\n%s", d)
	}
	if resp := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:10:ff"), 67); resp != nil {
		t.Fatalf("pool exhausted, but offered %s", resp.YourIPAddr)
	}
	if ip := f.dora(t, knownMAC); ip != "10.0.0.102" {
		t.Fatalf("reserved host got %s, want 10.0.0.102", ip)
	}
	// A client asking for an address it may not have gets a pool address instead.
	f2 := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil)
	resp := f2.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, otherMAC, requested("10.0.0.1")), 67)
	if ipStr(resp.YourIPAddr) != "10.0.0.100" {
		t.Fatalf("asked for the edge's address, offered %s", resp.YourIPAddr)
	}
	resp = f2.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, strayMAC, requested("10.0.0.103")), 67)
	if ipStr(resp.YourIPAddr) != "10.0.0.103" {
		t.Fatalf("asked for a free address, offered %s", resp.YourIPAddr)
	}
}

func TestConflictProbeSkipsUsedAddress(t *testing.T) {
	p := fakeProber{netip.MustParseAddr("10.0.0.100"): true, netip.MustParseAddr("10.0.0.101"): true}
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", p)
	if ip := f.dora(t, otherMAC); ip != "10.0.0.102" {
		t.Fatalf("got %s, want 10.0.0.102 (100 and 101 answer on the segment)", ip)
	}
	// The conflicting address rests: nobody gets it, even by asking.
	resp := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, strayMAC, requested("10.0.0.100")), 67)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST for a conflicting address: got %v, want NAK", resp)
	}
}

func TestDeclineReleaseInform(t *testing.T) {
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil)
	ip := f.dora(t, otherMAC)

	// DECLINE: the address rests; the client gets another one.
	if r := f.handle(t, pkt(t, dhcpv4.MessageTypeDecline, otherMAC, requested(ip), serverID(edgeIP)), 67); r != nil {
		t.Fatalf("DECLINE got a reply: %v", r)
	}
	if again := f.dora(t, otherMAC); again == ip {
		t.Fatalf("declined address %s offered again", ip)
	}
	if again := f.dora(t, strayMAC); again == ip {
		t.Fatalf("declined address %s offered to another client", ip)
	}
	if r := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, "52:54:00:00:20:01", requested(ip)), 67); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST for a declined address during the hold: got %v, want NAK", r)
	}
	f.clk.Add(11 * time.Minute)
	if r := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, "52:54:00:00:20:01", requested(ip)), 67); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("after the decline hold, REQUEST for %s: got %v, want ACK (back in the pool)", ip, r)
	}

	// RELEASE: remembered for the same client; fresh addresses go to others first.
	g := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil)
	ip = g.dora(t, otherMAC)
	if r := g.handle(t, pkt(t, dhcpv4.MessageTypeRelease, otherMAC, dhcpv4.WithClientIP(net.ParseIP(ip)), serverID(edgeIP)), 67); r != nil {
		t.Fatalf("RELEASE got a reply: %v", r)
	}
	if got := g.dora(t, strayMAC); got == ip {
		t.Fatalf("released address went to another client while fresh ones remain")
	}
	if got := g.dora(t, otherMAC); got != ip {
		t.Fatalf("client got %s after release, want its previous %s", got, ip)
	}

	// INFORM: options, no address, no lease time.
	resp := g.handle(t, pkt(t, dhcpv4.MessageTypeInform, otherMAC, dhcpv4.WithClientIP(net.ParseIP("10.0.0.40"))), 67)
	want := &view{Type: "ACK", Router: "10.0.0.254", Mask: "255.255.255.0", ServerID: edgeIP}
	if d := cmp.Diff(want, viewOf(resp)); d != "" {
		t.Fatalf("INFORM reply (-want +got):\n%s", d)
	}
	if got := replyAddr(pkt(t, dhcpv4.MessageTypeInform, otherMAC, dhcpv4.WithClientIP(net.ParseIP("10.0.0.40"))), resp, 67, nil); got.String() != "10.0.0.40:68" {
		t.Errorf("INFORM reply sent to %s, want unicast 10.0.0.40:68", got)
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil)
	f.dora(t, otherMAC, pxe(0)...)
	f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, otherMAC, requested("10.0.1.1")), 67)
	want := []string{
		"dhcp.discover 52:54:00:00:00:02 ip=10.0.0.100 arch=0",
		"dhcp.offer 52:54:00:00:00:02 ip=10.0.0.100 arch=0",
		"dhcp.request 52:54:00:00:00:02 ip=10.0.0.100 arch=0",
		"dhcp.ack 52:54:00:00:00:02 ip=10.0.0.100 arch=0",
		"dhcp.request 52:54:00:00:00:02 ip=10.0.1.1 arch=",
		"dhcp.nak 52:54:00:00:00:02 ip=10.0.1.1 arch=",
	}
	if d := cmp.Diff(want, f.ev.events); d != "" {
		t.Fatalf("events (-want +got):\n%s", d)
	}
}

// TestLeasesSurviveRestart: a new handler on the same lease file honours
// every lease the old one granted.
func TestLeasesSurviveRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	site := testSite(proto.DHCPFull, proto.UnknownDiscover)
	f := newFixture(t, site, file, nil)
	a := f.dora(t, otherMAC)
	b := f.dora(t, strayMAC)

	g := newFixture(t, site, file, nil)
	g.clk.now = f.clk.now.Add(time.Minute)
	if got := g.dora(t, strayMAC); got != b {
		t.Errorf("after restart %s got %s, want %s", strayMAC, got, b)
	}
	if got := g.dora(t, "52:54:00:00:30:01"); got == a || got == b {
		t.Errorf("after restart a new client got %s, a lease of another MAC", got)
	}
	resp := g.handle(t, pkt(t, dhcpv4.MessageTypeRequest, otherMAC, dhcpv4.WithClientIP(net.ParseIP(a))), 67)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal after restart: got %v, want ACK", resp)
	}
	if _, err := OpenLeases(filepath.Join(t.TempDir(), "missing.json")); err != nil {
		t.Errorf("a missing lease file must be an empty database: %v", err)
	}
}

func TestParseMachine(t *testing.T) {
	tests := []struct {
		name string
		req  func(t *testing.T) *dhcpv4.DHCPv4
		want Machine
		err  bool
	}{
		{"ipxe bios", func(t *testing.T) *dhcpv4.DHCPv4 {
			return pkt(t, dhcpv4.MessageTypeDiscover, knownMAC, join(pxe(0), ipxeUserClass, ipxeOpt175)...)
		}, Machine{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, XID: "0xdeadbeef", HasArch: true, VendorClass: "PXEClient:Arch:00000:UNDI:002001", UserClass: []string{"iPXE"}, IsPXE: true, IsIPXE: true}, false},
		{"relayed http client", func(t *testing.T) *dhcpv4.DHCPv4 {
			return pkt(t, dhcpv4.MessageTypeRequest, knownMAC, join(httpClient(), dhcpv4.WithGatewayIP(net.ParseIP("10.1.0.1")), requested("10.1.0.5"))...)
		}, Machine{MAC: knownMAC, Type: dhcpv4.MessageTypeRequest, XID: "0xdeadbeef", Arch: 16, HasArch: true, VendorClass: "HTTPClient:Arch:00016:UNDI:003001", IsHTTPClient: true, GIAddr: netip.MustParseAddr("10.1.0.1"), RequestedIP: netip.MustParseAddr("10.1.0.5")}, false},
		{"reply is not a request", func(t *testing.T) *dhcpv4.DHCPv4 {
			p := pkt(t, dhcpv4.MessageTypeOffer, knownMAC)
			p.OpCode = dhcpv4.OpcodeBootReply
			return p
		}, Machine{}, true},
		{"bootp without message type", func(t *testing.T) *dhcpv4.DHCPv4 {
			p := pkt(t, dhcpv4.MessageTypeDiscover, knownMAC)
			p.Options.Del(dhcpv4.OptionDHCPMessageType)
			return p
		}, Machine{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMachine(tc.req(t))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("machine (-want +got):\n%s", d)
			}
		})
	}
}

// TestTwoHostsOneReservation: while two hosts name the same fixed address
// (the state allows it while a move is applied, and gives the address to
// the lowest MAC), only that owner may take it. The other host got an
// OFFER of it as its "own" reservation, which took the owner's lease away
// (the owner's renewal was then NAKed), and an ACK for it. (Issue 12 item 14.)
func TestTwoHostsOneReservation(t *testing.T) {
	owner := proto.Host{MAC: knownMAC, Site: "lab", IP: "10.0.0.20", State: proto.StateBoot}
	second := proto.Host{MAC: otherMAC, Site: "lab", IP: "10.0.0.20", State: proto.StateBoot}
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil, owner, second)
	if mac, _ := f.st.Reservation(netip.MustParseAddr("10.0.0.20")); mac != knownMAC {
		t.Fatalf("state gives 10.0.0.20 to %q, want %s", mac, knownMAC)
	}
	if ip := f.dora(t, knownMAC); ip != "10.0.0.20" {
		t.Fatalf("the owner got %s, want 10.0.0.20", ip)
	}
	if resp := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, otherMAC), 67); resp != nil {
		t.Errorf("the second host's DISCOVER: offered %s, want no offer", resp.YourIPAddr)
	}
	resp := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, otherMAC, requested("10.0.0.20")), 67)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("the second host asking for 10.0.0.20: got %v, want NAK", resp)
	}
	resp = f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, knownMAC, dhcpv4.WithClientIP(net.ParseIP("10.0.0.20"))), 67)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("the owner renewing 10.0.0.20: got %v, want ACK", resp)
	}
}

// raceProber stands in for the ICMP probe of a DISCOVER whose copy (a
// retransmission) was answered while this one was probing: during the probe
// the client takes the address through the other copy, then answers the
// ping on it, as iPXE does.
type raceProber struct {
	during func()
}

func (p raceProber) InUse(context.Context, netip.Addr) (bool, error) {
	p.during()
	return true, nil
}

// TestRetransmittedDiscoverKeepsTheClientsLease: seen with QEMU's iPXE ROM.
// The first DISCOVER is probed; its retransmission is offered the same
// address at once (the pending offer is the client's); the client requests
// and binds it; then the first probe hears the client answer on its new
// address. That is no conflict: the client's bound lease must stay, not be
// overwritten by an "in use" hold that NAKs its next renewal.
func TestRetransmittedDiscoverKeepsTheClientsLease(t *testing.T) {
	var f *fixture
	p := raceProber{during: func() {
		resp := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, otherMAC), 67)
		ip := ipStr(resp.YourIPAddr)
		if ack := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, otherMAC, requested(ip), serverID(edgeIP)), 67); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("REQUEST during the probe: got %v, want ACK", ack)
		}
	}}
	f = newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", p)
	resp := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, otherMAC), 67)
	if resp == nil || ipStr(resp.YourIPAddr) != "10.0.0.100" {
		t.Fatalf("the probed DISCOVER: got %v, want an OFFER of the client's own new lease 10.0.0.100", resp)
	}
	renew := f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, otherMAC, requested("10.0.0.100")), 67)
	if renew == nil || renew.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renewal of the bound lease: got %v, want ACK", renew)
	}
}

// TestUnknownMACLogBudget: requests from MACs the site does not know are
// logged line by line while the window's budget lasts, then only their
// warnings are, with one line per window saying so; the site's own hosts
// are always logged, and a new window logs strangers again.
func TestUnknownMACLogBudget(t *testing.T) {
	var buf syncBuffer
	st := state.New()
	st.SetSite(testSite(proto.DHCPFull, proto.UnknownDiscover))
	st.PutHost(proto.Host{MAC: knownMAC, Site: "lab", IP: "10.0.0.20", State: proto.StateBoot})
	l, err := OpenLeases("")
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h, err := NewHandler(HandlerConfig{ServerIP: net.ParseIP(edgeIP), HTTPBase: httpBase, Policy: st, Leases: l, Events: &sink{},
		Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&buf, nil)), EventWindow: time.Minute, EventBudget: 2})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{h: h, st: st, clk: clk, lease: l}
	count := func(re string) int {
		n := 0
		for _, line := range strings.Split(buf.String(), "\n") {
			if regexp.MustCompile(re).MatchString(line) {
				n++
			}
		}
		return n
	}
	// The pool has five addresses: five strangers take them, a sixth is
	// warned about.
	for i := range 5 {
		f.dora(t, fmt.Sprintf("52:54:00:00:20:%02x", i))
	}
	f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:20:05"), 67)
	f.dora(t, knownMAC)
	for _, c := range []struct {
		re   string
		want int
	}{
		{`msg="dhcp: offer" .*mac=52:54:00:00:20:`, 1},
		{`msg="dhcp: ack" .*mac=52:54:00:00:20:`, 1},
		{`level=WARN msg="dhcp: no address to offer" .*mac=52:54:00:00:20:05`, 1},
		{`msg="dhcp: requests from unknown MACs past the log budget`, 1},
		{`msg="dhcp: ack" .*mac=` + knownMAC, 1},
	} {
		if got := count(c.re); got != c.want {
			t.Errorf("%d lines match %s, want %d\n%s", got, c.re, c.want, buf.String())
		}
	}
	clk.Add(2 * time.Minute)
	f.handle(t, pkt(t, dhcpv4.MessageTypeRequest, "52:54:00:00:20:00", requested("10.0.0.100")), 67)
	if got := count(`msg="dhcp: ack" .*mac=52:54:00:00:20:00`); got != 2 {
		t.Errorf("a stranger in a new window: %d ack lines, want 2\n%s", got, buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
