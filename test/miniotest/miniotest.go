// Package miniotest starts a real MinIO server on 127.0.0.1 for tests. The
// binary is built by `make deps` into ~/.cache/fleetboot/bin (or named by
// FLEETBOOT_MINIO_BIN); a test that needs MinIO fails, never skips, when it is
// missing, so CI cannot pass without really talking to S3.
package miniotest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Server is a running MinIO.
type Server struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Dir       string
	cmd       *exec.Cmd
}

// Binary returns the path of the MinIO server binary.
func Binary() string {
	if p := os.Getenv("FLEETBOOT_MINIO_BIN"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fleetboot", "bin", "minio")
}

// Start runs MinIO on a free loopback port with a fresh data directory and
// stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("minio server binary %s not found: run `make deps` (or set FLEETBOOT_MINIO_BIN)", bin)
	}
	s := &Server{AccessKey: "fleetbootadmin", SecretKey: "fleetboot-secret-key", Dir: t.TempDir()}
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		console := freePort(t)
		s.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "server", "--quiet", "--address", s.Endpoint,
			"--console-address", fmt.Sprintf("127.0.0.1:%d", console), s.Dir)
		cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off")
		logf, err := os.Create(filepath.Join(t.TempDir(), "minio.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start minio: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if waitReady(s.Endpoint, exited, 60*time.Second) {
			s.cmd = cmd
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				logf.Close()
			})
			return s
		}
		cmd.Process.Kill()
		<-exited
		logf.Close()
		log, _ := os.ReadFile(logf.Name())
		t.Logf("minio on %s did not become ready (attempt %d): %s", s.Endpoint, attempt+1, log)
	}
	t.Fatalf("minio did not start")
	return nil
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

func waitReady(endpoint string, exited <-chan struct{}, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := c.Get("http://" + endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
