package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// These tests put the edge's DHCP side in network namespaces the test makes
// (as edge/dhcp's own namespace tests do); nothing leaves them. NATS and
// HTTP stay on the test's loopback.

// newSegment makes namespaces for the edge (10.77.0.1) and another
// machine (10.77.0.2) on one LAN, deleted at cleanup.
func newSegment(t *testing.T) (edgeNS, otherNS string) {
	t.Helper()
	nss := netnstest.LAN(t, "fbe", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "other", Addr: "10.77.0.2/24"})
	return nss["edge"], nss["other"]
}

// outsideDialer dials NATS from a fresh goroutine, so from the test's own
// namespace even when the agent connects from a thread inside another.
type outsideDialer struct{}

func (outsideDialer) Dial(network, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// A start that fails after DHCP bound its sockets (here: the TFTP port is
// taken) leaves none of them bound: the DHCP ports, and the probe's client
// port of a fresh edge, can be bound again.
func TestNetnsFailedStartReleasesDHCP(t *testing.T) {
	netnstest.NeedRoot(t)
	ns, _ := newSegment(t)
	err := netnstest.InNS(ns, func() error {
		taken, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer taken.Close()
		cfg := baseConfig(t)
		cfg.Interface, cfg.ServerIP, cfg.TFTPListen, cfg.BootDir = netnstest.LanIf, net.IPv4(10, 77, 0, 1), taken.LocalAddr().String(), t.TempDir()
		os.WriteFile(filepath.Join(cfg.BootDir, "undionly.kpxe"), []byte("x"), 0o644)
		if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tftp") {
			return fmt.Errorf("start with the TFTP port taken = %v; want a TFTP error", err)
		}
		for _, port := range []int{67, 68, 4011} {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			if err != nil {
				return fmt.Errorf("DHCP socket still bound after the failed start: %w", err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A fresh edge (no snapshot) learns its site's mode from the first sync; in
// full mode it must then refuse to run next to another DHCP server, as an
// edge restarted with a snapshot does.
func TestNetnsFreshEdgeProbesOnceModeKnown(t *testing.T) {
	netnstest.NeedRoot(t)
	edgeNS, otherNS := newSegment(t)
	netnstest.Dnsmasq(t, otherNS, "10.77.0.150,10.77.0.160,255.255.255.0,1h")
	for _, tc := range []struct {
		mode   string
		refuse bool
	}{{proto.DHCPFull, true}, {proto.DHCPProxy, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			ns, fc := startNATS(t)
			fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: tc.mode, Networks: []proto.Network{{
				Subnet: "10.77.0.0/24", RangeStart: "10.77.0.100", RangeEnd: "10.77.0.120"}}})
			cfg := baseConfig(t)
			cfg.NATSURL, cfg.NATSOptions = ns.ClientURL(), []nats.Option{nats.SetCustomDialer(outsideDialer{})}
			cfg.Interface, cfg.ServerIP = netnstest.LanIf, net.IPv4(10, 77, 0, 1)
			logs := &netnstest.Buffer{}
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- netnstest.InNS(edgeNS, func() error { return Run(ctx, cfg) }) }()
			defer func() {
				if t.Failed() {
					t.Logf("edge log:\n%s", logs.String())
				}
			}()
			if !tc.refuse {
				// It probed (and names dnsmasq) once the mode was known, and
				// runs beside it.
				waitfor.Within(t, time.Minute, "the probe's warning", func() error {
					select {
					case err := <-done:
						t.Fatalf("proxy mode next to another server stopped: %v", err)
					default:
					}
					if !strings.Contains(logs.String(), "server=10.77.0.2 mode=proxy") {
						return errors.New("not logged yet")
					}
					return nil
				})
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("proxy mode next to another server: %v", err)
				}
				return
			}
			var err error
			waitfor.Within(t, time.Minute, "the fresh edge to refuse to run next to dnsmasq", func() error {
				select {
				case err = <-done:
					return nil
				default:
					return errors.New("still running in full mode next to another DHCP server")
				}
			})
			if !errors.Is(err, dhcp.ErrOtherServer) || !strings.Contains(err.Error(), "10.77.0.2") {
				t.Fatalf("fresh edge in full mode next to dnsmasq: %v; want a refusal naming 10.77.0.2", err)
			}
		})
	}
}
