package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// A fresh edge whose site's config never arrives (coordinator unreachable,
// or no such site) answers no DHCP request. The operator must be told so, in
// a warning naming the site, repeated while it lasts; state changes (images
// are global) must not each add a line.
func TestNetnsDHCPWaitingForSiteIsLoud(t *testing.T) {
	netnstest.NeedRoot(t)
	edgeNS, _ := newSegment(t)
	cfg := baseConfig(t) // NATS unreachable: the site never arrives
	cfg.Interface, cfg.ServerIP = netnstest.LanIf, net.IPv4(10, 77, 0, 1)
	logs := &netnstest.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	var a *Agent
	if err := netnstest.InNS(edgeNS, func() (err error) { a, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	if !a.dhcp.ProbePending() {
		a.Close()
		t.Fatal("a fresh edge did not defer its probe")
	}
	a.siteWaitEvery = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("edge log:\n%s", logs.String())
		}
	}()
	for i := range 500 {
		a.st.PutImage(proto.Image{V: 1, Name: fmt.Sprintf("im%d", i), Arch: "x86_64"})
	}
	warnings := func() (n int) {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "DHCP answers nothing yet") && strings.Contains(l, "site=lab") {
				n++
			}
		}
		return n
	}
	waitfor.True(t, "repeated warnings that DHCP answers nothing", func() bool { return warnings() >= 2 })
	if n := strings.Count(logs.String(), "until the site's config arrives"); n != 1 {
		t.Errorf("the start of the wait was logged %d times; want once, not once per state change", n)
	}
}
