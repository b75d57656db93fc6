package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// lockedBuf is a process's output, read while it runs.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProc runs the fleetboot binary in the background and stops it (by
// its PID) when the test ends.
func startProc(t *testing.T, env []string, args ...string) *lockedBuf {
	t.Helper()
	out := &lockedBuf{}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort().String()
}

// eventually polls cond (a command run) until it holds or time runs out;
// the failure quotes cond's last detail.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	waitfor.Within(t, timeout, what, func() error {
		if ok, detail := cond(); !ok {
			return errors.New(detail)
		}
		return nil
	})
}

// TestSecureDeployment drives the secure setup exactly as the README shows
// it, with the real binary: pki init, a TLS + --auth coordinator, user and
// edge enrolment, a confined edge agent, a viewer refused, an admin
// accepted, the audit log, revocation, and no secret in any output.
func TestSecureDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs a coordinator and an edge")
	}
	dir := t.TempDir()
	pkiDir, data, store, creds := filepath.Join(dir, "pki"), filepath.Join(dir, "data"), t.TempDir(), t.TempDir()
	// Secret values that must never show up anywhere.
	const s3Access, s3Secret = "AKIAFLEETBOOTTESTKEY1", "s3-secret-value-never-printed-7f3a"
	base := []string{"FLEETBOOT_S3_ACCESS_KEY=" + s3Access, "FLEETBOOT_S3_SECRET_KEY=" + s3Secret}
	var outputs []string // everything any command printed
	runT := func(env []string, args ...string) result {
		t.Helper()
		r := run(t, append(append([]string{}, base...), env...), args...)
		outputs = append(outputs, r.stdout, r.stderr)
		return r
	}

	if r := runT(nil, "pki", "init", pkiDir, "--host", "127.0.0.1", "--host", "localhost"); r.code != 0 {
		t.Fatalf("pki init: %s", r.stderr)
	}
	if r := runT(nil, "pki", "init", pkiDir); r.code != 1 || r.stderr != "fleetboot: pki: "+filepath.Join(pkiDir, "ca.pem")+" already exists; choose an empty directory\n" {
		t.Fatalf("pki init over existing files: %d %q", r.code, r.stderr)
	}
	ca := filepath.Join(pkiDir, "ca.pem")
	addr := freePort(t)
	url := "tls://" + addr
	coordLog := startProc(t, base, "coordinator", "--data", data, "--store", "dir://"+store, "--nats-listen", addr, "--http-listen", "127.0.0.1:0",
		"--tls-cert", filepath.Join(pkiDir, "server.pem"), "--tls-key", filepath.Join(pkiDir, "server-key.pem"), "--tls-ca", ca, "--auth")
	adminCreds := filepath.Join(data, "admin.creds")
	admin := []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca, "FLEETBOOT_CREDS=" + adminCreds}
	eventually(t, "coordinator serving", 60*time.Second, func() (bool, string) {
		if _, err := os.Stat(adminCreds); err != nil {
			return false, coordLog.String()
		}
		r := runT(admin, "site", "ls")
		return r.code == 0, r.stderr + coordLog.String()
	})
	viewerCreds, edgeCreds := filepath.Join(creds, "bob.creds"), filepath.Join(creds, "e1.creds")
	viewer := []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca, "FLEETBOOT_CREDS=" + viewerCreds}
	samCreds := filepath.Join(creds, "sam.creds")
	siteAdmin := []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca, "FLEETBOOT_CREDS=" + samCreds}

	steps := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stdout string // a line the output must contain
		stderr string // exact stderr when the command fails
	}{
		{"no credentials", []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca}, []string{"site", "ls"}, 3, "",
			"fleetboot: cannot reach the coordinator's NATS at " + url + ": nats: Authorization Violation\n"},
		{"admin adds a site", admin, []string{"site", "add", "lab", "--subnet", "10.0.0.0/24"}, 0, "", ""},
		{"admin adds a viewer", admin, []string{"user", "add", "bob", "--role", "viewer", "--out", viewerCreds}, 0,
			"enrolled viewer bob; credentials in " + viewerCreds + " (keep them secret)", ""},
		{"creds never overwritten", admin, []string{"user", "add", "bob2", "--role", "viewer", "--out", viewerCreds}, 1, "",
			"fleetboot: " + viewerCreds + " exists; choose another --out (credentials are never overwritten)\n"},
		{"bad role", admin, []string{"user", "add", "carol", "--role", "root"}, 1, "", "fleetboot: invalid --role \"root\": want admin, viewer or site-admin\n"},
		{"viewer lists", viewer, []string{"site", "ls"}, 0, "lab", ""},
		{"admin adds a site admin", admin, []string{"user", "add", "sam", "--role", "site-admin", "--site", "lab", "--out", samCreds}, 0,
			"enrolled site-admin sam (site lab); credentials in " + samCreds + " (keep them secret)", ""},
		{"site admin changes her site", siteAdmin, []string{"site", "add", "lab", "--subnet", "10.0.0.0/24"}, 0, "", ""},
		{"site admin may not add another site", siteAdmin, []string{"site", "add", "lab2", "--subnet", "10.2.0.0/24"}, 1, "",
			"fleetboot: permission denied: site-admin sam (site lab) may see and change only site lab, not \"lab2\"\n"},
		{"viewer's change refused", viewer, []string{"host", "set", "52:54:00:12:34:56", "--site", "lab", "--hostname", "evil"}, 1, "",
			"fleetboot: permission denied: viewer bob is read-only and may not host.set (ask an admin)\n"},
		{"viewer may not enrol", viewer, []string{"edge", "add", "lab", "e9", "--out", filepath.Join(creds, "e9.creds")}, 1, "",
			"fleetboot: permission denied: viewer bob is read-only and may not edge.add (ask an admin)\n"},
		{"nothing written", viewer, []string{"host", "ls"}, 0, "", ""},
		{"admin's change accepted", admin, []string{"host", "set", "52:54:00:12:34:56", "--site", "lab", "--hostname", "web1"}, 0, "", ""},
		{"edge name with a dot", admin, []string{"edge", "add", "lab", "e1.x"}, 1, "",
			"fleetboot: invalid edge name \"e1.x\": use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')\n"},
		{"admin enrols an edge", admin, []string{"edge", "add", "lab", "e1", "--out", edgeCreds}, 0,
			"enrolled edge e1 (site lab); credentials in " + edgeCreds, ""},
		{"edge enrolled twice", admin, []string{"edge", "add", "lab", "e1", "--out", filepath.Join(creds, "e1b.creds")}, 1, "",
			"fleetboot: edge e1 (site lab) is already enrolled; revoke it first\n"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := runT(s.env, s.args...)
			if r.code != s.code {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, s.code, r.stdout, r.stderr)
			}
			if s.code != 0 && r.stderr != s.stderr {
				t.Errorf("stderr = %q\nwant     %q", r.stderr, s.stderr)
			}
			if !strings.Contains(r.stdout, s.stdout) {
				t.Errorf("stdout %q lacks %q", r.stdout, s.stdout)
			}
		})
	}
	if r := runT(viewer, "host", "ls", "-o", "json"); !strings.Contains(r.stdout, `"hostname": "web1"`) || strings.Contains(r.stdout, "evil") {
		t.Fatalf("hosts after the changes: %s", r.stdout)
	}
	for _, f := range []string{adminCreds, viewerCreds, samCreds, edgeCreds, filepath.Join(pkiDir, "server-key.pem")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}

	// The edge agent runs confined with its credentials and syncs its site.
	edgeHTTP := freePort(t)
	edgeLog := startProc(t, append(base, "FLEETBOOT_TLS_CA="+ca), "edge", "--nats", url, "--creds", edgeCreds, "--site", "lab", "--name", "e1",
		"--http-listen", edgeHTTP, "--tftp-listen", "", "--state-dir", t.TempDir(), "--cache-dir", t.TempDir(), "--boot-dir", t.TempDir())
	eventually(t, "edge e1 heartbeat with a synced state", 60*time.Second, func() (bool, string) {
		r := runT(viewer, "edge", "ls", "-o", "json")
		var edges []struct {
			Name     string `json:"name"`
			Revision uint64 `json:"revision"`
		}
		_ = json.Unmarshal([]byte(r.stdout), &edges)
		return len(edges) == 1 && edges[0].Name == "e1" && edges[0].Revision > 0, r.stdout + r.stderr + edgeLog.String()
	})
	// A script request: the edge sends events, which a viewer can read.
	resp, err := http.Get("http://" + edgeHTTP + "/boot.ipxe?mac=52:54:00:12:34:56")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	eventually(t, "the edge's events readable by the viewer", 30*time.Second, func() (bool, string) {
		r := runT(viewer, "events", "--since", "1h", "--host", "52:54:00:12:34:56", "-o", "json")
		return r.code == 0 && strings.Contains(r.stdout, `"edge": "e1"`), r.stdout + r.stderr
	})
	// The site admin of lab reads her site's events and timelines, though
	// her credentials may read no other site's events.
	if r := runT(siteAdmin, "events", "--since", "1h", "--host", "52:54:00:12:34:56", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"edge": "e1"`) {
		t.Errorf("site admin's events: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runT(siteAdmin, "events", "--site", "other"); r.code != 1 || r.stderr != "fleetboot: --site other: these credentials read only the events of site lab\n" {
		t.Errorf("site admin's events of another site: %d %q", r.code, r.stderr)
	}
	// With a second MAC the timeline reads the site's events and keeps
	// the host's own (a consumer with two filters would be refused).
	if r := runT(siteAdmin, "host", "set", "52:54:00:12:34:56", "--extra-mac", "52:54:00:12:34:57"); r.code != 0 {
		t.Errorf("site admin's host change: %d %s", r.code, r.stderr)
	}
	if r := runT(siteAdmin, "host", "timeline", "52:54:00:12:34:56", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"edge": "e1"`) ||
		!strings.Contains(r.stdout, "52:54:00:12:34:57") {
		t.Errorf("site admin's timeline: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(strings.ToLower(edgeLog.String()), "permission") {
		t.Fatalf("the edge hit permission errors:\n%s", edgeLog.String())
	}
	// Its credentials are not an admin's: the server refuses the request
	// before it reaches the coordinator (so it is not in the audit log).
	if r := runT([]string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca, "FLEETBOOT_CREDS=" + edgeCreds}, "--timeout", "1s", "host", "set", "52:54:00:12:34:56", "--hostname", "x"); r.code == 0 {
		t.Fatal("edge credentials changed a host")
	}

	// Revocation disconnects the running edge.
	if r := runT(admin, "edge", "revoke", "e1"); r.code != 0 || !strings.HasPrefix(r.stdout, "revoked edge e1 (site lab) (key U") {
		t.Fatalf("revoke: %d %q %q", r.code, r.stdout, r.stderr)
	}
	eventually(t, "revoked edge disconnected", 30*time.Second, func() (bool, string) {
		return strings.Contains(edgeLog.String(), "NATS disconnected"), edgeLog.String()
	})
	if r := runT([]string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TLS_CA=" + ca, "FLEETBOOT_CREDS=" + edgeCreds}, "site", "ls"); r.code != 3 ||
		!strings.Contains(r.stderr, "Authorization Violation") {
		t.Fatalf("revoked credentials: %d %q", r.code, r.stderr)
	}

	// The audit log, as the viewer sees it.
	r := runT(viewer, "audit", "--since", "1h", "-o", "json")
	if r.code != 0 {
		t.Fatalf("audit: %s", r.stderr)
	}
	var recs []struct{ Who, Role, Action, Outcome, Error string }
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		t.Fatalf("audit json: %v\n%s", err, r.stdout)
	}
	type row struct{ Who, Action, Outcome string }
	var got []row
	for _, rec := range recs {
		got = append(got, row{rec.Who, rec.Action, rec.Outcome})
	}
	want := []row{
		{"admin", "site.add", "accepted"},
		{"admin", "user.add", "accepted"},
		{"admin", "user.add", "accepted"},
		{"sam", "site.add", "accepted"},
		{"sam", "site.add", "refused"},
		{"bob", "host.set", "refused"},
		{"bob", "edge.add", "refused"},
		{"admin", "host.set", "accepted"},
		{"admin", "edge.add", "accepted"},
		{"admin", "edge.add", "refused"}, // enrolled twice
		{"sam", "host.set", "accepted"},
		{"admin", "edge.revoke", "accepted"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if r := runT(admin, "audit"); r.code != 0 || !strings.Contains(r.stdout, "bob (viewer)") || !strings.Contains(r.stdout, "permission denied") {
		t.Errorf("audit table: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// --help never shows secrets, even with them in the environment.
	for _, args := range [][]string{{"coordinator", "--help"}, {"edge", "--help"}, {"image", "add", "--help"}, {"dev", "--help"}, {"user", "add", "--help"}} {
		runT(append([]string{"FLEETBOOT_CREDS=" + adminCreds}, admin...), args...)
	}
	// No secret value in any output, log or error of the whole run.
	var secrets = []string{s3Access, s3Secret}
	for _, f := range []string{adminCreds, viewerCreds, edgeCreds, filepath.Join(pkiDir, "server-key.pem")} {
		secrets = append(secrets, secretLines(t, f)...)
	}
	nks, _ := filepath.Glob(filepath.Join(data, "auth", "*.nk"))
	for _, f := range nks {
		secrets = append(secrets, secretLines(t, f)...)
	}
	if len(secrets) < 9 {
		t.Fatalf("found only %d secrets to look for", len(secrets))
	}
	all := strings.Join(append(outputs, coordLog.String(), edgeLog.String()), "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a secret (%d bytes, starting %.4s…) appears in the output", len(s), s)
		}
	}
}

// secretLines returns a file's secret material: nkey seeds and PEM key
// bodies (every non-marker line of a key file).
func secretLines(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "SU") || strings.HasPrefix(l, "SA") || strings.HasPrefix(l, "SO"):
			out = append(out, l)
		case strings.HasSuffix(file, "key.pem") && l != "" && !strings.HasPrefix(l, "-----"):
			out = append(out, l)
		}
	}
	return out
}

// TestNATSPasswordNeverPrinted runs the real binary (coordinator, edge,
// CLI) against a NATS server that takes a user and password in the URL,
// including failing connections and a URL that does not parse, and greps
// every log line and error for the password.
func TestNATSPasswordNeverPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs a coordinator and an edge")
	}
	const password = "nats-pw-never-printed-91c2"
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, Username: "fleet", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	hostport := strings.TrimPrefix(ns.ClientURL(), "nats://")
	url := "nats://fleet:" + password + "@" + hostport
	var outputs []string
	runT := func(args ...string) result {
		t.Helper()
		r := run(t, nil, args...)
		outputs = append(outputs, r.stdout+r.stderr) // not args: they hold the password
		return r
	}

	coordLog := startProc(t, nil, "coordinator", "--nats-url", url, "--insecure", "--store", "dir://"+t.TempDir(), "--http-listen", "")
	eventually(t, "the coordinator answering", 60*time.Second, func() (bool, string) {
		r := run(t, nil, "--nats", url, "site", "ls")
		return r.code == 0, r.stderr + coordLog.String()
	})
	if r := runT("--nats", url, "site", "add", "lab", "--subnet", "10.9.0.0/24"); r.code != 0 {
		t.Fatalf("site add: %s", r.stderr)
	}
	dir := t.TempDir()
	edgeLog := startProc(t, nil, "edge", "--coordinator", url, "--name", "e1", "--site", "lab",
		"--state-dir", filepath.Join(dir, "state"), "--cache-dir", filepath.Join(dir, "cache"),
		"--http-listen", "127.0.0.1:0", "--tftp-listen", "", "--boot-dir", dir)
	eventually(t, "the edge's heartbeat", 60*time.Second, func() (bool, string) {
		r := run(t, nil, "--nats", url, "edge", "ls")
		return r.code == 0 && strings.Contains(r.stdout, "e1") && strings.Contains(edgeLog.String(), "edge serving"), r.stdout + r.stderr + edgeLog.String()
	})
	for _, args := range [][]string{
		{"--nats", url, "events"},
		{"--nats", url, "host", "ls"},
		// Wrong password, nothing listening, a URL that does not parse.
		{"--nats", "nats://fleet:" + password + "x@" + hostport, "site", "ls"},
		{"--nats", "nats://fleet:" + password + "x@" + hostport, "events"},
		{"--nats", "nats://fleet:" + password + "@127.0.0.1:1", "site", "ls"},
		{"--nats", "nats://fleet:" + password + "@127.0.0.1:bad", "site", "ls"},
		{"--nats", "nats://fleet:" + password + "@127.0.0.1:bad", "events"},
		// A generated password holding a raw '/' or '#' makes the URL
		// unparsable, and the parse error quotes it.
		{"--nats", "nats://fleet:" + password + "/x@" + hostport, "site", "ls"},
		{"--nats", "nats://fleet:" + password + "#x@" + hostport, "events"},
		{"coordinator", "--insecure", "--nats-url", "nats://fleet:" + password + "/x@" + hostport, "--store", "dir://" + t.TempDir()},
		{"coordinator", "--insecure", "--nats-url", "nats://fleet:" + password + "@127.0.0.1:bad", "--store", "dir://" + t.TempDir()},
		{"edge", "--coordinator", "nats://fleet:" + password + "@127.0.0.1:bad", "--name", "e2", "--site", "lab",
			"--state-dir", filepath.Join(dir, "state2"), "--cache-dir", filepath.Join(dir, "cache2"),
			"--http-listen", "127.0.0.1:0", "--tftp-listen", "", "--boot-dir", dir},
	} {
		runT(args...)
	}
	outputs = append(outputs, coordLog.String(), edgeLog.String())
	if !strings.Contains(coordLog.String(), "fleet:xxxxx@") {
		t.Errorf("the coordinator's log does not show the redacted URL:\n%s", coordLog.String())
	}
	for _, o := range outputs {
		for _, line := range strings.Split(o, "\n") {
			if strings.Contains(line, password) {
				t.Errorf("the NATS password is printed: %s", line)
			}
		}
	}
}

// TestDevNATSPasswordNeverPrinted: `fleetboot dev --nats-url` against a
// NATS server with a user and password prints its banner (and logs) without
// the password, as every other command does.
func TestDevNATSPasswordNeverPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs fleetboot dev")
	}
	const password = "dev-nats-pw-never-printed-5e0b"
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, Username: "fleet", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := "nats://fleet:" + password + "@" + strings.TrimPrefix(ns.ClientURL(), "nats://")
	out := startProc(t, nil, "dev", "--nats-url", url, "--insecure", "--data", t.TempDir(), "--panel-listen", "",
		"--http-listen", "127.0.0.1:0", "--tftp-listen", "")
	eventually(t, "fleetboot dev running", 60*time.Second, func() (bool, string) {
		return strings.Contains(out.String(), "fleetboot dev is running"), out.String()
	})
	if !strings.Contains(out.String(), "NATS + coordinator API: nats://fleet:xxxxx@") {
		t.Errorf("the banner does not show the redacted URL:\n%s", out.String())
	}
	for line := range strings.Lines(out.String()) {
		if strings.Contains(line, password) {
			t.Errorf("the NATS password is printed: %s", line)
		}
	}
}
