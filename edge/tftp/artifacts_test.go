package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ptftp "github.com/pin/tftp/v3"

	"github.com/fleetboot/fleetboot/proto"
)

var errNoImage = errors.New("unknown image")

// fakeImages serves the artifacts it holds, by "<image>/<file>", and the
// loaders' files by "loader:<loader>/<file>".
type fakeImages map[string]proto.Artifact

func (f fakeImages) ArtifactFor(image, file string) (proto.Artifact, error) {
	if a, ok := f[image+"/"+file]; ok {
		return a, nil
	}
	return proto.Artifact{}, fmt.Errorf("%w: %q", errNoImage, image)
}

func (f fakeImages) LoaderFileFor(loader, file string) (proto.Artifact, error) {
	if a, ok := f["loader:"+loader+"/"+file]; ok {
		return a, nil
	}
	return proto.Artifact{}, fmt.Errorf("%w: loader %q", errNoImage, loader)
}

// filesFunc adapts a function to VerifiedFiles.
type filesFunc func(ctx context.Context, a proto.Artifact) (*os.File, error)

func (f filesFunc) Open(ctx context.Context, a proto.Artifact) (*os.File, error) { return f(ctx, a) }

// neverVerified plays a fetch that does not finish: Open waits for ctx.
var neverVerified = filesFunc(func(ctx context.Context, _ proto.Artifact) (*os.File, error) {
	<-ctx.Done()
	return nil, ctx.Err()
})

func artifactOf(name string, b []byte) proto.Artifact {
	s := sha256.Sum256(b)
	return proto.Artifact{Role: proto.RoleKernel, Name: name, Key: "k/" + name, Size: int64(len(b)), SHA256: hex.EncodeToString(s[:])}
}

// fetchWithOptions reads file as firmware does (blksize, tsize).
func fetchWithOptions(addr, file string) (tsize int64, body []byte, err error) {
	c, err := ptftp.NewClient(addr)
	if err != nil {
		return -1, nil, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return -1, nil, err
	}
	tsize = -1
	if n, ok := wt.(ptftp.IncomingTransfer).Size(); ok {
		tsize = n
	}
	var b bytes.Buffer
	_, err = wt.WriteTo(&b)
	return tsize, b.Bytes(), err
}

// TestArtifactWaitBounded: a request for an artifact whose fetch does not
// finish gets its OACK (true tsize), then, after ArtifactWait, an error
// packet and not one byte of data; the edge logs and records it.
func TestArtifactWaitBounded(t *testing.T) {
	a := artifactOf("vmlinuz", bytes.Repeat([]byte("k"), 5000))
	f := startServerWith(t, false, func(c *Config) {
		c.Images = fakeImages{"deb/vmlinuz": a}
		c.Cache = neverVerified
		c.ArtifactWait = 200 * time.Millisecond
	})
	tsize, body, err := fetchWithOptions(f.addr.String(), "artifacts/deb/vmlinuz")
	if err == nil || !strings.Contains(err.Error(), "not available") || len(body) != 0 {
		t.Fatalf("err %v, %d bytes: want the not-available error and no data", err, len(body))
	}
	if tsize != a.Size {
		t.Errorf("tsize = %d, want %d", tsize, a.Size)
	}
	e := waitEvent(t, f.events, proto.EventTFTPError, "artifacts/deb/vmlinuz")
	if e.Detail["sha256"] != a.SHA256 || e.Detail["bytes"] != "0" {
		t.Errorf("event = %+v", e)
	}
	if !strings.Contains(f.logs.String(), "artifact not sent: not verified") {
		t.Errorf("no log line; logs:\n%s", f.logs)
	}
}

// TestArtifactFromVerifiedFile: the bytes come from the verified file, an
// empty artifact included (tsize 0), and the artifacts/
// prefix is the artifacts' alone: a boot-dir file under it is not served.
func TestArtifactFromVerifiedFile(t *testing.T) {
	dir := t.TempDir()
	content := map[string][]byte{"vmlinuz": bytes.Repeat([]byte("0123456789"), 1000), "empty": {}}
	imgs := fakeImages{}
	for name, b := range content {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		imgs["deb/"+name] = artifactOf(name, b)
	}
	f := startServerWith(t, false, func(c *Config) {
		c.Images = imgs
		c.Cache = filesFunc(func(_ context.Context, a proto.Artifact) (*os.File, error) {
			return os.Open(filepath.Join(dir, a.Name))
		})
	})
	if err := os.MkdirAll(filepath.Join(f.root, "artifacts", "deb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, "artifacts", "deb", "other"), []byte("BOOTDIR"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, want := range content {
		tsize, body, err := fetchWithOptions(f.addr.String(), "/artifacts/deb/"+name)
		if err != nil || !bytes.Equal(body, want) {
			t.Errorf("%s: err %v, %d bytes, want %d", name, err, len(body), len(want))
		}
		if tsize != int64(len(want)) {
			t.Errorf("%s: tsize %d, want %d", name, tsize, len(want))
		}
	}
	if _, body, err := fetchWithOptions(f.addr.String(), "artifacts/deb/other"); err == nil || !strings.Contains(err.Error(), "file not found") {
		t.Errorf("boot-dir file under artifacts/: err %v, body %q", err, body)
	}
}
