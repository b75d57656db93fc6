package artifactstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    location
		wantErr string // substring; empty means success
	}{
		{name: "s3 loopback defaults to plain http", url: "s3://artifacts?endpoint=127.0.0.1:9000",
			want: location{scheme: "s3", bucket: "artifacts", endpoint: "127.0.0.1:9000", region: "us-east-1"}},
		{name: "s3 localhost", url: "s3://artifacts?endpoint=localhost:9000&region=eu-west-1",
			want: location{scheme: "s3", bucket: "artifacts", endpoint: "localhost:9000", region: "eu-west-1"}},
		{name: "s3 remote defaults to tls", url: "s3://artifacts?endpoint=minio.example.com:9000",
			want: location{scheme: "s3", bucket: "artifacts", endpoint: "minio.example.com:9000", region: "us-east-1", secure: true}},
		{name: "s3 explicit tls off", url: "s3://artifacts?endpoint=10.0.0.5:9000&tls=false",
			want: location{scheme: "s3", bucket: "artifacts", endpoint: "10.0.0.5:9000", region: "us-east-1"}},
		{name: "s3 explicit tls on loopback", url: "s3://artifacts?endpoint=127.0.0.1:9000&tls=true",
			want: location{scheme: "s3", bucket: "artifacts", endpoint: "127.0.0.1:9000", region: "us-east-1", secure: true}},
		{name: "s3 without endpoint is AWS", url: "s3://my-bucket",
			want: location{scheme: "s3", bucket: "my-bucket", endpoint: "s3.amazonaws.com", region: "us-east-1", secure: true}},
		{name: "dir", url: "dir:///var/lib/fleetboot/artifacts",
			want: location{scheme: "dir", path: "/var/lib/fleetboot/artifacts"}},

		{name: "empty", url: "", wantErr: "empty store URL"},
		{name: "unknown scheme", url: "ftp://x", wantErr: `unknown scheme "ftp"`},
		{name: "no scheme", url: "/var/lib/x", wantErr: `unknown scheme ""`},
		{name: "relative dir", url: "dir://relative/path", wantErr: "absolute path"},
		{name: "dir with params", url: "dir:///x?a=b", wantErr: "takes no parameters"},
		{name: "no bucket", url: "s3://?endpoint=127.0.0.1:9000", wantErr: "names no bucket"},
		{name: "bad bucket", url: "s3://Bad_Bucket?endpoint=127.0.0.1:9000", wantErr: "bucket name"},
		{name: "short bucket", url: "s3://ab?endpoint=127.0.0.1:9000", wantErr: "3 to 63"},
		{name: "path after bucket", url: "s3://bucket/sub?endpoint=127.0.0.1:9000", wantErr: "path after the bucket"},
		{name: "endpoint without port", url: "s3://bucket?endpoint=127.0.0.1", wantErr: "not HOST:PORT"},
		{name: "endpoint bad port", url: "s3://bucket?endpoint=127.0.0.1:99999", wantErr: "invalid port"},
		{name: "bad tls", url: "s3://bucket?endpoint=127.0.0.1:9000&tls=maybe", wantErr: "not true or false"},
		{name: "unknown param", url: "s3://bucket?endpoint=127.0.0.1:9000&foo=1", wantErr: `unknown parameter "foo"`},
		{name: "repeated param", url: "s3://bucket?region=a&region=b", wantErr: "given 2 times"},
		{name: "credentials in URL", url: "s3://AKIA:topsecret@bucket?endpoint=127.0.0.1:9000", wantErr: "carries credentials"},
		{name: "bad query", url: "s3://bucket?endpoint=%zz", wantErr: "parameters do not parse"},
		{name: "not a URL", url: "s3://bucket\x7f", wantErr: "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseURL(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				if strings.Contains(err.Error(), "topsecret") {
					t.Errorf("error leaks the secret: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseURL(%q): %v", tt.url, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(location{})); diff != "" {
				t.Errorf("parseURL(%q) mismatch (-want +got):\n%s", tt.url, diff)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct {
		name, url, want string
	}{
		{name: "plain s3", url: "s3://bucket?endpoint=127.0.0.1:9000", want: "s3://bucket?endpoint=127.0.0.1%3A9000"},
		{name: "user info", url: "s3://AKIA:topsecret@bucket?endpoint=h:1", want: "s3://REDACTED@bucket?endpoint=h%3A1"},
		{name: "secret params", url: "s3://bucket?access_key=AKIA&secret_key=topsecret&region=r",
			want: "s3://bucket?access_key=REDACTED&region=r&secret_key=REDACTED"},
		{name: "token param", url: "s3://bucket?X-Amz-Security-Token=topsecret", want: "s3://bucket?X-Amz-Security-Token=REDACTED"},
		{name: "dir", url: "dir:///srv/artifacts", want: "dir:///srv/artifacts"},
		{name: "unparseable", url: "s3://a:topsecret@b?%zz\x7f", want: "<unparseable store URL>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.url)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Redact(%q) mismatch (-want +got):\n%s", tt.url, diff)
			}
			if strings.Contains(got, "topsecret") {
				t.Errorf("Redact(%q) = %q still holds the secret", tt.url, got)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Config
	}{
		{name: "fleetboot variables win",
			env:  map[string]string{"FLEETBOOT_S3_ACCESS_KEY": "fa", "FLEETBOOT_S3_SECRET_KEY": "fs", "AWS_ACCESS_KEY_ID": "aa", "AWS_SECRET_ACCESS_KEY": "as"},
			want: Config{URL: "s3://b", AccessKey: "fa", SecretKey: "fs"}},
		{name: "aws fallback",
			env:  map[string]string{"AWS_ACCESS_KEY_ID": "aa", "AWS_SECRET_ACCESS_KEY": "as"},
			want: Config{URL: "s3://b", AccessKey: "aa", SecretKey: "as"}},
		{name: "none", want: Config{URL: "s3://b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"FLEETBOOT_S3_ACCESS_KEY", "FLEETBOOT_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
				t.Setenv(k, tt.env[k])
			}
			if diff := cmp.Diff(tt.want, ConfigFromEnv("s3://b")); diff != "" {
				t.Errorf("ConfigFromEnv mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		name, key, wantErr string
	}{
		{name: "content address", key: "sha256/" + strings.Repeat("ab", 32)},
		{name: "nested", key: "images/debian/vmlinuz"},
		{name: "empty", key: "", wantErr: "empty object key"},
		{name: "parent", key: "../etc/passwd", wantErr: "path traversal"},
		{name: "parent inside", key: "a/../../b", wantErr: "path traversal"},
		{name: "dot", key: "a/./b", wantErr: "path traversal"},
		{name: "absolute", key: "/etc/passwd", wantErr: "absolute"},
		{name: "empty segment", key: "a//b", wantErr: "empty path segment"},
		{name: "trailing slash", key: "a/", wantErr: "empty path segment"},
		{name: "hidden", key: "a/.put-123", wantErr: "starting with '.'"},
		{name: "backslash", key: `a\..\b`, wantErr: "backslash"},
		{name: "nul", key: "a\x00b", wantErr: "control character"},
		{name: "too long", key: strings.Repeat("a", 1025), wantErr: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkKey(tt.key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkKey(%q): %v", tt.key, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkKey(%q) = %v, want an error containing %q", tt.key, err, tt.wantErr)
			}
		})
	}
}

func TestOpenRejectsHalfCredentials(t *testing.T) {
	_, err := Open(context.Background(), Config{URL: "s3://bucket?endpoint=127.0.0.1:1", SecretKey: "topsecret"})
	if err == nil || !strings.Contains(err.Error(), "only one of access key and secret key") {
		t.Fatalf("Open with only a secret key: %v", err)
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error leaks the secret: %q", err)
	}
}

func TestScrub(t *testing.T) {
	base := fmt.Errorf("wrapped: %w", ErrNotFound)
	leaky := fmt.Errorf("client said secret=topsecret: %w", base)
	got := scrub(leaky, "topsecret")
	if diff := cmp.Diff("client said secret=REDACTED: wrapped: artifactstore: object not found", got.Error()); diff != "" {
		t.Errorf("scrub mismatch (-want +got):\n%s", diff)
	}
	if !errors.Is(got, ErrNotFound) {
		t.Errorf("scrub broke errors.Is")
	}
	if scrub(base, "topsecret") != base || scrub(base, "") != base {
		t.Errorf("scrub changed an error without the secret")
	}
}
