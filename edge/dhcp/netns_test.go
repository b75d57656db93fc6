package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
)

// These tests run the real server and real clients (busybox udhcpc,
// dhclient, dnsmasq) on a LAN the test builds from network namespaces: a
// bridge inside its own namespace and one namespace per machine, each with
// an interface "lan0". Nothing leaves those namespaces.

type edge struct {
	st     *state.State
	ev     *sink
	logs   *netnstest.Buffer
	cancel context.CancelFunc
	done   chan error
}

// startEdge runs a Server in namespace ns until the test ends (or stop).
func startEdge(t *testing.T, ns string, st *state.State, leaseFile string, mut func(*Config)) (*edge, error) {
	t.Helper()
	e := &edge{st: st, ev: &sink{}, logs: &netnstest.Buffer{}, done: make(chan error, 1)}
	cfg := Config{
		Interface: netnstest.LanIf, ServerIP: net.ParseIP("10.77.0.1"), HTTPBase: "http://10.77.0.1:8080",
		LeaseFile: leaseFile, State: st, Events: e.ev, ProbeWait: -1, ConflictTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mut != nil {
		mut(&cfg)
	}
	var srv *Server
	if err := netnstest.InNS(ns, func() (err error) { srv, err = NewServer(cfg); return err }); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- srv.Serve(ctx) }()
	t.Cleanup(func() { e.stop(t) })
	return e, nil
}

func (e *edge) stop(t *testing.T) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if t.Failed() {
		t.Logf("edge log:\n%s", e.logs.String())
	}
}

func labState(mode, unknown string, hosts ...proto.Host) *state.State {
	st := state.New()
	st.SetSite(proto.Site{V: 1, Name: "lab", DHCP: mode, Unknown: unknown, Networks: []proto.Network{{
		Subnet: "10.77.0.0/24", RangeStart: "10.77.0.100", RangeEnd: "10.77.0.120", Router: "10.77.0.1",
		DNS: []string{"10.77.0.53"}, Domain: "lab.test", LeaseSeconds: 600,
	}}})
	for _, h := range hosts {
		st.PutHost(h)
	}
	return st
}

const scriptBody = `#!/bin/sh
# Records what the DHCP client got; configures nothing.
case "$1$reason" in
bound*|BOUND*|REBOOT*) env | sort > "OUT.tmp" && mv "OUT.tmp" "OUT" ;;
esac
exit 0
`

func writeScript(t *testing.T) (script, out string) {
	dir := t.TempDir()
	script, out = filepath.Join(dir, "script.sh"), filepath.Join(dir, "env")
	// The path is written into the script: dhclient clears the environment.
	if err := os.WriteFile(script, []byte(strings.ReplaceAll(scriptBody, `"OUT`, `"`+out)), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, out
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("client script output: %v", err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// udhcpc runs busybox udhcpc once in ns as a BIOS PXE client and returns the
// environment its script saw on "bound".
func udhcpc(t *testing.T, ns string, extra ...string) map[string]string {
	t.Helper()
	script, out := writeScript(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", ns, "busybox", "udhcpc", "-i", netnstest.LanIf, "-f", "-q", "-n", "-t", "5", "-T", "2", "-s", script}, extra...)
	cmd := exec.CommandContext(ctx, "ip", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, b)
	}
	return readEnv(t, out)
}

var pxeBIOS = []string{"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"}

func pick(env map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = env[k]
	}
	return out
}

// TestNetnsUdhcpc: a PXE-like udhcpc gets a pool address with the boot file
// and next-server, the same address on the next run and after an edge
// restart, and its reservation as soon as the state says so.
func TestNetnsUdhcpc(t *testing.T) {
	netnstest.NeedRoot(t)
	const clientMAC = "52:54:00:77:00:01"
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "client", MAC: clientMAC})
	leaseFile := filepath.Join(t.TempDir(), "leases.json")
	st := labState(proto.DHCPFull, proto.UnknownDiscover)
	e, err := startEdge(t, nss["edge"], st, leaseFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"ip", "subnet", "router", "dns", "domain", "serverid", "siaddr", "boot_file", "bootfile", "tftp", "lease"}
	want := map[string]string{
		"ip": "10.77.0.100", "subnet": "255.255.255.0", "router": "10.77.0.1", "dns": "10.77.0.53", "domain": "lab.test",
		"serverid": "10.77.0.1", "siaddr": "10.77.0.1", "boot_file": "undionly.kpxe", "bootfile": "undionly.kpxe", "tftp": "10.77.0.1", "lease": "600",
	}
	if d := cmp.Diff(want, pick(udhcpc(t, nss["client"], pxeBIOS...), keys...)); d != "" {
		t.Fatalf("first lease (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, pick(udhcpc(t, nss["client"], pxeBIOS...), keys...)); d != "" {
		t.Fatalf("second run (-want +got):\n%s", d)
	}

	// Restart the edge on the same lease file: the lease is honoured.
	e.stop(t)
	if _, err := startEdge(t, nss["edge"], st, leaseFile, nil); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, pick(udhcpc(t, nss["client"], pxeBIOS...), keys...)); d != "" {
		t.Fatalf("after restart (-want +got):\n%s", d)
	}

	// A reservation arrives in the state: served at once, no restart.
	st.PutHost(proto.Host{V: 1, MAC: clientMAC, Site: "lab", IP: "10.77.0.50", State: proto.StateBoot})
	env := udhcpc(t, nss["client"], pxeBIOS...)
	if env["ip"] != "10.77.0.50" {
		t.Fatalf("reserved host got %q, want 10.77.0.50", env["ip"])
	}

	// iPXE (user class) gets the script URL instead.
	env = udhcpc(t, nss["client"], append(pxeBIOS, "-x", "0x4d:69505845")...)
	if d := cmp.Diff(map[string]string{"ip": "10.77.0.50", "bootfile": "http://10.77.0.1:8080/boot.ipxe"}, pick(env, "ip", "bootfile")); d != "" {
		t.Fatalf("ipxe (-want +got):\n%s", d)
	}
}

// TestNetnsDhclient: ISC dhclient as a UEFI PXE client gets a lease, the boot
// file and next server, and the same address again (INIT-REBOOT).
func TestNetnsDhclient(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "client", MAC: "52:54:00:77:00:02"})
	if _, err := startEdge(t, nss["edge"], labState(proto.DHCPFull, proto.UnknownDiscover), "", nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte(`option pxe-arch code 93 = unsigned integer 16;
send vendor-class-identifier "PXEClient:Arch:00007:UNDI:003016";
send pxe-arch 7;
request subnet-mask, routers, domain-name-servers, domain-name, tftp-server-name, bootfile-name;
`), 0o644)
	run := func() map[string]string {
		script, out := writeScript(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nss["client"], "dhclient", "-d", "-1", "-v",
			"-cf", conf, "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "-sf", script, netnstest.LanIf)
		logs := &netnstest.Buffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		// dhclient -d stays in the foreground after binding: poll for the
		// script's output, then stop it by its PID.
		for {
			if _, err := os.Stat(out); err == nil {
				return readEnv(t, out)
			}
			select {
			case <-ctx.Done():
				t.Fatalf("dhclient got no lease:\n%s", logs.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	keys := []string{"new_ip_address", "new_subnet_mask", "new_routers", "new_domain_name", "new_filename", "new_tftp_server_name", "new_dhcp_server_identifier"}
	want := map[string]string{
		"new_ip_address": "10.77.0.100", "new_subnet_mask": "255.255.255.0", "new_routers": "10.77.0.1", "new_domain_name": "lab.test",
		"new_filename": "ipxe.efi", "new_tftp_server_name": "10.77.0.1", "new_dhcp_server_identifier": "10.77.0.1",
	}
	first := run()
	if d := cmp.Diff(want, pick(first, keys...)); d != "" {
		t.Fatalf("dhclient lease (-want +got):\n%s", d)
	}
	if first["new_next_server"] != "" && first["new_next_server"] != "10.77.0.1" {
		t.Errorf("next server %q, want 10.77.0.1", first["new_next_server"])
	}
	second := run()
	if d := cmp.Diff(want, pick(second, keys...)); d != "" {
		t.Fatalf("second dhclient run (-want +got):\n%s", d)
	}
	if second["reason"] != "REBOOT" {
		t.Logf("second run reason %q (REBOOT expected when dhclient reuses its lease file)", second["reason"])
	}
}

// TestNetnsConflictProbe: a machine already squatting on the first pool
// address answers the ICMP probe, so the client is offered the next one.
func TestNetnsConflictProbe(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "squat", Addr: "10.77.0.100/24"}, netnstest.Member{Name: "client"})
	e, err := startEdge(t, nss["edge"], labState(proto.DHCPFull, proto.UnknownDiscover), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	env := udhcpc(t, nss["client"], pxeBIOS...)
	if env["ip"] != "10.77.0.101" {
		t.Fatalf("client got %q, want 10.77.0.101 (10.77.0.100 is in use)", env["ip"])
	}
	if !strings.Contains(e.logs.String(), "address answers on the segment") {
		t.Errorf("the conflict was not logged")
	}
}

// TestNetnsProbeOtherServers: dnsmasq on the segment is found by the start-up
// probe, and full mode refuses to start (unless forced) naming its address.
func TestNetnsProbeOtherServers(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "rogue", Addr: "10.77.0.2/24"})
	var none []net.IP
	if err := netnstest.InNS(nss["edge"], func() (err error) {
		none, err = ProbeOtherServers(context.Background(), netnstest.LanIf, 500*time.Millisecond)
		return err
	}); err != nil || len(none) != 0 {
		t.Fatalf("quiet segment: got %v, %v; want no servers", none, err)
	}
	netnstest.Dnsmasq(t, nss["rogue"], "10.77.0.150,10.77.0.160,255.255.255.0,1h")
	var got []net.IP
	if err := netnstest.InNS(nss["edge"], func() (err error) {
		got, err = ProbeOtherServers(context.Background(), netnstest.LanIf, 4*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"10.77.0.2"}, ipStrings(got)); d != "" {
		t.Fatalf("other servers (-want +got):\n%s", d)
	}
	_, err := startEdge(t, nss["edge"], labState(proto.DHCPFull, proto.UnknownDiscover), "", func(c *Config) { c.ProbeWait = 4 * time.Second })
	if err == nil || !strings.Contains(err.Error(), "10.77.0.2") {
		t.Fatalf("full mode with another server: got %v, want a refusal naming 10.77.0.2", err)
	}
	e, err := startEdge(t, nss["edge"], labState(proto.DHCPProxy, proto.UnknownDiscover), "", func(c *Config) { c.ProbeWait = 4 * time.Second })
	if err != nil {
		t.Fatalf("proxy mode must start next to another server: %v", err)
	}
	if !strings.Contains(e.logs.String(), "server=10.77.0.2") {
		t.Errorf("proxy mode did not log the other server")
	}
	e.stop(t)
	// Off mode sends nothing onto the segment, not even the probe.
	off, err := startEdge(t, nss["edge"], labState(proto.DHCPOff, proto.UnknownDiscover), "", func(c *Config) { c.ProbeWait = 4 * time.Second })
	if err != nil {
		t.Fatalf("off mode: %v", err)
	}
	if strings.Contains(off.logs.String(), "another DHCP server") {
		t.Errorf("off mode probed the segment:\n%s", off.logs.String())
	}
	off.stop(t)
	if _, err := startEdge(t, nss["edge"], labState(proto.DHCPFull, proto.UnknownDiscover), "", func(c *Config) { c.ProbeWait = 4 * time.Second; c.Force = true }); err != nil {
		t.Fatalf("forced full mode: %v", err)
	}
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// pxeClient is a raw DHCP client in the client namespace that collects every
// reply, as a PXE ROM does when it waits for ProxyDHCP offers.
type pxeClient struct {
	conn *net.UDPConn
	mac  net.HardwareAddr
}

func newPXEClient(t *testing.T, ns, mac string) *pxeClient {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	c := &pxeClient{mac: hw}
	if err := netnstest.InNS(ns, func() (err error) {
		c.conn, err = server4.NewIPv4UDPConn(netnstest.LanIf, &net.UDPAddr{Port: dhcpv4.ClientPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// exchange sends req to dst and collects replies with its xid until done says
// it has enough or the deadline passes.
func (c *pxeClient) exchange(t *testing.T, req *dhcpv4.DHCPv4, dst *net.UDPAddr, done func([]*dhcpv4.DHCPv4) bool) []*dhcpv4.DHCPv4 {
	t.Helper()
	var got []*dhcpv4.DHCPv4
	buf := make([]byte, 4096)
	deadline := time.Now().Add(15 * time.Second)
	for try := 0; try < 5 && !done(got); try++ {
		if _, err := c.conn.WriteToUDP(req.ToBytes(), dst); err != nil {
			t.Fatal(err)
		}
		rd := time.Now().Add(3 * time.Second)
		if rd.After(deadline) {
			rd = deadline
		}
		c.conn.SetReadDeadline(rd)
		for !done(got) {
			n, _, err := c.conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && p.OpCode == dhcpv4.OpcodeBootReply && p.TransactionID == req.TransactionID {
				got = append(got, p)
			}
		}
	}
	return got
}

// TestNetnsProxy: dnsmasq leases the addresses; the edge in proxy mode adds
// only the PXE answer (OFFER on 67, ACK on 4011) and ignores other clients.
func TestNetnsProxy(t *testing.T) {
	netnstest.NeedRoot(t)
	const pxeMAC = "52:54:00:77:00:03"
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "site", Addr: "10.77.0.2/24"}, netnstest.Member{Name: "client", MAC: pxeMAC})
	netnstest.Dnsmasq(t, nss["site"], "10.77.0.150,10.77.0.160,255.255.255.0,1h")
	if _, err := startEdge(t, nss["edge"], labState(proto.DHCPProxy, proto.UnknownDiscover), "", nil); err != nil {
		t.Fatal(err)
	}
	c := newPXEClient(t, nss["client"], pxeMAC)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}

	// A PXE DISCOVER: an address from dnsmasq, boot information from the edge.
	disc, _ := dhcpv4.NewDiscovery(c.mac, join(pxe(0), dhcpv4.WithBroadcast(true))...)
	var fromSite, fromEdge *dhcpv4.DHCPv4
	c.exchange(t, disc, bcast, func(rs []*dhcpv4.DHCPv4) bool {
		for _, r := range rs {
			switch r.ServerIdentifier().String() {
			case "10.77.0.2":
				fromSite = r
			case "10.77.0.1":
				fromEdge = r
			}
		}
		return fromSite != nil && fromEdge != nil
	})
	if fromSite == nil || fromEdge == nil {
		t.Fatalf("offers: site %v, edge %v; want both", fromSite != nil, fromEdge != nil)
	}
	want := &view{Type: "OFFER", SIAddr: "10.77.0.1", File: "undionly.kpxe", Opt66: "10.77.0.1", Opt67: "undionly.kpxe", Opt60: "PXEClient", Opt43: []byte{6, 1, 8, 255}, ServerID: "10.77.0.1"}
	if d := cmp.Diff(want, viewOf(fromEdge)); d != "" {
		t.Fatalf("edge proxy offer (-want +got):\n%s", d)
	}
	leased, _ := netip.AddrFromSlice(fromSite.YourIPAddr.To4())
	if leased.Compare(netip.MustParseAddr("10.77.0.150")) < 0 || leased.Compare(netip.MustParseAddr("10.77.0.160")) > 0 {
		t.Fatalf("dnsmasq offered %s, outside its range", leased)
	}

	// With its address configured, the client asks the boot server on 4011.
	netnstest.Run(t, "ip", "-n", nss["client"], "addr", "add", leased.String()+"/24", "dev", netnstest.LanIf)
	req, _ := dhcpv4.New(join(pxe(0), dhcpv4.WithHwAddr(c.mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(leased.AsSlice()))...)
	acks := c.exchange(t, req, &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: pxePort}, func(rs []*dhcpv4.DHCPv4) bool { return len(rs) > 0 })
	if len(acks) == 0 {
		t.Fatal("no ACK from the boot server on port 4011")
	}
	want.Type = "ACK"
	if d := cmp.Diff(want, viewOf(acks[0])); d != "" {
		t.Fatalf("edge 4011 ACK (-want +got):\n%s", d)
	}
	netnstest.Run(t, "ip", "-n", nss["client"], "addr", "flush", "dev", netnstest.LanIf)

	// A client that is not a PXE client: dnsmasq answers, the edge does not.
	env := udhcpc(t, nss["client"])
	if d := cmp.Diff(map[string]string{"serverid": "10.77.0.2", "boot_file": "", "bootfile": ""}, pick(env, "serverid", "boot_file", "bootfile")); d != "" {
		t.Fatalf("non-PXE lease (-want +got):\n%s", d)
	}
	plain, _ := dhcpv4.NewDiscovery(c.mac, dhcpv4.WithBroadcast(true))
	// Two sends, each answered by dnsmasq: the edge had both rounds to answer wrongly.
	all := c.exchange(t, plain, bcast, func(rs []*dhcpv4.DHCPv4) bool { return len(rs) >= 2 })
	if len(all) < 2 {
		t.Fatalf("dnsmasq answered %d of the plain DISCOVERs, want 2", len(all))
	}
	for _, r := range all {
		if r.ServerIdentifier().String() == "10.77.0.1" {
			t.Fatalf("the edge answered a non-PXE client in proxy mode: %s", r.Summary())
		}
	}
}

// TestNetnsRelay: a relay agent on another subnet forwards a DISCOVER; the
// edge picks the network containing giaddr and answers the relay on port 67.
func TestNetnsRelay(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "relay", Addr: "10.77.0.2/24"})
	netnstest.Run(t, "ip", "-n", nss["relay"], "addr", "add", "10.88.0.1/24", "dev", "lo")
	netnstest.Run(t, "ip", "-n", nss["edge"], "route", "add", "10.88.0.0/24", "via", "10.77.0.2")
	st := labState(proto.DHCPFull, proto.UnknownDiscover)
	site, _ := st.Site()
	site.Networks = append(site.Networks, proto.Network{Subnet: "10.88.0.0/24", RangeStart: "10.88.0.100", RangeEnd: "10.88.0.110", Router: "10.88.0.1"})
	st.SetSite(site)
	if _, err := startEdge(t, nss["edge"], st, "", func(c *Config) { c.NoConflictCheck = true }); err != nil {
		t.Fatal(err)
	}
	var relay *net.UDPConn
	if err := netnstest.InNS(nss["relay"], func() (err error) {
		relay, err = server4.NewIPv4UDPConn(netnstest.LanIf, &net.UDPAddr{Port: dhcpv4.ServerPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	c := &pxeClient{conn: relay, mac: net.HardwareAddr{0x52, 0x54, 0x00, 0x88, 0, 1}}
	disc, _ := dhcpv4.NewDiscovery(c.mac, join(pxe(7), dhcpv4.WithGatewayIP(net.ParseIP("10.88.0.1")), dhcpv4.WithBroadcast(false))...)
	disc.HopCount = 1
	got := c.exchange(t, disc, &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: dhcpv4.ServerPort}, func(rs []*dhcpv4.DHCPv4) bool { return len(rs) > 0 })
	if len(got) == 0 {
		t.Fatal("the relay got no answer on port 67")
	}
	want := &view{Type: "OFFER", YIAddr: "10.88.0.100", SIAddr: "10.77.0.1", File: "ipxe.efi", Opt66: "10.77.0.1", Opt67: "ipxe.efi",
		Router: "10.88.0.1", Mask: "255.255.255.0", Lease: "1h0m0s", GIAddr: "10.88.0.1", ServerID: "10.77.0.1"}
	if d := cmp.Diff(want, viewOf(got[0])); d != "" {
		t.Fatalf("relayed offer (-want +got):\n%s", d)
	}
}
