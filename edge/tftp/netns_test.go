package tftp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/test/netnstest"
)

// A server on a link-local IPv6 address with a zone serves a client on the
// same link, answering from that address with blksize lowered to the
// link's MTU (1500 - 48 bytes of IPv6 and UDP headers) and the window the
// client asked for. pin/tftp could not serve on such an address at all (it
// could not tell the socket's family); an edge on an IPv6-only provisioning
// link has nothing else. The server runs in its namespace as a child
// process (this test binary again): a transfer's socket is made by its own
// goroutine, which a namespace entered by one thread would not cover.
func TestNetnsLinkLocalIPv6(t *testing.T) {
	if root := os.Getenv("FLEETBOOT_TFTP_CHILD_ROOT"); root != "" {
		serveUntilStdinCloses(t, root)
		return
	}
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbt", netnstest.Member{Name: "tftp", Addr: "10.78.0.1/24"}, netnstest.Member{Name: "cli", Addr: "10.78.0.2/24"})
	netnstest.Run(t, "ip", "-n", nss["tftp"], "addr", "add", "fe80::1/64", "dev", netnstest.LanIf, "nodad")
	netnstest.Run(t, "ip", "-n", nss["cli"], "addr", "add", "fe80::2/64", "dev", netnstest.LanIf, "nodad")
	root := t.TempDir()
	want := randomBytes(t, 100_000)
	if err := os.WriteFile(filepath.Join(root, "ipxe.efi"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	child := exec.Command("ip", "netns", "exec", nss["tftp"], os.Args[0], "-test.run=^TestNetnsLinkLocalIPv6$", "-test.v")
	child.Env = append(os.Environ(), "FLEETBOOT_TFTP_CHILD_ROOT="+root)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the child stops serving and exits
		if err := child.Wait(); err != nil {
			t.Errorf("child server: %v: %s", err, stderr.String())
		}
	})
	var srv *net.UDPAddr
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
			if srv, err = net.ResolveUDPAddr("udp", a); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if srv == nil {
		t.Fatalf("the child server did not say where it listens: %s", stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	var conn *net.UDPConn
	if err := netnstest.InNS(nss["cli"], func() error {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("fe80::2"), Zone: netnstest.LanIf})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn}
	got, oack := c.windowGet(srv, "ipxe.efi", "blksize", "1468", "windowsize", "8")
	if d := cmp.Diff(map[string]string{"blksize": "1452", "windowsize": "8"}, oack); d != "" {
		t.Errorf("OACK (-want +got):\n%s", d)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}

// serveUntilStdinCloses is the child of TestNetnsLinkLocalIPv6: it serves
// root on fe80::1 in the namespace it was started in and prints the address.
func serveUntilStdinCloses(t *testing.T, root string) {
	s, err := NewServer(Config{Listen: "[fe80::1%" + netnstest.LanIf + "]:0", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatalf("Listen on a zoned link-local address: %v", err)
	}
	fmt.Printf("LISTENING %s\n", addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
