package cli_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// SIGTERM stops an edge cleanly: it exits 0, and the events of the last
// requests reach the coordinator before it goes (the buffer is flushed).
func TestEdgeGracefulShutdown(t *testing.T) {
	_, url, env := labWithHost(t, "img", "52:54:00:00:0b:01")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, "edge", "--coordinator", url, "--name", "e1", "--site", "lab",
		"--state-dir", filepath.Join(dir, "state"), "--cache-dir", filepath.Join(dir, "cache"),
		"--http-listen", httpAddr, "--tftp-listen", "", "--boot-dir", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	waitfor.True(t, "the edge's script for the host", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/boot.ipxe?mac=52:54:00:00:0b:01&arch=x86_64")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "/artifacts/img/vmlinuz")
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("edge exited %d on SIGTERM, want 0:\n%s", ee.ExitCode(), log)
		} else if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("edge did not exit on SIGTERM")
	}
	r := run(t, env, "events", "--host", "52:54:00:00:0b:01", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"kind": "script.served"`) {
		t.Errorf("events after the edge stopped: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
