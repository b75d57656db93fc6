package web

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// The Host check comes before any page: the login page needs none of these.
type (
	noAPI    struct{}
	noLogin  struct{}
	noEvents struct{}
)

func (noAPI) Call(context.Context, proto.Identity, string, any, any) error {
	return errors.New("no API")
}
func (noLogin) WebLogin(string, string) (proto.Identity, error) {
	return proto.Identity{}, errors.New("no")
}
func (noLogin) Person(string) (proto.Identity, bool) { return proto.Identity{}, false }
func (noEvents) Events(context.Context, []string, time.Time) ([]proto.Event, error) {
	return nil, nil
}

// TestHostHeader: the panel answers only its own names, so a page whose
// DNS name an attacker rebinds to the panel's address (DNS rebinding) gets
// 421 and nothing of the fleet. Requests go over a real socket with the Host
// a browser would send.
func TestHostHeader(t *testing.T) {
	type req struct {
		host, path string
		code       int
	}
	cases := []struct {
		name   string
		listen string // "" = the test server's own loopback address
		names  []string
		reqs   []req
	}{
		{name: "loopback", reqs: []req{
			{"evil.example", "/login", 421},
			{"evil.example:PORT", "/hosts", 421},
			{"127.0.0.1:PORT", "/login", 200},
			{"127.0.0.1", "/login", 200},
			{"localhost:PORT", "/login", 200},
			{"LOCALHOST.", "/login", 200},
			{"[::1]:PORT", "/login", 200},
			{"10.0.0.5:PORT", "/login", 421},
			{"evil.example", "/healthz", 200},
		}},
		{name: "loopback with a name", names: []string{"Panel.Example.net"}, reqs: []req{
			{"panel.example.net:PORT", "/login", 200},
			{"panel.example.net.", "/login", 200},
			{"other.example.net", "/login", 421},
			{"localhost", "/login", 200},
		}},
		{name: "one address", listen: "10.0.0.5:8081", names: []string{"panel.example.net"}, reqs: []req{
			{"10.0.0.5:8081", "/login", 200},
			{"panel.example.net", "/login", 200},
			{"10.0.0.6:8081", "/login", 421},
			{"localhost:8081", "/login", 421},
			{"evil.example", "/login", 421},
		}},
		{name: "every address", listen: "0.0.0.0:8081", reqs: []req{
			{"10.0.0.5:8081", "/login", 200},
			{"[fd00::5]:8081", "/login", 200},
			{"localhost:8081", "/login", 200},
			{"evil.example:8081", "/login", 421},
			{"10.0.0.5.evil.example", "/login", 421},
		}},
		{name: "every IPv6 address", listen: "[::]:8081", reqs: []req{
			{"192.168.1.1", "/login", 200},
			{"evil.example", "/login", 421},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			listen := tc.listen
			if listen == "" {
				listen = ln.Addr().String()
			}
			h, err := New(Config{API: noAPI{}, Login: noLogin{}, Events: noEvents{}, Listen: listen, Names: tc.names})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(h)
			srv.Listener.Close()
			srv.Listener = ln
			srv.Start()
			defer srv.Close()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			for _, r := range tc.reqs {
				host := strings.ReplaceAll(r.host, "PORT", port)
				rq, err := http.NewRequest("GET", srv.URL+r.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				rq.Host = host
				resp, err := http.DefaultClient.Do(rq)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != r.code {
					t.Errorf("Host %s %s: HTTP %d, want %d: %s", host, r.path, resp.StatusCode, r.code, b)
					continue
				}
				if r.code == 421 {
					want := `fleetboot: the web panel does not answer to host "` + host + `"; give its names with --http-name` + "\n"
					if string(b) != want {
						t.Errorf("Host %s: body %q, want %q", host, b, want)
					}
				}
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8081": true, "[::1]:8081": true, "localhost:8081": true, "127.1.2.3:80": true,
		"0.0.0.0:8081": false, ":8081": false, "[::]:8081": false, "10.0.0.5:8081": false, "panel.example.net:8081": false, "127.0.0.1": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// RequireHost guards handlers served beside the panel (/metrics) the same way.
func TestRequireHost(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })
	srv := httptest.NewServer(RequireHost("127.0.0.1:8081", []string{"panel.example.net"}, ok))
	defer srv.Close()
	for host, want := range map[string]int{"evil.example": 421, "127.0.0.1": 200, "panel.example.net:8081": 200} {
		rq, err := http.NewRequest("GET", srv.URL+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		rq.Host = host
		resp, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: HTTP %d, want %d", host, resp.StatusCode, want)
		}
	}
}
