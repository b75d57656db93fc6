package artifactstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/test/miniotest"
)

// backend is a store under test plus an independent count of the objects
// actually written to it.
type backend struct {
	name  string
	store Store
	// writes counts object writes as the storage saw them: for S3, PUT
	// requests passing a proxy in front of MinIO; for a directory, Put calls
	// reaching the backend.
	writes func() int64
}

func dirBackend(t *testing.T) backend {
	t.Helper()
	s, err := Open(context.Background(), Config{URL: "dir://" + filepath.Join(t.TempDir(), "store")})
	if err != nil {
		t.Fatal(err)
	}
	c := &countingStore{Store: s}
	return backend{name: "dir", store: c, writes: c.puts.Load}
}

type countingStore struct {
	Store
	puts atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, size)
}

// s3Backend starts a real MinIO and puts a reverse proxy in front of it that
// counts object PUTs (single and multipart part uploads), so "nothing was
// uploaded" is checked on the wire, not by trusting our own code.
func s3Backend(t *testing.T) (backend, *miniotest.Server, string) {
	t.Helper()
	m := miniotest.Start(t)
	target, err := url.Parse("http://" + m.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var puts atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /bucket is bucket creation; /bucket/key is an object write.
		if r.Method == http.MethodPut && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 {
			puts.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	endpoint := strings.TrimPrefix(srv.URL, "http://")
	s, err := Open(context.Background(), Config{
		URL:       "s3://fleetboot-test?endpoint=" + endpoint,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return backend{name: "s3", store: s, writes: puts.Load}, m, endpoint
}

func backends(t *testing.T) []backend {
	s3, _, _ := s3Backend(t)
	return []backend{dirBackend(t), s3}
}

func writeFile(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	p := filepath.Join(t.TempDir(), "artifact")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func readAll(t *testing.T, s Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func TestUploadFile(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	sizes := []struct {
		name string
		size int
	}{
		{name: "empty", size: 0},
		{name: "small", size: 1000},
		// Larger than one part: exercises the streaming multipart path.
		{name: "multipart", size: partSize + 12345},
	}
	for _, b := range backends(t) {
		for _, sz := range sizes {
			t.Run(b.name+"/"+sz.name, func(t *testing.T) {
				ctx := context.Background()
				path, data := writeFile(t, sz.size)
				sum := sha256.Sum256(data)
				want := Uploaded{Key: "sha256/" + hex.EncodeToString(sum[:]), Size: int64(sz.size), SHA256: hex.EncodeToString(sum[:])}

				var last, calls int64
				monotonic := true
				before := b.writes()
				got, err := UploadFile(ctx, b.store, path, func(done, total int64) {
					if total != int64(sz.size) || done < last {
						monotonic = false
					}
					last = done
					calls++
				})
				if err != nil {
					t.Fatalf("UploadFile: %v", err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("first upload mismatch (-want +got):\n%s", diff)
				}
				if b.writes() == before {
					t.Errorf("first upload wrote nothing to the store")
				}
				if !monotonic || last != int64(sz.size) || calls == 0 {
					t.Errorf("progress: monotonic=%v last=%d calls=%d, want monotonic up to %d", monotonic, last, calls, sz.size)
				}
				if !bytes.Equal(readAll(t, b.store, got.Key), data) {
					t.Errorf("stored content differs from the file")
				}
				info, err := b.store.Stat(ctx, got.Key)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(ObjectInfo{Key: got.Key, Size: int64(sz.size)}, info); diff != "" {
					t.Errorf("Stat mismatch (-want +got):\n%s", diff)
				}

				// Adding identical content again uploads nothing.
				before = b.writes()
				again, err := UploadFile(ctx, b.store, path, nil)
				if err != nil {
					t.Fatalf("second UploadFile: %v", err)
				}
				want.Skipped = true
				if diff := cmp.Diff(want, again); diff != "" {
					t.Errorf("second upload mismatch (-want +got):\n%s", diff)
				}
				if n := b.writes() - before; n != 0 {
					t.Errorf("second upload of identical content wrote %d objects, want 0", n)
				}
			})
		}
	}
}

func TestMissingAndInvalidKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			missing := KeyFor(strings.Repeat("0", 64))
			if _, err := b.store.Stat(ctx, missing); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
			}
			if rc, err := b.store.Get(ctx, missing); !errors.Is(err, ErrNotFound) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("Get(missing) = %v, want ErrNotFound", err)
			}
			// A prefix of an existing key is not an object either.
			if err := b.store.Put(ctx, "dir/obj", strings.NewReader("x"), 1); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Stat(ctx, "dir"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(prefix) = %v, want ErrNotFound", err)
			}
			// Below an existing object.
			if _, err := b.store.Stat(ctx, "dir/obj/sub"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(below object) = %v, want ErrNotFound", err)
			}

			for _, key := range []string{"../escape", "a/../../escape", "/etc/passwd", "a//b", ""} {
				if err := b.store.Put(ctx, key, strings.NewReader("x"), 1); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("Put(%q) = %v, want a key error", key, err)
				}
				if _, err := b.store.Get(ctx, key); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%q) = %v, want a key error", key, err)
				}
				if _, err := b.store.Stat(ctx, key); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("Stat(%q) = %v, want a key error", key, err)
				}
			}
		})
	}
}

func TestShortPutLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			err := b.store.Put(ctx, "short", strings.NewReader("only 10 b."), 100)
			if err == nil {
				t.Fatalf("Put with a reader shorter than size succeeded")
			}
			if _, err := b.store.Stat(ctx, "short"); !errors.Is(err, ErrNotFound) {
				t.Errorf("after a failed Put, Stat = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestDirPutIsAtomic(t *testing.T) {
	root := t.TempDir()
	s, err := Open(context.Background(), Config{URL: "dir://" + root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "k", strings.NewReader("old"), 3); err != nil {
		t.Fatal(err)
	}
	// A Put whose reader fails midway leaves the old object in place and no
	// temporary file behind.
	r := io.MultiReader(strings.NewReader("new-partial"), errReader{})
	if err := s.Put(ctx, "k", r, 100); err == nil {
		t.Fatal("failing Put succeeded")
	}
	if got := readAll(t, s, "k"); string(got) != "old" {
		t.Errorf("after a failed Put the object is %q, want %q", got, "old")
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"k"}, names); diff != "" {
		t.Errorf("store directory (-want +got):\n%s", diff)
	}
	// Nothing escaped the root.
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a traversal key wrote outside the store: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestOpenErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	_, m, _ := s3Backend(t)

	// A port nobody listens on: bind one, then close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	// A server that accepts connections and never answers: Open must give
	// up at its timeout instead of hanging.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()

	const secret = "wrong-secret-key-value"
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "wrong secret key",
			cfg:     Config{URL: "s3://fleetboot-test?endpoint=" + m.Endpoint, AccessKey: m.AccessKey, SecretKey: secret},
			wantErr: []string{"credentials rejected", m.Endpoint, "fleetboot-test"}},
		{name: "unknown access key",
			cfg:     Config{URL: "s3://fleetboot-test?endpoint=" + m.Endpoint, AccessKey: "nobody", SecretKey: secret},
			wantErr: []string{"credentials rejected", m.Endpoint, "fleetboot-test"}},
		{name: "nothing listening",
			cfg:     Config{URL: "s3://fleetboot-test?endpoint=" + dead, AccessKey: m.AccessKey, SecretKey: secret, Timeout: 2 * time.Second},
			wantErr: []string{"not reachable", "connection refused", dead, "fleetboot-test"}},
		{name: "server never answers",
			cfg:     Config{URL: "s3://fleetboot-test?endpoint=" + silent.Addr().String(), AccessKey: m.AccessKey, SecretKey: secret, Timeout: time.Second},
			wantErr: []string{"not reachable within 1s", silent.Addr().String(), "fleetboot-test"}},
		{name: "tls against plain http",
			cfg:     Config{URL: "s3://fleetboot-test?tls=true&endpoint=" + m.Endpoint, AccessKey: m.AccessKey, SecretKey: secret, Timeout: 2 * time.Second},
			wantErr: []string{m.Endpoint, "fleetboot-test"}},
		{name: "dir cannot be created",
			cfg:     Config{URL: "dir:///proc/fleetboot-store"},
			wantErr: []string{"directory store /proc/fleetboot-store"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The test bounds itself: a hang fails here rather than at the
			// package timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := Open(ctx, tt.cfg)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-ctx.Done():
				t.Fatalf("Open did not return within 30s")
			}
			if err == nil {
				t.Fatalf("Open succeeded, want an error")
			}
			msg := err.Error()
			for _, w := range tt.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			t.Logf("error: %s", msg)
			if strings.Contains(msg, secret) || strings.Contains(msg, m.SecretKey) {
				t.Errorf("error leaks a secret key: %q", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestOpenCreatesBucket(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	m := miniotest.Start(t)
	cfg := Config{URL: "s3://fresh-bucket?endpoint=" + m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
	// Twice: the second Open finds the bucket the first one created.
	for i := 0; i < 2; i++ {
		s, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		if err := s.Put(context.Background(), "probe", strings.NewReader("ok"), 2); err != nil {
			t.Fatalf("Put after Open #%d: %v", i+1, err)
		}
	}
	// MinIO keeps a bucket as a directory under its data dir.
	if st, err := os.Stat(filepath.Join(m.Dir, "fresh-bucket")); err != nil || !st.IsDir() {
		t.Errorf("bucket directory in MinIO's data dir: %v", err)
	}
}

// TestGetRange: both stores give a part of an object and its whole size,
// which is how the edge cache notices an object shorter or longer than
// registered when it fetches parts; a missing object is ErrNotFound, a
// nonsense range an error that changes nothing.
func TestGetRange(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs a MinIO server")
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			data := make([]byte, 100_000)
			rand.Read(data)
			if err := b.store.Put(ctx, "obj", bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
			s := b.store
			if c, ok := s.(*countingStore); ok {
				s = c.Store
			}
			rr, ok := s.(RangeReader)
			if !ok {
				t.Fatalf("%T does not read ranges", s)
			}
			tests := []struct {
				name   string
				off, n int64
				want   []byte
			}{
				{"start", 0, 10, data[:10]},
				{"middle", 4096, 50_000, data[4096:54096]},
				{"end", 99_990, 10, data[99_990:]},
				{"past the end", 99_990, 100, data[99_990:]},
				{"one byte", 0, 1, data[:1]},
			}
			for _, tt := range tests {
				body, size, err := rr.GetRange(ctx, "obj", tt.off, tt.n)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				got, err := io.ReadAll(body)
				body.Close()
				if err != nil {
					t.Fatalf("%s: read: %v", tt.name, err)
				}
				if size != int64(len(data)) || !bytes.Equal(got, tt.want) {
					t.Errorf("%s: size %d, %d bytes; want size %d, %d bytes", tt.name, size, len(got), len(data), len(tt.want))
				}
			}
			if _, _, err := rr.GetRange(ctx, KeyFor(strings.Repeat("0", 64)), 0, 10); !errors.Is(err, ErrNotFound) {
				t.Errorf("GetRange(missing) = %v, want ErrNotFound", err)
			}
			for _, bad := range [][2]int64{{-1, 10}, {0, 0}, {5, -3}} {
				if _, _, err := rr.GetRange(ctx, "obj", bad[0], bad[1]); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("GetRange(off %d, n %d) = %v, want a range error", bad[0], bad[1], err)
				}
			}
		})
	}
}
