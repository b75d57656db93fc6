package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// hostCount is how many hosts the coordinator stores (the hosts bucket's
// live keys), read from the stream's state: listing 100 000 hosts through
// the API just to count them would measure the listing.
func hostCount(t *testing.T, url string) int {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), proto.BucketHosts)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n
}

// importFile writes a CSV of n hosts at site lab (10.0.0.0/8), one per
// line from line 2, with the given lines replaced.
func importFile(t *testing.T, dir string, n int, replace map[int]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("mac,site,image,ip,hostname,labels\n")
	for i := range n {
		line := i + 2
		if r, ok := replace[line]; ok {
			b.WriteString(r + "\n")
			continue
		}
		fmt.Fprintf(&b, "02:00:00:%02x:%02x:%02x,lab,debian12,10.%d.%d.%d,h%d,rack=r%d;role=web\n",
			byte(i>>16), byte(i>>8), byte(i), 1+i>>16, byte(i>>8), byte(i), i, i/40)
	}
	p := filepath.Join(dir, fmt.Sprintf("hosts-%d.csv", n))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImport100k: 100 000 hosts with 3 bad lines. By default nothing is
// imported and the 3 lines are named with their numbers and reasons; with
// --skip-invalid the 99 997 others are, and the 3 are named again.
func TestImport100k(t *testing.T) {
	if testing.Short() {
		t.Skip("short: imports 100 000 hosts")
	}
	url := startCoordinator(t, "dir://"+t.TempDir())
	env := []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_TIMEOUT=60s"}
	files := t.TempDir()
	kernel := writeFile(t, files, "vmlinuz", "kernel bytes")
	initrd := writeFile(t, files, "initrd.img", "initrd bytes")
	for _, args := range [][]string{
		{"site", "add", "lab", "--subnet", "10.0.0.0/8"},
		{"image", "add", "debian12", "--kernel", kernel, "--initrd", initrd},
	} {
		if r := run(t, env, args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
	}
	const n = 100_000
	file := importFile(t, files, n, map[int]string{
		1002:  "02:00:00:zz:03:e8,lab,debian12,,,",
		50001: "02:00:00:00:c3:4f,lab,debian12,192.168.1.5,,",
		99999: "02:00:00:01:86:9d,lab,debian13,,,",
	})
	wantBad := "line 1002: 02:00:00:zz:03:e8: invalid MAC address \"02:00:00:zz:03:e8\": want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff\n" +
		"line 50001: 02:00:00:00:c3:4f: IP 192.168.1.5 is not inside any subnet of site lab (10.0.0.0/8)\n" +
		"line 99999: 02:00:00:01:86:9d: image debian13: not found\n"

	start := time.Now()
	r := run(t, env, "host", "import", file)
	checkTook := time.Since(start)
	if r.code != 1 || r.stdout != wantBad {
		t.Fatalf("import with 3 bad lines: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, wantBad, r.stderr)
	}
	if want := "fleetboot: nothing imported: 3 of 100000 lines are bad (listed above; --skip-invalid imports the others)\n"; !strings.HasSuffix(r.stderr, want) {
		t.Errorf("stderr:\n%s\nwant it to end with %q", r.stderr, want)
	}
	if !strings.Contains(r.stderr, "checked 100000/100000\n") {
		t.Errorf("no progress on stderr:\n%s", r.stderr)
	}
	if got := hostCount(t, url); got != 0 {
		t.Fatalf("a refused import stored %d hosts", got)
	}

	start = time.Now()
	r = run(t, env, "host", "import", file, "--skip-invalid")
	applyTook := time.Since(start)
	if want := wantBad + "created 99997, changed 0, unchanged 0, refused 3\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("import --skip-invalid: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
	if got := hostCount(t, url); got != n-3 {
		t.Fatalf("stored %d hosts, want %d", got, n-3)
	}
	// The same file again changes nothing.
	start = time.Now()
	r = run(t, env, "host", "import", file, "--skip-invalid", "-q")
	againTook := time.Since(start)
	if want := wantBad + "created 0, changed 0, unchanged 99997, refused 3\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("import again: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("100 000 lines: check only (refused) %v; check + import %v (%.0f hosts/s); again, all unchanged, %v",
		checkTook.Round(time.Millisecond), applyTook.Round(time.Millisecond), float64(n-3)/applyTook.Seconds(), againTook.Round(time.Millisecond))

	// One request changes every host of a rack; --dry-run first.
	r = run(t, env, "host", "set", "--selector", "labels.rack=r7,labels.role=web", "--image", "debian12", "--dry-run")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "40 host(s) match; nothing changed (--dry-run)\n02:00:00:00:01:18\n") {
		t.Errorf("host set --selector --dry-run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, env, "host", "set", "--selector", "labels.rack=r7", "--image", "debian12")
	if r.code != 0 || r.stdout != "40 host(s) match: changed 0, unchanged 40, refused 0\n" {
		t.Errorf("host set --selector: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
