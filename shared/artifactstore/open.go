package artifactstore

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds how long Open waits to prove the store is reachable
// and the credentials work, so a wrong endpoint fails fast instead of hanging
// a CLI command or an edge start-up.
const DefaultTimeout = 10 * time.Second

// Config names a store and the credentials to reach it.
type Config struct {
	// URL is s3://BUCKET?endpoint=HOST:PORT&region=R&tls=true|false or
	// dir:///ABSOLUTE/PATH.
	URL string
	// AccessKey and SecretKey are the S3 credentials; both empty means
	// anonymous access. Ignored by the directory backend.
	AccessKey, SecretKey string
	// Timeout bounds Open's reachability and credential check; 0 means
	// DefaultTimeout.
	Timeout time.Duration
}

// ConfigFromEnv returns a Config for url with the credentials taken from the
// environment: FLEETBOOT_S3_ACCESS_KEY / FLEETBOOT_S3_SECRET_KEY first, then
// the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. It is kept apart
// from Open so that Open depends only on its arguments.
func ConfigFromEnv(url string) Config {
	cfg := Config{URL: url}
	cfg.AccessKey, cfg.SecretKey = os.Getenv("FLEETBOOT_S3_ACCESS_KEY"), os.Getenv("FLEETBOOT_S3_SECRET_KEY")
	if cfg.AccessKey == "" && cfg.SecretKey == "" {
		cfg.AccessKey, cfg.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	}
	return cfg
}

// Open parses cfg.URL, connects to the store and checks, within cfg.Timeout,
// that it is reachable and usable: for S3 the credentials are accepted and
// the bucket exists (it is created if missing); for a directory it exists
// (created if missing) and is writable. Errors are one line naming the
// redacted URL, endpoint and bucket, never the secret key.
func Open(ctx context.Context, cfg Config) (Store, error) {
	loc, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch loc.scheme {
	case "dir":
		return openDir(loc.path)
	default:
		if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
			return nil, fmt.Errorf("artifactstore: s3 endpoint %s bucket %s: only one of access key and secret key is set; set both (FLEETBOOT_S3_ACCESS_KEY and FLEETBOOT_S3_SECRET_KEY) or neither", loc.endpoint, loc.bucket)
		}
		s, err := openS3(ctx, loc, cfg.AccessKey, cfg.SecretKey, timeout)
		if err != nil {
			return nil, scrub(err, cfg.SecretKey)
		}
		return s, nil
	}
}

// location is a parsed store URL.
type location struct {
	scheme   string // "s3" or "dir"
	bucket   string
	endpoint string // host:port
	region   string
	secure   bool
	path     string // dir root
}

func parseURL(raw string) (location, error) {
	shown := Redact(raw)
	if raw == "" {
		return location{}, fmt.Errorf("artifactstore: empty store URL: want s3://BUCKET?endpoint=HOST:PORT or dir:///PATH")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, fmt.Errorf("artifactstore: store URL %q is not a URL: want s3://BUCKET?endpoint=HOST:PORT or dir:///PATH", shown)
	}
	if u.User != nil {
		return location{}, fmt.Errorf("artifactstore: store URL %q carries credentials: pass them in FLEETBOOT_S3_ACCESS_KEY / FLEETBOOT_S3_SECRET_KEY instead", shown)
	}
	switch u.Scheme {
	case "dir":
		if u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return location{}, fmt.Errorf("artifactstore: store URL %q: a directory store needs an absolute path, as in dir:///var/lib/fleetboot/artifacts", shown)
		}
		if u.RawQuery != "" {
			return location{}, fmt.Errorf("artifactstore: store URL %q: a directory store takes no parameters", shown)
		}
		return location{scheme: "dir", path: u.Path}, nil
	case "s3":
		return parseS3(u, shown)
	default:
		return location{}, fmt.Errorf("artifactstore: store URL %q: unknown scheme %q: want s3://BUCKET?endpoint=HOST:PORT or dir:///PATH", shown, u.Scheme)
	}
}

func parseS3(u *url.URL, shown string) (location, error) {
	loc := location{scheme: "s3", bucket: u.Host, region: "us-east-1", endpoint: "s3.amazonaws.com"}
	if loc.bucket == "" {
		return location{}, fmt.Errorf("artifactstore: store URL %q names no bucket: want s3://BUCKET?endpoint=HOST:PORT", shown)
	}
	if err := checkBucketName(loc.bucket); err != nil {
		return location{}, fmt.Errorf("artifactstore: store URL %q: %w", shown, err)
	}
	if u.Path != "" && u.Path != "/" {
		return location{}, fmt.Errorf("artifactstore: store URL %q: a path after the bucket is not supported", shown)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return location{}, fmt.Errorf("artifactstore: store URL %q: parameters do not parse: %w", shown, err)
	}
	tlsSet := false
	for k, vs := range q {
		if len(vs) != 1 {
			return location{}, fmt.Errorf("artifactstore: store URL %q: parameter %q given %d times", shown, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			host, port, err := net.SplitHostPort(v)
			if err != nil || host == "" {
				return location{}, fmt.Errorf("artifactstore: store URL %q: endpoint %q is not HOST:PORT", shown, v)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return location{}, fmt.Errorf("artifactstore: store URL %q: endpoint %q has an invalid port", shown, v)
			}
			loc.endpoint = v
		case "region":
			if v == "" {
				return location{}, fmt.Errorf("artifactstore: store URL %q: empty region", shown)
			}
			loc.region = v
		case "tls":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return location{}, fmt.Errorf("artifactstore: store URL %q: tls=%q is not true or false", shown, v)
			}
			loc.secure, tlsSet = b, true
		default:
			return location{}, fmt.Errorf("artifactstore: store URL %q: unknown parameter %q (known: endpoint, region, tls)", shown, k)
		}
	}
	if !tlsSet {
		// A MinIO on loopback is a development or test set-up and almost
		// never has a certificate; anything else should be TLS.
		loc.secure = !isLoopback(loc.endpoint)
	}
	return loc, nil
}

func isLoopback(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkBucketName applies S3's bucket naming rules (3-63 characters of
// lower-case letters, digits, dots and hyphens, starting and ending with a
// letter or digit), so a typo fails at parse time with a clear message.
func checkBucketName(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters", b)
	}
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' || c == '.') && i > 0 && i < len(b)-1
		if !ok {
			return fmt.Errorf("bucket name %q: only lower-case letters, digits, '.' and '-' (not first or last) are allowed", b)
		}
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q must not contain \"..\"", b)
	}
	return nil
}

// Redact returns url with anything that could be a credential removed, for
// logs and error messages: user info (s3://KEY:SECRET@bucket) and query
// parameters whose names look like keys, secrets, tokens or passwords.
// Something that does not parse is replaced entirely, since we cannot tell
// which part of it is secret.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable store URL>"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			for _, w := range []string{"key", "secret", "token", "password", "credential", "signature"} {
				if strings.Contains(lk, w) {
					q[k] = []string{"REDACTED"}
					break
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// scrub is a last line of defence: should a library ever echo the secret in
// an error, the caller still never sees it.
func scrub(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return scrubbed{msg: strings.ReplaceAll(err.Error(), secret, "REDACTED"), err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }

// Unwrap keeps errors.Is working (for ErrNotFound, context errors) without
// exposing the original text through Error.
func (s scrubbed) Unwrap() error { return s.err }
