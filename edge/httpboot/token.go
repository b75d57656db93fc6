package httpboot

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// Callback tokens. Every script that boots an image carries a token for the
// MAC it was rendered for (fleetboot.token= on the kernel command line, and
// the {{token}} and {{callback}} template variables), and the edge accepts
// an installer's callback (POST /api/v1/done, /api/v1/facts) only with the
// token of that MAC, in the query (token=) or the TokenHeader header.
//
// A token is an HMAC-SHA256, under a key only the edge holds, of the MAC and
// the boot: the host record's version (its Updated time) for a known host,
// a fixed word for an unknown one. The edge keeps no list of tokens, and a
// token stays valid while the host's assignment is unchanged: after `done`
// turns a --once host to local boot, or after any `host set`, the earlier
// tokens of that host are refused. The key is created once under the
// edge's state directory, so tokens survive an edge restart.
//
// The token travels in plain HTTP and anyone who can ask for a MAC's script
// gets it; that is why a callback must also come from the address the edge
// knows for that machine, when it knows one (see Handler.fromKnownAddress).

// TokenHeader carries the callback token when it is not in the query.
const TokenHeader = "X-Fleetboot-Token"

// CallbackKeySize is the length of the callback key in bytes.
const CallbackKeySize = 32

// LoadCallbackKey reads the edge's callback key from path, creating it (mode
// 0600) with a random key if the file does not exist.
func LoadCallbackKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key = make([]byte, CallbackKeySize)
		rand.Read(key) // never fails on supported platforms (crypto/rand panics instead)
		if err := atomicfile.WriteFile(path, key, 0o600); err != nil {
			return nil, fmt.Errorf("httpboot: create callback key: %w", err)
		}
		return key, nil
	case err != nil:
		return nil, fmt.Errorf("httpboot: callback key: %w", err)
	case len(key) != CallbackKeySize:
		return nil, fmt.Errorf("httpboot: callback key %s has %d bytes, want %d: remove it to make a new one (tokens in scripts already served stop working)",
			path, len(key), CallbackKeySize)
	}
	return key, nil
}

// token is the callback token of mac for the boot the state describes now
// (host nil: the MAC is unknown to the coordinator).
func token(key []byte, mac string, host *proto.Host) string {
	boot := "unknown"
	if host != nil {
		boot = "host " + host.Updated.UTC().Format(time.RFC3339Nano)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("fleetboot callback v1\x00" + mac + "\x00" + boot))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validToken compares in constant time, so the time of a refusal says
// nothing about how much of a guess was right.
func validToken(key []byte, mac string, host *proto.Host, got string) bool {
	want := token(key, mac, host)
	return hmac.Equal([]byte(want), []byte(got))
}
