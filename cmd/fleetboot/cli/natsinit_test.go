package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestNatsInit: the files and their modes, the help, and bad input: an
// existing DIR's keys are never overwritten, a relative resolver dir is
// refused, each with one line, exit 1 and nothing changed.
func TestNatsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	r := runEnv(t, nil, "nats", "init", dir, "--resolver-dir", "/var/lib/nats/fb")
	if r.code != 0 {
		t.Fatalf("nats init: code %d stderr %q", r.code, r.stderr)
	}
	modes := map[string]os.FileMode{
		auth.OperatorSeedFile: 0o600, auth.OperatorSigningSeedFile: 0o600, auth.OperatorJWTFile: 0o644,
		auth.SysSeedFile: 0o600, auth.SysJWTFile: 0o644, auth.SysCredsFile: 0o600,
		auth.FleetSeedFile: 0o600, auth.FleetSigningSeedFile: 0o600, auth.FleetJWTFile: 0o644,
		auth.APISeedFile: 0o600, auth.APISigningSeedFile: 0o600, auth.APIJWTFile: 0o644,
		auth.ResolverConfFile: 0o644,
	}
	before := map[string]string{}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
		b, _ := os.ReadFile(filepath.Join(dir, name))
		before[name] = string(b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(modes) {
		t.Errorf("DIR holds %d files, want %d", len(ents), len(modes))
	}
	conf := before[auth.ResolverConfFile]
	for _, want := range []string{"type: full", `dir: "/var/lib/nats/fb"`, "allow_delete: false", "resolver_preload", "system_account: "} {
		if !strings.Contains(conf, want) {
			t.Errorf("resolver.conf has no %q:\n%s", want, conf)
		}
	}
	checkFileLists(t, dir, r.stdout, modes)
	for _, seed := range []string{auth.OperatorSeedFile, auth.SysSeedFile, auth.FleetSigningSeedFile, auth.APISeedFile, auth.APISigningSeedFile} {
		if strings.Contains(r.stdout+conf, strings.TrimSpace(before[seed])) {
			t.Errorf("the seed of %s is printed or in resolver.conf", seed)
		}
	}

	checkOneLine(t, runEnv(t, nil, "nats", "init", dir), "refusing to overwrite")
	// Even one file of a set is enough to refuse: it may be a live key.
	lone := t.TempDir()
	if err := os.WriteFile(filepath.Join(lone, auth.SysCredsFile), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkOneLine(t, runEnv(t, nil, "nats", "init", lone), "refusing to overwrite")
	if ents, _ := os.ReadDir(lone); len(ents) != 1 {
		t.Errorf("a refused init wrote %d files", len(ents)-1)
	}
	for name, want := range before {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != want {
			t.Errorf("%s changed by a refused init", name)
		}
	}
	fresh := filepath.Join(t.TempDir(), "x")
	checkOneLine(t, runEnv(t, nil, "nats", "init", fresh, "--resolver-dir", "jwt"), "must be an absolute path")
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("a refused init created %s (%v)", fresh, err)
	}
	checkOneLine(t, runEnv(t, nil, "nats", "int", fresh), `unknown command "int" for "fleetboot nats"`)
	h := runEnv(t, nil, "nats", "init", "--help")
	if h.code != 0 || !strings.Contains(h.stdout, "Examples:") || !strings.Contains(h.stdout, "include resolver.conf") {
		t.Errorf("nats init --help: code %d\n%s", h.code, h.stdout)
	}
	// The help names every file the coordinator needs and every one to
	// keep offline, as the output does.
	for name, mode := range modes {
		if mode == 0o600 && !strings.Contains(h.stdout, name) {
			t.Errorf("nats init --help does not name %s", name)
		}
	}
}

// checkFileLists: what `nats init` prints holds: "for the coordinator"
// names exactly what a coordinator needs (a directory with only those
// files opens), "keep offline" only identity seeds, and every secret file
// is in one of them.
func checkFileLists(t *testing.T, dir, stdout string, modes map[string]os.FileMode) {
	t.Helper()
	list := func(prefix string) []string {
		for _, l := range strings.Split(stdout, "\n") {
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				var names []string
				for _, f := range strings.Split(rest, ",") {
					names = append(names, filepath.Base(strings.Fields(f)[0]))
				}
				return names
			}
		}
		t.Fatalf("nats init printed no %q line:\n%s", prefix, stdout)
		return nil
	}
	coord, offline := list("for the coordinator:"), list("keep offline:")
	for f, m := range modes {
		if m == 0o600 && !slices.Contains(coord, f) && !slices.Contains(offline, f) {
			t.Errorf("secret %s is in neither list: %v %v", f, coord, offline)
		}
	}
	only := t.TempDir()
	for _, f := range coord {
		if _, ok := modes[f]; !ok {
			t.Errorf("for the coordinator: %s is not a file of nats init", f)
		}
		b := readFile(t, filepath.Join(dir, f))
		if err := os.WriteFile(filepath.Join(only, f), []byte(b), modes[f]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := auth.OpenClusterAccount(only); err != nil {
		t.Errorf("a coordinator with only the files listed for it: %v", err)
	}
	if err := auth.CheckCredsFile(filepath.Join(only, auth.SysCredsFile)); err != nil {
		t.Errorf("a coordinator with only the files listed for it: %v", err)
	}
	for _, f := range offline {
		if !strings.HasSuffix(f, ".nk") {
			t.Errorf("keep offline: %s is not an identity seed", f)
		}
	}
}

// TestNatsInitCluster runs a 3-node nats-server cluster from what
// `fleetboot nats init` wrote (each node's config includes resolver.conf)
// and shows what the coordinator will rely on: a user signed with the
// fleetboot account's signing key connects on every node and uses
// JetStream; a client without credentials, or signed by a key the account
// does not list, is refused; a revocation signed with the operator signing
// key and pushed once through the system account (sys.creds) reaches every
// node, which then disconnects and refuses that user; a node that was down
// during a push has the update after the next resolver sync; and after all
// three nodes restart the revocations still hold, from each node's
// resolver dir.
func TestNatsInitCluster(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "nats")
	// The fragment's resolver dir: production nodes are separate machines
	// with the same path; these three share one, so each node's copy of
	// resolver.conf gets its own directory and nothing else changes.
	sharedJWT := filepath.Join(base, "jwt")
	// A short sync, so the node that misses an update below has it soon.
	if r := runEnv(t, nil, "nats", "init", dir, "--resolver-dir", sharedJWT, "--sync-interval", "1s"); r.code != 0 {
		t.Fatalf("nats init: code %d stderr %q", r.code, r.stderr)
	}
	frag := readFile(t, filepath.Join(dir, auth.ResolverConfFile))
	confs := natstest.OperatorClusterConfigs(t, base, frag, sharedJWT, "", 3)
	nodes := natstest.StartClusterFromConfig(t, confs...)

	// The coordinator's part: the signing keys, never the identity keys.
	acct, err := auth.OpenClusterAccount(dir)
	if err != nil {
		t.Fatal(err)
	}
	fleetPub := acct.Account()
	alice, bob, carol := newUser(t, "alice", acct.SignUser), newUser(t, "bob", acct.SignUser), newUser(t, "carol", acct.SignUser)

	// Every node admits alice; JetStream works for the account, replicated.
	var held []*nats.Conn
	for _, ns := range nodes {
		nc, err := nats.Connect(ns.ClientURL(), alice.Option, nats.NoReconnect())
		if err != nil {
			t.Fatalf("alice on %s: %v", ns.Name(), err)
		}
		t.Cleanup(nc.Close)
		held = append(held, nc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, _ := jetstream.New(held[0])
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "probe", Replicas: 3})
	if err != nil {
		t.Fatalf("alice creates an R3 bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	js3, _ := jetstream.New(held[2])
	// The third node may not know the new bucket's stream for a moment
	// ("no responders"): wait for it to answer.
	waitfor.OK(t, "the value read on "+nodes[2].Name(), func() error {
		kv3, err := js3.KeyValue(ctx, "probe")
		if err != nil {
			return err
		}
		e, err := kv3.Get(ctx, "k")
		if err != nil {
			return err
		}
		if string(e.Value()) != "v" {
			return fmt.Errorf("got %q", e.Value())
		}
		return nil
	})

	// Refused everywhere: no credentials, or a user signed by a key the
	// account does not list.
	stranger, _ := nkeys.CreateAccount()
	signStranger := func(uc *jwt.UserClaims) (string, error) {
		uc.IssuerAccount = fleetPub
		return uc.Encode(stranger)
	}
	for _, ns := range nodes {
		if nc, err := nats.Connect(ns.ClientURL(), nats.NoReconnect()); err == nil {
			nc.Close()
			t.Errorf("a client without credentials connected to %s", ns.Name())
		}
		if nc, err := nats.Connect(ns.ClientURL(), newUser(t, "mallory", signStranger).Option, nats.NoReconnect()); err == nil {
			nc.Close()
			t.Errorf("a user signed by an unknown key connected to %s", ns.Name())
		}
	}

	// Revoke alice: re-sign the fleetboot account with the operator
	// signing key and push it once, to node 2.
	revoked := map[string]time.Time{alice.pub: time.Now()}
	updated, err := acct.AccountJWT(revoked, 0)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := nats.Connect(nodes[1].ClientURL(), nats.UserCredentials(filepath.Join(dir, auth.SysCredsFile)))
	if err != nil {
		t.Fatalf("system account user: %v", err)
	}
	t.Cleanup(sys.Close)
	if err := auth.PushAccount(ctx, sys, updated); err != nil {
		t.Fatal(err)
	}
	took := waitfor.Within(t, waitfor.Default, "alice refused and disconnected on every node", func() error {
		for i, ns := range nodes {
			if !held[i].IsClosed() {
				return fmt.Errorf("alice's connection to %s is still open", ns.Name())
			}
			if err := refused(ns, alice); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("revocation pushed to %s held on all %d nodes after %s", nodes[1].Name(), len(nodes), took)
	for _, ns := range nodes {
		if err := admitted(ns, bob); err != nil {
			t.Errorf("after the update: %v", err)
		}
	}

	// Revoke bob while n3 is down: n3 comes back with the old account in
	// its dir and takes the new one from the others at the next sync.
	nodes[2].Shutdown()
	nodes[2].WaitForShutdown()
	revoked[bob.pub] = time.Now()
	if updated, err = acct.AccountJWT(revoked, 0); err != nil {
		t.Fatal(err)
	}
	if err := auth.PushAccount(ctx, sys, updated); err != nil {
		t.Fatal(err)
	}
	nodes[2] = natstest.StartNodeFromConfig(t, confs[2])
	waitfor.OK(t, "n3, down during the push, refuses bob", func() error { return refused(nodes[2], bob) })

	// Restart every node: the full resolver's dir keeps the updates.
	for _, ns := range nodes {
		ns.Shutdown()
	}
	for _, ns := range nodes {
		ns.WaitForShutdown()
	}
	nodes = natstest.StartClusterFromConfig(t, confs...)
	for _, ns := range nodes {
		for _, u := range []user{alice, bob} {
			if err := refused(ns, u); err != nil {
				t.Errorf("after the restart: %v", err)
			}
		}
		if err := admitted(ns, carol); err != nil {
			t.Errorf("after the restart: %v", err)
		}
	}
}

// user is a credential of the fleetboot account, as the coordinator will
// issue it: a user JWT signed with the account's signing key.
type user struct {
	nats.Option
	pub string
}

func newUser(t *testing.T, name string, sign func(*jwt.UserClaims) (string, error)) user {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	uc := jwt.NewUserClaims(pub(t, kp))
	uc.Name = name
	tok, err := sign(uc)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	return user{nats.UserJWTAndSeed(tok, string(seed)), pub(t, kp)}
}

// refused says why u could connect to ns, or nil if it was refused.
func refused(ns *server.Server, u user) error {
	nc, err := nats.Connect(ns.ClientURL(), u.Option, nats.NoReconnect())
	if err == nil {
		nc.Close()
		return fmt.Errorf("%s still admits %s", ns.Name(), u.pub)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") && !strings.Contains(err.Error(), "revoked") {
		return fmt.Errorf("%s: %v, want an authorization refusal", ns.Name(), err)
	}
	return nil
}

func admitted(ns *server.Server, u user) error {
	nc, err := nats.Connect(ns.ClientURL(), u.Option, nats.NoReconnect())
	if err != nil {
		return fmt.Errorf("%s refuses %s: %v", ns.Name(), u.pub, err)
	}
	defer nc.Close()
	return nc.Flush()
}

func mustKV(ctx context.Context, t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pub(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNatsInitClusterAuthority: the coordinator's authority on a cluster
// from `nats init` (the cluster account's signing keys, the registry in the
// identities bucket): the first admin and an enrolled edge connect on every
// node, a second first admin is not made, and revoking the edge refuses it
// on every node, the admin still admitted.
func TestNatsInitClusterAuthority(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "nats")
	sharedJWT := filepath.Join(base, "jwt")
	if r := runEnv(t, nil, "nats", "init", dir, "--resolver-dir", sharedJWT); r.code != 0 {
		t.Fatalf("nats init: code %d stderr %q", r.code, r.stderr)
	}
	confs := natstest.OperatorClusterConfigs(t, base, readFile(t, filepath.Join(dir, auth.ResolverConfFile)), sharedJWT, "", 3)
	nodes := natstest.StartClusterFromConfig(t, confs...)

	acct, err := auth.OpenClusterAccount(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fleetOpt, err := acct.ConnectOption(auth.AccountFleet)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(nodes[0].ClientURL(), fleetOpt)
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
	if a.FleetAccount() != acct.Account() {
		t.Errorf("FleetAccount %s, want the cluster's %s", a.FleetAccount(), acct.Account())
	}
	sys, err := nats.Connect(nodes[0].ClientURL(), nats.UserCredentials(filepath.Join(dir, auth.SysCredsFile)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	if err := a.AttachCluster(ctx, sys); err != nil {
		t.Fatal(err)
	}
	adminCreds := filepath.Join(t.TempDir(), "admin.creds")
	if wrote, err := a.WriteFirstAdmin(ctx, adminCreds); err != nil || !wrote {
		t.Fatalf("first admin: wrote %v, %v", wrote, err)
	}
	second := filepath.Join(t.TempDir(), "admin.creds")
	if wrote, err := a.WriteFirstAdmin(ctx, second); err != nil || wrote {
		t.Fatalf("second first admin: wrote %v, %v", wrote, err)
	}
	pubE, seedE, err := auth.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Enrol(ctx, auth.EnrolRequest{V: proto.Version, Name: "lab-edge1", Site: "lab", Role: auth.RoleEdge, PublicKey: pubE})
	if err != nil {
		t.Fatal(err)
	}
	edge := user{nats.UserJWTAndSeed(rep.JWT, string(seedE)), pubE}
	admin := user{nats.UserCredentials(adminCreds), "admin"}
	for _, ns := range nodes {
		for _, u := range []user{edge, admin} {
			if err := admitted(ns, u); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := a.Revoke(ctx, "lab-edge1", true); err != nil {
		t.Fatal(err)
	}
	waitfor.OK(t, "the revoked edge refused on every node", func() error {
		for _, ns := range nodes {
			if err := refused(ns, edge); err != nil {
				return err
			}
		}
		return nil
	})
	for _, ns := range nodes {
		if err := admitted(ns, admin); err != nil {
			t.Error(err)
		}
	}
}
