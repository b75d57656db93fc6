package sealbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
)

func curveKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// A password sealed to one site's edge opens there, for that host only;
// another site's edge cannot open it, not even by relabelling the box with
// its own key, and a tampered box opens nowhere.
func TestOnlyTheSealedEdgeOpens(t *testing.T) {
	const mac, other = "52:54:00:00:00:01", "52:54:00:00:00:02"
	secret := []byte("bmc-pass-Ω-123")
	edgeA, pubA := curveKey(t)
	edgeB, pubB := curveKey(t)
	box, err := Seal(secret, mac, pubA)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box.Box, secret) {
		t.Fatal("the box holds the secret in clear")
	}
	got, err := Open(edgeA, box, mac)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("edge A opens: %q, %v", got, err)
	}
	relabelled := box
	relabelled.XKey = pubB
	tampered := box
	tampered.Box = bytes.Clone(box.Box)
	tampered.Box[len(tampered.Box)-1] ^= 1
	for _, c := range []struct {
		name string
		kp   nkeys.KeyPair
		box  proto.SealedSecret
		mac  string
	}{
		{"another site's edge", edgeB, box, mac},
		{"another site's edge, box relabelled with its key", edgeB, relabelled, mac},
		{"the right edge, for another host", edgeA, box, other},
		{"the right edge, box tampered", edgeA, tampered, mac},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Open(c.kp, c.box, c.mac)
			if !errors.Is(err, ErrNotForUs) || got != nil {
				t.Fatalf("Open = %q, %v; want ErrNotForUs", got, err)
			}
		})
	}
	if _, err := Seal(secret, mac, "UNOTAKEY"); err == nil {
		t.Error("sealed to a string that is not a curve key")
	}
}

// The edge's key survives a restart (same file, same key) and its seed
// file is readable by its owner only.
func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "xkey.seed")
	a, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.PublicKey()
	pb, _ := b.PublicKey()
	if pa != pb || !nkeys.IsValidPublicCurveKey(pa) {
		t.Fatalf("keys %s and %s; want one curve key", pa, pb)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Error("a corrupt seed file was accepted")
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("Error: pw hunter2 refused hunter2", []byte("hunter2")); got != "Error: pw [redacted] refused [redacted]" {
		t.Errorf("Redact = %q", got)
	}
}
