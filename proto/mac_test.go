package proto

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseMAC(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"colon lower", "aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"},
		{"colon upper", "AA:BB:CC:DD:EE:0F", "aa:bb:cc:dd:ee:0f"},
		{"dash upper", "AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"},
		{"cisco dots", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"},
		{"bare hex", "525400123456", "52:54:00:12:34:56"},
		{"mixed case bare", "52540012AbCd", "52:54:00:12:ab:cd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMAC(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ParseMAC(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseMACRejects(t *testing.T) {
	for _, in := range []string{
		"", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa-bb:cc-dd:ee-ff", "aa:bb:cc:dd:ee:fg",
		"a:bb:cc:dd:ee:fff", "aabb.ccdd.eef", "aabbccddeef", "aabbccddeeffa", " aa:bb:cc:dd:ee:ff",
		"aa:bb:cc:dd:ee:ff\n", "aabb.ccdd.ee.f", "gg:bb:cc:dd:ee:ff", "00:00:00:00:00:0x",
		"aa:bb:cc:dd:e:fff", "+a:bb:cc:dd:ee:ff", "aab.bccd.deeff",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseMAC(in)
			if err == nil {
				t.Fatalf("ParseMAC(%q) accepted", in)
			}
			if want := fmt.Sprintf("%q", in); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not quote the input as %s", err, want)
			}
		})
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF", "aabb.ccdd.eeff", "aabbccddeeff", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		// Canonical output parses to itself, and its key round-trips.
		again, err := ParseMAC(m)
		if err != nil || again != m {
			t.Fatalf("ParseMAC(%q) = %q, not canonical (%q, %v)", s, m, again, err)
		}
		k, _ := MACKey(m)
		back, err := MACFromKey(k)
		if err != nil || back != m {
			t.Fatalf("key round trip %q -> %q -> %q", m, k, back)
		}
	})
}

func TestHostKey(t *testing.T) {
	k, err := HostKey("lab", "AA-BB-CC-DD-EE-FF")
	if err != nil || k != "lab.aabbccddeeff" {
		t.Fatalf("HostKey = %q, %v", k, err)
	}
	site, mac, ok := SplitHostKey(k)
	if !ok || site != "lab" || mac != "aa:bb:cc:dd:ee:ff" {
		t.Fatalf("SplitHostKey(%q) = %q, %q, %v", k, site, mac, ok)
	}
	if _, _, ok := SplitHostKey("lab.nothex"); ok {
		t.Error("SplitHostKey accepted a bad key")
	}
	if got := EventSubject("lab", "e1", "aa:bb:cc:dd:ee:ff"); got != "fleetboot.events.lab.e1.aabbccddeeff" {
		t.Errorf("EventSubject = %q", got)
	}
}

// Messages round-trip, and decoders ignore fields a newer peer added.
func TestMessageRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		v    any
		new  func() any
	}{
		{"site", Site{V: 1, Name: "lab", DHCP: DHCPFull, Networks: []Network{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.10", RangeEnd: "10.0.0.20", DNS: []string{"10.0.0.1"}, LeaseSeconds: 600}}, Updated: ts}, func() any { return &Site{} }},
		{"image", Image{V: 1, Name: "deb", Arch: "x86_64", Cmdline: "console=ttyS0", Artifacts: []Artifact{{Role: RoleKernel, Name: "vmlinuz", Key: "sha256/x", Size: 3, SHA256: "ab"}}, Updated: ts}, func() any { return &Image{} }},
		{"host", Host{V: 1, MAC: "aa:bb:cc:dd:ee:ff", ExtraMACs: []string{"aa:bb:cc:dd:ee:00"}, Site: "lab", IP: "10.0.0.5", Hostname: "h", Image: "deb", Vars: map[string]string{"a": "b"}, State: StateBoot, Once: true, Updated: ts}, func() any { return &Host{} }},
		{"edge status", EdgeStatus{V: 1, Name: "e1", Site: "lab", Version: "1.0", CacheBytes: 5, HitRatio: 0.5, Revision: 9, Time: ts}, func() any { return &EdgeStatus{} }},
		{"event", Event{V: 1, ID: "x", Time: ts, Site: "lab", Edge: "e1", MAC: "aa:bb:cc:dd:ee:ff", Kind: EventDHCPAck, Detail: map[string]string{"ip": "10.0.0.5"}}, func() any { return &Event{} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			// A newer peer adds a field and bumps the version.
			var m map[string]any
			json.Unmarshal(data, &m)
			m["from_the_future"] = map[string]any{"x": 1}
			data2, _ := json.Marshal(m)
			got := tc.new()
			if err := json.Unmarshal(data2, got); err != nil {
				t.Fatalf("decode with unknown field: %v", err)
			}
			if diff := cmp.Diff(tc.v, deref(got)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func deref(v any) any {
	switch p := v.(type) {
	case *Site:
		return *p
	case *Image:
		return *p
	case *Host:
		return *p
	case *EdgeStatus:
		return *p
	case *Event:
		return *p
	}
	return v
}
