package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// panelConfig is what the web panel is served with.
type panelConfig struct {
	addr  string
	names []string
	tls   *tls.Config // nil: plain HTTP
	api   *api.Local
	login web.Login
	boots web.BootCounts
	edges *web.EdgeHistory
}

// startPanel binds the web panel's listener and serves it until ctx ends.
// It returns once the listener is bound; the returned channel reports the
// server's end.
func startPanel(ctx context.Context, pc panelConfig, js jetstream.JetStream, metrics prometheus.Gatherer, log *slog.Logger) (<-chan error, error) {
	index, err := web.WatchHosts(ctx, js, log)
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel: %w", err)
	}
	events := web.StreamEvents{JS: js}
	h, err := web.New(web.Config{API: pc.api, Login: pc.login, Hosts: index, Events: events, Live: events, Logger: log, Listen: pc.addr, Names: pc.names, Secure: pc.tls != nil,
		Audit: streamAudit{js: js}, Boots: pc.boots, EdgeHistory: pc.edges})
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel: %w", err)
	}
	ln, err := net.Listen("tcp", pc.addr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel listen on %s: %w", pc.addr, err)
	}
	scheme := "http"
	if pc.tls != nil {
		// The coordinator's certificate, without the client certificates
		// NATS may ask for: people log in with a password.
		tc := pc.tls.Clone()
		tc.ClientAuth = tls.NoClientCert
		tc.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, tc)
		scheme = "https"
	} else if !web.Loopback(pc.addr) {
		log.Warn("the web panel listens beyond loopback without TLS: passwords and session cookies cross the network in clear; give --tls-cert", "addr", pc.addr)
	}
	mux := http.NewServeMux()
	// /metrics sits beside the panel, so it gets the same Host check.
	mux.Handle("GET /metrics", web.RequireHost(pc.addr, pc.names, promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
	mux.Handle("/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Live pages' streams are never idle: Shutdown would wait them out.
	srv.RegisterOnShutdown(h.CloseStreams)
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("web panel serving", "url", scheme+"://"+ln.Addr().String())
	return done, nil
}

// devLogin is the panel's login without --auth (dev mode): one person,
// "admin", with a password generated at the first start and kept in
// DataDir/web-admin.password (0600). Without identities the API lets
// anyone change anything, but the panel still asks for a password: a
// browser is a program any web page can make send requests.
type devLogin struct{ hash []byte }

// devAdmin is the identity the dev login gives: an admin, named so the
// audit log shows it came from the panel.
var devAdmin = proto.Identity{Name: "admin", Role: proto.RoleAdmin}

func openDevLogin(path string, log *slog.Logger) (*devLogin, error) {
	pw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 18)
		rand.Read(b)
		pw = []byte(base64.RawURLEncoding.EncodeToString(b))
		if err := atomicfile.WriteFile(path, append(pw, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("coordinator: web panel password: %w", err)
		}
		log.Info("web panel password written: log in as admin with the password in this file", "file", path)
	} else if err != nil {
		return nil, fmt.Errorf("coordinator: web panel password: %w", err)
	}
	hash, err := bcrypt.GenerateFromPassword(bytes.TrimSpace(pw), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("coordinator: web panel password %s: %w", path, err)
	}
	return &devLogin{hash: hash}, nil
}

func (d *devLogin) WebLogin(name, password string) (proto.Identity, error) {
	err := bcrypt.CompareHashAndPassword(d.hash, []byte(password))
	if err != nil || name != devAdmin.Name {
		return proto.Identity{}, auth.ErrBadLogin
	}
	return devAdmin, nil
}

func (d *devLogin) Person(name string) (proto.Identity, bool) {
	return devAdmin, name == devAdmin.Name
}

// streamAudit reads the AUDIT stream for the panel's audit page, as
// `fleetboot audit` does.
type streamAudit struct{ js jetstream.JetStream }

func (s streamAudit) Read(ctx context.Context, since time.Time, limit int) ([]audit.Record, error) {
	return audit.Read(ctx, s.js, since, limit)
}
