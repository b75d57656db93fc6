package natstest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// PlaintextRefused speaks the NATS protocol in clear (CONNECT, PING) to addr
// (host:port), a listener that must require TLS, and returns nil if it is
// refused: the server's INFO says TLS is required and no PONG comes back
// before the server closes the connection. nats.go cannot play this
// client: it switches to TLS when the INFO asks for it.
func PlaintextRefused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("natstest: plaintext client: %w", err)
	}
	defer c.Close()
	// Bounds a server that neither answers nor closes: that is a failure.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("natstest: plaintext client: no INFO: %w", err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		return fmt.Errorf("natstest: plaintext client: the INFO does not require TLS: %s", strings.TrimSpace(info))
	}
	if _, err := fmt.Fprint(c, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n"); err != nil {
		return nil // closed already
	}
	for {
		line, err := r.ReadString('\n')
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errors.New("natstest: a plaintext client is neither answered nor disconnected")
		case err != nil:
			return nil // the server closed the connection
		case strings.HasPrefix(line, "PONG"):
			return errors.New("natstest: a plaintext client got PONG")
		}
	}
}
