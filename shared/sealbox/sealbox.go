// Package sealbox seals a host's BMC password to an edge's curve key
// (nkeys xkeys: X25519 + XSalsa20-Poly1305) so that only that edge can open
// it. The CLI seals (it reads the password file), the edge opens; the
// coordinator stores and forwards boxes it cannot read.
//
// Each box is sealed with a one-time sender key, whose public half travels
// with it, and binds the host's MAC: an edge opens a box only for the host
// it was sealed for, so a box copied onto another host's record is refused.
package sealbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// magic starts every sealed plaintext: its format version.
const magic = "fleetboot-bmc-password-v1\n"

// ErrNotForUs: the box is sealed to another key, or for another host.
var ErrNotForUs = errors.New("sealbox: sealed for another edge key or host")

// Seal seals secret for the holder of the curve key recipient, bound to mac
// (canonical colon form).
func Seal(secret []byte, mac, recipient string) (proto.SealedSecret, error) {
	if !nkeys.IsValidPublicCurveKey(recipient) {
		return proto.SealedSecret{}, fmt.Errorf("sealbox: %q is not a public curve key", recipient)
	}
	sender, err := nkeys.CreateCurveKeys()
	if err != nil {
		return proto.SealedSecret{}, fmt.Errorf("sealbox: %w", err)
	}
	defer sender.Wipe()
	pub, err := sender.PublicKey()
	if err != nil {
		return proto.SealedSecret{}, fmt.Errorf("sealbox: %w", err)
	}
	plain := make([]byte, 0, len(magic)+len(mac)+1+len(secret))
	plain = append(append(append(append(plain, magic...), mac...), '\n'), secret...)
	box, err := sender.Seal(plain, recipient)
	clear(plain)
	if err != nil {
		return proto.SealedSecret{}, fmt.Errorf("sealbox: %w", err)
	}
	return proto.SealedSecret{XKey: recipient, Sender: pub, Box: box}, nil
}

// Open opens a box sealed to kp for the host mac. The caller wipes the
// result (clear) when done.
func Open(kp nkeys.KeyPair, s proto.SealedSecret, mac string) ([]byte, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	if s.XKey != pub {
		return nil, ErrNotForUs
	}
	plain, err := kp.Open(s.Box, s.Sender)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotForUs, err)
	}
	head := []byte(magic + mac + "\n")
	if !bytes.HasPrefix(plain, head) {
		clear(plain)
		return nil, ErrNotForUs
	}
	secret := bytes.Clone(plain[len(head):])
	clear(plain)
	return secret, nil
}

// LoadOrCreateKey returns the curve key pair kept in path (its seed, mode
// 0600), creating it on first use. An edge keeps it in its state directory:
// a new key makes every password sealed to the old one unreadable, and
// `fleetboot host bmc` must seal them again.
func LoadOrCreateKey(path string) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromCurveSeed(bytes.TrimSpace(seed))
		clear(seed)
		if err != nil {
			return nil, fmt.Errorf("sealbox: curve key %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	seed, err = kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	defer clear(seed)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("sealbox: write curve key: %w", err)
	}
	return kp, nil
}

// Redact replaces every occurrence of secret in s: output of a tool that
// was given the secret is never passed on with it.
func Redact(s string, secret []byte) string {
	if len(secret) == 0 {
		return s
	}
	return strings.ReplaceAll(s, string(secret), "[redacted]")
}
