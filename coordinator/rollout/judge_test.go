package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func target(cmdline string) proto.Image {
	return proto.Image{Name: "web", Revision: 2, Cmdline: cmdline, Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Size: 10, SHA256: "k2"},
		{Role: proto.RoleInitrd, Name: "initrd.img", Size: 20, SHA256: "i2"},
	}}
}

func ev(sec int, kind string, detail ...string) proto.Event {
	d := map[string]string{}
	for i := 0; i+1 < len(detail); i += 2 {
		d[detail[i]] = detail[i+1]
	}
	return proto.Event{Time: t0.Add(time.Duration(sec) * time.Second), MAC: "52:54:00:00:00:01", Kind: kind, Detail: d}
}

func fetched(sec int, sha string, bytes int) proto.Event {
	return ev(sec, proto.EventArtifactEnd, "file", "f", "sha256", sha, "status", "complete", "bytes", fmt.Sprint(bytes), "http_status", "200")
}

// TestJudge: what proves a host done, failed or booting.
func TestJudge(t *testing.T) {
	h := proto.RolloutHost{MAC: "52:54:00:00:00:01", State: proto.RolloutHostAssigned, Assigned: t0, HostVersion: t0}
	script := ev(2, proto.EventScript, "decision", "boot", "image", "web@2")
	cases := []struct {
		name    string
		cmdline string
		evs     []proto.Event
		done    *doneMark
		now     time.Duration // after t0
		want    verdict
	}{
		{"nothing yet", "", nil, nil, time.Minute, verdict{}},
		{"nothing within the timeout", "", nil, nil, 11 * time.Minute, verdict{state: proto.RolloutHostFailed, diagnosis: "no boot within 10m0s"}},
		{"callback for this assignment", "", nil, &doneMark{HostVersion: t0}, time.Minute, verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofCallback}},
		{"callback after a later change (once: local)", "", nil, &doneMark{HostVersion: t0.Add(time.Second)}, time.Minute, verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofCallback}},
		{"callback of an earlier assignment", "", nil, &doneMark{HostVersion: t0.Add(-time.Hour)}, time.Minute, verdict{}},
		{"kernel and initrd whole, by digest", "", []proto.Event{script, fetched(3, "k2", 10), fetched(4, "i2", 20)}, nil, time.Minute,
			verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofKernel}},
		{"TFTP counts too", "", []proto.Event{ev(3, proto.EventTFTPDone, "file", "artifacts/web@2/vmlinuz", "sha256", "k2", "bytes", "10"),
			ev(4, proto.EventTFTPDone, "file", "artifacts/web@2/initrd.img", "sha256", "i2", "bytes", "20")}, nil, time.Minute,
			verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofKernel}},
		{"kernel alone is not yet", "", []proto.Event{script, fetched(3, "k2", 10)}, nil, time.Second * 5, verdict{state: proto.RolloutHostBooting}},
		{"the old revision's files prove nothing", "", []proto.Event{script, fetched(3, "k1", 10), fetched(4, "i1", 20)}, nil, 5 * time.Second, verdict{state: proto.RolloutHostBooting}},
		{"a cut transfer proves nothing", "", []proto.Event{script, fetched(3, "k2", 5), fetched(4, "i2", 20)}, nil, 5 * time.Second, verdict{state: proto.RolloutHostBooting}},
		{"a size probe proves nothing", "", []proto.Event{ev(3, proto.EventTFTPDone, "sha256", "k2", "bytes", "10", "probe", "true"), fetched(4, "i2", 20)}, nil, 5 * time.Second, verdict{state: proto.RolloutHostBooting}},
		{"a callback image must call back", "fleetboot.done={{callback}}", []proto.Event{script, fetched(3, "k2", 10), fetched(4, "i2", 20)}, nil, 5 * time.Minute,
			verdict{state: proto.RolloutHostBooting}},
		{"a callback image that never calls back", "fleetboot.done={{ callback }}", []proto.Event{script, fetched(3, "k2", 10), fetched(4, "i2", 20)}, nil, 11 * time.Minute,
			verdict{state: proto.RolloutHostFailed, diagnosis: "the boot loaded the new revision's kernel but no done callback came within 10m0s: the kernel or the system it starts did not come up"}},
		{"a stalled boot, still settling", "", []proto.Event{script}, nil, time.Minute, verdict{state: proto.RolloutHostBooting}},
		{"a stalled boot, settled: the timeline's diagnosis", "", []proto.Event{script}, nil, 3 * time.Minute, verdict{state: proto.RolloutHostFailed,
			diagnosis: "boot script served (image web@2) but no artifact was requested: iPXE could not fetch the kernel over HTTP (wrong edge URL, HTTP blocked on the path, or an iPXE without HTTP)"}},
		{"an artifact refused", "", []proto.Event{script, ev(3, proto.EventArtifactStart, "file", "vmlinuz", "sha256", "k2"), ev(3, proto.EventArtifactEnd, "file", "vmlinuz", "sha256", "k2", "http_status", "502", "error", "store unreachable")}, nil, 3 * time.Minute,
			verdict{state: proto.RolloutHostFailed, diagnosis: "request for vmlinuz answered HTTP 502: store unreachable"}},
		{"power events are not a boot", "", []proto.Event{ev(1, proto.EventPower, "action", "cycle", "result", "ok")}, nil, time.Minute, verdict{}},
		{"a boot that never got far, timed out", "", []proto.Event{ev(1, proto.EventDHCPAck, "xid", "1", "ip", "10.0.0.9")}, nil, 11 * time.Minute,
			verdict{state: proto.RolloutHostFailed, diagnosis: "the boot did not reach the new revision's kernel within 10m0s"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := judge(h, target(c.cmdline), c.evs, c.done, 10*time.Minute, 0, t0.Add(c.now))
			if diff := cmp.Diff(c.want, got, cmp.AllowUnexported(verdict{})); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlan: canaries from the first site, then batches that never span a
// site, in the order of --site (else by site name).
func TestPlan(t *testing.T) {
	hosts := func(spec ...string) []proto.Host {
		var out []proto.Host
		for _, s := range spec {
			site, mac, _ := strings.Cut(s, "/")
			out = append(out, proto.Host{Site: site, MAC: mac, Image: "web@1"})
		}
		return out
	}
	batches := func(hs []proto.RolloutHost) string {
		var b strings.Builder
		for _, h := range hs {
			fmt.Fprintf(&b, "%s/%s:%d ", h.Site, h.MAC, h.Batch)
		}
		return strings.TrimSpace(b.String())
	}
	all := hosts("a/1", "a/2", "a/3", "a/4", "b/5", "b/6", "c/7")
	cases := []struct {
		name          string
		sites         []string
		canary        int
		batch         string
		want, wantErr string
	}{
		{"one canary, batches of 2", nil, 1, "2", "a/1:0 a/2:1 a/3:1 a/4:2 b/5:3 b/6:3 c/7:4", ""},
		{"sites in the order given", []string{"c", "b", "a"}, 1, "2", "c/7:0 b/5:1 b/6:1 a/1:2 a/2:2 a/3:3 a/4:3", ""},
		{"no canary, 50% of 7 is 4", nil, 0, "50%", "a/1:1 a/2:1 a/3:1 a/4:1 b/5:2 b/6:2 c/7:3", ""},
		{"1% is still one host", nil, 2, "1%", "a/1:0 a/2:0 a/3:1 a/4:2 b/5:3 b/6:4 c/7:5", ""},
		{"too many canaries for the first site", []string{"c"}, 2, "1", "", "the first site, c, has only 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sel := all
			if len(c.sites) > 0 {
				sel = nil
				for _, h := range all {
					for _, s := range c.sites {
						if h.Site == s {
							sel = append(sel, h)
						}
					}
				}
			}
			got, err := plan(proto.RolloutSpec{Sites: c.sites, Canary: c.canary, Batch: c.batch}, sel)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b := batches(got); b != c.want {
				t.Errorf("batches\n got %s\nwant %s", b, c.want)
			}
		})
	}
}
