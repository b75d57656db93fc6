package httpboot

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// Limits bound what one HTTP client can hold of the edge: memory (header,
// query and body sizes) and time (a connection that sends or reads nothing).
// Zero fields take the defaults.
//
// There is no http.Server WriteTimeout or ReadTimeout, on purpose. Both are
// deadlines for a whole request: a WriteTimeout would cut every ISO download
// that takes longer, and a ReadTimeout, once it passes while a response is
// still being written, cancels the request's context (net/http's background
// read fails), which aborts a download the cache streams from the store.
// Instead the server sets deadlines per request: a body must arrive within
// BodyTimeout, and each WriteChunk of a response must be taken by the client
// within WriteIdleTimeout, so a slow reader holds a connection only while
// it makes progress, and a multi-GB download runs as long as it needs.
type Limits struct {
	ReadHeaderTimeout time.Duration // request line and headers (slow-loris); default 10 s
	BodyTimeout       time.Duration // the whole request body, from the headers on; default 30 s
	IdleTimeout       time.Duration // a keep-alive connection between requests; default 2 min
	WriteIdleTimeout  time.Duration // each WriteChunk of a response; default 60 s
	MaxHeaderBytes    int           // request line and headers (net/http answers 431 past it); default 16 KiB
	MaxQueryBytes     int           // the raw query (414 past it); default 8 KiB
	LogEvery          time.Duration // least time between log lines of one refusal reason; default 10 s
	Logger            *slog.Logger  // nil: discard
	// Rate and Burst limit requests per client address (a token bucket;
	// more get 429): default 20 a second after a burst of 200, far above
	// what a booting machine asks (a script, a kernel, an initrd, a few
	// retries) and far below a flood. A negative Rate turns it off.
	// MaxClients bounds the addresses tracked (default 4096).
	Rate       float64
	Burst      int
	MaxClients int
	// Repeats counts refused requests as http.limited events per address
	// and window; nil: they are only logged.
	Repeats Repeats
	// Metrics receives fleetboot_http_* (requests by route and code,
	// bytes, latency); nil keeps them unexported.
	Metrics prometheus.Registerer
}

// defaultRate is Limits' per-address rate limit.
func defaultRate() ratelimit.Config { return ratelimit.Config{Rate: 20, Burst: 200, MaxSources: 4096} }

// WriteChunk is the most a response writes under one deadline: at the
// default WriteIdleTimeout a client must take 1 MiB a minute (17 KiB/s), far
// below any LAN, to keep its download.
const WriteChunk = 1 << 20

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.BodyTimeout, 30*time.Second)
	def(&l.IdleTimeout, 2*time.Minute)
	def(&l.WriteIdleTimeout, time.Minute)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.MaxQueryBytes <= 0 {
		l.MaxQueryBytes = 8 << 10
	}
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	return l
}

// NewServer returns the edge's http.Server for h, guarded by lim (Guard).
func NewServer(h http.Handler, lim Limits) *http.Server {
	lim = lim.withDefaults()
	g := Guard(h, lim)
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		// net/http's own complaints (bad TLS, accept errors, panics) are
		// one line each; a flood of them is limited like the rest.
		ErrorLog: log.New(serverErrors{g.drops}, "", 0),
	}
}

// Guard wraps h with the per-request limits of lim: the query size, the body
// deadline and the write deadline per chunk. NewServer uses it; it is
// exported for handlers served by other servers and for tests.
func Guard(h http.Handler, lim Limits) *Guarded {
	lim = lim.withDefaults()
	log := lim.Logger.With("component", "http")
	return &Guarded{next: h, lim: lim, drops: ratelog.Logger(log, lim.LogEvery), m: newHTTPMetrics(lim.Metrics, log),
		rate: ratelimit.New(ratelimit.Config{Rate: lim.Rate, Burst: lim.Burst, MaxSources: lim.MaxClients}, defaultRate())}
}

// Guarded is an http.Handler with Limits applied.
type Guarded struct {
	next  http.Handler
	lim   Limits
	drops *slog.Logger
	rate  *ratelimit.PerSource
	m     *httpMetrics
}

func (g *Guarded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start, route := time.Now(), routeOf(r.URL.Path)
	// First, before anything costs: a flood from one address gets 429s,
	// one log line an interval and one counted event a window.
	// Keyed by ratelimit.AddrKey: an IPv6 client has a /64 to pick from.
	if ip := remoteIP(r); !g.rate.Allow(sourceKey(ip)) {
		g.drops.Warn("http: request refused", "reason", "rate limit", "ip", ip)
		if g.lim.Repeats != nil {
			g.lim.Repeats.Count(sourceKey(ip), proto.EventHTTPLimited, "", map[string]string{"ip": ip})
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, "httpboot: too many requests from this address", http.StatusTooManyRequests)
		g.m.observe(route, http.StatusTooManyRequests, 0, start)
		return
	}
	if n := len(r.URL.RawQuery); n > g.lim.MaxQueryBytes {
		g.drops.Warn("http: request refused", "reason", "query too long", "ip", remoteIP(r), "bytes", n)
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("httpboot: query of %d bytes, at most %d", n, g.lim.MaxQueryBytes), http.StatusRequestURITooLong)
		g.m.observe(route, http.StatusRequestURITooLong, 0, start)
		return
	}
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 {
		// Bounds the body for the handler and for net/http, which reads
		// up to 256 KiB of an unread body after the handler to keep the
		// connection. Errors mean a writer without deadlines (tests).
		_ = rc.SetReadDeadline(time.Now().Add(g.lim.BodyTimeout))
	}
	dw := &deadlineWriter{ResponseWriter: w, rc: rc, idle: g.lim.WriteIdleTimeout}
	// Also the deadline of the headers and of the flush net/http does
	// after the handler; the next request on the connection sets its own.
	dw.extend()
	g.next.ServeHTTP(dw, r)
	g.m.observe(route, dw.status, dw.written, start)
}

// deadlineWriter moves the connection's write deadline forward before each
// WriteChunk: a client that stops reading is dropped after WriteIdleTimeout
// and its goroutine and socket freed; one that reads keeps going.
// It also notes the status and the body bytes written, for the metrics.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	idle    time.Duration
	status  int
	written int64
}

func (d *deadlineWriter) WriteHeader(code int) {
	if d.status == 0 {
		d.status = code
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) extend() { _ = d.rc.SetWriteDeadline(time.Now().Add(d.idle)) }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), WriteChunk)
		d.extend()
		m, err := d.ResponseWriter.Write(p[:c])
		n += m
		d.written += int64(m)
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// ReadFrom keeps net/http's sendfile path (http.ServeContent over an
// *os.File reaches here as an *io.LimitedReader of the file): it passes on
// one LimitedReader of the same file per chunk, never a LimitedReader of a
// LimitedReader, which sendfile would not recognise.
func (d *deadlineWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := d.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{d}, src)
	}
	under, limit := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		under, limit = lr.R, lr.N
		defer func() { lr.N = limit }()
	}
	var total int64
	for limit != 0 {
		c := int64(WriteChunk)
		if limit > 0 {
			c = min(c, limit)
		}
		d.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: under, N: c})
		total += n
		d.written += n
		if limit > 0 {
			limit -= n
		}
		if err != nil || n < c { // an error, or the end of src
			return total, err
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController (and the cache's) reach the connection.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// serverErrors feeds net/http's ErrorLog into the rate-limited log.
type serverErrors struct{ log *slog.Logger }

func (s serverErrors) Write(p []byte) (int, error) {
	s.log.Warn("http: server error", "reason", "net/http", "err", strings.TrimSpace(string(p)))
	return len(p), nil
}
