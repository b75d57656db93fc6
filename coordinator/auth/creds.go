package auth

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// NewUserKey makes the key pair of a new credential. The caller keeps the
// seed and sends only the public key for signing.
func NewUserKey() (pub string, seed []byte, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", nil, fmt.Errorf("auth: %w", err)
	}
	if pub, err = kp.PublicKey(); err != nil {
		return "", nil, fmt.Errorf("auth: %w", err)
	}
	if seed, err = kp.Seed(); err != nil {
		return "", nil, fmt.Errorf("auth: %w", err)
	}
	return pub, seed, nil
}

// WriteCreds writes a standard NATS credentials file (JWT and seed), 0600.
// It never overwrites: a creds file may be the only copy of a live key.
func WriteCreds(path, userJWT string, seed []byte) error {
	data, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return fmt.Errorf("auth: format credentials: %w", err)
	}
	return writeSecret(path, data)
}

// writeSecret writes a file only its owner may read, never overwriting.
func writeSecret(path string, data []byte) error { return writeNew(path, data, 0o600) }

// writeNew creates path with data and perm; it never replaces a file, and
// removes what it wrote when the write fails.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}

// InboxPrefix returns the private inbox prefix a credentials file's user
// must use ("" when it may use the shared _INBOX). An edge must connect
// with nats.CustomInboxPrefix(prefix), or every reply to it is refused.
func InboxPrefix(credsFile string) (string, error) {
	uc, err := credsClaims(credsFile)
	if err != nil {
		return "", err
	}
	for _, s := range uc.Sub.Allow {
		if s == "_INBOX.>" || s == ">" {
			return "", nil
		}
	}
	for _, s := range uc.Sub.Allow {
		if strings.HasPrefix(s, "_INBOX_") && strings.HasSuffix(s, ".>") {
			return strings.TrimSuffix(s, ".>"), nil
		}
	}
	return "", nil
}

// CredsSite returns the site a credentials file's user is confined to (a
// site admin's or an edge's, from the JWT's site tag), "" when it reads
// every site. Its NATS permissions let it read only that site's events, so
// event readers must filter on it.
func CredsSite(credsFile string) (string, error) {
	uc, err := credsClaims(credsFile)
	if err != nil {
		return "", err
	}
	for _, t := range uc.Tags {
		if site, ok := strings.CutPrefix(t, "site:"); ok {
			return site, nil
		}
	}
	return "", nil
}

// credsClaims reads the user JWT of a credentials file.
func credsClaims(credsFile string) (*jwt.UserClaims, error) {
	data, err := os.ReadFile(credsFile)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	tok, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return nil, fmt.Errorf("auth: %s is not a NATS credentials file", credsFile)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, fmt.Errorf("auth: %s is not a NATS credentials file", credsFile)
	}
	return uc, nil
}
