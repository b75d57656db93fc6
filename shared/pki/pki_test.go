package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestInit(t *testing.T) {
	cases := []struct {
		name    string
		hosts   []string
		wantDNS []string
		wantIPs []string
		err     string
	}{
		{"defaults", nil, []string{"localhost"}, []string{"127.0.0.1"}, ""},
		{"names and addresses", []string{"coord.example.net", "10.0.0.5", "::1"}, []string{"coord.example.net"}, []string{"10.0.0.5", "::1"}, ""},
		{"bad name", []string{"coord example"}, nil, nil, `pki: invalid --host "coord example": want a DNS name or an IP address`},
		{"empty name", []string{""}, nil, nil, "pki: empty --host"},
		{"label too long", []string{strings.Repeat("a", 64) + ".net"}, nil, nil, "pki: invalid --host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			p, err := Init(dir, c.hosts, time.Now())
			if c.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				if _, err := os.Stat(filepath.Join(dir, CAFile)); err == nil {
					t.Fatal("files written despite the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(p.Key)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key mode %v %v", fi.Mode(), err)
			}
			cert := readCert(t, p.Cert)
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if diff := cmp.Diff(c.wantDNS, cert.DNSNames); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.wantIPs, ips); diff != "" {
				t.Errorf("IPs (-want +got):\n%s", diff)
			}
			pool, err := CertPool(p.CA)
			if err != nil {
				t.Fatal(err)
			}
			name := append(c.wantDNS, c.wantIPs...)[0]
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
				t.Fatalf("server certificate does not verify for %s: %v", name, err)
			}
			if _, err := ServerTLS(p.Cert, p.Key, p.CA); err != nil {
				t.Fatal(err)
			}
			// Never overwritten.
			if _, err := Init(dir, c.hosts, time.Now()); err == nil || !strings.Contains(err.Error(), "already exists") {
				t.Fatalf("second Init: %v", err)
			}
		})
	}
}

// TestTLSHandshake: a client trusting the CA connects; one trusting another
// CA is refused.
func TestTLSHandshake(t *testing.T) {
	good, err := Init(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := Init(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerTLS(good.Cert, good.Key, good.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerTLS(good.Cert, good.Key, other.CA); err == nil || !strings.Contains(err.Error(), "is not signed by the CA") {
		t.Fatalf("certificate from another CA accepted at start-up: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, c := range []struct {
		name string
		ca   string
		ok   bool
	}{{"same CA", good.CA, true}, {"other CA", other.CA, false}} {
		t.Run(c.name, func(t *testing.T) {
			pool, err := CertPool(c.ca)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
			if conn != nil {
				conn.Close()
			}
			if (err == nil) != c.ok {
				t.Fatalf("handshake err = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
