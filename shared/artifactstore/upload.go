package artifactstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// Uploaded reports what UploadFile stored.
type Uploaded struct {
	Key     string // "sha256/<hex>"
	Size    int64
	SHA256  string // lower-case hex
	Skipped bool   // the object was already there: nothing was uploaded
}

// KeyFor is the content-addressed key of an object with this sha256 (hex).
func KeyFor(sha256hex string) string { return "sha256/" + sha256hex }

// UploadFile stores the file at path under its content address
// (sha256/<hex>). When an object of the same size already exists under that
// key nothing is uploaded (Skipped): adding identical content again costs
// one hash and one Stat. progress, if not nil, is called as bytes are sent
// (total is the file size), and once with done == total at the end.
//
// The file is read twice, once to hash and once to send; the second read is
// hashed too, and a file that changed in between is reported as an error
// (the object then stored under the key may not match it, which is why
// readers such as the edge cache verify digests before use).
func UploadFile(ctx context.Context, s Store, path string, progress func(done, total int64)) (Uploaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return Uploaded{}, fmt.Errorf("artifactstore: upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: not a regular file", path)
	}
	size := st.Size()
	h := sha256.New()
	if n, err := io.Copy(h, ctxReader{ctx: ctx, r: f}); err != nil {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: hash: %w", path, err)
	} else if n != size {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: file changed while hashing (%d bytes read, %d expected)", path, n, size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	up := Uploaded{Key: KeyFor(sum), Size: size, SHA256: sum}

	info, err := s.Stat(ctx, up.Key)
	switch {
	case err == nil && info.Size == size:
		up.Skipped = true
		if progress != nil {
			progress(size, size)
		}
		return up, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: %w", path, err)
	}

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: %w", path, err)
	}
	pr := &progressReader{r: f, h: sha256.New(), total: size, progress: progress}
	if err := s.Put(ctx, up.Key, pr, size); err != nil {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: %w", path, err)
	}
	if got := hex.EncodeToString(pr.h.Sum(nil)); pr.done != size || got != sum {
		return Uploaded{}, fmt.Errorf("artifactstore: upload %s: file changed during upload (sha256 %s, then %s)", path, sum, got)
	}
	if progress != nil {
		progress(size, size)
	}
	return up, nil
}

// progressReader hashes what is sent and reports how far it got. It
// deliberately hides the file's ReadAt/Seek so the S3 client streams it
// sequentially, one part buffer at a time, and every byte passes the hash.
type progressReader struct {
	r        io.Reader
	h        hash.Hash
	done     int64
	total    int64
	progress func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.h.Write(b[:n])
		p.done += int64(n)
		if p.progress != nil && p.done < p.total {
			p.progress(p.done, p.total)
		}
	}
	return n, err
}
