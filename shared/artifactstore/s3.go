package artifactstore

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// partSize is the multipart chunk: an upload holds at most one part in
// memory, so a multi-gigabyte ISO streams through a bounded buffer.
const partSize = 16 << 20

// s3Store keeps objects in one bucket of an S3-compatible service.
type s3Store struct {
	c        *minio.Client
	bucket   string
	endpoint string
}

func openS3(ctx context.Context, loc location, accessKey, secretKey string, timeout time.Duration) (*s3Store, error) {
	where := fmt.Sprintf("artifactstore: s3 endpoint %s bucket %s", loc.endpoint, loc.bucket)
	c, err := minio.New(loc.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure: loc.secure,
		Region: loc.region,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// Dial first: the S3 client retries a refused connection until the
	// deadline and then reports only "context deadline exceeded", while the
	// operator wants to read "connection refused" or "no such host".
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", loc.endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s: not reachable: %w", where, err)
	}
	conn.Close()
	exists, err := c.BucketExists(ctx, loc.bucket)
	if err != nil {
		return nil, describe(ctx, where, timeout, err)
	}
	if !exists {
		err := c.MakeBucket(ctx, loc.bucket, minio.MakeBucketOptions{Region: loc.region})
		// Another process may have created it between the two calls.
		if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
			return nil, describe(ctx, where, timeout, fmt.Errorf("create bucket: %w", err))
		}
	}
	return &s3Store{c: c, bucket: loc.bucket, endpoint: loc.endpoint}, nil
}

// describe turns the errors an operator actually meets into a line that
// says what to fix.
func describe(ctx context.Context, where string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: not reachable within %s: %w", where, timeout, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.InvalidAccessKeyID, resp.Code == minio.SignatureDoesNotMatch,
		resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s: credentials rejected (check FLEETBOOT_S3_ACCESS_KEY / FLEETBOOT_S3_SECRET_KEY): %w", where, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}

func (s *s3Store) wrap(op, key string, err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code == minio.NoSuchKey {
		return fmt.Errorf("%w: s3 %s/%s", ErrNotFound, s.bucket, key)
	}
	return fmt.Errorf("artifactstore: s3 %s %s/%s at %s: %w", op, s.bucket, key, s.endpoint, err)
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("artifactstore: put %s: negative size %d", key, size)
	}
	info, err := s.c.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{
		PartSize:    partSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return s.wrap("put", key, err)
	}
	if info.Size != size {
		return fmt.Errorf("artifactstore: s3 put %s/%s: stored %d bytes, want %d", s.bucket, key, info.Size, size)
	}
	return nil
}

// Get sends the GET at once (a missing object is ErrNotFound here, not a
// read error later) and returns the response body itself: minio.Object
// would add a goroutine and a channel hop per read, which a cold cache miss
// of a large ISO pays for every few KiB.
func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	body, _, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	return body, nil
}

// GetRange GETs bytes off..off+n-1 and reads the object's size from the
// Content-Range of the answer.
func (s *s3Store) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, int64, error) {
	if err := checkKey(key); err != nil {
		return nil, 0, err
	}
	if err := checkRange(key, off, n); err != nil {
		return nil, 0, err
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, 0, fmt.Errorf("artifactstore: get %s: %w", key, err)
	}
	body, _, hdr, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		return nil, 0, s.wrap("get", key, err)
	}
	size, err := contentRangeSize(hdr.Get("Content-Range"))
	if err != nil {
		body.Close()
		return nil, 0, fmt.Errorf("artifactstore: s3 get %s/%s at %s: %w", s.bucket, key, s.endpoint, err)
	}
	return body, size, nil
}

// contentRangeSize is the complete length of "bytes a-b/size".
func contentRangeSize(v string) (int64, error) {
	_, total, ok := strings.Cut(v, "/")
	if !strings.HasPrefix(v, "bytes ") || !ok {
		return 0, fmt.Errorf("answer without a usable Content-Range (%q): the store ignored the range", v)
	}
	size, err := strconv.ParseInt(total, 10, 64)
	if err != nil || size < 0 {
		return 0, fmt.Errorf("invalid Content-Range %q", v)
	}
	return size, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	info, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: info.Size}, nil
}
