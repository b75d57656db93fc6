package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/miniotest"
)

// MinIO is a MinIO server running inside a namespace, on its loopback.
type MinIO struct {
	Endpoint  string // host:port, reachable only from inside the namespace
	AccessKey string
	SecretKey string
	Proc      *Proc
}

// StartMinIO runs the same MinIO binary as test/miniotest inside the host's
// namespace on 127.0.0.1:9000 and waits until it is ready. Processes that
// use it must run in the same namespace.
func StartMinIO(t testing.TB, h *Host, dir string) *MinIO {
	t.Helper()
	bin := miniotest.Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("minio server binary %s not found: run `make deps` (or set FLEETBOOT_MINIO_BIN)", bin)
	}
	m := &MinIO{Endpoint: "127.0.0.1:9000", AccessKey: "fleetbootadmin", SecretKey: "fleetboot-secret-key"}
	data := filepath.Join(dir, "minio-data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), bin, "server", "--quiet", "--address", m.Endpoint,
		"--console-address", "127.0.0.1:9001", data)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	m.Proc = StartProc(t, dir, "minio", cmd)
	c := h.HTTPClient(2 * time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get("http://" + m.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		select {
		case <-m.Proc.Exited():
			t.Fatalf("minio exited:\n%s", m.Proc.Output())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio not ready after 60s:\n%s", m.Proc.Output())
		}
	}
}

// Env are the environment variables fleetboot reads S3 credentials from.
func (m *MinIO) Env() []string {
	return []string{"FLEETBOOT_S3_ACCESS_KEY=" + m.AccessKey, "FLEETBOOT_S3_SECRET_KEY=" + m.SecretKey}
}

// StoreURL is the --store value for bucket.
func (m *MinIO) StoreURL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=%s", bucket, m.Endpoint)
}
