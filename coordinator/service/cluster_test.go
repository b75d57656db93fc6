package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// startJSCluster returns the client URLs of an n-node JetStream cluster.
func startJSCluster(t testing.TB, n int) []string {
	var urls []string
	for _, ns := range natstest.StartCluster(t, n) {
		urls = append(urls, ns.ClientURL())
	}
	return urls
}

// twoCoordinators returns two services, as two coordinator processes would
// run them: each on its own connection to a different node of a three-node
// cluster, with buckets replicated three times. Both see sites lab
// (10.0.0.0/24) and dc (10.1.0.0/24) and image deb.
func twoCoordinators(t *testing.T) (a, b *Service) {
	t.Helper()
	urls := startJSCluster(t, 3)
	ctx := context.Background()
	var svcs []*Service
	for i := range 2 {
		nc, err := nats.Connect(urls[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(ctx, Config{JS: js, Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, s)
	}
	for _, site := range []proto.Site{
		{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}},
		{Name: "dc", Networks: []proto.Network{{Subnet: "10.1.0.0/24"}}},
	} {
		if _, err := svcs[0].AddSite(ctx, site); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svcs[1].AddImage(ctx, testImage("deb")); err != nil {
		t.Fatal(err)
	}
	return svcs[0], svcs[1]
}

// race runs every fn at once (released together) and returns their errors in
// order.
func race(fns ...func() error) []error {
	errs := make([]error, len(fns))
	var start, done sync.WaitGroup
	start.Add(1)
	for i, fn := range fns {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = fn()
		}()
	}
	start.Done()
	done.Wait()
	return errs
}

// outcome counts winners and checks every loser failed for the expected reason.
func outcome(t *testing.T, what string, errs []error, loserErrs ...error) int {
	t.Helper()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		expected := false
		for _, le := range loserErrs {
			expected = expected || errors.Is(err, le)
		}
		if !expected {
			t.Errorf("%s: unexpected error: %v", what, err)
		}
	}
	return won
}

// indexValue reads an index bucket entry ("" when absent).
func indexValue(t *testing.T, s *Service, bucket, key string) string {
	t.Helper()
	e, err := s.kv[bucket].Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}

// TestTwoCoordinatorsUniqueness sends conflicting requests through two
// coordinators at once (over 1 000 in all) and checks that each uniqueness
// rule picks exactly one winner and that the stored state and the indexes
// agree afterwards.
func TestTwoCoordinatorsUniqueness(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starts a three-node NATS cluster")
	}
	a, b := twoCoordinators(t)
	ctx := context.Background()
	svc := func(i int) *Service { return []*Service{a, b}[i%2] }
	total := 0
	// The image races come first: a removal scans every host, so they are
	// cheapest while there are few.

	t.Run("image rm races host set", func(t *testing.T) {
		const rounds = 100
		for r := range rounds {
			im := fmt.Sprintf("img-%d", r)
			if _, err := svc(r).AddImage(ctx, testImage(im)); err != nil {
				t.Fatal(err)
			}
			mac := fmt.Sprintf("52:54:05:00:00:%02x", r)
			errs := race(
				func() error { return svc(r).RemoveImage(ctx, im) },
				func() error {
					_, err := svc(r+1).SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab"), Image: ptr(im)})
					return err
				},
			)
			total += 2
			if won := outcome(t, "image "+im, errs, ErrConflict, ErrNotFound); won != 1 {
				t.Fatalf("image %s: rm err %v, host set err %v; want exactly one to win", im, errs[0], errs[1])
			}
			_, imErr := a.GetImage(ctx, im)
			h, hErr := a.GetHost(ctx, mac)
			switch {
			case errs[0] == nil && (imErr == nil || hErr == nil):
				t.Errorf("rm won but image err %v, host %+v err %v", imErr, h, hErr)
			case errs[1] == nil && (imErr != nil || hErr != nil || h.Image != im):
				t.Errorf("host set won but image err %v, host %+v err %v", imErr, h, hErr)
			}
		}
	})

	t.Run("image rm races site discovery image", func(t *testing.T) {
		const rounds = 30
		for r := range rounds {
			im := fmt.Sprintf("disc-%d", r)
			if _, err := svc(r).AddImage(ctx, testImage(im)); err != nil {
				t.Fatal(err)
			}
			site := proto.Site{Name: fmt.Sprintf("branch%d", r), Networks: []proto.Network{{Subnet: fmt.Sprintf("10.2.%d.0/24", r)}}, Unknown: proto.UnknownDiscover, DiscoveryImage: im}
			errs := race(
				func() error { return svc(r).RemoveImage(ctx, im) },
				func() error { _, err := svc(r+1).AddSite(ctx, site); return err },
			)
			total += 2
			if won := outcome(t, "discovery image "+im, errs, ErrConflict, ErrNotFound); won != 1 {
				t.Fatalf("discovery image %s: rm err %v, site add err %v; want exactly one to win", im, errs[0], errs[1])
			}
		}
	})

	t.Run("loader rm races host set", func(t *testing.T) {
		const rounds = 30
		for r := range rounds {
			name := fmt.Sprintf("ldr-%d", r)
			if _, err := svc(r).AddLoader(ctx, shimLoader(name)); err != nil {
				t.Fatal(err)
			}
			mac := fmt.Sprintf("52:54:06:00:00:%02x", r)
			errs := race(
				func() error { return svc(r).RemoveLoader(ctx, name) },
				func() error {
					_, err := svc(r+1).SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab"), Loader: ptr(name)})
					return err
				},
			)
			total += 2
			if won := outcome(t, "loader "+name, errs, ErrConflict, ErrNotFound); won != 1 {
				t.Fatalf("loader %s: rm err %v, host set err %v; want exactly one to win", name, errs[0], errs[1])
			}
			_, lErr := a.GetLoader(ctx, name)
			h, hErr := a.GetHost(ctx, mac)
			switch {
			case errs[0] == nil && (lErr == nil || hErr == nil):
				t.Errorf("rm won but loader err %v, host %+v err %v", lErr, h, hErr)
			case errs[1] == nil && (lErr != nil || hErr != nil || h.Loader != name):
				t.Errorf("host set won but loader err %v, host %+v err %v", lErr, h, hErr)
			}
		}
	})

	t.Run("same IP from many requests", func(t *testing.T) {
		const rounds, perRound = 5, 100
		for r := range rounds {
			ip := fmt.Sprintf("10.0.0.%d", 50+r)
			var fns []func() error
			for i := range perRound {
				mac := fmt.Sprintf("52:54:00:%02x:00:%02x", r, i)
				fns = append(fns, func() error {
					_, err := svc(i).SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab"), IP: ptr(ip), Image: ptr("deb")})
					return err
				})
			}
			errs := race(fns...)
			total += len(fns)
			if won := outcome(t, "IP "+ip, errs, ErrConflict); won != 1 {
				t.Fatalf("IP %s: %d requests won, want exactly 1", ip, won)
			}
			// The winner holds the IP index; every loser wrote nothing.
			for i, err := range errs {
				mac := fmt.Sprintf("52:54:00:%02x:00:%02x", r, i)
				_, gerr := a.GetHost(ctx, mac)
				if err == nil {
					key, _ := proto.HostKey("lab", mac)
					if got := indexValue(t, a, bucketIPs, "lab."+ip); got != key {
						t.Errorf("IP index of %s = %q, want the winner %q", ip, got, key)
					}
					if gerr != nil {
						t.Errorf("winner %s not stored: %v", mac, gerr)
					}
				} else if !errors.Is(gerr, ErrNotFound) || indexValue(t, a, proto.BucketMACs, mustMACKey(mac)) != "" {
					t.Errorf("loser %s left state behind: host err %v", mac, gerr)
				}
			}
		}
	})

	t.Run("same extra MAC claimed by hosts at two sites", func(t *testing.T) {
		const rounds = 100
		for r := range rounds {
			shared := fmt.Sprintf("52:54:01:00:00:%02x", r)
			hLab := fmt.Sprintf("52:54:02:00:00:%02x", r)
			hDC := fmt.Sprintf("52:54:03:00:00:%02x", r)
			errs := race(
				func() error {
					_, err := svc(r).SetHost(ctx, proto.HostSetRequest{MAC: hLab, Site: ptr("lab"), ExtraMACs: &[]string{shared}})
					return err
				},
				func() error {
					_, err := svc(r+1).SetHost(ctx, proto.HostSetRequest{MAC: hDC, Site: ptr("dc"), ExtraMACs: &[]string{shared}})
					return err
				},
			)
			total += 2
			if won := outcome(t, "MAC "+shared, errs, ErrConflict); won != 1 {
				t.Fatalf("MAC %s: %d hosts got it, want exactly 1", shared, won)
			}
			winner, wsite := hLab, "lab"
			if errs[0] != nil {
				winner, wsite = hDC, "dc"
			}
			h, err := b.GetHost(ctx, shared)
			if err != nil || h.MAC != winner || h.Site != wsite {
				t.Errorf("MAC %s resolves to %+v (err %v), want host %s at %s", shared, h, err, winner, wsite)
			}
		}
	})

	t.Run("same new MAC at two sites", func(t *testing.T) {
		// Two creates of one MAC at two sites: one creates it; the other
		// either loses or, ordered after it, moves it. Never two hosts.
		const rounds = 100
		for r := range rounds {
			mac := fmt.Sprintf("52:54:04:00:00:%02x", r)
			errs := race(
				func() error {
					_, err := svc(r).SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab")})
					return err
				},
				func() error {
					_, err := svc(r+1).SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("dc")})
					return err
				},
			)
			total += 2
			if won := outcome(t, "MAC "+mac, errs, ErrConflict); won < 1 {
				t.Fatalf("MAC %s: no request won", mac)
			}
			var at []string
			for _, site := range []string{"lab", "dc"} {
				if _, err := a.hostAt(ctx, site, mac); err == nil {
					at = append(at, site)
				}
			}
			h, err := a.GetHost(ctx, mac)
			if len(at) != 1 || err != nil || h.Site != at[0] {
				t.Errorf("MAC %s stored at sites %v, index resolves to %+v (err %v); want exactly one", mac, at, h, err)
			}
		}
	})

	// Nothing anywhere points at a missing image, and every stored host is
	// reachable through the MAC index.
	hosts, err := a.ListHosts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var dangling []string
	for _, h := range hosts {
		if h.Image != "" {
			if _, err := a.GetImage(ctx, h.Image); err != nil {
				dangling = append(dangling, h.MAC+"->"+h.Image)
			}
		}
		key, _ := proto.HostKey(h.Site, h.MAC)
		if got := indexValue(t, b, proto.BucketMACs, mustMACKey(h.MAC)); got != key {
			dangling = append(dangling, fmt.Sprintf("MAC index %s=%q, want %q", h.MAC, got, key))
		}
	}
	sites, err := a.ListSites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if s.DiscoveryImage != "" {
			if _, err := a.GetImage(ctx, s.DiscoveryImage); err != nil {
				dangling = append(dangling, "site "+s.Name+"->"+s.DiscoveryImage)
			}
		}
	}
	if d := cmp.Diff([]string(nil), dangling); d != "" {
		t.Errorf("state broken after the races (-want +got):\n%s", d)
	}
	t.Logf("%d conflicting requests through two coordinators", total)
}

// hostAt reads the host entry of mac at one site directly, bypassing the
// MAC index, so a test can count how many sites store a MAC.
func (s *Service) hostAt(ctx context.Context, site, mac string) (proto.Host, error) {
	key, err := proto.HostKey(site, mac)
	if err != nil {
		return proto.Host{}, err
	}
	var h proto.Host
	_, err = s.get(ctx, proto.BucketHosts, key, &h)
	return h, err
}
