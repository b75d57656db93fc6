package cli_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
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

// The branch office of TestLeafNode: site-b's edge reaches the hub through
// a leaf node; site-a is another branch whose data it must not see.
const (
	leafSite, leafEdge = "site-b", "edge-b"
	leafMAC, otherMAC  = "52:54:00:77:02:01", "52:54:00:77:01:01"
)

// TestLeafNode runs the shipped deploy/nats/cluster.conf (three nodes, operator
// mode from `fleetboot nats init`, TLS from `fleetboot pki init`, route
// password, leaf node port) and deploy/nats/leaf.conf (a branch office's leaf
// node with an edge's credentials from the coordinator's authority), only
// ports and paths changed, and shows what leaf.conf's comment says: an edge
// connected to the leaf does its job (watches its site's hosts, sends its
// heartbeat and events); the hub refuses it everything else across the leaf
// connection (another site's host, a KV write); the leaf itself checks no
// credential; the hub refuses plaintext, credential-less and foreign
// clients; revoking the edge cuts the leaf off.
func TestLeafNode(t *testing.T) {
	h := startHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The coordinator's side: buckets, stream and one host per site.
	coordOpt, err := h.acct.ConnectOption(auth.AccountFleet)
	if err != nil {
		t.Fatal(err)
	}
	coord := h.connect(t, h.nodes[0], coordOpt)
	js, err := jetstream.New(coord)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := js.CreateKeyValue(ctx, proto.BucketConfig(proto.BucketHosts, 3))
	if err != nil {
		t.Fatalf("hosts bucket: %v", err)
	}
	if _, err := js.CreateStream(ctx, proto.EventsStreamConfig(3)); err != nil {
		t.Fatalf("events stream: %v", err)
	}
	ownKey, otherKey := hostKey(t, leafSite, leafMAC), hostKey(t, "site-a", otherMAC)
	for _, k := range []string{ownKey, otherKey} {
		if _, err := hosts.Put(ctx, k, []byte(`{"image":"demo"}`)); err != nil {
			t.Fatal(err)
		}
	}

	creds, edgePub := h.enrolEdge(ctx, t, leafSite, leafEdge)
	leaf := startLeaf(t, h, creds)

	// The edge, as `fleetboot edge --coordinator nats://127.0.0.1:4222
	// --creds FILE` connects: its credentials and their inbox prefix.
	edge := dial(t, leaf, nats.UserCredentials(creds), nats.CustomInboxPrefix(auth.EdgeInboxPrefix(leafEdge)))
	ejs, err := jetstream.New(edge)
	if err != nil {
		t.Fatal(err)
	}
	var ekv jetstream.KeyValue
	waitfor.OK(t, "the edge opens the hosts bucket through the leaf", func() error {
		ekv, err = ejs.KeyValue(ctx, proto.BucketHosts)
		return err
	})

	t.Run("does its job", func(t *testing.T) {
		w, err := ekv.Watch(ctx, leafSite+".>")
		if err != nil {
			t.Fatalf("watch own site: %v", err)
		}
		defer w.Stop()
		if e := nextUpdate(ctx, t, w); e == nil || e.Key() != ownKey {
			t.Fatalf("first watch entry %v, want %s", e, ownKey)
		}
		if e := nextUpdate(ctx, t, w); e != nil {
			t.Fatalf("after the initial values: %s, want the end marker", e.Key())
		}
		if _, err := hosts.Put(ctx, ownKey, []byte(`{"image":"demo2"}`)); err != nil {
			t.Fatal(err)
		}
		if e := nextUpdate(ctx, t, w); e == nil || string(e.Value()) != `{"image":"demo2"}` {
			t.Fatalf("a change made at the hub reached the edge as %v", e)
		}
		if e, err := ekv.Get(ctx, ownKey); err != nil || e.Revision() == 0 {
			t.Fatalf("get own host: %v", err)
		}

		beats, err := coord.SubscribeSync(proto.StatusSubject(leafSite, leafEdge))
		if err != nil {
			t.Fatal(err)
		}
		defer beats.Unsubscribe()
		if err := coord.Flush(); err != nil {
			t.Fatal(err)
		}
		// The hub's interest reaches the leaf asynchronously: publish until
		// one arrives.
		waitfor.OK(t, "a heartbeat from the edge at the hub", func() error {
			if err := edge.Publish(proto.StatusSubject(leafSite, leafEdge), []byte(`{}`)); err != nil {
				return err
			}
			_, err := beats.NextMsg(100 * time.Millisecond)
			return err
		})
		if _, err := ejs.Publish(ctx, proto.EventSubject(leafSite, leafEdge, leafMAC), []byte(`{}`)); err != nil {
			t.Fatalf("event through the leaf: %v", err)
		}

		// An API request reaches the coordinator (in the API account,
		// through the fleetboot account's import), stamped by the hub with
		// the edge's identity: the leaf connection's user.
		apiOpt, err := h.acct.ConnectOption(auth.AccountAPI)
		if err != nil {
			t.Fatal(err)
		}
		api := h.connect(t, h.nodes[2], apiOpt)
		if _, err := api.Subscribe(proto.APISubject(proto.APIStoreInfo), func(m *nats.Msg) {
			_ = m.Respond([]byte(m.Header.Get("Nats-Request-Info")))
		}); err != nil {
			t.Fatal(err)
		}
		if err := api.Flush(); err != nil {
			t.Fatal(err)
		}
		waitfor.OK(t, "an API request of the edge through the leaf", func() error {
			m, err := edge.Request(proto.APISubject(proto.APIStoreInfo), []byte(`{}`), time.Second)
			if err != nil {
				return err
			}
			if !strings.Contains(string(m.Data), edgePub) {
				t.Fatalf("the API request came as %s, want the edge %s", m.Data, edgePub)
			}
			return nil
		})
	})

	// What the hub refuses the edge. The leaf has the hub's permissions for
	// its connection (the hub sends them when it connects) and forwards
	// nothing outside them, so a client of the leaf sees a refused request
	// as one nobody answers, at once; its own-site twin above was answered.
	t.Run("refused at the hub", func(t *testing.T) {
		for _, c := range []struct {
			name string
			do   func(context.Context) error
			want error
		}{
			{"get another site's host", func(ctx context.Context) error {
				_, err := ekv.Get(ctx, otherKey)
				return err
			}, nats.ErrNoResponders},
			{"watch another site's hosts", func(ctx context.Context) error {
				w, err := ekv.Watch(ctx, "site-a.>")
				if err == nil {
					w.Stop()
				}
				return err
			}, nats.ErrJetStreamNotEnabled}, // watches go through the legacy API
			{"put its own host", func(ctx context.Context) error {
				_, err := ekv.Put(ctx, ownKey, []byte(`{"image":"evil"}`))
				return err
			}, jetstream.ErrNoStreamResponse},
			{"delete its own host", func(ctx context.Context) error {
				return ekv.Delete(ctx, ownKey)
			}, jetstream.ErrNoStreamResponse},
			{"an admin's API request", func(ctx context.Context) error {
				_, err := edge.RequestWithContext(ctx, proto.APISubject(proto.APIHostSet), []byte(`{}`))
				return err
			}, nats.ErrNoResponders},
		} {
			t.Run(c.name, func(t *testing.T) {
				// Refusals come at once; the bound only keeps a failure short.
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := c.do(ctx); !errors.Is(err, c.want) {
					t.Errorf("got %v, want %v", err, c.want)
				}
			})
		}
		if e, err := hosts.Get(ctx, ownKey); err != nil || string(e.Value()) != `{"image":"demo2"}` {
			t.Errorf("own host at the hub after the refused writes: %v", err)
		}

		// A bare publish into a bucket (how an unconfined client skips the
		// coordinator), or another edge's heartbeat, never reaches the hub.
		// The hub subscribes to all three kinds, then the edge sends its own
		// heartbeat until one arrives: the interest in it reached the leaf,
		// so the interest in the others, asked for before it, did too. Then
		// the forbidden ones and a last heartbeat: one connection's messages
		// reach one subscriber in order, so if they crossed they come first.
		seen := make(chan *nats.Msg, 64)
		for _, subj := range []string{"$KV." + proto.BucketImages + ".>", "$KV." + proto.BucketHosts + ".>", proto.SubjectStatusPrefix + ".>"} {
			sub, err := coord.ChanSubscribe(subj, seen)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
		}
		if err := coord.Flush(); err != nil {
			t.Fatal(err)
		}
		own := proto.StatusSubject(leafSite, leafEdge)
		waitfor.OK(t, "the hub's interest in the edge's heartbeat at the leaf", func() error {
			if err := edge.Publish(own, []byte(`{}`)); err != nil {
				return err
			}
			select {
			case <-seen:
				return nil
			case <-time.After(100 * time.Millisecond): // poll interval, not a pass condition
				return errors.New("no heartbeat yet")
			}
		})
		for _, p := range [][2]string{
			{"$KV." + proto.BucketImages + ".demo", `{"cmdline":"init=/bin/sh"}`},
			{"$KV." + proto.BucketHosts + "." + ownKey, `{"image":"evil"}`},
			{proto.StatusSubject("site-a", "edge-a"), `{}`},
			{own, `{"last":true}`},
		} {
			if err := edge.Publish(p[0], []byte(p[1])); err != nil {
				t.Fatal(err)
			}
		}
		for {
			select {
			case m := <-seen:
				if m.Subject != own {
					t.Fatalf("the hub received %s from the edge's leaf", m.Subject)
				}
				if string(m.Data) == `{"last":true}` {
					return
				}
			case <-ctx.Done():
				t.Fatal("the last heartbeat never arrived")
			}
		}
	})

	// The leaf checks no credential (it has no authorization): whatever can
	// reach its listener acts as the edge. Hence loopback only.
	t.Run("the leaf checks no credential", func(t *testing.T) {
		anon := dial(t, leaf, nats.CustomInboxPrefix(auth.EdgeInboxPrefix(leafEdge)))
		ajs, err := jetstream.New(anon)
		if err != nil {
			t.Fatal(err)
		}
		akv, err := ajs.KeyValue(ctx, proto.BucketHosts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := akv.Get(ctx, ownKey); err != nil {
			t.Fatalf("a client without credentials on the leaf: %v", err)
		}
	})

	t.Run("hub refuses strangers", func(t *testing.T) {
		stranger, _ := nkeys.CreateAccount()
		signStranger := func(uc *jwt.UserClaims) (string, error) { return uc.Encode(stranger) }
		for _, ns := range h.nodes {
			for _, c := range []struct {
				name string
				opt  nats.Option
			}{
				{"no credentials", nats.Name("anon")},
				{"another account's user", newUser(t, "mallory", signStranger).Option},
			} {
				nc, err := nats.Connect(ns.ClientURL(), c.opt, nats.RootCAs(h.ca), nats.NoReconnect())
				if err == nil {
					nc.Close()
					t.Errorf("%s: %s connected", ns.Name(), c.name)
					continue
				}
				if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					t.Errorf("%s: %s: %v, want an authorization violation", ns.Name(), c.name, err)
				}
			}
			u, err := url.Parse(ns.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			if err := natstest.PlaintextRefused(u.Host); err != nil {
				t.Errorf("%s: %v", ns.Name(), err)
			}
		}
		// The leaf node port, too: TLS, and a leaf node's credentials.
		for _, p := range h.leafPorts {
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			if err := natstest.PlaintextRefused(addr); err != nil {
				t.Errorf("leaf node port %s: %v", addr, err)
			}
			if err := anonymousLeafRefused(addr, h.ca); err != nil {
				t.Errorf("leaf node port %s: %v", addr, err)
			}
		}
	})

	// Revoking the edge (edge revoke) disconnects the leaf, whose
	// reconnections are refused; the edge behind it reaches nothing.
	t.Run("revoked", func(t *testing.T) {
		if _, err := h.auth.Revoke(ctx, leafEdge, true); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the leaf cut off from the hub", func() bool { return leaf.NumLeafNodes() == 0 })
		if _, err := ekv.Get(ctx, ownKey); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("the revoked edge's get through the leaf: %v, want no responders", err)
		}
	})
}

// hub is the in-process cluster of TestLeafNode and the coordinator's
// authority over its fleetboot account.
type hub struct {
	nodes     []*server.Server
	leafPorts []int
	ca        string // the hub's CA certificate
	acct      *auth.ClusterAccount
	auth      *auth.Authority
}

func startHub(t *testing.T) *hub {
	t.Helper()
	base := t.TempDir()
	keys, pki := filepath.Join(base, "nats"), filepath.Join(base, "pki")
	// The resolver dir of the compose stack (deploy/compose/secrets.sh); each
	// node's copy points to its own.
	const resolverDir = "/var/lib/nats/jwt"
	if r := runEnv(t, nil, "nats", "init", keys, "--resolver-dir", resolverDir); r.code != 0 {
		t.Fatalf("nats init: %s", r.stderr)
	}
	if r := runEnv(t, nil, "pki", "init", pki); r.code != 0 {
		t.Fatalf("pki init: %s", r.stderr)
	}
	tmpl := readFile(t, "../../../deploy/nats/cluster.conf")
	routePorts, leafPorts := freePorts(t, 3), freePorts(t, 3)
	acct, err := auth.OpenClusterAccount(keys)
	if err != nil {
		t.Fatal(err)
	}
	resolverConf := readFile(t, filepath.Join(keys, auth.ResolverConfFile))
	pass := randomPassword(t)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats://route:%s@127.0.0.1:%d", pass, p))
	}
	routesConf := fmt.Sprintf("authorization { user: route, password: %q }\nroutes: [%s]\n", pass, strings.Join(routes, ", "))
	var confs []string
	for i := range 3 {
		nd := filepath.Join(base, fmt.Sprintf("nats%d", i+1))
		if err := os.MkdirAll(nd, 0o700); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"server.pem":          readFile(t, filepath.Join(pki, "server.pem")),
			"server-key.pem":      readFile(t, filepath.Join(pki, "server-key.pem")),
			"routes.conf":         routesConf,
			auth.ResolverConfFile: replaceOnce(t, resolverConf, fmt.Sprintf("%q", resolverDir), fmt.Sprintf("%q", filepath.Join(nd, "jwt"))),
		}
		conf := tmpl
		for _, r := range [][2]string{
			{"server_name: $NATS_SERVER_NAME", fmt.Sprintf("server_name: nats%d", i+1)},
			{"listen: 0.0.0.0:4222", "listen: 127.0.0.1:-1"},
			{"listen: 0.0.0.0:6222", fmt.Sprintf("listen: 127.0.0.1:%d", routePorts[i])},
			{"listen: 0.0.0.0:7422", fmt.Sprintf("listen: 127.0.0.1:%d", leafPorts[i])},
			{`"/var/lib/nats/jetstream"`, fmt.Sprintf("%q", filepath.Join(nd, "jetstream"))},
		} {
			conf = replaceOnce(t, conf, r[0], r[1])
		}
		files["cluster.conf"] = strings.ReplaceAll(conf, `"/etc/nats/`, `"`+nd+"/")
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(nd, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		confs = append(confs, filepath.Join(nd, "cluster.conf"))
	}
	h := &hub{nodes: natstest.StartClusterFromConfig(t, confs...), leafPorts: leafPorts, ca: filepath.Join(pki, "ca.pem"), acct: acct}
	// The coordinator's authority: its registry in the cluster's bucket, its
	// pushes through the system account.
	fleetOpt, err := acct.ConnectOption(auth.AccountFleet)
	if err != nil {
		t.Fatal(err)
	}
	// Every node, not one: each resolves the account on its own, and a
	// bucket created through one that answers can land on one that does not
	// yet ("JetStream not enabled for account", a CI run under load).
	var js jetstream.JetStream
	for i := range h.nodes {
		njs, err := jetstream.New(h.connect(t, h.nodes[i], fleetOpt))
		if err != nil {
			t.Fatal(err)
		}
		natstest.WaitJetStream(t, njs)
		if i == 0 {
			js = njs
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if h.auth, err = auth.OpenCluster(ctx, acct, js, 3, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.auth.Close)
	sys := h.connect(t, h.nodes[1], nats.UserCredentials(filepath.Join(keys, auth.SysCredsFile)))
	if err := h.auth.AttachCluster(ctx, sys); err != nil {
		t.Fatal(err)
	}
	return h
}

// connect is a TLS client of a hub node, trusting the hub's CA.
func (h *hub) connect(t *testing.T, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return dial(t, ns, append(opts, nats.RootCAs(h.ca))...)
}

// dial is a client of ns (the leaf: plaintext, on loopback).
func dial(t *testing.T, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", ns.Name(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// enrolEdge has the authority enrol an edge, as `fleetboot edge add` does,
// and returns its credentials file and public key.
func (h *hub) enrolEdge(ctx context.Context, t *testing.T, site, name string) (creds, pub string) {
	t.Helper()
	pub, seed, err := auth.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := h.auth.Enrol(ctx, auth.EnrolRequest{V: proto.Version, Name: name, Site: site, Role: auth.RoleEdge, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "edge.creds")
	if err := auth.WriteCreds(p, rep.JWT, seed); err != nil {
		t.Fatal(err)
	}
	return p, pub
}

// startLeaf runs deploy/nats/leaf.conf against the hub with creds and
// returns once its leaf connection is up.
func startLeaf(t *testing.T, h *hub, creds string) *server.Server {
	t.Helper()
	conf := readFile(t, "../../../deploy/nats/leaf.conf")
	var urls []string
	for _, p := range h.leafPorts {
		urls = append(urls, fmt.Sprintf("tls://127.0.0.1:%d", p))
	}
	for _, r := range [][2]string{
		{"server_name: $NATS_SERVER_NAME", "server_name: leaf-" + leafSite},
		{"listen: 127.0.0.1:4222", "listen: 127.0.0.1:-1"},
		{"urls: [tls://nats1:7422, tls://nats2:7422, tls://nats3:7422]", "urls: [" + strings.Join(urls, ", ") + "]"},
		{`"/etc/fleetboot/edge.creds"`, fmt.Sprintf("%q", creds)},
		{`"/etc/fleetboot/ca.pem"`, fmt.Sprintf("%q", h.ca)},
	} {
		conf = replaceOnce(t, conf, r[0], r[1])
	}
	p := filepath.Join(t.TempDir(), "leaf.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf := natstest.StartNodeFromConfig(t, p)
	waitfor.True(t, "the leaf connected to the hub", func() bool { return leaf.NumLeafNodes() == 1 })
	return leaf
}

// nextUpdate is the next entry of a watch; nil is the end of the initial values.
func nextUpdate(ctx context.Context, t *testing.T, w jetstream.KeyWatcher) jetstream.KeyValueEntry {
	t.Helper()
	select {
	case e := <-w.Updates():
		return e
	case <-ctx.Done():
		t.Fatal("no watch update")
		return nil
	}
}

// anonymousLeafRefused connects to a leaf node port as a leaf node without
// credentials (the INFO in clear, then TLS, as nats-server does) and
// returns nil if the hub answers with an authorization violation.
func anonymousLeafRefused(addr, caFile string) error {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("CA %s: %v", caFile, err)
	}
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second)) // bounds a hub that never answers: a failure
	if _, err := bufio.NewReader(raw).ReadString('\n'); err != nil {
		return fmt.Errorf("no INFO: %w", err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	if _, err := fmt.Fprint(c, "CONNECT {\"name\":\"stranger\"}\r\nPING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	if !strings.Contains(strings.ToLower(line), "authorization violation") {
		return fmt.Errorf("a leaf node without credentials got %q, want an authorization violation", strings.TrimSpace(line))
	}
	return nil
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("config template: %q occurs %d times, want once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer l.Close()
	}
	return ports
}

func randomPassword(t *testing.T) string {
	t.Helper()
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func hostKey(t *testing.T, site, mac string) string {
	t.Helper()
	k, err := proto.HostKey(site, mac)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
