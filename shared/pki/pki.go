// Package pki makes the small private certificate authority a fleetboot
// deployment needs for TLS on NATS: one CA and one server certificate, with
// crypto/x509 from the standard library, so the secure setup is one command
// instead of an openssl recipe.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names written by Init inside its directory.
const (
	CAFile      = "ca.pem"
	CertFile    = "server.pem"
	KeyFile     = "server-key.pem"
	caLifetime  = 10 * 365 * 24 * time.Hour
	srvLifetime = 825 * 24 * time.Hour // the longest lifetime clients accept for a leaf
)

// DefaultHosts are the names a lab server certificate covers when none are given.
var DefaultHosts = []string{"localhost", "127.0.0.1"}

// Paths are the files Init wrote.
type Paths struct {
	CA, Cert, Key string
}

// Init creates DIR/ca.pem, DIR/server.pem and DIR/server-key.pem (0600) for
// hosts (DNS names or IP addresses). It refuses to overwrite existing files:
// replacing a CA silently would lock every edge out. The CA's private key is
// not kept: a lab re-runs Init (into a new directory) to add names.
func Init(dir string, hosts []string, now time.Time) (Paths, error) {
	p := Paths{CA: filepath.Join(dir, CAFile), Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile)}
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			return p, errors.New("pki: empty --host")
		case net.ParseIP(h) != nil:
			ips = append(ips, net.ParseIP(h))
		case validDNSName(h):
			dns = append(dns, strings.ToLower(h))
		default:
			return p, fmt.Errorf("pki: invalid --host %q: want a DNS name or an IP address", h)
		}
	}
	for _, f := range []string{p.CA, p.Cert, p.Key} {
		if _, err := os.Stat(f); err == nil {
			return p, fmt.Errorf("pki: %s already exists; choose an empty directory", f)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return p, fmt.Errorf("pki: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, fmt.Errorf("pki: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fleetboot CA", Organization: []string{"fleetboot"}},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew between machines
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("pki: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return p, fmt.Errorf("pki: CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, fmt.Errorf("pki: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"fleetboot"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(srvLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("pki: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return p, fmt.Errorf("pki: server key: %w", err)
	}
	if err := writePEM(p.Key, "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return p, err
	}
	if err := writePEM(p.Cert, "CERTIFICATE", der, 0o644); err != nil {
		return p, err
	}
	if err := writePEM(p.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return p, err
	}
	return p, nil
}

// ServerTLS loads a certificate and key for a TLS server; with caFile set
// the chain is checked against it, so a certificate from another CA is
// caught at start-up rather than by every client.
func ServerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("pki: --tls-cert and --tls-key go together")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// The error names the file, never its contents.
		return nil, fmt.Errorf("pki: load %s and %s: %w", certFile, keyFile, err)
	}
	if caFile != "" {
		pool, err := CertPool(caFile)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", certFile, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			return nil, fmt.Errorf("pki: %s is not signed by the CA in %s: %w", certFile, caFile, err)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// CertPool reads PEM certificates from file.
func CertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", file)
	}
	return pool, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	// O_EXCL: never follow a planted file or symlink, never overwrite.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics
		// itself), so this is unreachable; a fixed serial would still work.
		return big.NewInt(1)
	}
	return n
}

func validDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '*' && label == "*") {
				return false
			}
		}
	}
	return true
}
