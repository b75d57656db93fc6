package natstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/shared/pki"
)

// OperatorClusterConfigs writes n node configs under base for a cluster in
// operator mode, as `fleetboot nats init` prepares one: each node includes
// its own copy of frag (the init's resolver.conf) with the resolver
// directory resolverDir replaced by one of its own, and has its own
// JetStream store and route port. With pkiDir set (`fleetboot pki init`'s
// directory) the nodes require TLS of clients. It returns the configs'
// paths, for StartClusterFromConfig.
func OperatorClusterConfigs(t testing.TB, base, frag, resolverDir, pkiDir string, n int) []string {
	t.Helper()
	var routes []string
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, fmt.Sprintf("%q", "nats://"+l.Addr().String()))
		l.Close()
	}
	old := fmt.Sprintf("dir: %q", resolverDir)
	if strings.Count(frag, old) != 1 {
		t.Fatalf("resolver.conf has no single %s", old)
	}
	tls := ""
	if pkiDir != "" {
		tls = fmt.Sprintf("tls: { cert_file: %q, key_file: %q, ca_file: %q, timeout: 5 }\n",
			filepath.Join(pkiDir, pki.CertFile), filepath.Join(pkiDir, pki.KeyFile), filepath.Join(pkiDir, pki.CAFile))
	}
	var confs []string
	for i := range n {
		nd := filepath.Join(base, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(nd, 0o700); err != nil {
			t.Fatal(err)
		}
		own := strings.Replace(frag, old, fmt.Sprintf("dir: %q", filepath.Join(nd, "jwt")), 1)
		if err := os.WriteFile(filepath.Join(nd, "resolver.conf"), []byte(own), 0o644); err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf(`server_name: n%d
host: 127.0.0.1
port: -1
jetstream: { store_dir: %q }
%scluster: {
    name: fleetboot-test
    host: 127.0.0.1
    port: %d
    routes: [%s]
}
include resolver.conf
`, i+1, filepath.Join(nd, "js"), tls, ports[i], strings.Join(routes, ", "))
		p := filepath.Join(nd, "nats-server.conf")
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		confs = append(confs, p)
	}
	return confs
}
