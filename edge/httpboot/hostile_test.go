package httpboot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is an io.Writer for a log that the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

const knownScript = "/boot.ipxe?mac=52:54:00:12:34:56"

// testLimits are short enough that the slow-client cases end quickly; a
// well-formed request on loopback is far inside them. The write idle limit
// is longer: a reader scheduled late on a loaded machine under -race went
// 500 ms without taking one 1 MiB chunk.
func testLimits(logs *syncBuf) Limits {
	return Limits{
		ReadHeaderTimeout: 500 * time.Millisecond,
		BodyTimeout:       500 * time.Millisecond,
		IdleTimeout:       500 * time.Millisecond,
		WriteIdleTimeout:  2 * time.Second,
		LogEvery:          time.Hour, // one line per reason for the whole test
		Logger:            slog.New(slog.NewTextHandler(logs, nil)),
	}
}

// server is the fixture's handler behind NewServer on a real socket, with
// each connection's close reported on closed.
type server struct {
	*fixture
	url    string
	addr   string
	closed chan net.Conn
}

func startHTTP(t *testing.T) *server {
	t.Helper()
	f := newFixture(t)
	// The known host is reserved the client's address: its callbacks
	// from loopback pass the token and address checks and reach the
	// limits under test.
	h := *web01()
	h.IP = "127.0.0.1"
	f.st.PutHost(h)
	// 32 MiB: more than any socket buffers hold, so a reader that stops
	// blocks the server's writes.
	must(t, os.WriteFile(filepath.Join(f.boot, "big.iso"), bytes.Repeat([]byte("ISO!"), 8<<20), 0o644))
	srv := NewServer(f.h, testLimits(f.logs))
	s := &server{fixture: f, closed: make(chan net.Conn, 1024)}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			s.closed <- c
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	s.addr = ln.Addr().String()
	s.url = "http://" + s.addr
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// wellFormed checks that the server still answers a known host's script.
func (s *server) wellFormed(t *testing.T) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.url + knownScript)
	if err != nil {
		t.Fatalf("well-formed request after the hostile one: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(b, []byte("#!ipxe")) {
		t.Fatalf("well-formed request after the hostile one: %s %q", resp.Status, b)
	}
}

// dial opens a raw connection, for what no well-behaved client sends.
func (s *server) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	// Bounds a broken server only; the server's own time-outs are shorter.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// waitClosed waits until the server has closed the connection whose client
// end is c.
func (s *server) waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case sc := <-s.closed:
			if sc.RemoteAddr().String() == c.LocalAddr().String() {
				return
			}
		case <-deadline:
			t.Fatal("the server did not close the connection")
		}
	}
}

func (s *server) do(t *testing.T, method, target string, header http.Header, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+target, body)
	must(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %.60s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHostileHTTP sends each hostile request to a real server on loopback,
// checks the refusal, and that a well-formed request is still answered.
func TestHostileHTTP(t *testing.T) {
	s := startHTTP(t)
	s.wellFormed(t)
	bigQuery := "/boot.ipxe?mac=52:54:00:12:34:56&x=" + strings.Repeat("a", 9<<10)

	t.Run("oversized query", func(t *testing.T) {
		for range 20 {
			code, body := s.do(t, "GET", bigQuery, nil, nil)
			if code != http.StatusRequestURITooLong || !strings.Contains(body, "at most 8192") {
				t.Fatalf("%d %q, want 414", code, body)
			}
		}
		if n := strings.Count(s.logs.String(), `reason="query too long"`); n != 1 {
			t.Fatalf("%d log lines for 20 refusals, want 1\n%s", n, s.logs.String())
		}
		s.wellFormed(t)
	})
	t.Run("oversized header", func(t *testing.T) {
		code, _ := s.do(t, "GET", knownScript, http.Header{"X-Junk": {strings.Repeat("j", 64<<10)}}, nil)
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d, want 431", code)
		}
		s.wellFormed(t)
	})
	t.Run("oversized callback body", func(t *testing.T) {
		for range 20 {
			body := `{"pad":"` + strings.Repeat("x", MaxCallbackBody) + `"}`
			code, msg := s.do(t, "POST", "/api/v1/facts?mac=52:54:00:12:34:56&token="+s.tokenFor("52:54:00:12:34:56"), nil, strings.NewReader(body))
			if code != http.StatusRequestEntityTooLarge {
				t.Fatalf("%d %q, want 413", code, msg)
			}
		}
		if n := strings.Count(s.logs.String(), `reason="body too large"`); n != 1 {
			t.Fatalf("%d log lines for 20 refusals, want 1\n%s", n, s.logs.String())
		}
		if got := s.cb.take(); len(got) != 0 {
			t.Fatalf("refused callbacks were forwarded: %v", got)
		}
		s.wellFormed(t)
	})
	t.Run("slow-loris headers", func(t *testing.T) {
		c := s.dial(t)
		io.WriteString(c, "GET "+knownScript+" HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
		// The server gives up on the headers: the connection ends with no
		// response.
		b, err := io.ReadAll(c)
		if err != nil || len(b) != 0 {
			t.Fatalf("read %q, %v; want the server to close the connection silently", b, err)
		}
		s.wellFormed(t)
	})
	t.Run("slow callback body", func(t *testing.T) {
		c := s.dial(t)
		fmt.Fprintf(c, "POST /api/v1/facts?mac=52:54:00:12:34:56&token=%s HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":", s.tokenFor("52:54:00:12:34:56"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "reading body") {
			t.Fatalf("%s %q, want 400 for a body that stopped", resp.Status, b)
		}
		s.waitClosed(t, c)
		if got := s.cb.take(); len(got) != 0 {
			t.Fatalf("a cut-off callback was forwarded: %v", got)
		}
		s.wellFormed(t)
	})
	t.Run("slow body on a GET", func(t *testing.T) {
		// The handler never reads it; net/http would, after the handler,
		// to keep the connection: the body deadline ends that too.
		c := s.dial(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: edge\r\nContent-Length: 100000\r\n\r\nab", knownScript)
		s.waitClosed(t, c)
		s.wellFormed(t)
	})
	t.Run("reader that stops", func(t *testing.T) {
		c := s.dial(t)
		io.WriteString(c, "GET /boot/big.iso HTTP/1.1\r\nHost: edge\r\n\r\n")
		br := bufio.NewReaderSize(c, 4096)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != 32<<20 {
			t.Fatalf("%s, %d bytes, want 200 with 32 MiB", resp.Status, resp.ContentLength)
		}
		// Read nothing more: the socket buffers fill, the server's write
		// stops, and its deadline drops the connection.
		s.waitClosed(t, c)
		n, _ := io.Copy(io.Discard, resp.Body)
		if n >= resp.ContentLength {
			t.Fatalf("got all %d bytes from a server that should have given up", n)
		}
		s.wellFormed(t)
	})
	t.Run("idle keep-alive connection", func(t *testing.T) {
		c := s.dial(t)
		io.WriteString(c, "GET "+knownScript+" HTTP/1.1\r\nHost: edge\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		s.waitClosed(t, c) // IdleTimeout
		s.wellFormed(t)
	})
}

// TestLargeDownloadOutlastsDeadlines: a reader that keeps reading gets a
// file that takes many write deadlines, through the sendfile path.
func TestLargeDownloadOutlastsDeadlines(t *testing.T) {
	s := startHTTP(t)
	resp, err := http.Get(s.url + "/boot/big.iso")
	must(t, err)
	defer resp.Body.Close()
	h := &countingReader{}
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != 32<<20 || h.bad {
		t.Fatalf("read %d bytes (%v), want all %d intact", n, err, 32<<20)
	}
}

type countingReader struct {
	off int64
	bad bool
}

func (c *countingReader) Write(p []byte) (int, error) {
	for i, b := range p {
		if b != "ISO!"[(c.off+int64(i))%4] {
			c.bad = true
		}
	}
	c.off += int64(len(p))
	return len(p), nil
}

// FuzzRequest drives the guarded handler with arbitrary method, target,
// header and body: no panic, the query and body limits hold, and nothing
// outside the boot directory is served. Seeded with the hostile cases.
func FuzzRequest(f *testing.F) {
	f.Add("GET", knownScript, "", "")
	f.Add("GET", "/boot.ipxe?mac=52:54:00:12:34:56&x="+strings.Repeat("a", 9<<10), "", "")
	tok := token(testKey, "52:54:00:12:34:56", web01())
	f.Add("POST", "/api/v1/facts?mac=52:54:00:12:34:56&token="+tok, "application/json", `{"cpu":4}`)
	f.Add("POST", "/api/v1/facts?mac=52:54:00:12:34:56&token="+tok, "application/json", `{"pad":"`+strings.Repeat("x", MaxCallbackBody)+`"}`)
	f.Add("POST", "/api/v1/done?mac=52:54:00:12:34:56&token="+tok, "", "")
	f.Add("POST", "/api/v1/done?mac=52:54:00:12:34:56", "", "")
	f.Add("GET", "/boot/..%2fsecret", "", "")
	f.Add("GET", "/boot/escape.efi", "", "")
	f.Add("PUT", "/artifacts/debian-12/vmlinuz", "", "x")
	f.Add("G\x00T", "/\x00", "\r\n", "")
	f.Add("GET", "/grub.cfg?mac=52:54:00:12:34:56&arch=%00", "", "")
	f.Add("GET", "/boot.ipxe?mac=52:54:00:12:34:56&try=99999999999999999999", "", "")
	fx := newFixture(f)
	lim := Limits{Rate: -1}.withDefaults() // every input reaches the handler
	g := Guard(fx.h, lim)
	f.Fuzz(func(t *testing.T, method, target, ctype, body string) {
		u, err := url.Parse(target)
		if err != nil {
			u = &url.URL{Path: target}
		}
		r := &http.Request{
			Method: method, URL: u, Header: http.Header{"Content-Type": {ctype}}, RemoteAddr: "10.0.0.50:1",
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
		r = r.WithContext(context.Background())
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		b := w.Body.String()
		switch {
		case w.Code < 100 || w.Code > 599:
			t.Fatalf("status %d", w.Code)
		case len(u.RawQuery) > lim.MaxQueryBytes && w.Code != http.StatusRequestURITooLong:
			t.Fatalf("query of %d bytes answered %d", len(u.RawQuery), w.Code)
		case strings.Contains(b, "SECRET") || strings.Contains(b, "INNER"):
			t.Fatalf("%q served a file outside the boot directory", target)
		case w.Code/100 == 2 && method == "POST" && len(body) > MaxCallbackBody:
			t.Fatalf("a %d-byte callback body was accepted", len(body))
		}
	})
}

// take returns and clears the forwarded callbacks.
func (c *callbacks) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}
