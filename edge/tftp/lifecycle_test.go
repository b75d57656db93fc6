package tftp

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/procfd"
)

func lifecycleServer(t *testing.T, listen string) *Server {
	t.Helper()
	s, err := NewServer(Config{Listen: listen, Dynamic: DynamicFunc(func(string, net.Addr) ([]byte, bool) { return nil, false })})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveResult runs Serve with a context nobody cancels: a setup error must
// come back by itself, not wait for shutdown.
func serveResult(t *testing.T, s *Server) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background()) }()
	select {
	case err := <-errc:
		return err
	case <-time.After(time.Minute): // a guard against a hang, not a timing
		t.Fatal("Serve kept running after its setup failed")
		return nil
	}
}

func TestServeSetupErrors(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := serveResult(t, lifecycleServer(t, taken.LocalAddr().String())); err == nil || !strings.HasPrefix(err.Error(), "tftp: ") {
		t.Errorf("Serve on a taken port = %v; want a tftp error", err)
	}
	if err := serveResult(t, lifecycleServer(t, "127.0.0.1:not-a-port")); err == nil {
		t.Error("Serve on a bad address returned nil")
	}
	closed := lifecycleServer(t, "127.0.0.1:0")
	closed.Close()
	if err := serveResult(t, closed); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close = %v; want ErrClosed", err)
	}
}

// Close releases a bound socket that never served: its port can be bound
// again (the caller's start-up failed after binding TFTP).
func TestCloseReleasesSocket(t *testing.T) {
	s := lifecycleServer(t, "127.0.0.1:0")
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp", addr.String())
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	c.Close()
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Serve releases the socket when it returns.
func TestServeReleasesSocket(t *testing.T) {
	s := lifecycleServer(t, "127.0.0.1:0")
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	c, err := net.ListenPacket("udp", addr.String())
	if err != nil {
		t.Fatalf("port still bound after Serve returned: %v", err)
	}
	c.Close()
}

// Serve whose bind fails releases the root directory NewServer opened, as it
// does when it returns after serving: the caller has nothing left to close.
func TestServeSetupErrorClosesRoot(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	root := t.TempDir()
	s, err := NewServer(Config{Listen: taken.LocalAddr().String(), Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := serveResult(t, s); err == nil {
		t.Fatal("Serve on a taken port returned nil")
	}
	if n := procfd.OpenTo(t, root); n != 0 {
		t.Fatalf("after Serve failed to bind, %d descriptors are open on the root %s; want 0", n, root)
	}
}
