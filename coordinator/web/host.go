package web

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// hostCheck decides which Host headers the panel answers. A browser on an
// operator's machine can be made to send requests to the panel from any web
// page whose DNS name the attacker points at the panel's address (DNS
// rebinding); such requests carry the attacker's name in Host. So the panel
// answers only names it was told about (--http-name), the address it
// listens on, the loopback names when it listens on loopback, and IP
// literals when it listens on every address (a rebinding needs a name, and
// the operator may use any of the machine's addresses).
type hostCheck struct {
	names      map[string]bool
	anyLiteral bool
}

func newHostCheck(listen string, names []string) hostCheck {
	hc := hostCheck{names: map[string]bool{}}
	for _, n := range names {
		hc.names[normalHost(n)] = true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	host = normalHost(host)
	ip := net.ParseIP(host)
	switch {
	case listen == "" || host == "localhost" || ip != nil && ip.IsLoopback():
		for _, n := range []string{"localhost", "127.0.0.1", "::1"} {
			hc.names[n] = true
		}
		if host != "" {
			hc.names[host] = true
		}
	case host == "" || ip != nil && ip.IsUnspecified():
		hc.anyLiteral = true
		hc.names["localhost"] = true
	default:
		hc.names[host] = true
	}
	return hc
}

// RequireHost serves next only to requests whose Host is one of the
// panel's names (as Handler does for its own pages): for other handlers
// served next to the panel, such as /metrics.
func RequireHost(listen string, names []string, next http.Handler) http.Handler {
	hc := newHostCheck(listen, names)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hc.allows(r.Host) {
			hc.refuse(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request for another host: 421 and one line.
func (hc hostCheck) refuse(w http.ResponseWriter, r *http.Request) {
	http.Error(w, fmt.Sprintf("fleetboot: the web panel does not answer to host %q; give its names with --http-name", r.Host), http.StatusMisdirectedRequest)
}

// allows reports whether a request's Host (with or without a port) is one
// of the panel's names.
func (hc hostCheck) allows(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport // no port
	}
	host = normalHost(host)
	if host == "" {
		return false
	}
	if hc.names[host] {
		return true
	}
	return hc.anyLiteral && net.ParseIP(host) != nil
}

// normalHost lower-cases a name and drops IPv6 brackets and a trailing dot.
func normalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}

// Loopback reports whether a listen address (host:port) is on loopback only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
