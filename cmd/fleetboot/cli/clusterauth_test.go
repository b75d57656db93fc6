package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// authCluster is a 3-node NATS cluster in operator mode, configured from
// what `fleetboot nats init` wrote.
type authCluster struct {
	dir   string // the nats init directory
	confs []string
	nodes []*server.Server
}

func startAuthCluster(t *testing.T) *authCluster {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "nats")
	sharedJWT := filepath.Join(base, "jwt")
	if r := runEnv(t, nil, "nats", "init", dir, "--resolver-dir", sharedJWT, "--sync-interval", "1s"); r.code != 0 {
		t.Fatalf("nats init: code %d stderr %q", r.code, r.stderr)
	}
	confs := natstest.OperatorClusterConfigs(t, base, readFile(t, filepath.Join(dir, auth.ResolverConfFile)), sharedJWT, "", 3)
	return &authCluster{dir: dir, confs: confs, nodes: natstest.StartClusterFromConfig(t, confs...)}
}

func (c *authCluster) urls() string {
	var u []string
	for _, ns := range c.nodes {
		u = append(u, ns.ClientURL())
	}
	return strings.Join(u, ",")
}

// restart stops every node and starts them again from their configs.
func (c *authCluster) restart(t *testing.T) {
	t.Helper()
	for _, ns := range c.nodes {
		ns.Shutdown()
	}
	for _, ns := range c.nodes {
		ns.WaitForShutdown()
	}
	c.nodes = natstest.StartClusterFromConfig(t, c.confs...)
}

// clusterCoord is one coordinator.Run on the cluster, configured as
// `fleetboot coordinator --auth --nats-url URLS --account-key
// DIR/fleetboot-signing.nk --data DATA --replicas 3` configures it.
type clusterCoord struct {
	name, data string
	logs       *syncBuffer
	ready      chan struct{}
	done       chan error
	stop       func()
}

func (c *authCluster) coordinator(t *testing.T, name, data string) *clusterCoord {
	t.Helper()
	co := &clusterCoord{name: name, data: data, logs: &syncBuffer{}, ready: make(chan struct{}), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		co.done <- coordinator.Run(ctx, coordinator.Config{
			DataDir: data, NATSURL: c.urls(), Replicas: 3, Version: "test",
			Auth: true, AccountKey: filepath.Join(c.dir, auth.FleetSigningSeedFile),
			NATSOptions: []nats.Option{nats.Timeout(5 * time.Second)},
			Logger:      slog.New(slog.NewTextHandler(co.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Ready:       func(string) { close(co.ready) },
		})
	}()
	var once sync.Once
	co.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-co.done; err != nil {
				t.Errorf("coordinator %s: %v", name, err)
			}
		})
	}
	t.Cleanup(co.stop)
	return co
}

// coordinatorStart bounds a coordinator's start on the cluster: creating a
// dozen R3 buckets and streams, two coordinators at once, under -race on
// a loaded machine takes a while.
const coordinatorStart = 3 * waitfor.Default

func (co *clusterCoord) wait(t *testing.T) {
	t.Helper()
	select {
	case <-co.ready:
	case err := <-co.done:
		t.Fatalf("coordinator %s did not start: %v\n%s", co.name, err, co.logs)
	case <-time.After(coordinatorStart):
		t.Fatalf("coordinator %s not ready after %s\n%s", co.name, coordinatorStart, co.logs)
	}
}

// credsOptions connects as a credentials file does in the CLI and edges.
func credsOptions(t *testing.T, creds string) []nats.Option {
	t.Helper()
	opts := []nats.Option{nats.UserCredentials(creds), nats.Timeout(5 * time.Second), nats.NoReconnect()}
	p, err := auth.InboxPrefix(creds)
	if err != nil {
		t.Fatal(err)
	}
	if p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts
}

func connectCreds(t *testing.T, ns *server.Server, creds string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), append(credsOptions(t, creds), extra...)...)
	if err != nil {
		t.Fatalf("connect to %s with %s: %v", ns.Name(), filepath.Base(creds), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// apiCall makes one API request; err is a transport error (no answer).
func apiCall(nc *nats.Conn, endpoint string, req any) (proto.Reply, error) {
	var rep proto.Reply
	body, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	msg, err := nc.Request(proto.APISubject(endpoint), body, 10*time.Second)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", endpoint, err)
	}
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return rep, fmt.Errorf("%s: reply %q: %w", endpoint, msg.Data, err)
	}
	return rep, nil
}

func mustAPI(t *testing.T, nc *nats.Conn, endpoint string, req any) proto.Reply {
	t.Helper()
	rep, err := apiCall(nc, endpoint, req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Error != "" {
		t.Fatalf("%s refused: %s", endpoint, rep.Error)
	}
	return rep
}

// enrolCreds enrols through the API as `fleetboot edge add` / `user add`
// do and writes the credentials file.
func enrolCreds(t *testing.T, admin *nats.Conn, endpoint string, req auth.EnrolRequest) (creds, pub string) {
	t.Helper()
	pub, seed, err := auth.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	req.V, req.PublicKey = proto.Version, pub
	rep := mustAPI(t, admin, endpoint, req)
	var er auth.EnrolReply
	if err := json.Unmarshal(rep.Data, &er); err != nil {
		t.Fatal(err)
	}
	creds = filepath.Join(t.TempDir(), req.Name+".creds")
	if err := auth.WriteCreds(creds, er.JWT, seed); err != nil {
		t.Fatal(err)
	}
	return creds, pub
}

// credsRefused says why creds could connect to ns, or nil if refused.
func credsRefused(t *testing.T, ns *server.Server, creds string) error {
	nc, err := nats.Connect(ns.ClientURL(), credsOptions(t, creds)...)
	if err == nil {
		nc.Close()
		return fmt.Errorf("%s still admits %s", ns.Name(), filepath.Base(creds))
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") && !strings.Contains(err.Error(), "revoked") {
		return fmt.Errorf("%s: %v, want an authorization refusal", ns.Name(), err)
	}
	return nil
}

// TestClusterAuthTwoCoordinators: two coordinators (separate data dirs)
// on a 3-node cluster in operator mode from `nats init`, started at once:
// exactly one writes the first admin's credentials, the other says an
// admin exists; the admin may not read the identity registry. An edge enrolled through one coordinator is known to the
// other, which alone answers its API request once the first is stopped.
// Revoking the edge through a coordinator refuses its next connection on
// every node within 5 s (the bound) and still after all three
// nodes restart; the admin stays admitted.
func TestClusterAuthTwoCoordinators(t *testing.T) {
	if testing.Short() {
		t.Skip("short: a 3-node cluster and two coordinators")
	}
	c := startAuthCluster(t)
	cos := []*clusterCoord{c.coordinator(t, "a", t.TempDir()), c.coordinator(t, "b", t.TempDir())}
	for _, co := range cos {
		co.wait(t)
	}

	// Exactly one first admin.
	var adminCreds string
	var wrote []string
	for _, co := range cos {
		p := filepath.Join(co.data, "admin.creds")
		if _, err := os.Stat(p); err == nil {
			adminCreds = p
			wrote = append(wrote, co.name)
		} else if !strings.Contains(co.logs.String(), "the cluster has an admin already") {
			t.Errorf("coordinator %s wrote no admin and did not say an admin exists:\n%s", co.name, co.logs)
		}
	}
	if len(wrote) != 1 {
		t.Fatalf("first admin credentials written by %v, want exactly one coordinator", wrote)
	}

	violations := make(chan error, 16)
	admin := connectCreds(t, c.nodes[0], adminCreds, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violations <- err:
		default:
		}
	}))
	mustAPI(t, admin, proto.APISiteAdd, proto.Site{V: proto.Version, Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}})
	registryDenied(t, admin, violations)
	edgeCreds, _ := enrolCreds(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab", Role: auth.RoleEdge})

	// Whichever coordinator enrolled the edge logged it; stop it, and the
	// other answers the edge.
	enroller, other := cos[0], cos[1]
	if !strings.Contains(enroller.logs.String(), `identity enrolled" identity="edge e1`) {
		enroller, other = other, enroller
	}
	if !strings.Contains(enroller.logs.String(), `identity enrolled" identity="edge e1`) {
		t.Fatalf("no coordinator logged the enrolment:\n%s\n%s", cos[0].logs, cos[1].logs)
	}
	enroller.stop()
	edge := connectCreds(t, c.nodes[1], edgeCreds)
	var rep proto.Reply
	waitfor.OK(t, "an answer from coordinator "+other.name, func() error {
		var err error
		rep, err = apiCall(edge, proto.APIStoreInfo, proto.ListRequest{V: proto.Version})
		return err
	})
	if rep.Error != "" {
		t.Fatalf("coordinator %s refused the edge enrolled through %s: %s", other.name, enroller.name, rep.Error)
	}
	t.Logf("edge e1 enrolled through coordinator %s, answered by %s", enroller.name, other.name)

	// Both coordinators again; the one restarted writes no second admin.
	again := c.coordinator(t, enroller.name+"2", enroller.data)
	again.wait(t)
	if !strings.Contains(again.logs.String(), "the cluster has an admin already") {
		t.Errorf("restarted coordinator did not say an admin exists:\n%s", again.logs)
	}

	held := connectCreds(t, c.nodes[2], edgeCreds)
	start := time.Now()
	mustAPI(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"})
	waitfor.Within(t, 5*time.Second-time.Since(start), "the revoked edge refused on every node", func() error {
		if !held.IsClosed() {
			return errors.New("the edge's connection is still open")
		}
		for _, ns := range c.nodes {
			if err := credsRefused(t, ns, edgeCreds); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("revocation: edge refused on all %d nodes %s after the revoke request was sent", len(c.nodes), time.Since(start).Round(time.Millisecond))

	again.stop()
	other.stop()
	c.restart(t)
	for _, ns := range c.nodes {
		if err := credsRefused(t, ns, edgeCreds); err != nil {
			t.Errorf("after every node restarted: %v", err)
		}
		connectCreds(t, ns, adminCreds).Close()
	}
}

// registryDenied: an admin reads a bucket of the desired state directly,
// but not the identity registry: the server refuses the read.
func registryDenied(t *testing.T, admin *nats.Conn, violations <-chan error) {
	t.Helper()
	direct := func(bucket, key string) (*nats.Msg, error) {
		return admin.Request("$JS.API.DIRECT.GET.KV_"+bucket+".$KV."+bucket+"."+key, nil, 3*time.Second)
	}
	// A replica that has not caught up yet answers 404: ask again.
	waitfor.OK(t, "admin reads site lab directly", func() error {
		m, err := direct(proto.BucketSites, "lab")
		if err != nil {
			return err
		}
		if m.Header.Get("Nats-Subject") == "" {
			return fmt.Errorf("reply %q %v", m.Data, m.Header)
		}
		return nil
	})
	if m, err := direct(proto.BucketIdentities, "account"); err == nil {
		t.Fatalf("admin read the identity registry: %q", m.Data)
	}
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), "KV_"+proto.BucketIdentities) {
			t.Errorf("reading the registry: %v, want a permissions violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("reading the registry: no permissions violation reported")
	}
}

// TestClusterAuthEnrolRace: two coordinators' authorities on one cluster,
// 2×10 goroutines enrolling the same 10 edge names at once: each name is
// issued exactly once, the registry (read by a third coordinator) holds
// the ten winners, a public key offered to both at once is accepted once,
// revoking two edges at once, one through each, refuses both on every
// node (neither account update undoes the other), and a revocation
// recorded but never pushed (its coordinator stopped) is pushed by the
// next coordinator to start.
func TestClusterAuthEnrolRace(t *testing.T) {
	if testing.Short() {
		t.Skip("short: a 3-node cluster")
	}
	c := startAuthCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitfor.Default)
	defer cancel()
	authority := func() *auth.Authority {
		acct, err := auth.OpenClusterAccount(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		opt, err := acct.ConnectOption(auth.AccountFleet)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(c.urls(), opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		natstest.WaitJetStream(t, js)
		a, err := auth.OpenCluster(ctx, acct, js, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		sys, err := nats.Connect(c.urls(), nats.UserCredentials(filepath.Join(c.dir, auth.SysCredsFile)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sys.Close)
		if err := a.AttachCluster(ctx, sys); err != nil {
			t.Fatal(err)
		}
		return a
	}
	both := []*auth.Authority{authority(), authority()}

	type outcome struct {
		name, pub, seed, jwt string
		err                  error
	}
	results := make(chan outcome, 20)
	var wg sync.WaitGroup
	for _, a := range both {
		for i := range 10 {
			wg.Go(func() {
				name := fmt.Sprintf("e%d", i)
				pub, seed, err := auth.NewUserKey()
				if err != nil {
					results <- outcome{name: name, err: err}
					return
				}
				rep, err := a.Enrol(ctx, auth.EnrolRequest{V: proto.Version, Name: name, Site: "lab", Role: auth.RoleEdge, PublicKey: pub})
				results <- outcome{name, pub, string(seed), rep.JWT, err}
			})
		}
	}
	wg.Wait()
	close(results)
	winners := map[string]outcome{}
	for r := range results {
		switch {
		case r.err == nil:
			if w, dup := winners[r.name]; dup {
				t.Errorf("%s issued twice: keys %s and %s", r.name, w.pub, r.pub)
			}
			winners[r.name] = r
		case !strings.Contains(r.err.Error(), "already enrolled"):
			t.Errorf("%s: %v, want issued or already enrolled", r.name, r.err)
		}
	}
	if len(winners) != 10 {
		t.Fatalf("%d names issued, want 10", len(winners))
	}
	live := map[string]string{}
	for _, id := range authority().Identities() {
		if id.Revoked == nil {
			live[id.Name] = id.PublicKey
		}
	}
	if len(live) != 10 {
		t.Errorf("the registry holds %d live identities, want 10: %v", len(live), live)
	}
	for name, w := range winners {
		if live[name] != w.pub {
			t.Errorf("the registry has %s with key %s, the winner's is %s", name, live[name], w.pub)
		}
	}

	// One public key, two names, both coordinators at once.
	pub, _, err := auth.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	for i, a := range both {
		wg.Go(func() {
			_, errs[i] = a.Enrol(ctx, auth.EnrolRequest{V: proto.Version, Name: fmt.Sprintf("k%d", i), Site: "lab", Role: auth.RoleEdge, PublicKey: pub})
		})
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("one public key offered to both coordinators: %v and %v, want exactly one accepted", errs[0], errs[1])
	}

	// Two revocations at once, one through each coordinator.
	for i, a := range both {
		wg.Go(func() {
			_, errs[i] = a.Revoke(ctx, fmt.Sprintf("e%d", i), true)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("revoke e%d: %v", i, err)
		}
	}
	waitfor.OK(t, "both revoked edges refused on every node", func() error {
		for i := range 2 {
			w := winners[fmt.Sprintf("e%d", i)]
			u := user{nats.UserJWTAndSeed(w.jwt, w.seed), w.pub}
			for _, ns := range c.nodes {
				if err := refused(ns, u); err != nil {
					return err
				}
			}
		}
		return nil
	})
	w := winners["e2"]
	for _, ns := range c.nodes {
		if err := admitted(ns, user{nats.UserJWTAndSeed(w.jwt, w.seed), w.pub}); err != nil {
			t.Errorf("an edge nobody revoked: %v", err)
		}
	}
	// A revocation recorded in the registry whose coordinator stopped
	// before it signed and pushed the account: the next coordinator to
	// start does both.
	w3 := winners["e3"]
	kv := registryKV(ctx, t, c)
	e, err := kv.Get(ctx, "key."+w3.pub)
	if err != nil {
		t.Fatal(err)
	}
	var id auth.Identity
	if err := json.Unmarshal(e.Value(), &id); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	id.Revoked = &at
	b, _ := json.Marshal(id)
	if _, err := kv.Update(ctx, e.Key(), b, e.Revision()); err != nil {
		t.Fatal(err)
	}
	u3 := user{nats.UserJWTAndSeed(w3.jwt, w3.seed), w3.pub}
	if err := admitted(c.nodes[0], u3); err != nil {
		t.Fatalf("recorded but not pushed yet: %v", err)
	}
	authority()
	waitfor.OK(t, "the recorded revocation refused on every node once a coordinator started", func() error {
		for _, ns := range c.nodes {
			if err := refused(ns, u3); err != nil {
				return err
			}
		}
		return nil
	})

	// The account JWT the bucket holds has every revocation, and its API
	// import.
	tok := newestAccountJWT(ctx, t, c)
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if i == 2 {
			continue
		}
		if _, ok := ac.Revocations[winners[fmt.Sprintf("e%d", i)].pub]; !ok {
			t.Errorf("the stored account JWT lacks e%d's revocation: %v", i, ac.Revocations)
		}
	}
	if len(ac.Imports) != 1 || !ac.Imports[0].Share {
		t.Errorf("the stored account JWT imports %+v, want the API with share", ac.Imports)
	}
}

// newestAccountJWT reads the fleetboot account JWT the coordinators stored.
func newestAccountJWT(ctx context.Context, t *testing.T, c *authCluster) string {
	t.Helper()
	e, err := registryKV(ctx, t, c).Get(ctx, "account")
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}

// registryKV opens the identities bucket as a coordinator does.
func registryKV(ctx context.Context, t *testing.T, c *authCluster) jetstream.KeyValue {
	t.Helper()
	acct, err := auth.OpenClusterAccount(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := acct.ConnectOption(auth.AccountFleet)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.urls(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, proto.BucketIdentities)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestCoordinatorClusterAuthFlags: --auth with --nats-url refuses, with one
// line and exit 1 and before connecting, what cannot work: no
// --account-key, a missing key, a key others may read, a key of another
// account, no place for the admin's credentials, bad system credentials,
// and says so when the cluster does not answer.
func TestCoordinatorClusterAuthFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	if _, err := auth.InitCluster(dir, "/var/lib/nats/fb", time.Minute); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if _, err := auth.InitCluster(other, "/var/lib/nats/fb", time.Minute); err != nil {
		t.Fatal(err)
	}
	// copyDir is dir with one file replaced (content) or its mode changed.
	copyDir := func(file, content string, mode os.FileMode) string {
		d := t.TempDir()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			fi, _ := e.Info()
			b := readFile(t, filepath.Join(dir, e.Name()))
			m := fi.Mode().Perm()
			if e.Name() == file {
				if content != "" {
					b = content
				}
				if mode != 0 {
					m = mode
				}
			}
			if err := os.WriteFile(filepath.Join(d, e.Name()), []byte(b), m); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(d, e.Name()), m); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	key := func(d string) string { return filepath.Join(d, auth.FleetSigningSeedFile) }
	dead := "nats://" + freePort(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no account key", []string{"--auth", "--nats-url", dead}, "--auth with --nats-url needs --account-key"},
		{"missing key", []string{"--auth", "--nats-url", dead, "--account-key", key(t.TempDir())}, "no such file or directory"},
		{"key readable by others", []string{"--auth", "--nats-url", dead, "--account-key", key(copyDir(auth.FleetSigningSeedFile, "", 0o644))}, "others may read it (mode 0644): chmod 600"},
		{"key of another account", []string{"--auth", "--nats-url", dead, "--account-key", key(copyDir(auth.FleetSigningSeedFile, readFile(t, key(other)), 0))}, "is not a signing key of account"},
		{"system creds readable by others", []string{"--auth", "--nats-url", dead, "--account-key", key(copyDir(auth.SysCredsFile, "", 0o644))}, "--system-creds: auth: "},
		{"system creds missing", []string{"--auth", "--nats-url", dead, "--account-key", key(dir), "--system-creds", filepath.Join(t.TempDir(), "sys.creds")}, "--system-creds: auth: "},
		{"admin creds in a missing directory", []string{"--auth", "--nats-url", dead, "--account-key", key(dir), "--admin-creds", filepath.Join(t.TempDir(), "no", "admin.creds")}, "does not exist"},
		{"no admin creds place", []string{"--auth", "--nats-url", dead, "--account-key", key(dir), "--data", ""}, "needs --admin-creds"},
		{"account key without --auth", []string{"--nats-url", dead, "--insecure", "--account-key", key(dir)}, "--account-key needs --auth"},
		{"creds of a client", []string{"--auth", "--nats-url", dead, "--account-key", key(dir), "--creds", filepath.Join(dir, auth.SysCredsFile)}, "--creds is for clients"},
		{"dead cluster", []string{"--auth", "--nats-url", dead, "--account-key", key(dir)}, "connect to NATS at " + dead},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			args := append([]string{"coordinator", "--data", data, "--store", "dir://" + filepath.Join(data, "artifacts")}, c.args...)
			r := runEnv(t, nil, args...)
			// Past the checks, the coordinator logs (the no-TLS warning)
			// before it tries the cluster; the error is still one line.
			var kept []string
			for l := range strings.Lines(r.stderr) {
				if !strings.HasPrefix(l, "time=") {
					kept = append(kept, l)
				}
			}
			r.stderr = strings.Join(kept, "")
			checkOneLine(t, r, c.want)
			for _, f := range []string{auth.FleetSigningSeedFile, auth.OperatorSigningSeedFile, auth.APISigningSeedFile} {
				if s := strings.TrimSpace(readFile(t, filepath.Join(dir, f))); strings.Contains(r.stderr, s) {
					t.Errorf("the error quotes the seed of %s", f)
				}
			}
		})
	}
	h := runEnv(t, nil, "coordinator", "--help")
	for _, want := range []string{"--account-key", "--system-creds", "--admin-creds", "fleetboot nats", "fleetboot-signing.nk"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("coordinator --help does not mention %s", want)
		}
	}
	// Right files: --check-config says so without connecting.
	data := t.TempDir()
	r := runEnv(t, nil, "coordinator", "--check-config", "--data", data, "--store", "dir://"+filepath.Join(data, "artifacts"),
		"--auth", "--nats-url", dead, "--account-key", key(dir))
	if r.code != 0 || !strings.Contains(r.stdout, "configuration OK") {
		t.Errorf("--check-config with the right files: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestClusterAccountDefinitionPushed: a cluster whose fleetboot account has
// other limits than this version's (set up by an older fleetboot, or
// re-signed by hand) gets this version's pushed to every node when a
// coordinator starts; a cluster fresh from `nats init` is left as it is.
func TestClusterAccountDefinitionPushed(t *testing.T) {
	c := startAuthCluster(t)
	differs := "the cluster's fleetboot account differs from this version's"
	co := c.coordinator(t, "c1", t.TempDir())
	co.wait(t)
	if strings.Contains(co.logs.String(), differs) {
		t.Errorf("a cluster fresh from nats init re-signed:\n%s", co.logs)
	}
	co.stop()

	// An older definition: 3 connections, stored and pushed as a
	// coordinator of that version would have.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acct, err := auth.OpenClusterAccount(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	opSigning, err := nkeys.FromSeed([]byte(strings.TrimSpace(readFile(t, filepath.Join(c.dir, auth.OperatorSigningSeedFile)))))
	if err != nil {
		t.Fatal(err)
	}
	fleetSigning, err := nkeys.FromSeed([]byte(strings.TrimSpace(readFile(t, filepath.Join(c.dir, auth.FleetSigningSeedFile)))))
	if err != nil {
		t.Fatal(err)
	}
	old := auth.ClusterFleetAccount(acct.Account(), pub(t, fleetSigning), acct.API())
	old.Limits.Conn = 3
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // a later iat than the stored JWT's
	tok, err := old.Encode(opSigning)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registryKV(ctx, t, c).Put(ctx, "account", []byte(tok)); err != nil {
		t.Fatal(err)
	}
	sys := connectCreds(t, c.nodes[0], filepath.Join(c.dir, auth.SysCredsFile))
	if err := auth.PushAccount(ctx, sys, tok); err != nil {
		t.Fatal(err)
	}
	maxConns := func(want int) func() error {
		return func() error {
			for i, ns := range c.nodes {
				a, err := ns.LookupAccount(acct.Account())
				if err != nil {
					return err
				}
				if got := a.MaxActiveConnections(); got != want {
					return fmt.Errorf("node %d: account allows %d connections, want %d", i, got, want)
				}
			}
			return nil
		}
	}
	waitfor.OK(t, "the older definition on every node", maxConns(3))

	co2 := c.coordinator(t, "c2", t.TempDir())
	co2.wait(t)
	waitfor.OK(t, "this version's definition on every node", maxConns(auth.MaxConnections))
	if !strings.Contains(co2.logs.String(), differs) {
		t.Errorf("the coordinator did not say it re-signed the account:\n%s", co2.logs)
	}
}
